//! The thin wasm layer: `#[event(fetch)]`, and `Fetch`-based adapters for the Upstash REST
//! endpoint and Gemini. Everything that decides something lives in the pure modules.

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use llm_key_router_core::config::{KeyPool, LogLevel, Settings};
use llm_key_router_core::conversations::{self, Conversations};
use llm_key_router_core::engine::{Caller, ChunkSource, Router, Runtime, StreamOpen, Upstream, UpstreamError};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::store::upstash::{HttpReply, StoreError, Transport, Upstash};
use llm_key_router_core::wire::api::{self, Route};
use llm_key_router_core::wire::gemini::GenerateRequest;
use serde_json::{json, Value};
use std::rc::Rc;
use std::time::Duration;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::*;
use worker::{js_sys, web_sys};

/// Config parsed once per isolate: env vars and secrets cannot change while it lives.
pub(crate) struct State {
    pub(crate) pool: std::result::Result<KeyPool, Vec<String>>,
    pub(crate) settings: std::result::Result<Settings, Vec<String>>,
    pub(crate) upstash: Option<(String, String)>,
    pub(crate) fingerprint: String,
}

thread_local! {
    static STATE: std::cell::RefCell<Option<Rc<State>>> = const { std::cell::RefCell::new(None) };
}

pub(crate) fn lookup(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

fn state(env: &Env) -> Rc<State> {
    if let Some(s) = STATE.with(|s| s.borrow().clone()) {
        return s;
    }
    let keys_json = lookup(env, "KEYS_JSON").unwrap_or_else(|| include_str!("../keys.json").to_string());
    let pool = KeyPool::parse(&keys_json);
    let settings = Settings::from_lookup(|n| lookup(env, n));
    let upstash = match (lookup(env, "UPSTASH_REDIS_REST_URL"), lookup(env, "UPSTASH_REDIS_REST_TOKEN")) {
        (Some(u), Some(t)) if !u.is_empty() => Some((u.trim_end_matches('/').to_string(), t)),
        _ => None,
    };
    // The fingerprint covers which secrets exist (not their values): rotating a disabled key's
    // secret and redeploying re-enables it.
    let secrets_digest = match &pool {
        Ok(p) => p
            .keys
            .iter()
            .map(|k| {
                let s = llm_key_router_core::config::secret_names(&k.key_id)
                    .iter()
                    .find_map(|n| lookup(env, n))
                    .unwrap_or_default();
                format!("{}:{}:{}", k.key_id, s.len(), s.get(s.len().saturating_sub(4)..).unwrap_or(""))
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => String::new(),
    };
    let fingerprint = pool.as_ref().map(|p| p.fingerprint(&secrets_digest)).unwrap_or_default();
    let st = Rc::new(State { pool, settings, upstash, fingerprint });
    STATE.with(|s| *s.borrow_mut() = Some(st.clone()));
    st
}

/// Runs `fut` with a timeout; `None` when the timer won.
pub(crate) async fn with_timeout<F: std::future::Future>(fut: F, ms: u64) -> Option<F::Output> {
    let timer = Delay::from(Duration::from_millis(ms));
    match select(std::pin::pin!(fut), timer).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

pub(crate) struct FetchTransport {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) timeout_ms: u64,
}

/// `{url}{path}` for the Upstash REST endpoint (`/` is the bare URL).
pub fn upstash_url(url: &str, path: &str) -> String {
    format!("{url}{}", if path == "/" { "" } else { path })
}

/// `{base}/v1beta/models/{model}:{method}`. The key goes in `x-goog-api-key`, never in the URL
/// (`?key=` would put it in URLs and logs).
pub fn gemini_url(base: &str, model: &str, method: &str) -> String {
    format!("{base}/v1beta/models/{model}:{method}")
}

/// A JSON `POST` built directly on the JS objects. The hot path skips `worker::Request`, which
/// re-parses the URL in Rust and makes extra JS calls (measured in bench/profile).
pub fn post_init(headers: &[(&str, &str)], body: &str) -> std::result::Result<web_sys::RequestInit, JsValue> {
    let h = web_sys::Headers::new()?;
    for (k, v) in headers {
        h.set(k, v)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&h);
    init.set_body(&JsValue::from_str(body));
    Ok(init)
}

/// Why a [`post_text`] failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PostError {
    Timeout,
    Transport(String),
}

fn js_error_text(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => "fetch failed".to_string(),
    }
}

/// One `fetch` with a deadline and the whole body read as text. `AbortSignal.timeout` bounds
/// the call and the body read with no timer on the Rust side, and `Response.text()` reads the
/// body in one promise instead of a stream reader per chunk (both measured in bench/profile).
pub async fn post_text(
    url: &str,
    init: web_sys::RequestInit,
    timeout_ms: u64,
) -> std::result::Result<HttpReply, PostError> {
    let signal = web_sys::AbortSignal::timeout_with_u32(timeout_ms.min(u32::MAX as u64) as u32);
    init.set_signal(Some(&signal));
    let fail = |e: JsValue| if signal.aborted() { PostError::Timeout } else { PostError::Transport(js_error_text(&e)) };
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp = JsFuture::from(global.fetch_with_str_and_init(url, &init)).await.map_err(fail)?;
    let resp: web_sys::Response = resp.unchecked_into();
    let status = resp.status();
    let body = JsFuture::from(resp.text().map_err(fail)?).await.map_err(fail)?;
    Ok(HttpReply { status, body: body.as_string().unwrap_or_default() })
}

/// The Gemini request as a `worker::Request`, for the streaming path (which needs the body as
/// a stream).
pub fn gemini_request(base: &str, model: &str, method: &str, api_key: &str, body: String) -> Result<Request> {
    let headers = Headers::new();
    headers.set("x-goog-api-key", api_key)?;
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    Request::new_with_init(&gemini_url(base, model, method), &init)
}

/// Reads a whole response into an [`HttpReply`].
pub async fn read_reply(mut resp: Response) -> Result<HttpReply> {
    let status = resp.status_code();
    let body = resp.text().await?;
    Ok(HttpReply { status, body })
}

impl Transport for FetchTransport {
    async fn post(&self, path: &str, body: String) -> std::result::Result<HttpReply, StoreError> {
        let bearer = format!("Bearer {}", self.token);
        let init = post_init(&[("authorization", &bearer), ("content-type", "application/json")], &body)
            .map_err(|e| StoreError::Transport(js_error_text(&e)))?;
        post_text(&upstash_url(&self.url, path), init, self.timeout_ms).await.map_err(|e| match e {
            PostError::Timeout => StoreError::Timeout,
            PostError::Transport(m) => StoreError::Transport(m),
        })
    }
}

pub(crate) struct FetchUpstream {
    pub(crate) base: String,
}

/// An upstream SSE body, read chunk by chunk. Dropping it cancels the fetch.
pub(crate) struct FetchStream {
    inner: ByteStream,
    _controller: AbortController,
}

impl ChunkSource for FetchStream {
    async fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u8>>, UpstreamError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(UpstreamError::Transport(e.to_string())),
        }
    }
}

impl Upstream for FetchUpstream {
    type Stream = FetchStream;

    async fn open_stream(
        &self,
        model: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> std::result::Result<StreamOpen<FetchStream>, UpstreamError> {
        let req = gemini_request(&self.base, model, "streamGenerateContent?alt=sse", api_key, body)
            .map_err(|e| UpstreamError::Transport(e.to_string()))?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let opened = with_timeout(Fetch::Request(req).send_with_signal(&signal), timeout_ms).await;
        let mut resp = match opened {
            None => {
                controller.abort();
                return Err(UpstreamError::Timeout);
            }
            Some(Err(e)) => return Err(UpstreamError::Transport(e.to_string())),
            Some(Ok(r)) => r,
        };
        if !(200..300).contains(&resp.status_code()) {
            return read_reply(resp)
                .await
                .map(StreamOpen::Refused)
                .map_err(|e| UpstreamError::Transport(e.to_string()));
        }
        let inner = resp.stream().map_err(|e| UpstreamError::Transport(e.to_string()))?;
        Ok(StreamOpen::Open(FetchStream { inner, _controller: controller }))
    }

    async fn generate(
        &self,
        model: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> std::result::Result<HttpReply, UpstreamError> {
        let init = post_init(&[("x-goog-api-key", api_key), ("content-type", "application/json")], &body)
            .map_err(|e| UpstreamError::Transport(js_error_text(&e)))?;
        post_text(&gemini_url(&self.base, model, "generateContent"), init, timeout_ms).await.map_err(|e| match e {
            PostError::Timeout => UpstreamError::Timeout,
            PostError::Transport(m) => UpstreamError::Transport(m),
        })
    }
}

pub struct WorkerRuntime;

impl Runtime for WorkerRuntime {
    fn now_ms(&self) -> u64 {
        Date::now().as_millis()
    }
    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await
    }
    fn random_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("crypto.getRandomValues is available in workers");
        u64::from_le_bytes(b)
    }
}

pub(crate) fn log(level: LogLevel, min: &LogLevel, event: &str, fields: Value) {
    if llm_key_router_core::log::enabled(&level, min) {
        console_log!("{}", llm_key_router_core::log::line(&level, event, fields));
    }
}

/// A whole, uncached response with the given content type.
pub(crate) fn body_response(status: u16, body: String, content_type: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_bytes(body.into_bytes())?.with_status(status).with_headers(headers))
}

pub(crate) fn json_response(status: u16, body: &Value) -> Result<Response> {
    body_response(status, body.to_string(), "application/json")
}

fn error_response(e: &RouterError, surface: api::Surface) -> Result<Response> {
    let body = match surface {
        api::Surface::Router => e.to_json(),
        api::Surface::OpenAi => llm_key_router_core::wire::openai::error_body(e),
        api::Surface::Gemini => llm_key_router_core::wire::gemini::error_body(e),
    };
    let mut resp = json_response(e.status(), &body)?;
    if let Some(s) = e.retry_after_secs() {
        resp.headers_mut().set("retry-after", &s.to_string())?;
    }
    if let RouterError::NoCapacity { bucket: Some((limit, remaining)), retry_after_ms, .. } = e {
        let h = resp.headers_mut();
        h.set("x-ratelimit-limit", &limit.to_string())?;
        h.set("x-ratelimit-remaining", &remaining.to_string())?;
        h.set("x-ratelimit-reset", &retry_after_ms.unwrap_or(0).div_ceil(1000).to_string())?;
    }
    Ok(resp)
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let st = state(&env);
    let started = Date::now().as_millis();
    let method = req.method().to_string();
    let path = req.path();
    let result = handle(&mut req, &env, &ctx, &st, &method, &path, started).await;
    let level = st.settings.as_ref().map(|s| s.log_level.clone()).unwrap_or(LogLevel::Info);
    let (resp, status, code) = match result {
        Ok((r, status)) => (Ok(r), status, None),
        Err(e) => (error_response(&e, api::surface(&path)), e.status(), Some(e.code())),
    };
    log(
        if status >= 500 { LogLevel::Error } else { LogLevel::Info },
        &level,
        "request",
        json!({"method": method, "path": llm_key_router_core::log::safe_path(&path), "status": status, "code": code,
               "duration_ms": Date::now().as_millis().saturating_sub(started)}),
    );
    resp
}

pub(crate) fn ok_json(status: u16, body: &Value) -> std::result::Result<(Response, u16), RouterError> {
    let r = json_response(status, body)
        .map_err(|e| RouterError::Internal { message: format!("response building failed: {e}") })?;
    Ok((r, status))
}

/// Reads and checks a JSON body: declared length, content type, size, UTF-8, syntax.
async fn read_json(req: &mut Request, settings: &Settings) -> std::result::Result<Value, RouterError> {
    let ct = req.headers().get("content-type").ok().flatten();
    if let Some(len) = req.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok()) {
        if len > settings.max_body_bytes {
            return Err(RouterError::PayloadTooLarge { limit: settings.max_body_bytes });
        }
    }
    let bytes = req.bytes().await.map_err(|_| RouterError::bad_request("invalid_body", "could not read body"))?;
    api::parse_json_body(ct.as_deref(), &bytes, settings.max_body_bytes)
}

/// An attempt as logged: its record plus the key masked as `AIzaSy…last4`, never the key.
fn attempt_log(env: &Env, a: &llm_key_router_core::engine::Attempt) -> Value {
    let mut v = json!(a);
    let secret =
        llm_key_router_core::config::secret_names(&a.key_id).iter().find_map(|n| lookup(env, n)).unwrap_or_default();
    v["key"] = json!(llm_key_router_core::policy::mask_key(&secret));
    v
}

/// `X-Conversation-Id`: continue a stored conversation from the OpenAI or Gemini surface.
fn conversation_header(req: &Request) -> std::result::Result<Option<String>, RouterError> {
    match req.headers().get("x-conversation-id").ok().flatten() {
        None => Ok(None),
        Some(id) if llm_key_router_core::ids::valid_conversation_id(id.trim()) => Ok(Some(id.trim().to_string())),
        Some(_) => Err(RouterError::bad_request("invalid_conversation_id", "X-Conversation-Id is malformed")),
    }
}

fn new_conversation_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("crypto.getRandomValues is available in workers");
    llm_key_router_core::ids::conversation_id_from(b)
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    st: &State,
    method: &str,
    path: &str,
    started: u64,
) -> std::result::Result<(Response, u16), RouterError> {
    let route = api::route(method, path);
    match &route {
        Route::NotFound => {
            return Err(RouterError::NotFound { code: "not_found", message: "no such route".into() });
        }
        Route::MethodNotAllowed { allowed } => return Err(RouterError::MethodNotAllowed { allowed }),
        Route::BadConversationId => {
            return Err(RouterError::bad_request("invalid_conversation_id", "conversation id is malformed"));
        }
        _ => {}
    }
    let token = {
        let h = req.headers();
        let auth = h.get("authorization").ok().flatten();
        let goog = h.get("x-goog-api-key").ok().flatten();
        llm_key_router_core::config::auth::extract_token(auth.as_deref(), goog.as_deref()).map(str::to_string)
    };
    let client = match (&st.settings, &token) {
        (Ok(s), Some(t)) => s.clients.authenticate(t).cloned(),
        _ => None,
    };
    if route == Route::Dashboard {
        return crate::edge_observe::dashboard();
    }
    if route == Route::Health {
        let (body, status) = crate::edge_observe::health(st, client.is_some()).await;
        return ok_json(status, &body);
    }
    let settings = st.settings.as_ref().map_err(|e| RouterError::ConfigInvalid { errors: e.clone() })?;
    let client = client.ok_or(RouterError::Unauthorized)?;
    if let Some(missing) = route.scopes().iter().find(|s| !client.has(**s)) {
        return Err(RouterError::Forbidden { scope: missing.as_str() });
    }
    let pool = st.pool.as_ref().map_err(|e| RouterError::ConfigInvalid { errors: e.clone() })?;
    let (url, token) = st.upstash.clone().ok_or_else(|| RouterError::ConfigInvalid {
        errors: vec!["UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN must be set".into()],
    })?;
    let store = Upstash::new(FetchTransport { url, token, timeout_ms: 5_000 });
    let convs = Conversations { store: &store, ttl_s: settings.conversation_ttl_seconds };
    let query = req.url().ok().and_then(|u| u.query().map(str::to_string)).unwrap_or_default();
    let caller = Caller {
        client_id: client.id.clone(),
        rpm: client.rpm.unwrap_or(settings.user_rpm_default),
        burst: client.burst.unwrap_or(settings.user_burst_default),
    };
    let mut stream_mode: Option<crate::edge_stream::Mode> = None;
    let mut chat: Option<llm_key_router_core::wire::openai::ChatRequest> = None;
    let gen = match route.clone() {
        Route::ChatCompletions => {
            if !settings.enabled {
                return Err(RouterError::RouterDisabled);
            }
            let conv_id = conversation_header(req)?;
            let body = read_json(req, settings).await?;
            let c = llm_key_router_core::wire::openai::ChatRequest::parse(&body, conv_id)?;
            if c.stream {
                stream_mode = Some(crate::edge_stream::Mode::OpenAi { include_usage: c.include_usage });
            }
            let g = c.gen.clone();
            chat = Some(c);
            g
        }
        Route::Gemini { model, method } => {
            if !settings.enabled {
                return Err(RouterError::RouterDisabled);
            }
            let conv_id = conversation_header(req)?;
            let body = read_json(req, settings).await?;
            if !pool.serves(&model) {
                return Err(RouterError::UnknownModel { model });
            }
            if method == api::GeminiMethod::CountTokens {
                return crate::edge_stream::count_tokens(pool, settings, env, &model, &body).await;
            }
            if method == api::GeminiMethod::Stream {
                stream_mode = Some(crate::edge_stream::Mode::Gemini);
            }
            GenerateRequest::from_gemini(&body, &model, conv_id)?
        }
        Route::Models | Route::GeminiModels => {
            let avail =
                crate::edge_stream::model_availability(&store, pool, settings, &st.fingerprint, &|n| lookup(env, n))
                    .await?;
            let body = if route == Route::Models {
                llm_key_router_core::wire::openai::models_list(&avail)
            } else {
                crate::edge_stream::gemini_models_list(&avail)
            };
            return ok_json(200, &body);
        }
        Route::Generate => {
            if !settings.enabled {
                return Err(RouterError::RouterDisabled);
            }
            let body = read_json(req, settings).await?;
            let conv_id = match body.get("conversation_id") {
                Some(Value::String(id)) if !llm_key_router_core::ids::valid_conversation_id(id) => {
                    return Err(RouterError::bad_request("invalid_conversation_id", "conversation_id is malformed"));
                }
                Some(Value::String(id)) if body.get("model").is_none() => Some(id.clone()),
                _ => None,
            };
            // No model on a conversation send: the reservation picks the conversation's own
            // (no extra round trip); the pool's first model is only the fallback.
            let fallback = pool.models().into_iter().next();
            let mut g = GenerateRequest::parse(&body, if conv_id.is_some() { fallback.as_deref() } else { None })?;
            g.model_from_conversation = conv_id.is_some();
            g
        }
        Route::ConvSend(id) => {
            if !settings.enabled {
                return Err(RouterError::RouterDisabled);
            }
            let body = read_json(req, settings).await?;
            let pick = body.get("model").is_none();
            let mut g = conversations::parse_message(&body, &id, pool.models().into_iter().next())?;
            g.model_from_conversation = pick;
            g
        }
        Route::ConvCreate => {
            let body = read_json(req, settings).await?;
            let create = conversations::CreateRequest::parse(&body)?;
            if let Some(m) = &create.model {
                if !pool.serves(m) {
                    return Err(RouterError::UnknownModel { model: m.clone() });
                }
            }
            let id = new_conversation_id();
            let v = convs.create(&id, &caller.client_id, &create, Date::now().as_millis()).await?;
            return ok_json(201, &v);
        }
        Route::ConvGet(id) => return ok_json(200, &convs.get(&id, &caller.client_id).await?),
        Route::ConvDelete(id) => return ok_json(200, &convs.delete(&id, &caller.client_id).await?),
        Route::ConvMessages(id) => {
            let (offset, limit) = conversations::page(&query)?;
            return ok_json(200, &convs.messages(&id, &caller.client_id, offset, limit).await?);
        }
        Route::ConvList => {
            let (offset, limit) = conversations::page(&query)?;
            return ok_json(200, &convs.list(&caller.client_id, offset, limit).await?);
        }
        Route::Stats => return crate::edge_observe::stats(&store, pool, settings, &st.fingerprint).await,
        Route::Metrics => return crate::edge_observe::metrics(&store, pool, settings, &st.fingerprint).await,
        Route::Health
        | Route::Dashboard
        | Route::NotFound
        | Route::MethodNotAllowed { .. }
        | Route::BadConversationId => return Err(RouterError::Internal { message: "route handled above".into() }),
    };
    let upstream = FetchUpstream { base: settings.gemini_base_url.clone() };
    let secret = |n: &str| lookup(env, n);
    let router = Router {
        pool,
        settings,
        store: &store,
        upstream: &upstream,
        rt: &WorkerRuntime,
        secret: &secret,
        cfg_fingerprint: st.fingerprint.clone(),
    };
    let outcome = router.run(&gen, &caller, stream_mode.is_some()).await;
    let outcome = match outcome {
        Ok(llm_key_router_core::engine::Outcome::Stream(pending)) => {
            let Some(mode) = stream_mode else {
                return Err(RouterError::Internal { message: "a unary request produced a stream".into() });
            };
            let (url, token) = st.upstash.clone().unwrap_or_default();
            let resp = crate::edge_stream::relay(
                pending,
                mode,
                FetchTransport { url, token, timeout_ms: 5_000 },
                settings,
                ctx,
            )
            .map_err(|e| RouterError::Internal { message: format!("stream setup failed: {e}") })?;
            return Ok((resp, 200));
        }
        Ok(llm_key_router_core::engine::Outcome::Done(s)) => Ok(s),
        Err(f) => Err(f),
    };
    if let (Some(_), Ok(s)) = (&chat, &outcome) {
        let id = format!("chatcmpl-{}", WorkerRuntime.random_hex(12));
        let body = llm_key_router_core::wire::openai::completion(
            &id,
            Date::now().as_millis() / 1000,
            &s.model_used,
            &s.reply,
            &s.usage,
        );
        let (mut r, status) = ok_json(200, &body)?;
        let _ = r.headers_mut().set("x-router-key-id", &s.key_id);
        return Ok((r, status));
    }
    if let (Route::Gemini { .. }, Ok(s)) = (&route, &outcome) {
        return ok_json(200, &s.raw);
    }
    match outcome {
        Ok(s) => {
            for a in &s.attempts {
                log(LogLevel::Debug, &settings.log_level, "attempt", attempt_log(env, a));
            }
            let body = api::generate_response(&s, Date::now().as_millis() - started, gen.conversation_id.as_deref());
            ok_json(200, &body)
        }
        Err(f) => {
            for a in &f.attempts {
                log(LogLevel::Info, &settings.log_level, "attempt", attempt_log(env, a));
            }
            Err(f.error)
        }
    }
}
