//! The `settle_v1` contract: KEYS and ARGV built from a [`SettleSpec`], and the reply decoded
//! into [`Settled`]. The `lua/settle_v1.lua` header is the reference for every name here.

use crate::config::KeyConfig;
use crate::json::object;
use crate::store::contract::{parse_reply, Fields};
use crate::store::keys;
use crate::store::upstash::StoreError;
use serde_json::Value;

const SCRIPT: &str = "settle_v1";

/// How a settle changes the cooldown of the key's quota group.
#[derive(Debug, Clone, PartialEq)]
pub enum CooldownSpec {
    Delay { ms: u64, reason: String },
    UntilPacificMidnight { reason: String },
    Unknown { reason: String },
}

pub struct SettleSpec<'a> {
    pub key: &'a KeyConfig,
    pub client_id: &'a str,
    pub rid: String,
    pub day: i64,
    /// Stats bucket: "success", "rate_limited", "transient", "key_rejected", "client_error",
    /// "timeout", "not_sent".
    pub outcome: &'static str,
    pub release: bool,
    pub input: Option<u64>,
    pub output: u64,
    pub thoughts: u64,
    pub cooldown: Option<CooldownSpec>,
    pub disable: Option<(String, String)>,
    /// Conversation to unlock (and append `turns` to, if any).
    pub conv: Option<ConvSettle>,
    /// The caller's budget debit to correct, when the client has a budget.
    pub budget: Option<BudgetSettle>,
}

/// What the reservation debited from the caller's budget (`reserve_v1`'s budget block).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSettle {
    pub client: String,
    /// The Pacific day the reservation debited.
    pub day: i64,
    /// The tokens it debited (the reservation's `est`).
    pub est: u64,
}

pub struct ConvSettle {
    pub id: String,
    pub lock_id: String,
    pub turns: Vec<String>,
    pub ttl_s: u64,
    pub tokens: u64,
    /// Estimated input tokens of the appended turns, added to the conversation's `hist_est`.
    pub est: u64,
}

/// KEYS of `settle_v1`, in the order of the script's header: log, tok, day, cd of the key's
/// quota group + model, dis and kstat of the key, gstat, cstat of the client, then the
/// conversation's meta/turns/lock when there is a lock to release. The script reads them by
/// position, so this is the one place they are built.
pub fn settle_keys(s: &SettleSpec) -> Vec<String> {
    let k = s.key;
    let mut out = vec![
        keys::log(&k.quota_group, &k.model),
        keys::tokens(&k.quota_group, &k.model),
        keys::day(&k.quota_group, &k.model),
        keys::cooldown(&k.quota_group, &k.model),
        keys::disabled(&k.key_id),
        keys::key_stats(&k.key_id),
        keys::GLOBAL_STATS.to_string(),
        keys::client_stats(s.client_id),
    ];
    if let Some(c) = &s.conv {
        out.push(keys::conv_meta(&c.id));
        out.push(keys::conv_turns(&c.id));
        out.push(keys::conv_lock(&c.id));
    }
    if let Some(b) = &s.budget {
        out.push(keys::client_budget_day(&b.client));
        out.push(keys::client_budget_log(&b.client));
        out.push(keys::client_budget_tokens(&b.client));
    }
    out
}

/// `ARGV[1]` of `settle_v1`. `None` is written as `null`, as the header documents.
fn settle_args(s: &SettleSpec) -> Value {
    let cooldown = s.cooldown.as_ref().map(|c| match c {
        CooldownSpec::Delay { ms, reason } => {
            object(vec![("kind", "delay".into()), ("delay_ms", (*ms).into()), ("reason", reason.as_str().into())])
        }
        CooldownSpec::UntilPacificMidnight { reason } => {
            object(vec![("kind", "day".into()), ("reason", reason.as_str().into())])
        }
        CooldownSpec::Unknown { reason } => {
            object(vec![("kind", "unknown".into()), ("reason", reason.as_str().into())])
        }
    });
    let disable = s
        .disable
        .as_ref()
        .map(|(reason, cfg)| object(vec![("reason", reason.as_str().into()), ("cfg", cfg.as_str().into())]));
    // Only when there are turns to append: otherwise the script only releases the lock.
    let conv = s.conv.as_ref().filter(|c| !c.turns.is_empty()).map(|c| {
        object(vec![
            ("turns", c.turns.as_slice().into()),
            ("ttl_s", c.ttl_s.into()),
            ("tokens", c.tokens.into()),
            ("est", c.est.into()),
        ])
    });
    object(vec![
        ("rid", s.rid.as_str().into()),
        ("key", s.key.key_id.as_str().into()),
        ("day", s.day.into()),
        ("outcome", s.outcome.into()),
        ("release", s.release.into()),
        ("input", s.input.into()),
        ("output", s.output.into()),
        ("thoughts", s.thoughts.into()),
        ("cooldown", cooldown.into()),
        ("disable", disable.into()),
        ("conv", conv.into()),
        ("lock_id", s.conv.as_ref().map(|c| c.lock_id.as_str()).into()),
        ("budget", s.budget.as_ref().map(|b| object(vec![("day", b.day.into()), ("est", b.est.into())])).into()),
    ])
}

/// KEYS and ARGV of one `settle_v1` call.
pub fn settle_call(s: &SettleSpec) -> (Vec<String>, Vec<String>) {
    (settle_keys(s), vec![settle_args(s).to_string()])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub now: u64,
    pub cooldown_until: Option<u64>,
    pub message_count: Option<u64>,
}

/// Decodes a `settle_v1` reply, `{"now": ms, "cooldown_until": ms | null, "message_count": n |
/// null}`, the script's only shape. Both nullable keys are always written (`cjson.null`), so they
/// are required; any drift from the documented shape is [`StoreError::Protocol`].
pub fn parse_settle(v: &Value) -> Result<Settled, StoreError> {
    let v = parse_reply(SCRIPT, v)?;
    let mut f = Fields::new(SCRIPT, "settled", &v)?;
    let s = Settled {
        now: f.u64("now")?,
        cooldown_until: f.nullable_u64("cooldown_until")?,
        message_count: f.nullable_u64("message_count")?,
    };
    f.finish().map(|()| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> KeyConfig {
        KeyConfig {
            key_id: "a".into(),
            model: "m".into(),
            provider: "gemini".into(),
            rpm: 1,
            tpm: 1,
            rpd: 1,
            active: true,
            quota_group: "g".into(),
            weight: 1.0,
        }
    }

    fn spec(k: &KeyConfig) -> SettleSpec<'_> {
        SettleSpec {
            key: k,
            client_id: "c",
            rid: "r".into(),
            day: 20785,
            outcome: "success",
            release: false,
            input: Some(3),
            output: 4,
            thoughts: 5,
            cooldown: Some(CooldownSpec::Delay { ms: 1500, reason: "429".into() }),
            disable: Some(("API_KEY_INVALID".into(), "cfg".into())),
            conv: Some(ConvSettle {
                id: "x".into(),
                lock_id: "r".into(),
                turns: vec!["t1".into()],
                ttl_s: 60,
                tokens: 7,
                est: 8,
            }),
            budget: None,
        }
    }

    /// The field names the script's header documents, byte for byte.
    #[test]
    fn keys_and_argv_are_the_documented_ones() {
        let k = key();
        let (ks, args) = settle_call(&spec(&k));
        assert_eq!(
            ks,
            [
                "{llmr}:w:g:m",
                "{llmr}:t:g:m",
                "{llmr}:d:g:m",
                "{llmr}:cd:g:m",
                "{llmr}:dis:a",
                "{llmr}:st:k:a",
                "{llmr}:st:global",
                "{llmr}:st:c:c",
                "{llmr}:conv:x",
                "{llmr}:conv:x:turns",
                "{llmr}:conv:x:lock"
            ]
        );
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(
            a,
            json!({
                "rid": "r", "key": "a", "day": 20785, "outcome": "success", "release": false,
                "input": 3, "output": 4, "thoughts": 5,
                "cooldown": {"kind": "delay", "delay_ms": 1500, "reason": "429"},
                "disable": {"reason": "API_KEY_INVALID", "cfg": "cfg"},
                "conv": {"turns": ["t1"], "ttl_s": 60, "tokens": 7, "est": 8},
                "lock_id": "r",
                "budget": null,
            })
        );
        // A budget's three keys come last, after the conversation's.
        let mut b = spec(&k);
        b.budget = Some(BudgetSettle { client: "c".into(), day: 20785, est: 9 });
        let (ks, args) = settle_call(&b);
        assert_eq!(&ks[11..], ["{llmr}:cb:d:c", "{llmr}:cb:w:c", "{llmr}:cb:t:c"]);
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(a["budget"], json!({"day": 20785, "est": 9}));
        let mut s = spec(&k);
        s.cooldown = Some(CooldownSpec::UntilPacificMidnight { reason: "day".into() });
        let a: Value = serde_json::from_str(&settle_call(&s).1[0]).unwrap();
        assert_eq!(a["cooldown"], json!({"kind": "day", "reason": "day"}));
        s.cooldown = Some(CooldownSpec::Unknown { reason: "?".into() });
        s.input = None;
        s.disable = None;
        s.conv.as_mut().unwrap().turns.clear();
        let (ks, args) = settle_call(&s);
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(a["cooldown"], json!({"kind": "unknown", "reason": "?"}));
        // No turns: the conversation keys stay so the lock is released, but nothing is appended.
        assert_eq!((ks.len(), &a["conv"], &a["lock_id"]), (11, &Value::Null, &json!("r")));
        assert_eq!((&a["input"], &a["disable"]), (&Value::Null, &Value::Null));
        s.conv = None;
        let (ks, args) = settle_call(&s);
        assert_eq!((ks.len(), &serde_json::from_str::<Value>(&args[0]).unwrap()["lock_id"]), (8, &Value::Null));
    }

    #[test]
    fn parses_the_reply() {
        let r = parse_settle(&json!(r#"{"now":1795899497469,"cooldown_until":1.7958995e12,"message_count":null}"#));
        assert_eq!(
            r.unwrap(),
            Settled { now: 1795899497469, cooldown_until: Some(1795899500000), message_count: None }
        );
        let r = parse_settle(&json!(r#"{"now":1,"cooldown_until":null,"message_count":4}"#));
        assert_eq!(r.unwrap(), Settled { now: 1, cooldown_until: None, message_count: Some(4) });
    }

    #[test]
    fn a_missing_or_renamed_field_is_a_protocol_error_naming_it() {
        let err = |s: &str| match parse_settle(&json!(s)) {
            Err(StoreError::Protocol(m)) => m,
            other => panic!("expected a protocol error for {s}, got {other:?}"),
        };
        // Before the typed contract, a renamed `now` read as 0 and a renamed key as "no cooldown".
        let m = err(r#"{"now_ms":1,"cooldown_until":null,"message_count":null}"#);
        assert!(m.starts_with("settle_v1: settled reply: missing field `now`"), "{m}");
        let m = err(r#"{"now":1,"now_ms":1,"cooldown_until":null,"message_count":null}"#);
        assert!(m.starts_with("settle_v1: settled reply: unknown field `now_ms`"), "{m}");
        let m = err(r#"{"cooldown_until":null,"message_count":null}"#);
        assert!(m.starts_with("settle_v1: settled reply: missing field `now`"), "{m}");
        let m = err(r#"{"now":1,"message_count":null}"#);
        assert!(m.contains("missing field `cooldown_until`"), "{m}");
        let m = err(r#"{"now":1,"cooldown_until":"soon","message_count":null}"#);
        assert!(m.contains("field `cooldown_until`: expected null or a non-negative integer, got \"soon\""), "{m}");
        assert!(matches!(parse_settle(&json!(null)), Err(StoreError::Protocol(m)) if m.starts_with("settle_v1: ")));
    }
}
