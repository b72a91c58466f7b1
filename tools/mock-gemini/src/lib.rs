//! mock-gemini: a native mock of Google's Gemini REST API with exact per-(project, model)
//! quotas, fault injection, stats and a request log. See README.md.

pub mod access;
mod api;
pub mod config;
mod control;
pub mod embed;
pub mod errors;
pub mod files;
pub mod gen;
pub mod media;
pub mod pacific;
pub mod schema;
pub mod signatures;
pub mod tokens;
pub mod tools;
pub mod window;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value};

pub use config::{Config, KeyInfo, Limits};
use errors::QuotaKind;
use window::{ArrivalWindow, SlidingLog};

/// How many request-log entries are kept.
pub const LOG_CAP: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Generate,
    Stream,
    Count,
    Embed,
    BatchEmbed,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Generate => "generateContent",
            Op::Stream => "streamGenerateContent",
            Op::Count => "countTokens",
            Op::Embed => "embedContent",
            Op::BatchEmbed => "batchEmbedContents",
        }
    }
}

/// Kinds of injectable faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    #[serde(rename = "500")]
    Internal,
    #[serde(rename = "503")]
    Unavailable,
    #[serde(rename = "429_no_details")]
    Exhausted,
    #[serde(rename = "429_rpm")]
    Rpm,
    #[serde(rename = "429_rpd")]
    Rpd,
    #[serde(rename = "slow")]
    Slow,
    #[serde(rename = "cut_stream")]
    CutStream,
    #[serde(rename = "invalid_key")]
    InvalidKey,
    #[serde(rename = "403_service_blocked")]
    ServiceBlocked,
    #[serde(rename = "403_resource")]
    Resource,
}

impl FaultKind {
    pub fn parse(s: &str) -> Option<FaultKind> {
        Some(match s {
            "500" => FaultKind::Internal,
            "503" => FaultKind::Unavailable,
            "429_no_details" | "429" => FaultKind::Exhausted,
            "429_rpm" => FaultKind::Rpm,
            "429_rpd" => FaultKind::Rpd,
            "slow" => FaultKind::Slow,
            "cut_stream" => FaultKind::CutStream,
            "invalid_key" => FaultKind::InvalidKey,
            "403_service_blocked" => FaultKind::ServiceBlocked,
            "403_resource" => FaultKind::Resource,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Internal => "500",
            FaultKind::Unavailable => "503",
            FaultKind::Exhausted => "429_no_details",
            FaultKind::Rpm => "429_rpm",
            FaultKind::Rpd => "429_rpd",
            FaultKind::Slow => "slow",
            FaultKind::CutStream => "cut_stream",
            FaultKind::InvalidKey => "invalid_key",
            FaultKind::ServiceBlocked => "403_service_blocked",
            FaultKind::Resource => "403_resource",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub remaining: u64,
    pub label: Option<String>,
    pub model: Option<String>,
    pub delay_ms: u64,
}

#[derive(Debug, Default, Serialize)]
struct KeyStats {
    requests: u64,
    ok: u64,
    status_429: u64,
    errors: u64,
    count_tokens: u64,
    max_requests_in_rolling_minute: u64,
    max_admitted_in_rolling_minute: u64,
    #[serde(skip)]
    arrivals: ArrivalWindow,
    #[serde(skip)]
    admitted: ArrivalWindow,
}

#[derive(Debug, Default)]
struct Group {
    requests: u64,
    ok: u64,
    status_429: u64,
    errors: u64,
    arrivals: ArrivalWindow,
    admitted: SlidingLog,
    max_admitted: u64,
    max_tokens: u64,
    day: i64,
    day_count: u64,
}

impl Group {
    fn requests_today(&self, now: u64) -> u64 {
        if self.day == pacific::pacific_day_ms(now) {
            self.day_count
        } else {
            0
        }
    }
}

#[derive(Debug, Serialize)]
struct LogEntry {
    seq: u64,
    time_ms: u64,
    label: Option<String>,
    model: String,
    method: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<&'static str>,
    body: Value,
}

struct Inner {
    cfg: Arc<Config>,
    keys: HashMap<String, KeyInfo>,
    key_stats: HashMap<String, KeyStats>,
    groups: HashMap<String, Group>,
    faults: VecDeque<Fault>,
    log: VecDeque<LogEntry>,
    seq: u64,
    total_requests: u64,
    total_count_tokens: u64,
    invalid_key_requests: u64,
    /// Files and cached contents, by owning project (kept across `/_mock/reset`).
    resources: files::Resources,
}

impl Inner {
    fn new(cfg: Config) -> Inner {
        let mut inner = Inner {
            resources: files::Resources::default(),
            cfg: Arc::new(Config::default()),
            keys: HashMap::new(),
            key_stats: HashMap::new(),
            groups: HashMap::new(),
            faults: VecDeque::new(),
            log: VecDeque::new(),
            seq: 0,
            total_requests: 0,
            total_count_tokens: 0,
            invalid_key_requests: 0,
        };
        inner.set_config(cfg);
        inner
    }

    fn set_config(&mut self, mut cfg: Config) {
        cfg.normalize();
        self.keys = cfg.key_map();
        for k in self.keys.values() {
            self.key_stats.entry(k.label.clone()).or_default();
        }
        for g in self.groups.values_mut() {
            g.admitted = SlidingLog::default();
            g.day_count = 0;
        }
        self.cfg = Arc::new(cfg);
    }

    fn reset(&mut self) {
        self.key_stats.clear();
        for k in self.keys.values() {
            self.key_stats.entry(k.label.clone()).or_default();
        }
        self.groups.clear();
        self.faults.clear();
        self.log.clear();
        self.seq = 0;
        self.total_requests = 0;
        self.total_count_tokens = 0;
        self.invalid_key_requests = 0;
    }

    fn resolve(&self, key: &str) -> Option<KeyInfo> {
        if self.keys.is_empty() {
            let label = config::anon_label(key);
            let project = label.clone();
            return Some(KeyInfo { label, project, permission_denied: false, service_blocked: false });
        }
        self.keys.get(key).cloned()
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &mut self,
        now: u64,
        label: Option<String>,
        model: &str,
        op: Op,
        status: u16,
        fault: Option<FaultKind>,
        body: Value,
    ) {
        self.seq += 1;
        if self.log.len() >= LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            seq: self.seq,
            time_ms: now,
            label,
            model: model.to_string(),
            method: op.as_str(),
            status,
            fault: fault.map(FaultKind::as_str),
            body,
        });
    }

    fn take_fault(&mut self, label: &str, model: &str) -> Option<Fault> {
        let idx = self.faults.iter().position(|f| {
            f.label.as_deref().is_none_or(|l| l == label)
                && f.model.as_deref().is_none_or(|m| config::strip_models_prefix(m) == model)
        })?;
        let f = &mut self.faults[idx];
        f.remaining -= 1;
        let out = f.clone();
        if f.remaining == 0 {
            self.faults.remove(idx);
        }
        Some(out)
    }

    fn stats_json(&self, now: u64) -> Value {
        let mut keys = Map::new();
        let mut labels: Vec<&String> = self.key_stats.keys().collect();
        labels.sort();
        for l in labels {
            let ks = &self.key_stats[l];
            let mut v = serde_json::to_value(ks).unwrap_or_default();
            v["max_requests_in_rolling_minute"] = json!(ks.arrivals.max);
            v["max_admitted_in_rolling_minute"] = json!(ks.admitted.max);
            keys.insert(l.clone(), v);
        }
        let mut groups = Map::new();
        let mut names: Vec<&String> = self.groups.keys().collect();
        names.sort();
        for n in names {
            let g = &self.groups[n];
            groups.insert(
                n.clone(),
                json!({
                    "requests": g.requests,
                    "ok": g.ok,
                    "status_429": g.status_429,
                    "errors": g.errors,
                    "max_requests_in_rolling_minute": g.arrivals.max,
                    "max_admitted_in_rolling_minute": g.max_admitted,
                    "max_input_tokens_in_rolling_minute": g.max_tokens,
                    "requests_today": g.requests_today(now),
                }),
            );
        }
        json!({
            "keys": keys,
            "groups": groups,
            "total_requests": self.total_requests,
            "total_count_tokens": self.total_count_tokens,
            "invalid_key_requests": self.invalid_key_requests,
            "pending_faults": self.faults.len(),
        })
    }
}

/// Shared state of one mock server.
pub struct Mock {
    inner: Mutex<Inner>,
    clock_offset_ms: AtomicI64,
    id_seed: u64,
    /// Thought signatures issued (kept across `/_mock/reset`).
    sigs: Mutex<signatures::Signatures>,
}

impl Mock {
    pub fn new(cfg: Config) -> Arc<Mock> {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0x1234_5678);
        Arc::new(Mock {
            inner: Mutex::new(Inner::new(cfg)),
            clock_offset_ms: AtomicI64::new(0),
            id_seed: seed,
            sigs: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sigs(&self) -> MutexGuard<'_, signatures::Signatures> {
        self.sigs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mock's clock (wall clock plus the offset set with `POST /_mock/clock`), in ms.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        (wall + self.clock_offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    fn response_id(&self, seq: u64) -> String {
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut x = self.id_seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut out = String::with_capacity(22);
        for _ in 0..2 {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for _ in 0..11 {
                out.push(ALPHA[(z % 62) as usize] as char);
                z /= 62;
            }
        }
        out
    }
}

/// The axum router for a mock with this config.
pub fn app(cfg: Config) -> Router {
    app_with(Mock::new(cfg))
}

pub fn app_with(mock: Arc<Mock>) -> Router {
    // The body limit is a layer: it applies to the routes and fallback added before it, so it
    // comes last (Gemini bodies of up to 100 MiB, the router's highest `MAX_BODY_BYTES`).
    Router::new()
        .route("/_mock/health", get(control::health))
        .route("/_mock/faults", get(control::faults_list).post(control::faults_add).delete(control::faults_clear))
        .route("/_mock/stats", get(control::stats))
        .route("/_mock/requests", get(control::requests_list).delete(control::requests_clear))
        .route("/_mock/reset", post(control::reset))
        .route("/_mock/config", get(control::config_get).put(control::config_put))
        .route("/_mock/clock", get(control::clock_get).post(control::clock_set))
        .fallback(api::api)
        .layer(DefaultBodyLimit::max(110 << 20))
        .with_state(mock)
}

/// Serves until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, cfg: Config) -> std::io::Result<()> {
    axum::serve(listener, app(cfg)).await
}

type St = State<Arc<Mock>>;

pub(crate) fn json_response(status: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

pub(crate) fn err_response(v: &Value) -> Response {
    let code = v["error"]["code"].as_u64().unwrap_or(500) as u16;
    json_response(code, v)
}

#[cfg(test)]
mod tests {
    use super::api::*;
    use super::*;

    #[test]
    fn path_parsing() {
        let p = |s: &str| parse_call(s);
        let want = Some(("gemini-2.5-flash".to_string(), "generateContent".to_string()));
        assert_eq!(p("/v1beta/models/gemini-2.5-flash:generateContent"), want);
        assert_eq!(p("/v1/models/gemini-2.5-flash:generateContent"), want);
        assert_eq!(p("/v1beta/models/models/gemini-2.5-flash:generateContent"), want);
        assert_eq!(p("/v1beta/gemini-2.5-flash:generateContent"), want);
        assert_eq!(p("/v1beta/models/gemini-2.5-flash%3AgenerateContent"), want);
        assert_eq!(
            p("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some(("gemini-2.5-flash".into(), "streamGenerateContent".into()))
        );
        assert_eq!(p("/v1beta/models/a/b:generateContent"), None);
        assert_eq!(p("/v1beta/models/gemini"), None);
    }

    #[test]
    fn query_parsing() {
        let u: Uri = "/x?alt=sse&key=AIza%2Dabc".parse().unwrap();
        assert_eq!(query_param(&u, "alt").as_deref(), Some("sse"));
        assert_eq!(query_param(&u, "key").as_deref(), Some("AIza-abc"));
        assert_eq!(query_param(&u, "nope"), None);
    }

    #[test]
    fn admission_counts_only_admitted() {
        let mut gr = Group::default();
        let lim = Some(Limits { rpm: Some(2), tpm: Some(100), rpd: Some(4) });
        let t = 1_750_000_000_000u64;
        assert!(admit(&mut gr, t, lim, true, 10).is_ok());
        assert!(admit(&mut gr, t + 1, lim, true, 10).is_ok());
        let e = admit(&mut gr, t + 2, lim, true, 10).unwrap_err();
        assert_eq!((e.0, e.1, e.2), (QuotaKind::Rpm, 2, 59_998));
        assert_eq!(gr.day_count, 2);
        // A minute later the window is empty. TPM: 30 + 71 > 100 refused, 70 fits.
        assert!(admit(&mut gr, t + 60_001, lim, true, 30).is_ok());
        let e = admit(&mut gr, t + 60_002, lim, true, 71).unwrap_err();
        assert_eq!((e.0, e.1, e.2), (QuotaKind::Tpm, 100, 59_999));
        assert!(admit(&mut gr, t + 60_002, lim, true, 70).is_ok());
        assert_eq!(gr.max_tokens, 100);
        // RPD: 4 admitted today → the 5th is refused until Pacific midnight.
        let e = admit(&mut gr, t + 200_000, lim, true, 1).unwrap_err();
        assert_eq!(e.0, QuotaKind::Rpd);
        assert_eq!(e.2, pacific::ms_to_next_midnight(t + 200_000));
        // Not enforced: admitted anyway.
        assert!(admit(&mut gr, t + 200_001, lim, false, 1).is_ok());
        assert_eq!(gr.max_admitted, 2);
    }

    #[test]
    fn response_ids_differ() {
        let m = Mock::new(Config::default());
        let a = m.response_id(1);
        let b = m.response_id(2);
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
