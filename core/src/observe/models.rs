//! The `available` flag of `/v1/models` and `/v1beta/models`: does each model have a key that
//! could take a request now? One read-only pipeline, decided by [`KeyStatus::derive`] with Redis
//! `TIME`, so the flag agrees with `/stats`, `/health` and admission (`reserve_v1`).
//!
//! The worker only sends [`AvailabilityRead::commands`] and hands the answers back to
//! [`AvailabilityRead::decide`].

use super::key_status::{hash_from_value, KeyState, KeyStatus, QuotaReading, RedisNow, WindowReading};
use crate::config::{KeyConfig, KeyPool};
use crate::store::keys;
use crate::store::upstash::StoreError;
use serde_json::Value;

/// Commands per key read, after the leading `TIME`.
const PER_KEY: usize = 4;

/// The read behind the model lists, for one pool.
#[derive(Debug, Clone)]
pub struct AvailabilityRead {
    window_ms: u64,
    /// Indices into the pool's keys of the keys read: active and with a secret set. Other keys
    /// cannot serve, so their Redis state does not matter.
    keys: Vec<usize>,
    commands: Vec<Vec<String>>,
}

impl AvailabilityRead {
    pub fn new(pool: &KeyPool, window_ms: u64, has_secret: &dyn Fn(&KeyConfig) -> bool) -> AvailabilityRead {
        let keys: Vec<usize> =
            pool.keys.iter().enumerate().filter(|(_, k)| k.active && has_secret(k)).map(|(i, _)| i).collect();
        let mut commands = Vec::with_capacity(1 + PER_KEY * keys.len());
        if !keys.is_empty() {
            commands.push(vec!["TIME".to_string()]);
        }
        for k in keys.iter().map(|&i| &pool.keys[i]) {
            let (g, m) = (&k.quota_group, &k.model);
            // The rpm-th newest admission: the window is full iff it is still live by Redis
            // time (see `WindowReading::RpmthNewest`). `rpm >= 1` is validated config.
            let nth = format!("-{}", k.rpm);
            commands.push(vec!["ZRANGE".into(), keys::log(g, m), nth.clone(), nth, "WITHSCORES".into()]);
            commands.push(vec!["HGETALL".into(), keys::cooldown(g, m)]);
            commands.push(vec!["HMGET".into(), keys::day(g, m), "day".into(), "count".into()]);
            commands.push(vec!["HGETALL".into(), keys::disabled(&k.key_id)]);
        }
        AvailabilityRead { window_ms, keys, commands }
    }

    /// The pipeline to send; empty when no key could serve (then no round trip is needed).
    pub fn commands(&self) -> &[Vec<String>] {
        &self.commands
    }

    /// Each key read and its state, from the pipeline's answers.
    pub fn statuses(
        &self,
        pool: &KeyPool,
        answers: &[Result<Value, StoreError>],
        fingerprint: &str,
    ) -> Result<Vec<(usize, KeyStatus)>, StoreError> {
        if self.keys.is_empty() {
            return Ok(Vec::new());
        }
        let protocol = |m: String| StoreError::Protocol(format!("model availability: {m}"));
        if answers.len() != self.commands.len() {
            return Err(protocol(format!("{} answers to {} commands", answers.len(), self.commands.len())));
        }
        let answer = |i: usize| answers[i].as_ref().map_err(Clone::clone);
        let now = RedisNow::from_time_answer(answer(0)?)?;
        let mut out = Vec::with_capacity(self.keys.len());
        for (n, &ki) in self.keys.iter().enumerate() {
            let at = 1 + PER_KEY * n;
            let admitted_at = match answer(at)? {
                Value::Array(a) if a.is_empty() => None,
                Value::Array(a) if a.len() == 2 => {
                    Some(number(&a[1]).ok_or_else(|| protocol(format!("score {}", a[1])))?)
                }
                other => return Err(protocol(format!("ZRANGE answered {other}"))),
            };
            let cooldown = hash_from_value(answer(at + 1)?).map_err(protocol)?;
            let day = answer(at + 2)?;
            let disabled = hash_from_value(answer(at + 3)?).map_err(protocol)?;
            let state = KeyState {
                disabled: &disabled,
                cooldown: &cooldown,
                usage: Some(QuotaReading {
                    window: WindowReading::RpmthNewest { admitted_at, window_ms: self.window_ms },
                    day: day.get(0).and_then(number).map(|d| d as i64),
                    day_count: day.get(1).and_then(number).unwrap_or(0),
                }),
            };
            out.push((ki, KeyStatus::derive(&pool.keys[ki], &state, fingerprint, now)));
        }
        Ok(out)
    }

    /// Every model of the pool (sorted) and whether one of its keys has room now.
    pub fn decide(
        &self,
        pool: &KeyPool,
        answers: &[Result<Value, StoreError>],
        fingerprint: &str,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let statuses = self.statuses(pool, answers, fingerprint)?;
        Ok(pool
            .models()
            .into_iter()
            .map(|m| {
                let room = statuses.iter().any(|(i, s)| pool.keys[*i].model == m && s.has_room());
                (m, room)
            })
            .collect())
    }
}

/// A Redis number answer (a string, or a JSON number from some clients), as whole ms or a count.
fn number(v: &Value) -> Option<u64> {
    let f = match v {
        Value::String(s) => s.parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    Some(f.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::stats_v1::tests::{hgetall, pool, NOW};
    use serde_json::json;

    const WINDOW: u64 = 61_000;

    fn time(ms: u64) -> Result<Value, StoreError> {
        Ok(json!([(ms / 1000).to_string(), ((ms % 1000) * 1000).to_string()]))
    }

    #[test]
    fn reads_time_then_four_commands_per_serving_key() {
        let p = pool();
        let r = AvailabilityRead::new(&p, WINDOW, &|k| k.key_id != "f2");
        // p1 is inactive and f2 has no secret: only f1 and f3 are read.
        assert_eq!(r.commands().len(), 1 + 4 * 2);
        assert_eq!(r.commands()[0], ["TIME"]);
        assert_eq!(r.commands()[1], ["ZRANGE", "{llmr}:w:p:flash", "-10", "-10", "WITHSCORES"]);
        assert_eq!(r.commands()[3], ["HMGET", "{llmr}:d:p:flash", "day", "count"]);
        assert_eq!(r.commands()[4], ["HGETALL", "{llmr}:dis:f1"]);
        let none = AvailabilityRead::new(&p, WINDOW, &|_| false);
        assert!(none.commands().is_empty());
        assert_eq!(none.decide(&p, &[], "fp").unwrap(), vec![("flash".into(), false), ("pro".into(), false)]);
    }

    /// f1 alone can serve; its group's 10th newest admission was at `nth`, its cooldown ends at
    /// `until` and its disabled mark is for `cfg`.
    fn one_key(
        now: u64,
        nth: Option<u64>,
        until: u64,
        cfg: &str,
    ) -> (AvailabilityRead, Vec<Result<Value, StoreError>>) {
        let r = AvailabilityRead::new(&pool(), WINDOW, &|k| k.key_id == "f1");
        let z = match nth {
            Some(t) => json!(["rid", t.to_string()]),
            None => json!([]),
        };
        let answers = vec![
            time(now),
            Ok(z),
            Ok(hgetall(&[("until", &until.to_string())])),
            Ok(json!([null, null])),
            Ok(hgetall(&[("reason", "400"), ("cfg", cfg), ("at", "1")])),
        ];
        (r, answers)
    }

    fn flash(r: &AvailabilityRead, answers: &[Result<Value, StoreError>], fp: &str) -> bool {
        r.decide(&pool(), answers, fp).unwrap()[0].1
    }

    #[test]
    fn a_disabled_mark_counts_only_under_the_current_fingerprint() {
        let (r, a) = one_key(NOW, None, 0, "fp");
        assert!(!flash(&r, &a, "fp"));
        // Redeployed with another configuration: the key is back, as in reserve_v1.
        assert!(flash(&r, &a, "new-fp"));
    }

    #[test]
    fn availability_uses_redis_time_not_the_callers_clock() {
        // There is no way to pass a caller's clock: only the TIME answer moves the verdicts.
        let (r, a) = one_key(NOW, None, NOW + 1, "old");
        assert!(!flash(&r, &a, "fp"), "cooling until after Redis now");
        let (r, a) = one_key(NOW + 1, None, NOW + 1, "old");
        assert!(flash(&r, &a, "fp"), "cooldown over by Redis time");
        let (r, a) = one_key(NOW, Some(NOW - WINDOW + 1), 0, "old");
        assert!(!flash(&r, &a, "fp"), "10th newest admission still in the window: at rpm");
        let (r, a) = one_key(NOW + 1, Some(NOW - WINDOW + 1), 0, "old");
        assert!(flash(&r, &a, "fp"), "it left the window by Redis time");
    }

    #[test]
    fn at_rpd_today_is_not_available_but_yesterdays_count_is_zero() {
        let (r, mut a) = one_key(NOW, None, 0, "old");
        let today = crate::quota::pacific_day(NOW as i64).0;
        a[3] = Ok(json!([today.to_string(), "100"]));
        assert!(!flash(&r, &a, "fp"));
        a[3] = Ok(json!([(today - 1).to_string(), "100"]));
        assert!(flash(&r, &a, "fp"));
    }

    #[test]
    fn failed_or_malformed_answers_are_errors_not_guesses() {
        let (r, mut a) = one_key(NOW, None, 0, "old");
        a[0] = Ok(json!("PONG"));
        assert!(r.decide(&pool(), &a, "fp").is_err());
        let (r, mut a) = one_key(NOW, None, 0, "old");
        a[4] = Err(StoreError::Timeout);
        assert_eq!(r.decide(&pool(), &a, "fp"), Err(StoreError::Timeout));
        let (r, a) = one_key(NOW, None, 0, "old");
        assert!(r.decide(&pool(), &a[..3], "fp").is_err());
    }
}
