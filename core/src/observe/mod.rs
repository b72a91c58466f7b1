//! Observability in pure Rust: the Redis reads behind `/stats`, `/metrics` and `/health`, and
//! how their raw answers become the `/stats` JSON (schema in `docs/stats.md`), the Prometheus
//! text exposition and the key-pool counts of `/health`.
//!
//! Every figure comes from Redis (counters written by `settle_v1`, windows by `reserve_v1`), read
//! in one round trip with Redis `TIME` as the clock, so any isolate answers the same thing.
//! Nothing here ever sees a secret: only key ids, models, groups, client ids and counters.

use crate::config::KeyPool;
use crate::store::keys;
use crate::store::upstash::{Script, StoreError};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Version of the `/stats` JSON. Bump it on any change that is not a pure addition.
pub const SCHEMA_VERSION: u32 = 1;

pub static STATS: Script = Script::new(
    "stats_v1",
    concat!(include_str!("../store/lua/pacific.lua"), include_str!("../store/lua/stats_v1.lua")),
);

/// Outcome buckets written by `settle_v1`, in display order. `success` is not a failure.
pub const OUTCOMES: [&str; 8] =
    ["success", "rate_limited", "transient", "timeout", "transport", "key_rejected", "client_error", "not_sent"];

/// The (quota group, model) pairs of a pool, in first-seen order, and which pair each key uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub groups: Vec<(String, String)>,
    pub key_group: Vec<usize>,
    pub clients: Vec<String>,
}

impl Layout {
    pub fn new(pool: &KeyPool, clients: &[String]) -> Layout {
        let mut groups: Vec<(String, String)> = Vec::new();
        let mut key_group = Vec::with_capacity(pool.keys.len());
        for k in &pool.keys {
            let pair = (k.quota_group.clone(), k.model.clone());
            let i = match groups.iter().position(|g| *g == pair) {
                Some(i) => i,
                None => {
                    groups.push(pair);
                    groups.len() - 1
                }
            };
            key_group.push(i);
        }
        Layout { groups, key_group, clients: clients.to_vec() }
    }
}

/// KEYS and ARGV of one `stats_v1` call.
pub fn stats_call(pool: &KeyPool, layout: &Layout, window_ms: u64) -> (Vec<String>, Vec<String>) {
    let mut k = vec![keys::LAST_USED.to_string(), keys::GLOBAL_STATS.to_string()];
    for (g, m) in &layout.groups {
        k.push(keys::log(g, m));
        k.push(keys::tokens(g, m));
        k.push(keys::day(g, m));
        k.push(keys::cooldown(g, m));
    }
    for key in &pool.keys {
        k.push(keys::disabled(&key.key_id));
        k.push(keys::key_stats(&key.key_id));
    }
    for c in &layout.clients {
        k.push(keys::client_stats(c));
    }
    let arg = json!({"window_ms": window_ms, "groups": layout.groups.len(), "keys": pool.keys.len(),
                     "clients": layout.clients.len()});
    (k, vec![arg.to_string()])
}

/// One hash read with HGETALL.
pub type Hash = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawGroup {
    pub count: u64,
    pub tokens: u64,
    pub day: Option<i64>,
    pub day_count: u64,
    pub cooldown: Hash,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawKey {
    pub disabled: Hash,
    pub stats: Hash,
}

/// The decoded answer of `stats_v1`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw {
    pub now: u64,
    pub day: i64,
    pub last: Hash,
    pub global: Hash,
    pub groups: Vec<RawGroup>,
    pub keys: Vec<RawKey>,
    pub clients: Vec<Hash>,
}

/// A flat HGETALL list (cjson encodes an empty one as `{}`).
fn hash(v: &Value) -> Hash {
    let mut h = Hash::new();
    if let Some(a) = v.as_array() {
        for pair in a.chunks(2) {
            if let [k, v] = pair {
                let val = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                h.insert(k.as_str().unwrap_or_default().to_string(), val);
            }
        }
    }
    h
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn num(v: &Value) -> u64 {
    v.as_f64().map(|f| f.max(0.0) as u64).or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

pub fn parse_stats(v: &Value, layout: &Layout, n_keys: usize) -> Result<Raw, StoreError> {
    let protocol = |m: &str| StoreError::Protocol(format!("stats_v1: {m}"));
    let s = v.as_str().ok_or_else(|| protocol("expected a JSON string"))?;
    let r: Value = serde_json::from_str(s).map_err(|_| protocol("bad JSON"))?;
    let groups: Vec<RawGroup> = list(&r["groups"])
        .iter()
        .map(|g| RawGroup {
            count: num(&g["count"]),
            tokens: num(&g["tokens"]),
            day: g["day"].as_f64().map(|d| d as i64),
            day_count: num(&g["day_count"]),
            cooldown: hash(&g["cd"]),
        })
        .collect();
    let keys: Vec<RawKey> =
        list(&r["keys"]).iter().map(|k| RawKey { disabled: hash(&k["dis"]), stats: hash(&k["stats"]) }).collect();
    let clients: Vec<Hash> = list(&r["clients"]).iter().map(hash).collect();
    if groups.len() != layout.groups.len() || keys.len() != n_keys || clients.len() != layout.clients.len() {
        return Err(protocol("answer does not match the request's layout"));
    }
    Ok(Raw {
        now: num(&r["now"]),
        day: r["day"].as_f64().map(|d| d as i64).unwrap_or(0),
        last: hash(&r["last"]),
        global: hash(&r["global"]),
        groups,
        keys,
        clients,
    })
}

// ---------------------------------------------------------------------------------------------
// The /stats document.

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub successes: u64,
    /// Attempts by failure kind: every outcome bucket but `success`, zeros included.
    pub failures: BTreeMap<String, u64>,
    pub failures_total: u64,
    /// Upstream 429 answers (the `rate_limited` outcome).
    pub upstream_429s: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tokens_thinking: u64,
}

fn field(h: &Hash, name: &str) -> u64 {
    h.get(name).and_then(|v| v.parse::<f64>().ok()).map(|f| f.max(0.0) as u64).unwrap_or(0)
}

impl Totals {
    pub fn from_hash(h: &Hash) -> Totals {
        let mut failures: BTreeMap<String, u64> =
            OUTCOMES.iter().filter(|o| **o != "success").map(|o| (o.to_string(), 0)).collect();
        for (k, _) in h.iter() {
            if let Some(o) = k.strip_prefix("outcome:") {
                if o != "success" {
                    failures.insert(o.to_string(), field(h, k));
                }
            }
        }
        Totals {
            requests: field(h, "requests"),
            successes: field(h, "outcome:success"),
            failures_total: failures.values().sum(),
            upstream_429s: field(h, "outcome:rate_limited"),
            failures,
            tokens_in: field(h, "tokens_in"),
            tokens_out: field(h, "tokens_out"),
            tokens_thinking: field(h, "tokens_thinking"),
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.successes += o.successes;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_insert(0) += v;
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyStats {
    pub key_id: String,
    pub model: String,
    pub quota_group: String,
    /// `active` in keys.json.
    pub active: bool,
    /// "available", "cooling", "disabled" or "inactive" (not active in keys.json).
    pub status: &'static str,
    /// The key's quota group's live usage against this key's limits.
    pub usage: Usage,
    pub cooldown_until: Option<u64>,
    pub cooldown_reason: Option<String>,
    pub disabled: Option<Disabled>,
    pub totals: Totals,
    pub last_used: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KeyCounts {
    pub total: u64,
    /// Active in keys.json, not cooling and not disabled: can take a request now.
    pub available: u64,
    pub cooling: u64,
    pub disabled: u64,
    pub inactive: u64,
}

impl KeyCounts {
    fn count(&mut self, status: &str) {
        self.total += 1;
        match status {
            "available" => self.available += 1,
            "cooling" => self.cooling += 1,
            "disabled" => self.disabled += 1,
            _ => self.inactive += 1,
        }
    }
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
}

fn opt_ms(h: &Hash, name: &str) -> Option<u64> {
    Some(field(h, name)).filter(|v| *v > 0)
}

/// Builds the `/stats` document. `fingerprint` is the current configuration fingerprint: a
/// disabled mark left for another configuration does not count (as in `reserve_v1`).
pub fn build_stats(pool: &KeyPool, layout: &Layout, raw: &Raw, fingerprint: &str, window_ms: u64) -> Stats {
    let now = raw.now;
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
            u.rpd.used = if g.day == Some(raw.day) { g.day_count } else { 0 };
            u
        })
        .collect();
    let mut keys_out = Vec::with_capacity(pool.keys.len());
    for ((k, &g), rk) in pool.keys.iter().zip(&layout.key_group).zip(&raw.keys) {
        let cd = &raw.groups[g].cooldown;
        let until = field(cd, "until");
        let cooling = until > now;
        let disabled = match rk.disabled.get("cfg") {
            Some(cfg) if cfg == fingerprint => Some(Disabled {
                reason: rk.disabled.get("reason").cloned().unwrap_or_default(),
                at: opt_ms(&rk.disabled, "at"),
            }),
            _ => None,
        };
        let status = if !k.active {
            "inactive"
        } else if disabled.is_some() {
            "disabled"
        } else if cooling {
            "cooling"
        } else {
            "available"
        };
        let mut usage = group_used[g];
        usage.rpm.limit = k.rpm as u64;
        usage.tpm.limit = k.tpm as u64;
        usage.rpd.limit = k.rpd as u64;
        let last_used = opt_ms(&rk.stats, "last_used").max(opt_ms(&raw.last, &k.key_id));
        keys_out.push(KeyStats {
            key_id: k.key_id.clone(),
            model: k.model.clone(),
            quota_group: k.quota_group.clone(),
            active: k.active,
            status,
            usage,
            cooldown_until: cooling.then_some(until),
            cooldown_reason: if cooling { cd.get("reason").cloned() } else { None },
            disabled,
            totals: Totals::from_hash(&rk.stats),
            last_used,
        });
    }
    let mut models = Vec::new();
    for m in pool.models() {
        let mut counts = KeyCounts::default();
        let mut totals = Totals::from_hash(&Hash::new());
        let mut last_used = None;
        for ks in keys_out.iter().filter(|k| k.model == m) {
            counts.count(ks.status);
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
        })
        .collect();
    let mut gcounts = KeyCounts::default();
    let mut gusage = Usage::default();
    for ks in &keys_out {
        gcounts.count(ks.status);
    }
    for u in &group_used {
        gusage.add(u);
    }
    Stats {
        schema_version: SCHEMA_VERSION,
        generated_at: now,
        window_ms,
        pacific_day: raw.day,
        keys: keys_out,
        models,
        clients,
        global: GlobalStats { keys: gcounts, usage: gusage, totals: Totals::from_hash(&raw.global) },
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition (format 0.0.4).

pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", esc(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A per-key gauge: name, help text and how to read it.
type Gauge = (&'static str, &'static str, fn(&KeyStats) -> f64);

/// Totals of one labelled series (key, client or global) as counters.
fn totals_metrics(o: &mut Out, prefix: &str, rows: &[(Vec<(&str, &str)>, &Totals)]) {
    o.family(&format!("{prefix}_requests_total"), "counter", "Upstream attempts settled.");
    for (l, t) in rows {
        o.sample(&format!("{prefix}_requests_total"), l, t.requests as f64);
    }
    o.family(&format!("{prefix}_outcomes_total"), "counter", "Settled attempts by outcome.");
    for (l, t) in rows {
        let mut all: Vec<(&str, u64)> = vec![("success", t.successes)];
        all.extend(t.failures.iter().map(|(k, v)| (k.as_str(), *v)));
        for (outcome, v) in all {
            let mut labels = l.clone();
            labels.push(("outcome", outcome));
            o.sample(&format!("{prefix}_outcomes_total"), &labels, v as f64);
        }
    }
    o.family(&format!("{prefix}_tokens_total"), "counter", "Tokens reported by the upstream's usageMetadata.");
    for (l, t) in rows {
        for (kind, v) in [("in", t.tokens_in), ("out", t.tokens_out), ("thinking", t.tokens_thinking)] {
            let mut labels = l.clone();
            labels.push(("type", kind));
            o.sample(&format!("{prefix}_tokens_total"), &labels, v as f64);
        }
    }
}

/// The Prometheus text for a `/stats` document: the same figures, low-cardinality labels only
/// (`key_id`, `model`, `client`, `outcome`, `type`).
pub fn prometheus(s: &Stats) -> String {
    let mut o = Out { text: String::new() };
    o.family("llmr_stats_schema_version", "gauge", "Version of the /stats schema these metrics mirror.");
    o.sample("llmr_stats_schema_version", &[], s.schema_version as f64);
    o.family("llmr_redis_time_seconds", "gauge", "Redis TIME when the figures were read.");
    o.sample("llmr_redis_time_seconds", &[], s.generated_at as f64 / 1000.0);
    o.family("llmr_quota_window_seconds", "gauge", "Length of the rolling quota window.");
    o.sample("llmr_quota_window_seconds", &[], s.window_ms as f64 / 1000.0);

    let kl: Vec<Vec<(&str, &str)>> =
        s.keys.iter().map(|k| vec![("key_id", k.key_id.as_str()), ("model", k.model.as_str())]).collect();
    let gauges: [Gauge; 11] = [
        ("llmr_key_rpm_used", "Requests of the key's quota group in the rolling window.", |k| k.usage.rpm.used as f64),
        ("llmr_key_rpm_limit", "The key's requests-per-minute limit.", |k| k.usage.rpm.limit as f64),
        ("llmr_key_tpm_used", "Input tokens of the key's quota group in the rolling window.", |k| {
            k.usage.tpm.used as f64
        }),
        ("llmr_key_tpm_limit", "The key's tokens-per-minute limit.", |k| k.usage.tpm.limit as f64),
        ("llmr_key_rpd_used", "Requests of the key's quota group this Pacific day.", |k| k.usage.rpd.used as f64),
        ("llmr_key_rpd_limit", "The key's requests-per-day limit.", |k| k.usage.rpd.limit as f64),
        ("llmr_key_cooling", "1 while the key's quota group cools down after a 429.", |k| {
            (k.status == "cooling") as u8 as f64
        }),
        ("llmr_key_cooldown_until_seconds", "End of the cooldown (0: none).", |k| {
            k.cooldown_until.unwrap_or(0) as f64 / 1000.0
        }),
        ("llmr_key_disabled", "1 while the key is disabled for this configuration.", |k| {
            k.disabled.is_some() as u8 as f64
        }),
        ("llmr_key_active", "1 if the key is active in keys.json.", |k| k.active as u8 as f64),
        ("llmr_key_last_used_seconds", "Last admission or settle of the key (0: never).", |k| {
            k.last_used.unwrap_or(0) as f64 / 1000.0
        }),
    ];
    for (name, help, f) in gauges {
        o.family(name, "gauge", help);
        for (k, l) in s.keys.iter().zip(&kl) {
            o.sample(name, l, f(k));
        }
    }
    let rows: Vec<(Vec<(&str, &str)>, &Totals)> = s.keys.iter().zip(&kl).map(|(k, l)| (l.clone(), &k.totals)).collect();
    totals_metrics(&mut o, "llmr_key", &rows);

    o.family("llmr_model_keys", "gauge", "Keys of a model by status.");
    for m in &s.models {
        let c = &m.keys;
        for (st, v) in
            [("available", c.available), ("cooling", c.cooling), ("disabled", c.disabled), ("inactive", c.inactive)]
        {
            o.sample("llmr_model_keys", &[("model", &m.model), ("status", st)], v as f64);
        }
    }

    let rows: Vec<(Vec<(&str, &str)>, &Totals)> =
        s.clients.iter().map(|c| (vec![("client", c.client_id.as_str())], &c.totals)).collect();
    totals_metrics(&mut o, "llmr_client", &rows);

    totals_metrics(&mut o, "llmr", &[(vec![], &s.global.totals)]);
    o.text
}

// ---------------------------------------------------------------------------------------------
// /health: the key pool, read in the same pipeline as the Redis probe.

/// The pipeline `/health` sends: PING (the probe), TIME, then each quota group's cooldown end
/// and each key's disabled fingerprint. Read-only.
pub fn health_pipeline(pool: &KeyPool, layout: &Layout) -> Vec<Vec<String>> {
    let mut cmds = vec![vec!["PING".to_string()], vec!["TIME".to_string()]];
    for (g, m) in &layout.groups {
        cmds.push(vec!["HGET".into(), keys::cooldown(g, m), "until".into()]);
    }
    for k in &pool.keys {
        cmds.push(vec!["HGET".into(), keys::disabled(&k.key_id), "cfg".into()]);
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

/// Key-pool counts from the health pipeline's answers (`None` if they are unusable).
pub fn pool_counts(
    pool: &KeyPool,
    layout: &Layout,
    answers: &[Result<Value, StoreError>],
    fingerprint: &str,
) -> Option<KeyCounts> {
    if answers.len() != 2 + layout.groups.len() + pool.keys.len() {
        return None;
    }
    let time = answers[1].as_ref().ok()?.as_array()?;
    let secs: u64 = time.first()?.as_str()?.parse().ok()?;
    let micros: u64 = time.get(1)?.as_str()?.parse().ok()?;
    let now = secs * 1000 + micros / 1000;
    let str_of = |r: &Result<Value, StoreError>| r.as_ref().ok().and_then(|v| v.as_str().map(str::to_string));
    let mut c = KeyCounts::default();
    for (i, (k, &g)) in pool.keys.iter().zip(&layout.key_group).enumerate() {
        let until: u64 = str_of(&answers[2 + g]).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        let disabled = str_of(&answers[2 + layout.groups.len() + i]).is_some_and(|cfg| cfg == fingerprint);
        c.count(if !k.active {
            "inactive"
        } else if disabled {
            "disabled"
        } else if until > now {
            "cooling"
        } else {
            "available"
        });
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
mod tests {
    use super::*;

    fn pool() -> KeyPool {
        KeyPool::parse(
            r#"{"keys":[
              {"key_id":"f1","model_name":"flash","provider":"gemini","rpm":10,"tpm":1000,"rpd":100,"active":true,"quota_group":"p"},
              {"key_id":"f2","model_name":"flash","provider":"gemini","rpm":10,"tpm":1000,"rpd":100,"active":true,"quota_group":"p"},
              {"key_id":"f3","model_name":"flash","provider":"gemini","rpm":5,"tpm":500,"rpd":50,"active":true},
              {"key_id":"p1","model_name":"pro","provider":"gemini","rpm":2,"tpm":300,"rpd":30,"active":false}
            ]}"#,
        )
        .unwrap()
    }

    fn hgetall(pairs: &[(&str, &str)]) -> Value {
        Value::Array(pairs.iter().flat_map(|(k, v)| [json!(k), json!(v)]).collect())
    }

    const NOW: u64 = 1_795_899_497_469;

    fn answer() -> Value {
        let v = json!({
            "now": NOW, "day": 20785,
            "last": hgetall(&[("f1", "1795899497000")]),
            "global": hgetall(&[("requests", "7"), ("outcome:success", "5"), ("outcome:rate_limited", "2"),
                                 ("tokens_in", "40"), ("tokens_out", "12"), ("last_used", "1795899497400")]),
            "groups": [
                {"count": 3, "tokens": 120, "day": 20785, "day_count": 9,
                 "cd": hgetall(&[("until", &(NOW + 7000).to_string()), ("reason", "429 per-minute"), ("strikes", "1")])},
                {"count": 1, "tokens": 10, "day": 20784, "day_count": 40, "cd": {}},
                {"count": 0, "tokens": 0, "day": null, "day_count": 0, "cd": hgetall(&[("until", "5")])}
            ],
            "keys": [
                {"dis": {}, "stats": hgetall(&[("requests", "4"), ("outcome:success", "2"), ("outcome:rate_limited", "2"),
                                                ("tokens_in", "30"), ("tokens_out", "8"), ("tokens_thinking", "3"),
                                                ("last_used", "1795899497400")])},
                {"dis": hgetall(&[("reason", "400 API_KEY_INVALID"), ("cfg", "fp"), ("at", "1795899400000")]),
                 "stats": hgetall(&[("requests", "1"), ("outcome:key_rejected", "1")])},
                {"dis": hgetall(&[("reason", "old"), ("cfg", "other-fp"), ("at", "1")]), "stats": {}},
                {"dis": {}, "stats": {}}
            ],
            "clients": [hgetall(&[("requests", "7"), ("outcome:success", "5"), ("tokens_in", "40"),
                                   ("last_used", "1795899497400")]), {}]
        });
        json!(v.to_string())
    }

    fn stats() -> Stats {
        let p = pool();
        let layout = Layout::new(&p, &["main".into(), "idle".into()]);
        let raw = parse_stats(&answer(), &layout, p.keys.len()).unwrap();
        build_stats(&p, &layout, &raw, "fp", 61_000)
    }

    #[test]
    fn layout_and_call_share_groups_and_one_hash_tag() {
        let p = pool();
        let layout = Layout::new(&p, &["main".into()]);
        assert_eq!(
            layout.groups,
            vec![("p".into(), "flash".into()), ("f3".into(), "flash".into()), ("p1".into(), "pro".into())]
        );
        assert_eq!(layout.key_group, vec![0, 0, 1, 2]);
        let (k, a) = stats_call(&p, &layout, 61_000);
        assert_eq!(k.len(), 2 + 4 * 3 + 2 * 4 + 1);
        assert!(k.iter().all(|k| k.starts_with("{llmr}:")));
        assert_eq!(k[2], "{llmr}:w:p:flash");
        assert_eq!(k.last().unwrap(), "{llmr}:st:c:main");
        let a: Value = serde_json::from_str(&a[0]).unwrap();
        assert_eq!(a, json!({"window_ms": 61000, "groups": 3, "keys": 4, "clients": 1}));
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
        assert_eq!(f2.disabled, Some(Disabled { reason: "400 API_KEY_INVALID".into(), at: Some(1795899400000) }));
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
    fn layout_mismatch_is_a_protocol_error() {
        let p = pool();
        let layout = Layout::new(&p, &[]);
        assert!(parse_stats(&answer(), &layout, p.keys.len()).is_err());
        assert!(parse_stats(&json!(1), &layout, 4).is_err());
    }

    #[test]
    fn empty_redis_gives_zeros() {
        let p = pool();
        let layout = Layout::new(&p, &[]);
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

    #[test]
    fn prometheus_text_is_well_formed() {
        let text = prometheus(&stats());
        assert!(text.ends_with('\n'));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_string()), "family {name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "sample {name} before its TYPE");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
        assert!(text.contains("llmr_key_rpm_used{key_id=\"f1\",model=\"flash\"} 3\n"));
        assert!(text.contains("llmr_key_outcomes_total{key_id=\"f1\",model=\"flash\",outcome=\"rate_limited\"} 2\n"));
        assert!(text.contains("llmr_key_tokens_total{key_id=\"f1\",model=\"flash\",type=\"thinking\"} 3\n"));
        assert!(text.contains("llmr_client_requests_total{client=\"main\"} 7\n"));
        assert!(text.contains("llmr_requests_total 7\n"));
        assert!(text.contains("llmr_key_cooldown_until_seconds{key_id=\"f1\",model=\"flash\"} 1795899504.469\n"));
        assert!(text.contains("llmr_model_keys{model=\"flash\",status=\"disabled\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn health_pool_counts_and_verdicts() {
        let p = pool();
        let layout = Layout::new(&p, &[]);
        let secs = NOW / 1000;
        let answers = vec![
            Ok(json!("PONG")),
            Ok(json!([secs.to_string(), "469000"])),
            Ok(json!((NOW + 5000).to_string())),
            Ok(Value::Null),
            Ok(json!("1")),
            Ok(Value::Null),
            Ok(json!("fp")),
            Ok(json!("other")),
            Ok(Value::Null),
        ];
        assert!(ping_ok(&answers).is_ok());
        let c = pool_counts(&p, &layout, &answers, "fp").unwrap();
        assert_eq!(c, KeyCounts { total: 4, available: 1, cooling: 1, disabled: 1, inactive: 1 });
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
        assert_eq!(body["components"]["keys"]["cooling"], 1);
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
}
