//! The `reserve_v1` contract: KEYS and ARGV built from a [`ReserveSpec`], and the reply decoded
//! into a [`Reservation`]. The `lua/reserve_v1.lua` header is the reference for every name here.

use crate::config::KeyConfig;
use crate::json::object;
use crate::store::keys;
use crate::store::reserve_reply;
pub use crate::store::reserve_reply::Reservation;
use crate::store::upstash::StoreError;
use serde_json::Value;

/// A token bucket checked in the reservation (per client, global).
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
    /// `client` or `global`: the script refuses with limit `<name>_rate`.
    pub name: &'static str,
    pub rate_per_min: u32,
    pub burst: u32,
}

/// The conversation a reservation locks and reads.
#[derive(Debug, Clone)]
pub struct ConvLock {
    pub id: String,
    pub owner: String,
    pub lock_id: String,
    pub lock_ms: u64,
    /// Use the conversation's stored model (the send named none).
    pub pick_model: bool,
    /// `CONTEXT_BUDGET_TOKENS`: the script returns only the newest turns the engine may send
    /// (by their stored `est`), not the whole history. `None` returns every turn.
    pub history_budget: Option<u64>,
}

/// The caller's own token budget (CLIENTS_JSON `daily_tokens`, `tpm`), checked and debited by
/// the reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpec {
    pub client: String,
    pub daily: Option<u64>,
    pub tpm: Option<u64>,
}

pub struct ReserveSpec<'a> {
    pub rid: String,
    pub est: u64,
    pub window_ms: u64,
    pub cfg: String,
    pub buckets: Vec<Bucket>,
    pub conv: Option<ConvLock>,
    /// The caller's budget; `None` when the client has none.
    pub budget: Option<BudgetSpec>,
    /// Files and cached contents the request names (`files::referenced`): the script reserves
    /// only on keys of their owner's quota group.
    pub owned: Vec<String>,
    pub candidates: Vec<&'a KeyConfig>,
    /// The request's model; candidates of other models are skipped by the script.
    pub model: Option<String>,
}

/// KEYS of `reserve_v1`, in the order of the script's header: the last-used hash, one key per
/// bucket, the conversation's meta/turns/lock if any, the client budget's day/log/tokens if any,
/// one owner record per named file or cached content, then log, tok, day, cd, dis per candidate.
/// The script walks KEYS with a cursor in that same order, so this is the one place it is built.
pub fn reserve_keys(spec: &ReserveSpec) -> Vec<String> {
    let mut k = Vec::with_capacity(1 + spec.buckets.len() + 6 + spec.owned.len() + 5 * spec.candidates.len());
    k.push(keys::LAST_USED.to_string());
    k.extend(spec.buckets.iter().map(|b| b.key.clone()));
    if let Some(c) = &spec.conv {
        k.push(keys::conv_meta(&c.id));
        k.push(keys::conv_turns(&c.id));
        k.push(keys::conv_lock(&c.id));
    }
    if let Some(b) = &spec.budget {
        k.push(keys::client_budget_day(&b.client));
        k.push(keys::client_budget_log(&b.client));
        k.push(keys::client_budget_tokens(&b.client));
    }
    k.extend(spec.owned.iter().map(|n| keys::resource(n)));
    for c in &spec.candidates {
        k.push(keys::log(&c.quota_group, &c.model));
        k.push(keys::tokens(&c.quota_group, &c.model));
        k.push(keys::day(&c.quota_group, &c.model));
        k.push(keys::cooldown(&c.quota_group, &c.model));
        k.push(keys::disabled(&c.key_id));
    }
    k
}

/// `ARGV[1]` of `reserve_v1`. `None` is written as `null` (not skipped) because the header
/// documents `conv` and `model` as `null | ...`. Candidates use short names: a request carries
/// one entry per candidate key.
fn reserve_args(spec: &ReserveSpec) -> Value {
    let buckets = spec
        .buckets
        .iter()
        .map(|b| object(vec![("rate", b.rate_per_min.into()), ("burst", b.burst.into()), ("name", b.name.into())]));
    let conv = spec.conv.as_ref().map(|c| {
        let mut fields = vec![
            ("owner", c.owner.as_str().into()),
            ("lock_id", c.lock_id.as_str().into()),
            ("lock_ms", c.lock_ms.into()),
            ("pick_model", c.pick_model.into()),
        ];
        // Absent, not null: without a budget the script reads the whole history.
        if let Some(budget) = c.history_budget {
            fields.push(("budget", budget.into()));
        }
        object(fields)
    });
    let cands = spec.candidates.iter().map(|c| {
        object(vec![
            ("k", c.key_id.as_str().into()),
            ("m", c.model.as_str().into()),
            ("rpm", c.rpm.into()),
            ("tpm", c.tpm.into()),
            ("rpd", c.rpd.into()),
            ("w", c.weight.into()),
        ])
    });
    object(vec![
        ("rid", spec.rid.as_str().into()),
        ("est", spec.est.into()),
        ("window_ms", spec.window_ms.into()),
        ("cfg", spec.cfg.as_str().into()),
        ("buckets", Value::Array(buckets.collect())),
        ("conv", conv.into()),
        ("budget", spec.budget.as_ref().map(|b| object(vec![("daily", b.daily.into()), ("tpm", b.tpm.into())])).into()),
        ("owned", spec.owned.len().into()),
        ("model", spec.model.as_deref().into()),
        ("cands", Value::Array(cands.collect())),
    ])
}

/// KEYS and ARGV of one `reserve_v1` call.
pub fn reserve_call(spec: &ReserveSpec) -> (Vec<String>, Vec<String>) {
    (reserve_keys(spec), vec![reserve_args(spec).to_string()])
}

/// Decodes a `reserve_v1` reply. Any drift from the documented shapes (a missing, renamed or
/// unknown field, a fractional number, an unknown limit) is [`StoreError::Protocol`].
pub fn parse_reserve(v: &Value) -> Result<Reservation, StoreError> {
    reserve_reply::decode(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LimitKind;
    use serde_json::json;

    fn key(id: &str) -> KeyConfig {
        KeyConfig {
            key_id: id.into(),
            model: "m".into(),
            provider: "gemini".into(),
            rpm: 1,
            tpm: 2,
            rpd: 3,
            active: true,
            quota_group: "g".into(),
            weight: 1.5,
        }
    }

    fn spec(k: &KeyConfig) -> ReserveSpec<'_> {
        ReserveSpec {
            rid: "r".into(),
            est: 7,
            window_ms: 60000,
            cfg: "c".into(),
            buckets: vec![Bucket { key: keys::client_bucket("x"), name: "client", rate_per_min: 4, burst: 5 }],
            conv: Some(ConvLock {
                id: "abc".into(),
                owner: "x".into(),
                lock_id: "r".into(),
                lock_ms: 9,
                pick_model: false,
                history_budget: None,
            }),
            budget: None,
            owned: vec![],
            candidates: vec![k, k],
            model: Some("m".into()),
        }
    }

    fn reply(s: &str) -> Result<Reservation, StoreError> {
        parse_reserve(&json!(s))
    }

    fn protocol_error(s: &str) -> String {
        match reply(s) {
            Err(StoreError::Protocol(m)) => m,
            other => panic!("expected a protocol error for {s}, got {other:?}"),
        }
    }

    #[test]
    fn every_key_of_a_call_shares_one_hash_tag() {
        let k = key("a");
        let (ks, _) = reserve_call(&spec(&k));
        assert_eq!(ks.len(), 1 + 1 + 3 + 10);
        assert!(ks.iter().all(|k| k.starts_with("{llmr}:")));
    }

    /// The field names the script's header documents, byte for byte.
    #[test]
    fn argv_is_the_documented_json() {
        let k = key("a");
        let (ks, args) = reserve_call(&spec(&k));
        assert_eq!(
            &ks[..5],
            ["{llmr}:last", "{llmr}:bucket:c:x", "{llmr}:conv:abc", "{llmr}:conv:abc:turns", "{llmr}:conv:abc:lock"]
        );
        assert_eq!(&ks[5..10], ["{llmr}:w:g:m", "{llmr}:t:g:m", "{llmr}:d:g:m", "{llmr}:cd:g:m", "{llmr}:dis:a"]);
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        let cand = json!({"k": "a", "m": "m", "rpm": 1, "tpm": 2, "rpd": 3, "w": 1.5});
        assert_eq!(
            a,
            json!({
                "rid": "r", "est": 7, "window_ms": 60000, "cfg": "c",
                "buckets": [{"rate": 4, "burst": 5, "name": "client"}],
                "conv": {"owner": "x", "lock_id": "r", "lock_ms": 9, "pick_model": false},
                "budget": null,
                "owned": 0,
                "model": "m",
                "cands": [cand.clone(), cand],
            })
        );
        let mut s = spec(&k);
        s.conv = None;
        s.model = None;
        let a: Value = serde_json::from_str(&reserve_call(&s).1[0]).unwrap();
        assert_eq!((&a["conv"], &a["model"]), (&Value::Null, &Value::Null));
        // A budget adds its three keys after the conversation's and before the candidates'.
        s.budget = Some(BudgetSpec { client: "x".into(), daily: Some(100), tpm: None });
        let (ks, args) = reserve_call(&s);
        assert_eq!(&ks[2..5], ["{llmr}:cb:d:x", "{llmr}:cb:w:x", "{llmr}:cb:t:x"]);
        assert_eq!(ks[5], "{llmr}:w:g:m");
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(a["budget"], json!({"daily": 100, "tpm": null}));
        // Owned resources' records come after the budget's keys.
        s.owned = vec!["files/a".into()];
        let (ks, args) = reserve_call(&s);
        assert_eq!(ks[5], "{llmr}:res:files/a");
        assert_eq!(serde_json::from_str::<Value>(&args[0]).unwrap()["owned"], 1);
        let r = reply(r#"{"ok":0,"limit":"client_budget","retry_at":9,"now":1}"#).unwrap();
        assert_eq!(r, Reservation::Refused { limit: LimitKind::ClientBudget, retry_at: Some(9), now: 1, bucket: None });
    }

    #[test]
    fn parses_every_reply_shape() {
        let ok =
            reply(r#"{"ok":1,"key":"a","rid":"r","now":1795899497469,"day":20785,"est":5,"model":"m","history":{}}"#);
        assert_eq!(
            ok.unwrap(),
            Reservation::Reserved {
                key_id: "a".into(),
                model: Some("m".into()),
                rid: "r".into(),
                now: 1795899497469,
                day: 20785,
                est: 5,
                history: vec![],
                system: None
            }
        );
        let refused = reply(r#"{"ok":0,"limit":"rpm","retry_at":1.795899503469e12,"now":1795899497484}"#);
        assert_eq!(
            refused.unwrap(),
            Reservation::Refused {
                limit: LimitKind::Rpm,
                retry_at: Some(1795899503469),
                now: 1795899497484,
                bucket: None
            }
        );
        let disabled = reply(r#"{"ok":0,"limit":"disabled","retry_at":null,"now":1}"#).unwrap();
        assert_eq!(disabled, Reservation::Refused { limit: LimitKind::Disabled, retry_at: None, now: 1, bucket: None });
        let bucket = r#"{"ok":0,"limit":"global_rate","retry_at":9,"now":1,"bucket_limit":5,"bucket_remaining":0}"#;
        assert_eq!(
            reply(bucket).unwrap(),
            Reservation::Refused { limit: LimitKind::GlobalRate, retry_at: Some(9), now: 1, bucket: Some((5, 0)) }
        );
        assert_eq!(reply(r#"{"ok":0,"limit":"too_large","now":1}"#).unwrap(), Reservation::PromptTooLarge);
        assert_eq!(reply(r#"{"ok":0,"limit":"no_candidates","now":1}"#).unwrap(), Reservation::NoCandidates);
        assert_eq!(
            reply(r#"{"ok":0,"limit":"no_candidates","model":"x","now":1}"#).unwrap(),
            Reservation::NoCandidates
        );
        assert_eq!(reply(r#"{"ok":0,"conv":"busy","now":1}"#).unwrap(), Reservation::ConversationBusy);
        assert_eq!(reply(r#"{"ok":0,"conv":"not_found","now":1}"#).unwrap(), Reservation::ConversationNotFound);
    }

    #[test]
    fn a_missing_or_renamed_field_is_a_protocol_error_naming_it() {
        // Before the typed contract, each of these silently read as 0 or None.
        let m = protocol_error(r#"{"ok":1,"key":"a","rid":"r","day":1,"est":1}"#);
        assert!(m.starts_with("reserve_v1: reserved reply: missing field `now`"), "{m}");
        let m = protocol_error(r#"{"ok":1,"key":"a","rid":"r","now_ms":1,"now":1,"day":1,"est":1}"#);
        assert!(m.starts_with("reserve_v1: reserved reply: unknown field `now_ms`"), "{m}");
        let m = protocol_error(r#"{"ok":1,"key":"a","rid":"r","now":1,"day":1,"est":1,"sys":"x"}"#);
        assert!(m.contains("unknown field `sys`"), "{m}");
        let m = protocol_error(r#"{"ok":0,"limit":"rpm","now":1}"#);
        assert!(m.starts_with("reserve_v1: quota refusal reply: missing field `retry_at`"), "{m}");
        let m = protocol_error(r#"{"ok":0,"limit":"client_rate","retry_at":2,"now":1,"bucket_limit":5}"#);
        assert!(m.contains("missing field `bucket_remaining`"), "{m}");
        let m = protocol_error(r#"{"ok":0,"limit":"rpx","retry_at":2,"now":1}"#);
        assert!(m.contains("unknown variant `rpx`"), "{m}");
        let m = protocol_error(r#"{"ok":0,"conv":"gone","now":1}"#);
        assert!(m.contains("unknown variant `gone`"), "{m}");
        let m = protocol_error(r#"{"ok":0,"conv":"busy"}"#);
        assert!(m.contains("missing field `now`"), "{m}");
        let m = protocol_error(r#"{"key":"a"}"#);
        assert!(m.contains("missing field `ok`"), "{m}");
        assert!(protocol_error(r#"{"ok":0,"now":1}"#).contains("neither `conv` nor `limit`"));
        assert!(protocol_error(r#"{"ok":2,"now":1}"#).contains("`ok` is 2"));
        assert!(protocol_error(r#"{"ok":1,"key":"a","rid":"r","now":1.5,"day":1,"est":1}"#).contains("1.5"));
        assert!(protocol_error(r#"{"ok":1,"key":"a","rid":"r","now":1,"day":1,"est":1,"history":{"1":"t"}}"#)
            .contains("cjson's empty table"));
        assert!(protocol_error("not json").starts_with("reserve_v1: "));
        assert!(matches!(parse_reserve(&json!(5)), Err(StoreError::Protocol(m)) if m.contains("JSON string")));
    }
}
