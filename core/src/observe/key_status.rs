//! The one place that says what state a key is in, for every reader outside admission:
//! `/stats` (and `/metrics`), the key counts of `/health` and the `available` flag of the model
//! lists. Admission itself (`reserve_v1.lua`) applies the same rules atomically in Redis; this
//! module mirrors its order (disabled, then cooldown, then rpd, then rpm) so that a key shown
//! as usable is one `reserve_v1` would consider.
//!
//! Before this existed the rules were written out three times and drifted: the model lists
//! ignored the configuration fingerprint (a key disabled under an old configuration looked
//! disabled forever) and used the isolate's clock. Every input here is a raw Redis answer plus
//! a [`RedisNow`], which can only be made from Redis `TIME`, so readers cannot disagree with
//! each other or with `reserve_v1` about time.

use crate::config::KeyConfig;
use crate::store::upstash::StoreError;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One hash read with HGETALL.
pub type Hash = BTreeMap<String, String>;

/// A hash from an HGETALL answer: a flat `[field, value, ...]` list of strings. Lua's cjson
/// encodes an empty table as `{}`, so an empty object is accepted as an empty hash; anything
/// else is not an HGETALL answer.
pub fn hash_from_value(v: &Value) -> Result<Hash, String> {
    match v {
        Value::Array(a) => {
            if a.len() % 2 != 0 {
                return Err(format!("HGETALL list of odd length {}", a.len()));
            }
            let mut h = Hash::new();
            for pair in a.chunks(2) {
                match (&pair[0], &pair[1]) {
                    (Value::String(k), Value::String(v)) => {
                        h.insert(k.clone(), v.clone());
                    }
                    _ => return Err("HGETALL list holds a non-string".into()),
                }
            }
            Ok(h)
        }
        Value::Object(m) if m.is_empty() => Ok(Hash::new()),
        other => Err(format!("expected an HGETALL list, got {other}")),
    }
}

/// A numeric hash field as whole ms or a count; absent or unreadable reads as 0, which is
/// what `reserve_v1` does with `tonumber(...) or 0`.
pub fn hash_u64(h: &Hash, name: &str) -> u64 {
    h.get(name).and_then(|v| v.parse::<f64>().ok()).map(|f| f.max(0.0) as u64).unwrap_or(0)
}

/// Redis `TIME` in ms and the US-Pacific day it falls in. There is deliberately no constructor
/// from a caller's clock: isolates' clocks differ from each other and from the one
/// `reserve_v1` admits by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisNow {
    ms: u64,
    pacific_day: i64,
}

impl RedisNow {
    /// From the answer to a `TIME` command: `["seconds", "microseconds"]`, rounded down to ms as
    /// `redis_now_ms` in `pacific.lua` does.
    pub fn from_time_answer(v: &Value) -> Result<RedisNow, StoreError> {
        let bad = || StoreError::Protocol(format!("TIME: expected [seconds, microseconds], got {v}"));
        let part = |i: usize| -> Result<u64, StoreError> {
            let p = v.get(i).ok_or_else(bad)?;
            p.as_str().and_then(|s| s.parse().ok()).or_else(|| p.as_u64()).ok_or_else(bad)
        };
        let ms = part(0)? * 1000 + part(1)? / 1000;
        Ok(RedisNow { ms, pacific_day: crate::quota::pacific_day(ms as i64).0 })
    }

    /// `now` and `day` as a script computed them from Redis `TIME` (`stats_v1`).
    pub(crate) fn from_script(ms: u64, pacific_day: i64) -> RedisNow {
        RedisNow { ms, pacific_day }
    }

    pub fn ms(&self) -> u64 {
        self.ms
    }

    pub fn pacific_day(&self) -> i64 {
        self.pacific_day
    }
}

/// How a reader learnt how full a quota group's rolling window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowReading {
    /// The number of live admissions (`stats_v1` counts them inside Redis).
    Live(u64),
    /// The admission time of the rpm-th newest log entry (`None`: fewer than rpm entries). A
    /// plain pipeline cannot put Redis `TIME` into a `ZCOUNT` bound, but the window is full
    /// exactly when that entry is still live, so one `ZRANGE log -rpm -rpm WITHSCORES` decides it.
    RpmthNewest { admitted_at: Option<u64>, window_ms: u64 },
}

/// What a reader knows of a quota group's usage (`None` in [`KeyState`] when it did not read it,
/// as `/health` does not: it then cannot tell a full key from an available one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReading {
    pub window: WindowReading,
    /// The `day` field of the group's day hash (the Pacific day its count belongs to).
    pub day: Option<i64>,
    pub day_count: u64,
}

/// Requests of the group today: a count stored for an earlier day is 0, as in `reserve_v1`.
pub fn day_count_today(day: Option<i64>, day_count: u64, now: RedisNow) -> u64 {
    if day == Some(now.pacific_day) {
        day_count
    } else {
        0
    }
}

/// The raw Redis state of one key.
#[derive(Debug, Clone, Copy)]
pub struct KeyState<'a> {
    /// The key's `dis` hash `{reason, cfg, at}`.
    pub disabled: &'a Hash,
    /// Its quota group's `cd` hash `{until, reason, strikes}`.
    pub cooldown: &'a Hash,
    pub usage: Option<QuotaReading>,
}

/// Which limit a full key is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FullLimit {
    Rpm,
    Rpd,
}

/// The state of one key at a Redis instant, in `reserve_v1`'s order of precedence.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyStatus {
    /// `active: false` in keys.json: never used, whatever Redis holds.
    Inactive,
    /// Disabled for the current configuration (an invalid or revoked key); a new configuration
    /// (fingerprint) or an admin `enable` brings it back. `manual`: an operator disabled it
    /// (`admin_v1`), which holds under any fingerprint until enabled.
    Disabled { reason: String, at: Option<u64>, manual: bool },
    /// Its quota group cools down after an upstream 429 until `until` (Redis ms).
    Cooling { until: u64, reason: Option<String> },
    /// Not cooling or disabled, but at its rpm or rpd limit now: it frees by itself.
    Full { limit: FullLimit },
    /// `reserve_v1` would admit a request on it now (tpm permitting).
    Available,
}

impl KeyStatus {
    /// Derives the state from the key's config, its raw Redis state, the current configuration
    /// fingerprint and Redis time.
    pub fn derive(key: &KeyConfig, state: &KeyState, fingerprint: &str, now: RedisNow) -> KeyStatus {
        if !key.active {
            return KeyStatus::Inactive;
        }
        // A mark left under another fingerprint is stale: the config was edited or secrets
        // rotated since, which is exactly what re-enables a key in `reserve_v1`.
        // An operator's mark (`manual`) holds under any fingerprint, as in `reserve_v1`.
        let manual = state.disabled.contains_key("manual");
        if manual || state.disabled.get("cfg").is_some_and(|cfg| cfg == fingerprint) {
            return KeyStatus::Disabled {
                reason: state.disabled.get("reason").cloned().unwrap_or_default(),
                at: Some(hash_u64(state.disabled, "at")).filter(|at| *at > 0),
                manual,
            };
        }
        let until = hash_u64(state.cooldown, "until");
        if until > now.ms {
            return KeyStatus::Cooling { until, reason: state.cooldown.get("reason").cloned() };
        }
        if let Some(u) = &state.usage {
            if day_count_today(u.day, u.day_count, now) >= key.rpd as u64 {
                return KeyStatus::Full { limit: FullLimit::Rpd };
            }
            let rpm_full = match u.window {
                WindowReading::Live(n) => n >= key.rpm as u64,
                // Live means admitted at t with t > now - window, as in `reserve_v1`'s trim.
                WindowReading::RpmthNewest { admitted_at, window_ms } => {
                    admitted_at.is_some_and(|t| t > now.ms.saturating_sub(window_ms))
                }
            };
            if rpm_full {
                return KeyStatus::Full { limit: FullLimit::Rpm };
            }
        }
        KeyStatus::Available
    }

    /// The `/stats` status. Schema v1 has four: a full key is `available` there, because it
    /// is healthy and frees by itself, and `/stats` shows its usage against the limits anyway.
    pub fn label(&self) -> &'static str {
        match self {
            KeyStatus::Inactive => "inactive",
            KeyStatus::Disabled { .. } => "disabled",
            KeyStatus::Cooling { .. } => "cooling",
            KeyStatus::Full { .. } | KeyStatus::Available => "available",
        }
    }

    /// Whether a request could be admitted on this key now: what the model lists call
    /// `available`.
    pub fn has_room(&self) -> bool {
        matches!(self, KeyStatus::Available)
    }
}

/// Keys counted by [`KeyStatus::label`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KeyCounts {
    pub total: u64,
    /// Active in keys.json, not cooling and not disabled (it may be at its rpm or rpd limit).
    pub available: u64,
    pub cooling: u64,
    pub disabled: u64,
    pub inactive: u64,
}

impl KeyCounts {
    pub fn count(&mut self, status: &KeyStatus) {
        self.total += 1;
        // No `_` arm: a new state must be placed in the counts on purpose.
        match status {
            KeyStatus::Available | KeyStatus::Full { .. } => self.available += 1,
            KeyStatus::Cooling { .. } => self.cooling += 1,
            KeyStatus::Disabled { .. } => self.disabled += 1,
            KeyStatus::Inactive => self.inactive += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_795_899_497_469;
    const WINDOW: u64 = 60_000;

    fn now() -> RedisNow {
        RedisNow::from_time_answer(&json!([(NOW / 1000).to_string(), "469123"])).unwrap()
    }

    fn key(active: bool) -> KeyConfig {
        let p = crate::config::KeyPool::parse(&format!(
            r#"{{"keys":[{{"key_id":"k","model_name":"m","provider":"gemini","rpm":3,"tpm":100,"rpd":10,"active":{active}}}]}}"#
        ))
        .unwrap();
        p.keys[0].clone()
    }

    fn h(pairs: &[(&str, String)]) -> Hash {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn status(active: bool, dis: &Hash, cd: &Hash, usage: Option<QuotaReading>) -> KeyStatus {
        KeyStatus::derive(&key(active), &KeyState { disabled: dis, cooldown: cd, usage }, "fp", now())
    }

    fn live(n: u64) -> Option<QuotaReading> {
        Some(QuotaReading { window: WindowReading::Live(n), day: Some(now().pacific_day()), day_count: 0 })
    }

    #[test]
    fn redis_time_is_rounded_down_to_ms_and_gives_the_pacific_day() {
        let n = now();
        assert_eq!(n.ms(), NOW);
        assert_eq!(n.pacific_day(), crate::quota::pacific_day(NOW as i64).0);
        assert!(RedisNow::from_time_answer(&json!("PONG")).is_err());
        assert!(RedisNow::from_time_answer(&json!(["x", "1"])).is_err());
    }

    #[test]
    fn derivation_table() {
        let none = Hash::new();
        let dis_now = h(&[("reason", "400 API_KEY_INVALID".into()), ("cfg", "fp".into()), ("at", "17".into())]);
        let dis_old = h(&[("reason", "old".into()), ("cfg", "old-fp".into()), ("at", "17".into())]);
        let dis_manual =
            h(&[("manual", "1".into()), ("reason", "maintenance".into()), ("by", "ops".into()), ("at", "18".into())]);
        let cd_future = h(&[("until", (NOW + 1).to_string()), ("reason", "429".into())]);
        let cd_now = h(&[("until", NOW.to_string())]);
        let cd_past = h(&[("until", (NOW - 1).to_string())]);
        let cases: Vec<(&str, KeyStatus, KeyStatus)> = vec![
            ("nothing in Redis", status(true, &none, &none, None), KeyStatus::Available),
            (
                "disabled under the current fingerprint",
                status(true, &dis_now, &none, None),
                KeyStatus::Disabled { reason: "400 API_KEY_INVALID".into(), at: Some(17), manual: false },
            ),
            ("disabled under an old fingerprint", status(true, &dis_old, &none, live(0)), KeyStatus::Available),
            (
                "disabled by an operator, under an old fingerprint too",
                status(true, &dis_manual, &cd_future, None),
                KeyStatus::Disabled { reason: "maintenance".into(), at: Some(18), manual: true },
            ),
            (
                "disabled wins over cooling",
                status(true, &dis_now, &cd_future, None),
                KeyStatus::Disabled { reason: "400 API_KEY_INVALID".into(), at: Some(17), manual: false },
            ),
            (
                "cooldown ends after Redis now",
                status(true, &none, &cd_future, live(0)),
                KeyStatus::Cooling { until: NOW + 1, reason: Some("429".into()) },
            ),
            ("cooldown ends at Redis now", status(true, &none, &cd_now, None), KeyStatus::Available),
            ("cooldown ended", status(true, &none, &cd_past, live(0)), KeyStatus::Available),
            ("inactive wins over everything", status(false, &dis_now, &cd_future, live(9)), KeyStatus::Inactive),
            ("under rpm", status(true, &none, &none, live(2)), KeyStatus::Available),
            ("at rpm", status(true, &none, &none, live(3)), KeyStatus::Full { limit: FullLimit::Rpm }),
            (
                "at rpd today",
                status(
                    true,
                    &none,
                    &none,
                    Some(QuotaReading {
                        window: WindowReading::Live(0),
                        day: Some(now().pacific_day()),
                        day_count: 10,
                    }),
                ),
                KeyStatus::Full { limit: FullLimit::Rpd },
            ),
            (
                "yesterday's day count is 0",
                status(
                    true,
                    &none,
                    &none,
                    Some(QuotaReading {
                        window: WindowReading::Live(0),
                        day: Some(now().pacific_day() - 1),
                        day_count: 10,
                    }),
                ),
                KeyStatus::Available,
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn rpmth_newest_entry_decides_the_window_by_redis_time() {
        let none = Hash::new();
        let at = |t: Option<u64>| {
            status(
                true,
                &none,
                &none,
                Some(QuotaReading {
                    window: WindowReading::RpmthNewest { admitted_at: t, window_ms: WINDOW },
                    day: None,
                    day_count: 0,
                }),
            )
        };
        assert_eq!(at(None), KeyStatus::Available);
        assert_eq!(at(Some(NOW - WINDOW + 1)), KeyStatus::Full { limit: FullLimit::Rpm });
        // Admitted exactly one window ago: trimmed by the next reservation, so not live.
        assert_eq!(at(Some(NOW - WINDOW)), KeyStatus::Available);
    }

    #[test]
    fn labels_and_counts() {
        let mut c = KeyCounts::default();
        for s in [
            KeyStatus::Available,
            KeyStatus::Full { limit: FullLimit::Rpd },
            KeyStatus::Cooling { until: 1, reason: None },
            KeyStatus::Disabled { reason: String::new(), at: None, manual: false },
            KeyStatus::Inactive,
        ] {
            c.count(&s);
        }
        assert_eq!(c, KeyCounts { total: 5, available: 2, cooling: 1, disabled: 1, inactive: 1 });
        assert_eq!(KeyStatus::Full { limit: FullLimit::Rpm }.label(), "available");
        assert!(!KeyStatus::Full { limit: FullLimit::Rpm }.has_room());
        assert!(KeyStatus::Available.has_room());
    }

    #[test]
    fn hgetall_answers() {
        assert_eq!(hash_from_value(&json!({})).unwrap(), Hash::new());
        assert_eq!(hash_from_value(&json!(["a", "1"])).unwrap(), h(&[("a", "1".into())]));
        assert!(hash_from_value(&json!(["a"])).is_err());
        assert!(hash_from_value(&json!({"a": "1"})).is_err());
        assert!(hash_from_value(&json!([1, 2])).is_err());
    }
}
