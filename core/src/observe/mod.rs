//! Observability in pure Rust: the Redis reads behind `/stats`, `/metrics`, `/health` and the
//! model lists, and how their raw answers become the `/stats` JSON (schema in `docs/stats.md`),
//! the Prometheus text exposition, the key-pool counts of `/health` and the `available` flags.
//!
//! Every figure comes from Redis (counters written by `settle_v1`, windows by `reserve_v1`),
//! with Redis `TIME` as the clock, so any isolate answers the same thing. Every key state comes
//! from [`KeyStatus::derive`], so the readers agree with each other. Nothing here ever sees a
//! secret: only key ids, models, groups, client ids and counters.
//!
//! - [`key_status`]: the one derivation of a key's state, and its inputs.
//! - [`stats_v1`]: the `stats_v1` script call and its typed reply.
//! - [`stats`]: the `/stats` document.
//! - [`prometheus`]: `/metrics`, from the `/stats` document.
//! - [`health`]: the `/health` pipeline, counts and body.
//! - [`models`]: model availability for `/v1/models` and `/v1beta/models`.

pub mod health;
pub mod key_status;
pub mod models;
pub mod prometheus;
pub mod stats;
pub(crate) mod stats_json;
pub mod stats_v1;

pub use health::{health, health_pipeline, ping_ok, pool_counts, HealthInput};
pub use key_status::{FullLimit, Hash, KeyCounts, KeyState, KeyStatus, QuotaReading, RedisNow, WindowReading};
pub use models::AvailabilityRead;
pub use prometheus::{prometheus, METRICS_CONTENT_TYPE};
pub use stats::{
    add_client_budgets, build_stats, ClientBudget, ClientStats, Counts, Disabled, GlobalStats, KeyStats, ModelStats,
    Stats, Totals, Usage, Used, OUTCOMES, SCHEMA_VERSION,
};
pub use stats_v1::{parse_stats, read_stats, stats_call, Layout, Raw, RawGroup, RawKey, STATS};

#[cfg(test)]
mod tests {
    //! The three readers of key state, fed the same Redis state, must agree.

    use super::stats_v1::tests::{hgetall, pool};
    use super::*;
    use crate::store::upstash::StoreError;
    use serde_json::{json, Value};

    const WINDOW: u64 = 60_000;

    /// One Redis state for `stats_v1::tests::pool()`: per quota group (in layout order) its
    /// admission times, stored day and count and cooldown end; per key its disabled fingerprint.
    struct Scenario {
        now: u64,
        admissions: [Vec<u64>; 3],
        day: [(i64, u64); 3],
        until: [u64; 3],
        disabled_cfg: [Option<&'static str>; 4],
    }

    impl Scenario {
        fn today(&self) -> i64 {
            crate::quota::pacific_day(self.now as i64).0
        }
        fn live(&self, g: usize) -> u64 {
            self.admissions[g].iter().filter(|t| **t > self.now - WINDOW).count() as u64
        }
        fn cd(&self, g: usize) -> Value {
            hgetall(&[("until", &self.until[g].to_string()), ("reason", "429")])
        }
        fn dis(&self, k: usize) -> Value {
            match self.disabled_cfg[k] {
                Some(cfg) => hgetall(&[("reason", "400"), ("cfg", cfg), ("at", "1")]),
                None => json!({}),
            }
        }
        fn time(&self) -> Result<Value, StoreError> {
            Ok(json!([(self.now / 1000).to_string(), ((self.now % 1000) * 1000).to_string()]))
        }
        fn stats_reply(&self) -> Value {
            let groups: Vec<Value> = (0..3)
                .map(|g| {
                    json!({"count": self.live(g), "tokens": 0, "day": self.day[g].0,
                                "day_count": self.day[g].1, "cd": self.cd(g)})
                })
                .collect();
            let keys: Vec<Value> = (0..4).map(|k| json!({"dis": self.dis(k), "stats": {}})).collect();
            json!(json!({"now": self.now, "day": self.today(), "last": {}, "global": {}, "groups": groups,
                         "keys": keys, "clients": {}})
            .to_string())
        }
        fn health_answers(&self) -> Vec<Result<Value, StoreError>> {
            let mut a = vec![Ok(json!("PONG")), self.time()];
            a.extend((0..3).map(|g| Ok(self.cd(g))));
            a.extend((0..4).map(|k| Ok(self.dis(k))));
            a
        }
        /// Answers to `AvailabilityRead`'s commands, as Redis would give them.
        fn models_answers(&self, r: &AvailabilityRead, layout: &Layout) -> Vec<Result<Value, StoreError>> {
            let p = pool();
            r.commands()
                .iter()
                .map(|c| {
                    let group =
                        |name: &str| layout.groups.iter().position(|(g, m)| name.ends_with(&format!(":{g}:{m}")));
                    Ok(match c[0].as_str() {
                        "TIME" => return self.time(),
                        "ZRANGE" => {
                            let g = group(&c[1]).unwrap();
                            let rpm: usize = c[2][1..].parse().unwrap();
                            let mut log = self.admissions[g].clone();
                            log.sort();
                            match log.len().checked_sub(rpm) {
                                Some(i) => json!(["rid", log[i].to_string()]),
                                None => json!([]),
                            }
                        }
                        "HMGET" => {
                            let g = group(&c[1]).unwrap();
                            json!([self.day[g].0.to_string(), self.day[g].1.to_string()])
                        }
                        _ if c[1].contains(":cd:") => self.cd(group(&c[1]).unwrap()),
                        _ => self.dis(p.keys.iter().position(|k| c[1].ends_with(&format!(":{}", k.key_id))).unwrap()),
                    })
                })
                .collect()
        }
    }

    fn check(s: &Scenario, fingerprint: &str) {
        let p = pool();
        let layout = Layout::new(&p, &[]);
        let raw = parse_stats(&s.stats_reply(), &layout, 4).unwrap();
        let stats = build_stats(&p, &layout, &raw, fingerprint, WINDOW);
        let counts = pool_counts(&p, &layout, &s.health_answers(), fingerprint).unwrap();
        assert_eq!(counts, stats.global.keys, "/health counts vs /stats");
        let read = AvailabilityRead::new(&p, WINDOW, &|_| true);
        let answers = s.models_answers(&read, &layout);
        let avail = read.decide(&p, &answers, fingerprint).unwrap();
        for (model, available) in avail {
            // /stats' reading of "has room": available and under rpm and rpd.
            let by_stats = stats.keys.iter().any(|k| {
                k.model == model
                    && k.status == "available"
                    && k.usage.rpm.used < k.usage.rpm.limit
                    && k.usage.rpd.used < k.usage.rpd.limit
            });
            assert_eq!(available, by_stats, "model {model} under {fingerprint}");
        }
        // Key by key, the states themselves agree (the health and models reads do not see
        // usage or every key, so compare labels where both exist).
        for (i, st) in read.statuses(&p, &answers, fingerprint).unwrap() {
            assert_eq!(st.label(), stats.keys[i].status, "key {}", p.keys[i].key_id);
        }
    }

    #[test]
    fn stats_health_and_availability_agree_on_the_same_redis_state() {
        let now = 1_795_899_497_469;
        let today = crate::quota::pacific_day(now as i64).0;
        let base = Scenario {
            now,
            admissions: [vec![now - 1000, now - 2000], vec![now - 10, now - 20], vec![]],
            day: [(today, 2), (today, 2), (today - 1, 30)],
            until: [0, 0, 0],
            disabled_cfg: [None, None, None, None],
        };
        let scenarios = vec![
            Scenario { ..base },
            // f1 disabled now, f2's old mark; group p cooling.
            Scenario {
                disabled_cfg: [Some("fp"), Some("old"), None, None],
                until: [now + 1, 0, 0],
                admissions: [vec![], vec![], vec![]],
                day: [(today, 0), (today, 0), (today, 0)],
                now,
            },
            // f3's group at rpm (5 live), p at rpd (100 today); one admission just out of window.
            Scenario {
                admissions: [vec![now - WINDOW], (1..=5).map(|i| now - i).collect(), vec![]],
                day: [(today, 100), (today, 5), (today, 0)],
                until: [now - 1, 0, 0],
                disabled_cfg: [None, None, None, None],
                now,
            },
            // f3 at rpd, p cooling ended exactly now, f2 disabled for this configuration.
            Scenario {
                admissions: [(0..12).map(|i| now - WINDOW - i).collect(), vec![], vec![]],
                day: [(today - 1, 100), (today, 50), (today, 0)],
                until: [now, 0, 0],
                disabled_cfg: [None, Some("fp"), None, Some("fp")],
                now,
            },
        ];
        for s in &scenarios {
            for fp in ["fp", "old", "new"] {
                check(s, fp);
            }
        }
    }
}
