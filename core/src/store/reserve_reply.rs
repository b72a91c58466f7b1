//! The reply shapes of `reserve_v1`, one reader per `return cjson.encode(...)` in
//! `lua/reserve_v1.lua`, each decoding strictly into a [`Reservation`]. Kept apart from the call
//! building so each side of the contract reads on its own.

use crate::error::LimitKind;
use crate::store::contract::{parse_reply, protocol, Fields};
use crate::store::upstash::StoreError;
use serde_json::Value;

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

/// Decodes a `reserve_v1` reply: tells the shape by `ok`, then `conv`, then `limit` (the
/// script's own order of returns), and reads that shape strictly.
pub(crate) fn decode(v: &Value) -> Result<Reservation, StoreError> {
    let v = parse_reply(SCRIPT, v)?;
    let mut probe = Fields::new(SCRIPT, "a", &v)?;
    let (ok, conv, limit) = (probe.u64("ok")?, probe.opt_value("conv").is_some(), probe.opt_string("limit")?);
    match (ok, conv, limit) {
        (1, _, _) => reserved(&v),
        (0, true, _) => conversation(&v),
        (0, false, Some("too_large")) => too_large(&v),
        (0, false, Some("no_candidates")) => no_candidates(&v),
        (0, false, Some("client_rate" | "global_rate")) => bucket_refusal(&v),
        (0, false, Some(_)) => quota_refusal(&v),
        (0, false, None) => Err(protocol(SCRIPT, "an ok=0 reply has neither `conv` nor `limit`")),
        (ok, _, _) => Err(protocol(SCRIPT, format_args!("`ok` is {ok}, expected 0 or 1"))),
    }
}

/// `{"ok":1,"key","model","rid","now","day","est","history","system"}`: a key was reserved.
/// `model` is `nil` only for a candidate sent without a model; `history` is absent without a
/// conversation and `{}` when the conversation has no turns yet.
fn reserved(v: &Value) -> Result<Reservation, StoreError> {
    let mut f = Fields::new(SCRIPT, "reserved", v)?;
    f.flag("ok", 1)?;
    let r = Reservation::Reserved {
        key_id: f.string("key")?.to_owned(),
        rid: f.string("rid")?.to_owned(),
        now: f.u64("now")?,
        day: f.int("day")?,
        est: f.u64("est")?,
        model: f.opt_string("model")?.map(str::to_owned),
        history: f.turns("history")?.unwrap_or_default(),
        system: f.opt_string("system")?.map(str::to_owned),
    };
    f.finish().map(|()| r)
}

/// The limits that wait for the quota of the candidates (or never free, for `disabled`).
/// `client_budget` is the caller's own token budget (not a key's quota).
const QUOTA_LIMITS: [&str; 6] = ["rpm", "tpm", "rpd", "cooldown", "disabled", "client_budget"];
const QUOTA_KINDS: [LimitKind; 6] =
    [LimitKind::Rpm, LimitKind::Tpm, LimitKind::Rpd, LimitKind::Cooldown, LimitKind::Disabled, LimitKind::ClientBudget];

/// `{"ok":0,"limit":"rpm"|"tpm"|"rpd"|"cooldown"|"disabled"|"client_budget","retry_at":ms|null,"now"}`.
/// `retry_at` is `null` when only disabled keys were left: waiting frees nothing.
fn quota_refusal(v: &Value) -> Result<Reservation, StoreError> {
    let mut f = Fields::new(SCRIPT, "quota refusal", v)?;
    f.flag("ok", 0)?;
    let limit = QUOTA_KINDS[f.one_of("limit", &QUOTA_LIMITS)?];
    let r = Reservation::Refused { limit, retry_at: f.nullable_u64("retry_at")?, now: f.u64("now")?, bucket: None };
    f.finish().map(|()| r)
}

/// `{"ok":0,"limit":"client_rate"|"global_rate","retry_at","now","bucket_limit","bucket_remaining"}`.
fn bucket_refusal(v: &Value) -> Result<Reservation, StoreError> {
    let mut f = Fields::new(SCRIPT, "bucket refusal", v)?;
    f.flag("ok", 0)?;
    let r = Reservation::Refused {
        limit: [LimitKind::ClientRate, LimitKind::GlobalRate][f.one_of("limit", &["client_rate", "global_rate"])?],
        retry_at: Some(f.u64("retry_at")?),
        now: f.u64("now")?,
        bucket: Some((f.u64("bucket_limit")?, f.u64("bucket_remaining")?)),
    };
    f.finish().map(|()| r)
}

/// `{"ok":0,"limit":"too_large","now"}`.
fn too_large(v: &Value) -> Result<Reservation, StoreError> {
    let mut f = Fields::new(SCRIPT, "too_large", v)?;
    f.flag("ok", 0)?;
    f.string("limit")?;
    f.u64("now")?;
    f.finish().map(|()| Reservation::PromptTooLarge)
}

/// `{"ok":0,"limit":"no_candidates","model":m|null,"now"}`: `model` is the model that matched no
/// candidate, `nil`/`null` when the request named none.
fn no_candidates(v: &Value) -> Result<Reservation, StoreError> {
    let mut f = Fields::new(SCRIPT, "no_candidates", v)?;
    f.flag("ok", 0)?;
    f.string("limit")?;
    f.opt_string("model")?;
    f.u64("now")?;
    f.finish().map(|()| Reservation::NoCandidates)
}

/// `{"ok":0,"conv":"not_found"|"busy","now"}`.
fn conversation(v: &Value) -> Result<Reservation, StoreError> {
    let mut f = Fields::new(SCRIPT, "conversation", v)?;
    f.flag("ok", 0)?;
    let r = match f.one_of("conv", &["not_found", "busy"])? {
        0 => Reservation::ConversationNotFound,
        _ => Reservation::ConversationBusy,
    };
    f.u64("now")?;
    f.finish().map(|()| r)
}
