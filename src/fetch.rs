//! Adapters of the engine's ports on the Workers runtime: the Upstash REST transport and the
//! Gemini upstream over `fetch`, and the clock, timers and randomness.

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use llm_key_router_core::engine::{ChunkSource, Runtime, StreamOpen, Upstream, UpstreamError};
use llm_key_router_core::store::upstash::{HttpReply, StoreError, Transport};
use std::time::Duration;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{js_sys, web_sys};
use worker::{
    AbortController, ByteStream, Date, Delay, Fetch, Headers, Method, Request, RequestInit, Response, Result,
};

/// Runs `fut` with a timeout; `None` when the timer won.
pub async fn with_timeout<F: std::future::Future>(fut: F, ms: u64) -> Option<F::Output> {
    let timer = Delay::from(Duration::from_millis(ms));
    match select(std::pin::pin!(fut), timer).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

pub struct FetchTransport {
    pub url: String,
    pub token: String,
    pub timeout_ms: u64,
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

pub struct FetchUpstream {
    pub base: String,
}

/// An upstream SSE body, read chunk by chunk. Dropping it cancels the fetch.
pub struct FetchStream {
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
        self.call(model, "generateContent", api_key, body, timeout_ms).await
    }

    async fn call(
        &self,
        model: &str,
        method: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> std::result::Result<HttpReply, UpstreamError> {
        let init = post_init(&[("x-goog-api-key", api_key), ("content-type", "application/json")], &body)
            .map_err(|e| UpstreamError::Transport(js_error_text(&e)))?;
        post_text(&gemini_url(&self.base, model, method), init, timeout_ms).await.map_err(|e| match e {
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
