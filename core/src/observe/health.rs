//! `/health`: the key pool's state, read in the same pipeline as the Redis probe, and the
//! verdict and body built from what was found.

use super::key_status::{hash_from_value, Hash, KeyCounts, KeyState, KeyStatus, RedisNow};
use super::stats_v1::Layout;
use crate::config::KeyPool;
use crate::store::keys;
use crate::store::upstash::StoreError;
use serde_json::{json, Value};

/// The pipeline `/health` sends: PING (the probe), TIME (the clock of the cooldowns), then each
/// quota group's cooldown hash and each key's disabled hash, whole, so that the key states come
/// from [`KeyStatus::derive`] like everywhere else. Read-only.
pub fn health_pipeline(pool: &KeyPool, layout: &Layout) -> Vec<Vec<String>> {
    let mut cmds = vec![vec!["PING".to_string()], vec!["TIME".to_string()]];
    for (g, m) in &layout.groups {
        cmds.push(vec!["HGETALL".into(), keys::cooldown(g, m)]);
    }
    for k in &pool.keys {
        cmds.push(vec!["HGETALL".into(), keys::disabled(&k.key_id)]);
    }
    cmds
}

/// Redis is healthy exactly when PING answered PONG in that pipeline.
pub fn ping_ok(answers: &[Result<Value, StoreError>]) -> Result<(), String> {
    match answers.first() {
        Some(Ok(v)) if v == "PONG" => Ok(()),
        Some(Ok(v)) => Err(format!("unexpected PING answer {v}")),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("empty pipeline answer".into()),
    }
}

/// Key-pool counts from the health pipeline's answers (`None` if any is unusable: a count
/// built on a failed read would be a guess). The window and day counts are not read, so a key
/// at its rpm or rpd limit counts as available, as in `/stats`.
pub fn pool_counts(
    pool: &KeyPool,
    layout: &Layout,
    answers: &[Result<Value, StoreError>],
    fingerprint: &str,
) -> Option<KeyCounts> {
    if answers.len() != 2 + layout.groups.len() + pool.keys.len() {
        return None;
    }
    let now = RedisNow::from_time_answer(answers[1].as_ref().ok()?).ok()?;
    let hashes: Vec<Hash> =
        answers[2..].iter().map(|a| a.as_ref().ok().and_then(|v| hash_from_value(v).ok())).collect::<Option<_>>()?;
    let (cooldowns, disabled) = hashes.split_at(layout.groups.len());
    let mut c = KeyCounts::default();
    for ((k, &g), dis) in pool.keys.iter().zip(&layout.key_group).zip(disabled) {
        let state = KeyState { disabled: dis, cooldown: &cooldowns[g], usage: None };
        c.count(&KeyStatus::derive(k, &state, fingerprint, now));
    }
    Some(c)
}

/// What `/health` found, assembled into its body and status code.
pub struct HealthInput<'a> {
    pub config_errors: Vec<String>,
    /// `Ok(latency_ms)` or the error of the round trip.
    pub redis: Result<u64, String>,
    pub pool: Option<&'a KeyPool>,
    pub counts: Option<KeyCounts>,
    pub enabled: bool,
    pub conversation_ttl_seconds: Option<u64>,
}

/// Serving means: a valid config, Redis answering, the kill switch on and at least one key that
/// is not disabled or inactive (cooling keys come back by themselves).
pub fn health(h: &HealthInput, details: bool) -> (Value, u16) {
    let redis_ok = h.redis.is_ok();
    let has_key = match (&h.counts, h.pool) {
        (Some(c), _) => c.available + c.cooling > 0,
        (None, Some(p)) => p.keys.iter().any(|k| k.active),
        (None, None) => false,
    };
    let healthy = h.config_errors.is_empty() && redis_ok && h.enabled && has_key;
    let status = if healthy { "healthy" } else { "unhealthy" };
    let code = if healthy { 200 } else { 503 };
    if !details {
        return (json!({"status": status}), code);
    }
    let config = if h.config_errors.is_empty() {
        json!({"healthy": true})
    } else {
        json!({"healthy": false, "errors": h.config_errors})
    };
    let redis = match &h.redis {
        Ok(ms) => json!({"healthy": true, "latency_ms": ms}),
        Err(e) => json!({"healthy": false, "error": e}),
    };
    let keys = match h.pool {
        Some(p) => {
            let mut v = json!({"healthy": has_key, "total": p.keys.len(), "models": p.models()});
            match &h.counts {
                Some(c) => {
                    v["active"] = json!(c.available);
                    v["cooling"] = json!(c.cooling);
                    v["disabled"] = json!(c.disabled);
                    v["inactive"] = json!(c.inactive);
                }
                None => {
                    // Without Redis only the configuration is known.
                    v["active"] = Value::Null;
                    v["cooling"] = Value::Null;
                    v["disabled"] = Value::Null;
                    v["inactive"] = json!(p.keys.iter().filter(|k| !k.active).count());
                    v["error"] = json!("key states live in Redis, which did not answer");
                }
            }
            v
        }
        None => json!({"healthy": false, "error": "no valid key pool"}),
    };
    let conversations = match h.conversation_ttl_seconds {
        Some(ttl) => json!({"healthy": redis_ok, "backend": "redis", "ttl_seconds": ttl}),
        None => json!({"healthy": false, "backend": "redis", "error": "settings are invalid"}),
    };
    let body = json!({
        "status": status,
        "router_enabled": h.enabled,
        "components": {
            "config": config,
            "redis": redis,
            "keys": keys,
            "conversations": conversations,
            "kill_switch": {"healthy": h.enabled, "variable": "LLM_MULTI_KEY_ROUTER_ENABLED",
                            "router_enabled": h.enabled},
        },
    });
    (body, code)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observe::stats_v1::tests::{hgetall, pool, NOW};

    /// The health pipeline's answers for the same Redis state as `stats_v1::tests::answer`.
    pub(crate) fn answers() -> Vec<Result<Value, StoreError>> {
        vec![
            Ok(json!("PONG")),
            Ok(json!([(NOW / 1000).to_string(), "469000"])),
            Ok(hgetall(&[("until", &(NOW + 7000).to_string()), ("reason", "429 per-minute"), ("strikes", "1")])),
            Ok(json!([])),
            Ok(hgetall(&[("until", "5")])),
            Ok(json!([])),
            Ok(hgetall(&[("reason", "400 API_KEY_INVALID"), ("cfg", "fp"), ("at", "1795899400000")])),
            Ok(hgetall(&[("reason", "old"), ("cfg", "other-fp"), ("at", "1")])),
            Ok(json!([])),
        ]
    }

    #[test]
    fn pipeline_reads_whole_hashes_after_ping_and_time() {
        let p = pool();
        let cmds = health_pipeline(&p, &Layout::new(&p, &[]));
        assert_eq!(cmds.len(), answers().len());
        assert_eq!(cmds[..2], [vec!["PING".to_string()], vec!["TIME".to_string()]]);
        assert_eq!(cmds[2], ["HGETALL", "{llmr}:cd:p:flash"]);
        assert_eq!(cmds[5], ["HGETALL", "{llmr}:dis:f1"]);
    }

    #[test]
    fn health_pool_counts_and_verdicts() {
        let p = pool();
        let layout = Layout::new(&p, &[]);
        let answers = answers();
        assert!(ping_ok(&answers).is_ok());
        let c = pool_counts(&p, &layout, &answers, "fp").unwrap();
        assert_eq!(c, KeyCounts { total: 4, available: 1, cooling: 1, disabled: 1, inactive: 1 });
        // Under a new fingerprint the disabled mark is stale.
        let c = pool_counts(&p, &layout, &answers, "new-fp").unwrap();
        assert_eq!(c, KeyCounts { total: 4, available: 1, cooling: 2, disabled: 0, inactive: 1 });
        let input = HealthInput {
            config_errors: vec![],
            redis: Ok(3),
            pool: Some(&p),
            counts: Some(c),
            enabled: true,
            conversation_ttl_seconds: Some(86400),
        };
        let (body, code) = health(&input, true);
        assert_eq!(code, 200);
        assert_eq!(body["components"]["keys"]["cooling"], 2);
        assert_eq!(body["components"]["redis"]["latency_ms"], 3);
        assert_eq!(health(&input, false), (json!({"status": "healthy"}), 200));
        // Redis down: unhealthy, with the error, and the counts unknown.
        let down = HealthInput { redis: Err("transport error: refused".into()), counts: None, ..input };
        let (body, code) = health(&down, true);
        assert_eq!(code, 503);
        assert_eq!(body["components"]["redis"], json!({"healthy": false, "error": "transport error: refused"}));
        assert_eq!(body["components"]["keys"]["cooling"], Value::Null);
        assert_eq!(body["components"]["conversations"]["healthy"], false);
        // Kill switch off, or no usable key: not serving.
        let off = HealthInput { redis: Ok(1), enabled: false, ..down };
        assert_eq!(health(&off, true).1, 503);
        let none = HealthInput {
            enabled: true,
            counts: Some(KeyCounts { total: 2, available: 0, cooling: 0, disabled: 2, inactive: 0 }),
            ..off
        };
        assert_eq!(health(&none, false).1, 503);
        assert!(ping_ok(&[Err(StoreError::Timeout)]).is_err());
        assert!(pool_counts(&p, &layout, &answers[..3], "fp").is_none());
    }

    #[test]
    fn a_failed_or_malformed_read_gives_no_counts() {
        let p = pool();
        let layout = Layout::new(&p, &[]);
        let mut a = answers();
        a[6] = Err(StoreError::Redis("WRONGTYPE".into()));
        assert!(pool_counts(&p, &layout, &a, "fp").is_none());
        let mut a = answers();
        a[1] = Ok(json!("not a time"));
        assert!(pool_counts(&p, &layout, &a, "fp").is_none());
    }
}
