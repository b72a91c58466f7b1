//! The `/stats` document (schema in `docs/stats.md`), built from a [`Raw`] `stats_v1` reply.
//! Each key's status comes from [`KeyStatus::derive`], the same derivation `/health` and the
//! model lists use.

use super::key_status::{day_count_today, hash_u64, Hash, KeyCounts, KeyState, KeyStatus, QuotaReading, WindowReading};
use super::stats_v1::{Layout, Raw};
use crate::config::KeyPool;
use serde::Serialize;

/// Version of the `/stats` JSON. Bump it on any change that is not a pure addition.
pub const SCHEMA_VERSION: u32 = 1;

/// Outcome buckets written by `settle_v1`, in display order. `success` is not a failure.
pub const OUTCOMES: [&str; 8] =
    ["success", "rate_limited", "transient", "timeout", "transport", "key_rejected", "client_error", "not_sent"];

/// Counts by name, kept sorted by name and written as a JSON object: a sorted list rather than a
/// `BTreeMap<String, u64>`, whose insertion code would be compiled for this one use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts(Vec<(String, u64)>);

impl Counts {
    /// Adds `v` to the count of `name` (a new name starts at 0).
    pub fn add(&mut self, name: &str, v: u64) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) => self.0[i].1 += v,
            Err(i) => self.0.insert(i, (name.to_owned(), v)),
        }
    }

    /// Sets the count of `name`.
    pub fn set(&mut self, name: &str, v: u64) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => self.0.insert(i, (name.to_owned(), v)),
        }
    }

    /// Name and count, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, v)| v).sum()
    }
}

/// The count of a name; panics for a name never counted, like a map's index.
impl std::ops::Index<&str> for Counts {
    type Output = u64;
    fn index(&self, name: &str) -> &u64 {
        &self.0[self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).expect("a counted name")].1
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub successes: u64,
    /// Attempts by failure kind: every outcome bucket but `success`, zeros included.
    pub failures: Counts,
    pub failures_total: u64,
    /// Upstream 429 answers (the `rate_limited` outcome).
    pub upstream_429s: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tokens_thinking: u64,
}

impl Totals {
    pub fn from_hash(h: &Hash) -> Totals {
        let mut failures = Counts::default();
        for o in OUTCOMES.iter().filter(|o| **o != "success") {
            failures.set(o, 0);
        }
        for (k, _) in h.iter() {
            if let Some(o) = k.strip_prefix("outcome:") {
                if o != "success" {
                    failures.set(o, hash_u64(h, k));
                }
            }
        }
        Totals {
            requests: hash_u64(h, "requests"),
            successes: hash_u64(h, "outcome:success"),
            failures_total: failures.total(),
            upstream_429s: hash_u64(h, "outcome:rate_limited"),
            failures,
            tokens_in: hash_u64(h, "tokens_in"),
            tokens_out: hash_u64(h, "tokens_out"),
            tokens_thinking: hash_u64(h, "tokens_thinking"),
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.successes += o.successes;
        for (k, v) in o.failures.iter() {
            self.failures.add(k, v);
        }
        self.failures_total += o.failures_total;
        self.upstream_429s += o.upstream_429s;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
        self.tokens_thinking += o.tokens_thinking;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Used {
    pub used: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub rpm: Used,
    pub tpm: Used,
    pub rpd: Used,
}

impl Usage {
    fn add(&mut self, o: &Usage) {
        for (a, b) in [(&mut self.rpm, &o.rpm), (&mut self.tpm, &o.tpm), (&mut self.rpd, &o.rpd)] {
            a.used += b.used;
            a.limit += b.limit;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disabled {
    pub reason: String,
    pub at: Option<u64>,
    /// Disabled by an operator (`/v1/admin/keys/{id}/disable`), not by Google's answer.
    pub manual: bool,
    /// The operator's client id, for a manual mark.
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyStats {
    pub key_id: String,
    pub model: String,
    pub quota_group: String,
    /// `active` in keys.json.
    pub active: bool,
    /// [`KeyStatus::label`]: "available", "cooling", "disabled" or "inactive" (not active in
    /// keys.json). A key at its rpm or rpd limit is "available" here; `usage` shows it is full.
    pub status: &'static str,
    /// The key's quota group's live usage against this key's limits.
    pub usage: Usage,
    pub cooldown_until: Option<u64>,
    pub cooldown_reason: Option<String>,
    pub disabled: Option<Disabled>,
    pub totals: Totals,
    pub last_used: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStats {
    pub model: String,
    pub keys: KeyCounts,
    pub usage: Usage,
    pub totals: Totals,
    pub last_used: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientStats {
    pub client_id: String,
    pub totals: Totals,
    pub last_used: Option<u64>,
    /// The client's token budget (CLIENTS_JSON `daily_tokens`, `tpm`) and its use; `null` for a
    /// client without one. Filled by [`add_client_budgets`].
    pub budget: Option<ClientBudget>,
}

/// A client's budget use against its limits: tokens this Pacific day, tokens in the rolling
/// window (each `null` when that limit is not set).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientBudget {
    pub daily_tokens: Option<Used>,
    pub tpm: Option<Used>,
}

/// Adds each client's budget use (`stats_v1`'s `budgets`) against its limits, given per client
/// in `layout.clients` order as `(daily_tokens, tpm)`.
pub fn add_client_budgets(s: &mut Stats, raw: &Raw, limits: &[(Option<u64>, Option<u64>)]) {
    let today = raw.day;
    for ((c, b), (daily, tpm)) in s.clients.iter_mut().zip(&raw.budgets).zip(limits) {
        if daily.is_none() && tpm.is_none() {
            continue;
        }
        let used_today = if b.day == Some(today) { b.used } else { 0 };
        c.budget = Some(ClientBudget {
            daily_tokens: daily.map(|limit| Used { used: used_today, limit }),
            tpm: tpm.map(|limit| Used { used: b.minute, limit }),
        });
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalStats {
    pub keys: KeyCounts,
    pub usage: Usage,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub schema_version: u32,
    /// Redis `TIME` of the read, in ms: the clock every other figure is relative to.
    pub generated_at: u64,
    pub window_ms: u64,
    pub pacific_day: i64,
    pub keys: Vec<KeyStats>,
    pub models: Vec<ModelStats>,
    pub clients: Vec<ClientStats>,
    pub global: GlobalStats,
    /// The newest admin changes (`/v1/admin/...`), newest first: `{at, by, action, target,
    /// reason, changed}` as `admin_v1` recorded them.
    pub audit: Vec<serde_json::Value>,
}

fn opt_ms(h: &Hash, name: &str) -> Option<u64> {
    Some(hash_u64(h, name)).filter(|v| *v > 0)
}

/// Builds the `/stats` document. `fingerprint` is the current configuration fingerprint: a
/// disabled mark left for another configuration does not count (as in `reserve_v1`).
pub fn build_stats(pool: &KeyPool, layout: &Layout, raw: &Raw, fingerprint: &str, window_ms: u64) -> Stats {
    let now = raw.redis_now();
    // A group's limits (config validation makes the keys of one group agree on them).
    let mut group_limits = vec![Usage::default(); layout.groups.len()];
    for (k, &g) in pool.keys.iter().zip(&layout.key_group) {
        let l = &mut group_limits[g];
        l.rpm.limit = l.rpm.limit.max(k.rpm as u64);
        l.tpm.limit = l.tpm.limit.max(k.tpm as u64);
        l.rpd.limit = l.rpd.limit.max(k.rpd as u64);
    }
    let group_used: Vec<Usage> = raw
        .groups
        .iter()
        .zip(&group_limits)
        .map(|(g, l)| {
            let mut u = *l;
            u.rpm.used = g.count;
            u.tpm.used = g.tokens;
            u.rpd.used = day_count_today(g.day, g.day_count, now);
            u
        })
        .collect();
    let mut keys_out = Vec::with_capacity(pool.keys.len());
    let mut statuses = Vec::with_capacity(pool.keys.len());
    for ((k, &g), rk) in pool.keys.iter().zip(&layout.key_group).zip(&raw.keys) {
        let group = &raw.groups[g];
        let state = KeyState {
            disabled: &rk.disabled,
            cooldown: &group.cooldown,
            usage: Some(QuotaReading {
                window: WindowReading::Live(group.count),
                day: group.day,
                day_count: group.day_count,
            }),
        };
        let status = KeyStatus::derive(k, &state, fingerprint, now);
        let mut usage = group_used[g];
        usage.rpm.limit = k.rpm as u64;
        usage.tpm.limit = k.tpm as u64;
        usage.rpd.limit = k.rpd as u64;
        let last_used = opt_ms(&rk.stats, "last_used").max(opt_ms(&raw.last, &k.key_id));
        let (cooldown_until, cooldown_reason) = match &status {
            KeyStatus::Cooling { until, reason } => (Some(*until), reason.clone()),
            _ => (None, None),
        };
        keys_out.push(KeyStats {
            key_id: k.key_id.clone(),
            model: k.model.clone(),
            quota_group: k.quota_group.clone(),
            active: k.active,
            status: status.label(),
            usage,
            cooldown_until,
            cooldown_reason,
            disabled: match &status {
                KeyStatus::Disabled { reason, at, manual } => Some(Disabled {
                    reason: reason.clone(),
                    at: *at,
                    manual: *manual,
                    by: rk.disabled.get("by").cloned(),
                }),
                _ => None,
            },
            totals: Totals::from_hash(&rk.stats),
            last_used,
        });
        statuses.push(status);
    }
    let mut models = Vec::new();
    for m in pool.models() {
        let mut counts = KeyCounts::default();
        let mut totals = Totals::from_hash(&Hash::new());
        let mut last_used = None;
        for (ks, status) in keys_out.iter().zip(&statuses).filter(|(k, _)| k.model == m) {
            counts.count(status);
            totals.add(&ks.totals);
            last_used = last_used.max(ks.last_used);
        }
        let mut usage = Usage::default();
        for (i, (_, gm)) in layout.groups.iter().enumerate() {
            if *gm == m {
                usage.add(&group_used[i]);
            }
        }
        models.push(ModelStats { model: m, keys: counts, usage, totals, last_used });
    }
    let clients = layout
        .clients
        .iter()
        .zip(&raw.clients)
        .map(|(c, h)| ClientStats {
            client_id: c.clone(),
            totals: Totals::from_hash(h),
            last_used: opt_ms(h, "last_used"),
            budget: None,
        })
        .collect();
    let mut gcounts = KeyCounts::default();
    let mut gusage = Usage::default();
    for status in &statuses {
        gcounts.count(status);
    }
    for u in &group_used {
        gusage.add(u);
    }
    Stats {
        schema_version: SCHEMA_VERSION,
        generated_at: now.ms(),
        window_ms,
        pacific_day: raw.day,
        keys: keys_out,
        models,
        clients,
        global: GlobalStats { keys: gcounts, usage: gusage, totals: Totals::from_hash(&raw.global) },
        // An entry that does not parse is shown as its text rather than dropped.
        audit: raw
            .audit
            .iter()
            .map(|e| crate::json::parse(e).unwrap_or_else(|_| serde_json::Value::String(e.clone())))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observe::stats_v1::parse_stats;
    use crate::observe::stats_v1::tests::{answer, layout, pool, NOW};
    use serde_json::{json, Value};

    pub(crate) fn stats() -> Stats {
        let p = pool();
        let layout = layout();
        let raw = parse_stats(&answer(), &layout, p.keys.len()).unwrap();
        build_stats(&p, &layout, &raw, "fp", 61_000)
    }

    #[test]
    fn per_key_figures() {
        let s = stats();
        assert_eq!(s.schema_version, SCHEMA_VERSION);
        assert_eq!(s.generated_at, NOW);
        let f1 = &s.keys[0];
        assert_eq!(f1.status, "cooling");
        assert_eq!(f1.usage.rpm, Used { used: 3, limit: 10 });
        assert_eq!(f1.usage.tpm, Used { used: 120, limit: 1000 });
        assert_eq!(f1.usage.rpd, Used { used: 9, limit: 100 });
        assert_eq!(f1.cooldown_until, Some(NOW + 7000));
        assert_eq!(f1.cooldown_reason.as_deref(), Some("429 per-minute"));
        assert_eq!(f1.totals.requests, 4);
        assert_eq!(f1.totals.successes, 2);
        assert_eq!(f1.totals.upstream_429s, 2);
        assert_eq!(f1.totals.failures["rate_limited"], 2);
        assert_eq!(f1.totals.failures["timeout"], 0);
        assert_eq!(f1.totals.failures_total, 2);
        assert_eq!((f1.totals.tokens_in, f1.totals.tokens_out, f1.totals.tokens_thinking), (30, 8, 3));
        assert_eq!(f1.last_used, Some(1795899497400));
        // Same group: the same window figures against its own limits; disabled wins over cooling.
        let f2 = &s.keys[1];
        assert_eq!(f2.status, "disabled");
        assert_eq!(f2.usage.rpm, Used { used: 3, limit: 10 });
        assert_eq!(
            f2.disabled,
            Some(Disabled { reason: "400 API_KEY_INVALID".into(), at: Some(1795899400000), manual: false, by: None })
        );
        // A disabled mark for another configuration does not count; yesterday's day count is 0.
        let f3 = &s.keys[2];
        assert_eq!(f3.status, "available");
        assert!(f3.disabled.is_none() && f3.cooldown_until.is_none() && f3.last_used.is_none());
        assert_eq!(f3.usage.rpd.used, 0);
        // An expired cooldown is no cooldown; inactive keys say so.
        assert_eq!(s.keys[3].status, "inactive");
        assert!(s.keys[3].cooldown_until.is_none());
    }

    #[test]
    fn aggregates_per_model_client_and_global() {
        let s = stats();
        let flash = &s.models[0];
        assert_eq!(flash.model, "flash");
        assert_eq!(flash.keys, KeyCounts { total: 3, available: 1, cooling: 1, disabled: 1, inactive: 0 });
        // Two quota groups, p and f3, each counted once.
        assert_eq!(flash.usage.rpm, Used { used: 4, limit: 15 });
        assert_eq!(flash.usage.tpm, Used { used: 130, limit: 1500 });
        assert_eq!(flash.totals.requests, 5);
        assert_eq!(flash.totals.failures["key_rejected"], 1);
        assert_eq!(s.models[1].keys.inactive, 1);
        assert_eq!(s.clients[0].client_id, "main");
        assert_eq!(s.clients[0].totals.tokens_in, 40);
        assert_eq!(s.clients[1].totals.requests, 0);
        assert_eq!(s.clients[1].last_used, None);
        assert_eq!(s.clients[0].budget, None);
    }

    #[test]
    fn client_budgets_show_use_against_the_limits() {
        let p = pool();
        let layout = layout();
        let raw = parse_stats(&answer(), &layout, p.keys.len()).unwrap();
        let mut s = build_stats(&p, &layout, &raw, "fp", 61_000);
        add_client_budgets(&mut s, &raw, &[(Some(1000), Some(100)), (Some(5), None)]);
        let b0 = s.clients[0].budget.as_ref().unwrap();
        assert_eq!(b0.daily_tokens, Some(Used { used: 500, limit: 1000 }));
        assert_eq!(b0.tpm, Some(Used { used: 30, limit: 100 }));
        // A count stored for an earlier Pacific day is 0 today.
        let b1 = s.clients[1].budget.as_ref().unwrap();
        assert_eq!((b1.daily_tokens, b1.tpm), (Some(Used { used: 0, limit: 5 }), None));
        let text = crate::observe::prometheus(&s);
        assert!(text.contains(r#"llmr_client_budget_used_tokens{client="main",window="day"} 500"#), "{text}");
        assert!(text.contains(r#"llmr_client_budget_limit_tokens{client="main",window="minute"} 100"#));
        assert_eq!(s.global.totals.requests, 7);
        assert_eq!(s.global.totals.upstream_429s, 2);
        assert_eq!(s.global.keys.total, 4);
        assert_eq!(s.global.usage.rpm.used, 4);
    }

    #[test]
    fn the_document_never_holds_a_secret_field() {
        let v = serde_json::to_value(stats()).unwrap().to_string();
        assert!(!v.contains("AIza") && !v.contains("api_key") && !v.contains("token_sha256"));
        assert!(!v.contains("\"cfg\""));
    }

    #[test]
    fn a_full_key_is_available_in_stats_with_its_usage_at_the_limit() {
        let p = pool();
        let layout = layout();
        let mut v: Value = serde_json::from_str(answer().as_str().unwrap()).unwrap();
        v["groups"][1]["count"] = json!(5);
        let raw = parse_stats(&json!(v.to_string()), &layout, 4).unwrap();
        let s = build_stats(&p, &layout, &raw, "fp", 61_000);
        assert_eq!(s.keys[2].status, "available");
        assert_eq!(s.keys[2].usage.rpm, Used { used: 5, limit: 5 });
    }

    #[test]
    fn empty_redis_gives_zeros() {
        let p = pool();
        let layout = crate::observe::Layout::new(&p, &[]);
        let v = json!(json!({"now": NOW, "day": 20785, "last": {}, "global": {},
            "groups": [{"count":0,"tokens":0,"day":null,"day_count":0,"cd":{}},
                       {"count":0,"tokens":0,"day":null,"day_count":0,"cd":{}},
                       {"count":0,"tokens":0,"day":null,"day_count":0,"cd":{}}],
            "keys": [{"dis":{},"stats":{}},{"dis":{},"stats":{}},{"dis":{},"stats":{}},{"dis":{},"stats":{}}],
            "clients": {}})
        .to_string());
        let s = build_stats(&p, &layout, &parse_stats(&v, &layout, 4).unwrap(), "fp", 61_000);
        assert_eq!(s.global.totals, Totals::from_hash(&Hash::new()));
        assert_eq!(s.global.keys.available, 3);
        assert!(s.keys.iter().all(|k| k.totals.requests == 0 && k.last_used.is_none()));
    }
}
