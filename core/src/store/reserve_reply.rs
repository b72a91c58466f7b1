//! The reply shapes of `reserve_v1`, one `#[derive(Deserialize)]` struct per
//! `return cjson.encode(...)` in `lua/reserve_v1.lua`, and their mapping onto [`Reservation`].
//! Kept apart from the call building so each side of the contract reads on its own.

use crate::error::LimitKind;
use crate::store::contract::{decode, protocol, Int, NullableUint, OkFlag, Turns, Uint};
use crate::store::upstash::StoreError;
use serde::Deserialize;

/// What a reservation came to, as the engine reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    Reserved {
        key_id: String,
        model: Option<String>,
        rid: String,
        now: u64,
        day: i64,
        /// Input tokens reserved: the request's estimate plus the conversation's `hist_est`.
        est: u64,
        history: Vec<String>,
        system: Option<String>,
    },
    NoCandidates,
    Refused {
        limit: LimitKind,
        retry_at: Option<u64>,
        now: u64,
        bucket: Option<(u64, u64)>,
    },
    PromptTooLarge,
    ConversationNotFound,
    ConversationBusy,
}

const SCRIPT: &str = "reserve_v1";

/// Just enough of a reply to tell its shape; the shape's own struct then checks every field.
#[derive(Debug, Deserialize)]
pub(crate) struct ReplyShape {
    ok: Uint,
    #[serde(default)]
    conv: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

/// `{"ok":1,"key","model","rid","now","day","est","history","system"}`: a key was reserved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReservedReply {
    #[serde(rename = "ok")]
    _ok: OkFlag<1>,
    key: String,
    rid: String,
    now: Uint,
    day: Int,
    est: Uint,
    /// `nil` only for a candidate sent without a model.
    model: Option<String>,
    /// Absent without a conversation; `{}` when the conversation has no turns yet.
    history: Option<Turns>,
    system: Option<String>,
}

/// The limits that wait for the quota of the candidates (or never free, for `disabled`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum QuotaLimit {
    Rpm,
    Tpm,
    Rpd,
    Cooldown,
    Disabled,
    /// The caller's own token budget (not a key's quota).
    ClientBudget,
}

/// `{"ok":0,"limit":"rpm"|"tpm"|"rpd"|"cooldown"|"disabled","retry_at":ms|null,"now"}`.
/// `retry_at` is `null` when only disabled keys were left: waiting frees nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaRefusal {
    #[serde(rename = "ok")]
    _ok: OkFlag<0>,
    limit: QuotaLimit,
    retry_at: NullableUint,
    now: Uint,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BucketLimit {
    ClientRate,
    GlobalRate,
}

/// `{"ok":0,"limit":"client_rate"|"global_rate","retry_at","now","bucket_limit","bucket_remaining"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketRefusal {
    #[serde(rename = "ok")]
    _ok: OkFlag<0>,
    limit: BucketLimit,
    retry_at: Uint,
    now: Uint,
    bucket_limit: Uint,
    bucket_remaining: Uint,
}

/// `{"ok":0,"limit":"too_large","now"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TooLargeReply {
    #[serde(rename = "ok")]
    _ok: OkFlag<0>,
    #[serde(rename = "limit")]
    _limit: String,
    #[serde(rename = "now")]
    _now: Uint,
}

/// `{"ok":0,"limit":"no_candidates","model":m|null,"now"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoCandidatesReply {
    #[serde(rename = "ok")]
    _ok: OkFlag<0>,
    #[serde(rename = "limit")]
    _limit: String,
    /// The model that matched no candidate; `nil`/`null` when the request named none.
    #[serde(rename = "model")]
    _model: Option<String>,
    #[serde(rename = "now")]
    _now: Uint,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ConvState {
    NotFound,
    Busy,
}

/// `{"ok":0,"conv":"not_found"|"busy","now"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConvReply {
    #[serde(rename = "ok")]
    _ok: OkFlag<0>,
    conv: ConvState,
    #[serde(rename = "now")]
    _now: Uint,
}

/// Every shape `reserve_v1` returns, one per `return cjson.encode(...)` in the script.
#[derive(Debug)]
pub(crate) enum ReserveReply {
    Reserved(ReservedReply),
    QuotaRefused(QuotaRefusal),
    BucketRefused(BucketRefusal),
    /// Carries nothing the engine uses; the shape is still checked in full.
    TooLarge,
    NoCandidates,
    Conversation(ConvReply),
}

impl ReserveReply {
    /// Tells the shape by `ok`, then `conv`, then `limit` (the script's own order of returns),
    /// and decodes it strictly.
    pub(crate) fn decode(text: &str) -> Result<Self, StoreError> {
        let shape: ReplyShape = decode(SCRIPT, "reply", text)?;
        Ok(match (shape.ok.0, shape.conv.is_some(), shape.limit.as_deref()) {
            (1, _, _) => ReserveReply::Reserved(decode(SCRIPT, "reserved", text)?),
            (0, true, _) => ReserveReply::Conversation(decode(SCRIPT, "conversation", text)?),
            (0, false, Some("too_large")) => {
                decode::<TooLargeReply>(SCRIPT, "too_large", text)?;
                ReserveReply::TooLarge
            }
            (0, false, Some("no_candidates")) => {
                decode::<NoCandidatesReply>(SCRIPT, "no_candidates", text)?;
                ReserveReply::NoCandidates
            }
            (0, false, Some("client_rate" | "global_rate")) => {
                ReserveReply::BucketRefused(decode(SCRIPT, "bucket refusal", text)?)
            }
            (0, false, Some(_)) => ReserveReply::QuotaRefused(decode(SCRIPT, "quota refusal", text)?),
            (0, false, None) => return Err(protocol(SCRIPT, "an ok=0 reply has neither `conv` nor `limit`")),
            (ok, _, _) => return Err(protocol(SCRIPT, format_args!("`ok` is {ok}, expected 0 or 1"))),
        })
    }
}

impl From<ReserveReply> for Reservation {
    fn from(r: ReserveReply) -> Self {
        match r {
            ReserveReply::Reserved(r) => Reservation::Reserved {
                key_id: r.key,
                model: r.model,
                rid: r.rid,
                now: r.now.0,
                day: r.day.0,
                est: r.est.0,
                history: r.history.unwrap_or_default().0,
                system: r.system,
            },
            ReserveReply::QuotaRefused(r) => Reservation::Refused {
                limit: match r.limit {
                    QuotaLimit::Rpm => LimitKind::Rpm,
                    QuotaLimit::Tpm => LimitKind::Tpm,
                    QuotaLimit::Rpd => LimitKind::Rpd,
                    QuotaLimit::Cooldown => LimitKind::Cooldown,
                    QuotaLimit::Disabled => LimitKind::Disabled,
                    QuotaLimit::ClientBudget => LimitKind::ClientBudget,
                },
                retry_at: r.retry_at.0,
                now: r.now.0,
                bucket: None,
            },
            ReserveReply::BucketRefused(r) => Reservation::Refused {
                limit: match r.limit {
                    BucketLimit::ClientRate => LimitKind::ClientRate,
                    BucketLimit::GlobalRate => LimitKind::GlobalRate,
                },
                retry_at: Some(r.retry_at.0),
                now: r.now.0,
                bucket: Some((r.bucket_limit.0, r.bucket_remaining.0)),
            },
            ReserveReply::TooLarge => Reservation::PromptTooLarge,
            ReserveReply::NoCandidates => Reservation::NoCandidates,
            ReserveReply::Conversation(r) => match r.conv {
                ConvState::NotFound => Reservation::ConversationNotFound,
                ConvState::Busy => Reservation::ConversationBusy,
            },
        }
    }
}
