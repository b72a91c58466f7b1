//! The Redis side of the quota engine and conversations: key names, and the KEYS/ARGV of the
//! `reserve_v1` and `settle_v1` scripts, built and decoded in pure Rust.
//!
//! Every key carries the `{llmr}` hash tag, so each script call touches one Cluster slot.
//! That puts the router's state on one shard, which is what an atomic multi-key choice needs.

pub mod upstash;

use crate::config::KeyConfig;
use crate::error::LimitKind;
use crate::store::upstash::{Script, StoreError};
use serde_json::{json, Value};

pub static RESERVE: Script =
    Script::new("reserve_v1", concat!(include_str!("lua/pacific.lua"), include_str!("lua/reserve_v1.lua")));
pub static SETTLE: Script =
    Script::new("settle_v1", concat!(include_str!("lua/pacific.lua"), include_str!("lua/settle_v1.lua")));

/// Redis key names. Inputs are validated names (`config::valid_name`, conversation ids), so no
/// caller-controlled byte can form another key.
pub mod keys {
    pub const LAST_USED: &str = "{llmr}:last";
    pub const GLOBAL_STATS: &str = "{llmr}:st:global";
    pub const GLOBAL_BUCKET: &str = "{llmr}:bucket:global";

    pub fn log(group: &str, model: &str) -> String {
        format!("{{llmr}}:w:{group}:{model}")
    }
    pub fn tokens(group: &str, model: &str) -> String {
        format!("{{llmr}}:t:{group}:{model}")
    }
    pub fn day(group: &str, model: &str) -> String {
        format!("{{llmr}}:d:{group}:{model}")
    }
    pub fn cooldown(group: &str, model: &str) -> String {
        format!("{{llmr}}:cd:{group}:{model}")
    }
    pub fn disabled(key_id: &str) -> String {
        format!("{{llmr}}:dis:{key_id}")
    }
    pub fn key_stats(key_id: &str) -> String {
        format!("{{llmr}}:st:k:{key_id}")
    }
    pub fn client_stats(client: &str) -> String {
        format!("{{llmr}}:st:c:{client}")
    }
    pub fn client_bucket(client: &str) -> String {
        format!("{{llmr}}:bucket:c:{client}")
    }
    pub fn conv_meta(id: &str) -> String {
        format!("{{llmr}}:conv:{id}")
    }
    pub fn conv_turns(id: &str) -> String {
        format!("{{llmr}}:conv:{id}:turns")
    }
    pub fn conv_lock(id: &str) -> String {
        format!("{{llmr}}:conv:{id}:lock")
    }
    pub fn client_convs(client: &str) -> String {
        format!("{{llmr}}:convs:{client}")
    }
}

/// A token bucket checked in the reservation (per client, global).
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
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
}

pub struct ReserveSpec<'a> {
    pub rid: String,
    pub est: u64,
    pub window_ms: u64,
    pub cfg: String,
    pub buckets: Vec<Bucket>,
    pub conv: Option<ConvLock>,
    pub candidates: Vec<&'a KeyConfig>,
    /// The request's model; candidates of other models are skipped by the script.
    pub model: Option<String>,
}

pub fn reserve_call(spec: &ReserveSpec) -> (Vec<String>, Vec<String>) {
    let mut k = vec![keys::LAST_USED.to_string()];
    for b in &spec.buckets {
        k.push(b.key.clone());
    }
    if let Some(c) = &spec.conv {
        k.push(keys::conv_meta(&c.id));
        k.push(keys::conv_turns(&c.id));
        k.push(keys::conv_lock(&c.id));
    }
    for c in &spec.candidates {
        k.push(keys::log(&c.quota_group, &c.model));
        k.push(keys::tokens(&c.quota_group, &c.model));
        k.push(keys::day(&c.quota_group, &c.model));
        k.push(keys::cooldown(&c.quota_group, &c.model));
        k.push(keys::disabled(&c.key_id));
    }
    let arg = json!({
        "rid": spec.rid,
        "est": spec.est,
        "window_ms": spec.window_ms,
        "cfg": spec.cfg,
        "buckets": spec.buckets.iter().map(|b| json!({"rate": b.rate_per_min, "burst": b.burst, "name": b.name})).collect::<Vec<_>>(),
        "conv": spec.conv.as_ref().map(|c| json!({"owner": c.owner, "lock_id": c.lock_id, "lock_ms": c.lock_ms, "pick_model": c.pick_model})),
        "model": spec.model,
        "cands": spec.candidates.iter().map(|c| json!({"k": c.key_id, "m": c.model, "rpm": c.rpm, "tpm": c.tpm, "rpd": c.rpd, "w": c.weight})).collect::<Vec<_>>(),
    });
    (k, vec![arg.to_string()])
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    Reserved {
        key_id: String,
        model: Option<String>,
        rid: String,
        now: u64,
        day: i64,
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

fn protocol(msg: &str) -> StoreError {
    StoreError::Protocol(format!("reserve_v1: {msg}"))
}

pub fn parse_reserve(v: &Value) -> Result<Reservation, StoreError> {
    let s = v.as_str().ok_or_else(|| protocol("expected a JSON string"))?;
    let r: Value = serde_json::from_str(s).map_err(|_| protocol("bad JSON"))?;
    let now = r["now"].as_f64().unwrap_or(0.0) as u64;
    if let Some(c) = r["conv"].as_str() {
        return Ok(if c == "busy" { Reservation::ConversationBusy } else { Reservation::ConversationNotFound });
    }
    if r["ok"].as_i64() == Some(1) {
        // cjson encodes an empty table as `{}`, so an empty history may come as an object.
        let history = r["history"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        return Ok(Reservation::Reserved {
            key_id: r["key"].as_str().ok_or_else(|| protocol("no key"))?.to_string(),
            model: r["model"].as_str().map(str::to_string),
            rid: r["rid"].as_str().ok_or_else(|| protocol("no rid"))?.to_string(),
            now,
            day: r["day"].as_f64().unwrap_or(0.0) as i64,
            history,
            system: r["system"].as_str().map(str::to_string),
        });
    }
    let limit = r["limit"].as_str().unwrap_or("disabled");
    if limit == "too_large" {
        return Ok(Reservation::PromptTooLarge);
    }
    if limit == "no_candidates" {
        return Ok(Reservation::NoCandidates);
    }
    let bucket = r["bucket_limit"].as_f64().map(|l| (l as u64, r["bucket_remaining"].as_f64().unwrap_or(0.0) as u64));
    Ok(Reservation::Refused {
        limit: LimitKind::parse(limit).ok_or_else(|| protocol("unknown limit"))?,
        retry_at: r["retry_at"].as_f64().map(|x| x as u64),
        now,
        bucket,
    })
}

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

pub fn settle_call(s: &SettleSpec) -> (Vec<String>, Vec<String>) {
    let k = s.key;
    let mut keys = vec![
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
        keys.push(keys::conv_meta(&c.id));
        keys.push(keys::conv_turns(&c.id));
        keys.push(keys::conv_lock(&c.id));
    }
    let cooldown = s.cooldown.as_ref().map(|c| match c {
        CooldownSpec::Delay { ms, reason } => {
            json!({"kind": "delay", "delay_ms": ms, "reason": reason})
        }
        CooldownSpec::UntilPacificMidnight { reason } => json!({"kind": "day", "reason": reason}),
        CooldownSpec::Unknown { reason } => json!({"kind": "unknown", "reason": reason}),
    });
    let arg = json!({
        "rid": s.rid,
        "key": k.key_id,
        "day": s.day,
        "outcome": s.outcome,
        "release": s.release,
        "input": s.input,
        "output": s.output,
        "thoughts": s.thoughts,
        "cooldown": cooldown,
        "disable": s.disable.as_ref().map(|(reason, cfg)| json!({"reason": reason, "cfg": cfg})),
        "conv": s.conv.as_ref().filter(|c| !c.turns.is_empty()).map(|c| json!({"turns": c.turns, "ttl_s": c.ttl_s, "tokens": c.tokens, "est": c.est})),
        "lock_id": s.conv.as_ref().map(|c| c.lock_id.clone()),
    });
    (keys, vec![arg.to_string()])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub now: u64,
    pub cooldown_until: Option<u64>,
    pub message_count: Option<u64>,
}

pub fn parse_settle(v: &Value) -> Result<Settled, StoreError> {
    let s = v.as_str().ok_or_else(|| StoreError::Protocol("settle_v1: expected a JSON string".into()))?;
    let r: Value = serde_json::from_str(s).map_err(|_| StoreError::Protocol("settle_v1: bad JSON".into()))?;
    Ok(Settled {
        now: r["now"].as_f64().unwrap_or(0.0) as u64,
        cooldown_until: r["cooldown_until"].as_f64().map(|x| x as u64),
        message_count: r["message_count"].as_f64().map(|x| x as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_call_shares_one_hash_tag() {
        let k = KeyConfig {
            key_id: "a".into(),
            model: "m".into(),
            provider: "gemini".into(),
            rpm: 1,
            tpm: 1,
            rpd: 1,
            active: true,
            quota_group: "g".into(),
            weight: 1.0,
        };
        let spec = ReserveSpec {
            rid: "r".into(),
            est: 1,
            window_ms: 60000,
            cfg: "c".into(),
            buckets: vec![Bucket { key: keys::client_bucket("x"), name: "client", rate_per_min: 1, burst: 1 }],
            conv: Some(ConvLock {
                id: "abc".into(),
                owner: "x".into(),
                lock_id: "r".into(),
                lock_ms: 1,
                pick_model: false,
            }),
            candidates: vec![&k, &k],
            model: Some("m".into()),
        };
        let (ks, args) = reserve_call(&spec);
        assert_eq!(ks.len(), 1 + 1 + 3 + 10);
        assert!(ks.iter().all(|k| k.starts_with("{llmr}:")));
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(a["cands"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn parses_reserve_answers() {
        let ok = json!(r#"{"ok":1,"key":"a","rid":"r","now":1795899497469,"day":20785,"history":{}}"#);
        assert!(
            matches!(parse_reserve(&ok).unwrap(), Reservation::Reserved { ref key_id, now: 1795899497469, .. } if key_id == "a")
        );
        let refused = json!(r#"{"ok":0,"limit":"rpm","retry_at":1795899503469,"now":1795899497484}"#);
        assert_eq!(
            parse_reserve(&refused).unwrap(),
            Reservation::Refused {
                limit: LimitKind::Rpm,
                retry_at: Some(1795899503469),
                now: 1795899497484,
                bucket: None
            }
        );
        assert_eq!(parse_reserve(&json!(r#"{"ok":0,"conv":"busy","now":1}"#)).unwrap(), Reservation::ConversationBusy);
        assert!(parse_reserve(&json!(5)).is_err());
    }
}
