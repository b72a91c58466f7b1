//! mock-gemini: a native mock of Google's Gemini REST API with exact per-(project, model)
//! quotas, fault injection, stats and a request log. See README.md.

pub mod access;
pub mod config;
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
        .route("/_mock/health", get(health))
        .route("/_mock/faults", get(faults_list).post(faults_add).delete(faults_clear))
        .route("/_mock/stats", get(stats))
        .route("/_mock/requests", get(requests_list).delete(requests_clear))
        .route("/_mock/reset", post(reset))
        .route("/_mock/config", get(config_get).put(config_put))
        .route("/_mock/clock", get(clock_get).post(clock_set))
        .fallback(api)
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

// ---------------------------------------------------------------- control API

async fn health() -> Response {
    json_response(200, &json!({"ok": true}))
}

async fn stats(State(m): St) -> Response {
    let now = m.now_ms();
    let v = m.lock().stats_json(now);
    json_response(200, &v)
}

async fn faults_list(State(m): St) -> Response {
    let v = serde_json::to_value(&m.lock().faults).unwrap_or_default();
    json_response(200, &v)
}

async fn faults_clear(State(m): St) -> Response {
    m.lock().faults.clear();
    json_response(200, &json!({"ok": true}))
}

async fn faults_add(State(m): St, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_response(400, &json!({"ok": false, "error": e.to_string()})),
    };
    let kind_str = match &v["kind"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let Some(kind) = FaultKind::parse(&kind_str) else {
        return json_response(400, &json!({"ok": false, "error": format!("unknown fault kind {kind_str:?}")}));
    };
    let count = v["count"].as_u64().unwrap_or(1);
    if count == 0 {
        return json_response(400, &json!({"ok": false, "error": "count must be >= 1"}));
    }
    let fault = Fault {
        kind,
        remaining: count,
        label: v["label"].as_str().map(str::to_string),
        model: v["model"].as_str().map(|s| config::strip_models_prefix(s).to_string()),
        delay_ms: v["delay_ms"].as_u64().unwrap_or(1_000),
    };
    let mut g = m.lock();
    g.faults.push_back(fault);
    let pending = serde_json::to_value(&g.faults).unwrap_or_default();
    json_response(200, &json!({"ok": true, "pending": pending}))
}

async fn requests_list(State(m): St, Query(q): Query<HashMap<String, String>>) -> Response {
    let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let g = m.lock();
    let entries: Vec<&LogEntry> = g.log.iter().filter(|e| e.seq > since).collect();
    let body = serde_json::to_vec(&entries).unwrap_or_default();
    drop(g);
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

async fn requests_clear(State(m): St) -> Response {
    m.lock().log.clear();
    json_response(200, &json!({"ok": true}))
}

async fn reset(State(m): St) -> Response {
    m.lock().reset();
    json_response(200, &json!({"ok": true}))
}

async fn config_get(State(m): St) -> Response {
    let v = m.lock().cfg.redacted();
    json_response(200, &v)
}

async fn config_put(State(m): St, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Config::from_json(&text) {
        Ok(cfg) => {
            m.lock().set_config(cfg);
            json_response(200, &json!({"ok": true}))
        }
        Err(e) => json_response(400, &json!({"ok": false, "error": e})),
    }
}

async fn clock_get(State(m): St) -> Response {
    json_response(200, &json!({"now_ms": m.now_ms(), "offset_ms": m.clock_offset_ms.load(Ordering::Relaxed)}))
}

async fn clock_set(State(m): St, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(off) = v["offset_ms"].as_i64() {
        m.clock_offset_ms.store(off, Ordering::Relaxed);
    } else if let Some(adv) = v["advance_ms"].as_i64() {
        m.clock_offset_ms.fetch_add(adv, Ordering::Relaxed);
    } else {
        return json_response(400, &json!({"ok": false, "error": "expected offset_ms or advance_ms"}));
    }
    clock_get(State(m)).await
}

// ---------------------------------------------------------------- Gemini API

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// Strips the optional version and `models/` prefixes: returns the rest of the path.
fn strip_api_prefix(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    let p = ["v1beta/", "v1/", "v1alpha/"].iter().find_map(|v| p.strip_prefix(v)).unwrap_or(p);
    config::strip_models_prefix(p)
}

/// `…/models/{model}:{method}` → (model, method).
fn parse_call(path: &str) -> Option<(String, String)> {
    let decoded = if path.contains('%') { percent_decode(path) } else { path.to_string() };
    let rest = strip_api_prefix(&decoded);
    let (model, method) = rest.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') || method.is_empty() {
        return None;
    }
    Some((model.to_string(), method.to_string()))
}

fn model_entry(name: &str) -> Value {
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": name,
        "description": format!("Mock of {name}"),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": if name.contains("embedding") {
            json!(["embedContent", "batchEmbedContents"])
        } else {
            json!(["generateContent", "countTokens", "streamGenerateContent"])
        },
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": true
    })
}

pub(crate) fn api_key(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(uri, "key"))
        .filter(|k| !k.is_empty())
}

/// Authenticates a request: Ok(key) or the error body (missing or unknown key).
/// A `permission_denied` or `service_blocked` key is returned as Ok; the caller refuses it.
fn authenticate(g: &Inner, key: Option<&str>) -> Result<KeyInfo, Value> {
    let Some(key) = key else {
        return Err(errors::missing_key());
    };
    g.resolve(key).ok_or_else(errors::invalid_key)
}

/// Like [`authenticate`], but a key refused for `method` (see [`access::key_refusal`]) too.
fn authorize(g: &Inner, key: Option<&str>, method: &str) -> Result<KeyInfo, Value> {
    let k = authenticate(g, key)?;
    access::key_refusal(&k, method).map_or(Ok(k), Err)
}

fn list_models(m: &Mock, headers: &HeaderMap, uri: &Uri) -> Response {
    let rest = strip_api_prefix(uri.path());
    let method = if rest.is_empty() || rest == "models" { "listModels" } else { "getModel" };
    let g = m.lock();
    if let Err(e) = authorize(&g, api_key(headers, uri).as_deref(), method) {
        return err_response(&e);
    }
    let mut names: Vec<String> = vec!["gemini-2.5-flash".into(), "gemini-2.5-pro".into()];
    for table in g.cfg.projects.values() {
        names.extend(table.keys().cloned());
    }
    drop(g);
    names.sort();
    names.dedup();
    if rest.is_empty() || rest == "models" {
        let models: Vec<Value> = names.iter().map(|n| model_entry(n)).collect();
        json_response(200, &json!({ "models": models }))
    } else if !rest.contains('/') && !rest.contains(':') {
        json_response(200, &model_entry(rest))
    } else {
        err_response(&errors::not_found("Method not found."))
    }
}

enum Outcome {
    Error(Value, Option<FaultKind>),
    Ok { extra_delay_ms: u64, cut: bool },
}

async fn api(State(m): St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    if let Some(r) = files::serve(&m, &method, &uri, &headers, &body).await {
        return r;
    }
    if method == Method::GET {
        let rest = strip_api_prefix(path);
        if path.starts_with("/v1") && (rest.is_empty() || rest == "models" || !rest.contains(':')) {
            return list_models(&m, &headers, &uri);
        }
    }
    if method != Method::POST {
        return err_response(&errors::not_found("Method not found."));
    }
    let Some((model, op_name)) = parse_call(path) else {
        return err_response(&errors::not_found("Method not found."));
    };
    let op = match op_name.as_str() {
        "generateContent" => Op::Generate,
        "streamGenerateContent" => Op::Stream,
        "countTokens" => Op::Count,
        "embedContent" => Op::Embed,
        "batchEmbedContents" => Op::BatchEmbed,
        _ => {
            return err_response(&errors::not_found(&format!(
                "models/{model} is not found for API version v1beta, or is not supported for {op_name}. Call ListModels to see the list of available models and their supported methods."
            )))
        }
    };
    let key = api_key(&headers, &uri);
    let parsed: Result<Value, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
    if op == Op::Count {
        return count_tokens(&m, &model, key.as_deref(), parsed, &body);
    }
    if matches!(op, Op::Embed | Op::BatchEmbed) {
        return embed::serve(&m, &model, op, key.as_deref(), parsed, &body).await;
    }
    let sse = query_param(&uri, "alt").as_deref() == Some("sse");

    // Everything that does not need the lock. Err is the body for an invalid request or
    // for one naming a resource no project can see (a resource-level 403).
    let plan: Result<gen::Plan, Value> = match &parsed {
        Ok(v) => gen::validate_generate(v)
            .map_err(|msg| errors::invalid_argument(&msg))
            .and_then(|_| media::items(v).map(|_| ()).map_err(|msg| errors::invalid_argument(&msg)))
            .and_then(|_| if signatures::required(&model) { m.sigs().check(v) } else { Ok(()) })
            .and_then(|_| {
                let g = m.lock();
                let project = key.as_deref().and_then(|k| g.resolve(k)).map(|i| i.project);
                access::resource_refusal(v, project.as_deref(), &g.resources).map_or(Ok(()), Err)
            })
            .map(|_| media::adjust(gen::plan(v), v)),
        Err(e) => Err(errors::invalid_argument(&format!("Invalid JSON payload received. {e}"))),
    };
    let log_body = parsed.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    let (cfg, seq, extra_delay_ms, cut) = match decide(&m, &model, op, key.as_deref(), &plan, log_body) {
        Ok(d) => d,
        Err(e) => return err_response(&e),
    };
    let mut plan = plan.expect("validated");
    if signatures::required(&model) && !plan.calls.is_empty() {
        let mut sigs = m.sigs();
        for c in &mut plan.calls {
            c.signature = Some(sigs.issue(&c.name));
        }
    }
    let delay = cfg.latency_ms + extra_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let id = m.response_id(seq);
    match op {
        Op::Generate => {
            let v = gen::full_response(&plan, &model, &id);
            if cut {
                truncated_json(serde_json::to_vec(&v).unwrap_or_default())
            } else {
                json_response(200, &v)
            }
        }
        Op::Stream => {
            let events = gen::stream_events(&plan, &model, &id);
            if sse {
                let chunks: Vec<Bytes> = events
                    .iter()
                    .map(|e| {
                        let mut s = b"data: ".to_vec();
                        s.extend(serde_json::to_vec(e).unwrap_or_default());
                        s.extend_from_slice(b"\r\n\r\n");
                        Bytes::from(s)
                    })
                    .collect();
                stream_response(chunks, cfg.stream_chunk_delay_ms, cut)
            } else {
                let body = serde_json::to_vec(&Value::Array(events)).unwrap_or_default();
                if cut {
                    truncated_json(body)
                } else {
                    let mut r = Response::new(Body::from(body));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
                    r
                }
            }
        }
        Op::Count | Op::Embed | Op::BatchEmbed => unreachable!("handled above"),
    }
}

/// The locked part of a generate/stream call: auth, key-level and resource-level refusals,
/// stats, faults, quota, log.
/// Ok((config, seq, extra_delay_ms, cut)) when the request is answered normally,
/// else the error body to send.
pub(crate) fn decide(
    m: &Mock,
    model: &str,
    op: Op,
    key: Option<&str>,
    plan: &Result<gen::Plan, Value>,
    log_body: Value,
) -> Result<(Arc<Config>, u64, u64, bool), Value> {
    let model = model.to_string();
    let prompt = plan.as_ref().map(|p| p.prompt).unwrap_or(0);
    let now = m.now_ms();
    let mut g = m.lock();
    g.total_requests += 1;
    let info = match authenticate(&g, key) {
        Ok(k) => k,
        Err(e) => {
            let status = e["error"]["code"].as_u64().unwrap_or(400) as u16;
            g.invalid_key_requests += 1;
            g.log(now, None, &model, op, status, None, log_body);
            drop(g);
            return Err(e);
        }
    };
    let group_id = format!("{}/{}", info.project, model);
    let cfg = g.cfg.clone();
    {
        let ks = g.key_stats.entry(info.label.clone()).or_default();
        ks.requests += 1;
        ks.arrivals.record(now);
        let gr = g.groups.entry(group_id.clone()).or_default();
        gr.requests += 1;
        gr.arrivals.record(now);
    }

    let limits = cfg.limits(&info.project, &model);
    let outcome = if let Some(e) = access::key_refusal(&info, op.as_str()) {
        Outcome::Error(e, None)
    } else if let Err(e) = plan {
        Outcome::Error(e.clone(), None)
    } else {
        let fault = g.take_fault(&info.label, &model);
        match fault.as_ref().map(|f| f.kind) {
            Some(k @ FaultKind::Internal) => Outcome::Error(errors::internal(), Some(k)),
            Some(k @ FaultKind::Unavailable) => Outcome::Error(errors::unavailable(), Some(k)),
            Some(k @ FaultKind::Exhausted) => Outcome::Error(errors::exhausted_no_details(), Some(k)),
            Some(k @ FaultKind::InvalidKey) => Outcome::Error(errors::invalid_key(), Some(k)),
            Some(k @ FaultKind::ServiceBlocked) => {
                Outcome::Error(errors::service_blocked(&access::rpc_name(op.as_str())), Some(k))
            }
            Some(k @ FaultKind::Resource) => Outcome::Error(errors::file_denied("fault"), Some(k)),
            Some(k @ FaultKind::Rpm) => {
                let lim = limits.and_then(|l| l.rpm).unwrap_or(10);
                Outcome::Error(errors::quota(QuotaKind::Rpm, &model, lim, 7_000), Some(k))
            }
            Some(k @ FaultKind::Rpd) => {
                let lim = limits.and_then(|l| l.rpd).unwrap_or(250);
                let retry = pacific::ms_to_next_midnight(now);
                Outcome::Error(errors::quota(QuotaKind::Rpd, &model, lim, retry), Some(k))
            }
            other => {
                let gr = g.groups.get_mut(&group_id).expect("group exists");
                match admit(gr, now, limits, cfg.enforce_quotas, prompt) {
                    Err((kind, limit, retry)) => Outcome::Error(errors::quota(kind, &model, limit, retry), other),
                    Ok(()) => {
                        let ks = g.key_stats.get_mut(&info.label).expect("key stats exist");
                        ks.admitted.record(now);
                        Outcome::Ok {
                            extra_delay_ms: fault
                                .as_ref()
                                .filter(|f| f.kind == FaultKind::Slow)
                                .map(|f| f.delay_ms)
                                .unwrap_or(0),
                            cut: other == Some(FaultKind::CutStream),
                        }
                    }
                }
            }
        }
    };

    let (status, fault_kind) = match &outcome {
        Outcome::Error(v, f) => (v["error"]["code"].as_u64().unwrap_or(500) as u16, *f),
        Outcome::Ok { cut, extra_delay_ms } => (
            200,
            if *cut {
                Some(FaultKind::CutStream)
            } else if *extra_delay_ms > 0 {
                Some(FaultKind::Slow)
            } else {
                None
            },
        ),
    };
    {
        let ks = g.key_stats.get_mut(&info.label).expect("key stats exist");
        match status {
            200 => ks.ok += 1,
            429 => ks.status_429 += 1,
            _ => ks.errors += 1,
        }
        let gr = g.groups.get_mut(&group_id).expect("group exists");
        match status {
            200 => gr.ok += 1,
            429 => gr.status_429 += 1,
            _ => gr.errors += 1,
        }
    }
    g.log(now, Some(info.label), &model, op, status, fault_kind, log_body);
    let seq = g.seq;
    drop(g);

    let (extra_delay_ms, cut) = match outcome {
        Outcome::Error(v, _) => return Err(v),
        Outcome::Ok { extra_delay_ms, cut } => (extra_delay_ms, cut),
    };
    Ok((cfg, seq, extra_delay_ms, cut))
}

/// Checks and records admission in a group. Err((kind, limit, retry_ms)).
fn admit(
    gr: &mut Group,
    now: u64,
    limits: Option<Limits>,
    enforce: bool,
    tokens: u64,
) -> Result<(), (QuotaKind, u64, u64)> {
    let today = pacific::pacific_day_ms(now);
    if gr.day != today {
        gr.day = today;
        gr.day_count = 0;
    }
    if enforce {
        if let Some(l) = limits {
            if let Some(rpd) = l.rpd {
                if gr.day_count + 1 > rpd {
                    return Err((QuotaKind::Rpd, rpd, pacific::ms_to_next_midnight(now)));
                }
            }
            if let Err((k, retry)) = gr.admitted.check(now, l.rpm, l.tpm, tokens) {
                let kind = QuotaKind::from(k);
                let limit = match kind {
                    QuotaKind::Rpm => l.rpm,
                    _ => l.tpm,
                }
                .unwrap_or(0);
                return Err((kind, limit, retry));
            }
        }
    }
    gr.admitted.push(now, tokens);
    gr.day_count += 1;
    gr.max_admitted = gr.max_admitted.max(gr.admitted.len() as u64);
    gr.max_tokens = gr.max_tokens.max(gr.admitted.tokens());
    Ok(())
}

fn count_tokens(m: &Mock, model: &str, key: Option<&str>, parsed: Result<Value, String>, raw: &Bytes) -> Response {
    let result: Result<u64, String> = match &parsed {
        Err(e) => Err(format!("Invalid JSON payload received. {e}")),
        Ok(v) => {
            let has_contents = v.get("contents").is_some_and(|c| !c.is_null());
            let gcr =
                v.get("generateContentRequest").or_else(|| v.get("generate_content_request")).filter(|c| !c.is_null());
            match (has_contents, gcr) {
                (true, Some(_)) => Err("Only one of contents or generate_content_request can be set.".into()),
                (false, None) => Err("* CountTokensRequest.contents: contents is not specified\n".into()),
                (true, None) => match v["contents"].as_array() {
                    Some(a) if !a.is_empty() => Ok(gen::prompt_tokens(v) + media::tokens(v)),
                    _ => Err("* CountTokensRequest.contents: contents is not specified\n".into()),
                },
                (false, Some(r)) => gen::validate_generate(r).map(|_| gen::prompt_tokens(r) + media::tokens(r)),
            }
        }
    };
    let log_body = parsed.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into()));
    let now = m.now_ms();
    let mut g = m.lock();
    g.total_count_tokens += 1;
    let info = match authenticate(&g, key) {
        Ok(k) => k,
        Err(e) => {
            let status = e["error"]["code"].as_u64().unwrap_or(400) as u16;
            g.invalid_key_requests += 1;
            g.log(now, None, model, Op::Count, status, None, log_body);
            return err_response(&e);
        }
    };
    g.key_stats.entry(info.label.clone()).or_default().count_tokens += 1;
    let (status, v) = match (access::key_refusal(&info, Op::Count.as_str()), result) {
        (Some(e), _) => (403, e),
        (None, Ok(n)) => {
            (200, json!({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]}))
        }
        (None, Err(msg)) => (400, errors::invalid_argument(&msg)),
    };
    g.log(now, Some(info.label), model, Op::Count, status, None, log_body);
    drop(g);
    json_response(status, &v)
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock-gemini: cut_stream fault")
}

/// SSE response; with `cut`, the connection is aborted after the first event.
fn stream_response(chunks: Vec<Bytes>, delay_ms: u64, cut: bool) -> Response {
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let chunks = chunks.clone();
        async move {
            if i >= chunks.len() {
                return None;
            }
            if cut && i == 1 {
                // Let the first event reach the client before aborting.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some((Err(cut_error()), usize::MAX));
            }
            if i > 0 && delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Some((Ok(chunks[i].clone()), i + 1))
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A 200 whose body stops halfway and then the connection is aborted.
fn truncated_json(full: Vec<u8>) -> Response {
    let len = full.len();
    let half = Bytes::from(full[..len / 2].to_vec());
    let stream = futures_util::stream::unfold(0u8, move |i| {
        let half = half.clone();
        async move {
            match i {
                0 => Some((Ok(half), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Err(cut_error()), 2))
                }
                _ => None,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

#[cfg(test)]
mod tests {
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
