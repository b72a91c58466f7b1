//! Building responses and log lines: the one place where a `RouterError` becomes an HTTP
//! response, in the error shape of the caller's surface.

use llm_key_router_core::config::LogLevel;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::wire::api::Surface;
use serde_json::Value;
use worker::{console_log, Headers, Response, Result};

/// What a handler answers: the response and its status (for the request log line).
pub(crate) type Answer = std::result::Result<(Response, u16), RouterError>;

pub(crate) fn log(level: LogLevel, min: &LogLevel, event: &str, fields: Value) {
    if llm_key_router_core::log::enabled(&level, min) {
        console_log!("{}", llm_key_router_core::log::line(&level, event, fields));
    }
}

fn internal(e: impl std::fmt::Display) -> RouterError {
    RouterError::Internal { message: format!("response building failed: {e}") }
}

/// A whole, uncached response with the given content type.
pub(crate) fn body_response(status: u16, body: String, content_type: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_bytes(body.into_bytes())?.with_status(status).with_headers(headers))
}

pub(crate) fn text(status: u16, body: String, content_type: &str) -> Answer {
    Ok((body_response(status, body, content_type).map_err(internal)?, status))
}

pub(crate) fn json(status: u16, body: &Value) -> Answer {
    text(status, body.to_string(), "application/json")
}

/// A JSON answer with the key that served it, for the SDK surfaces.
pub(crate) fn json_with_key(body: &Value, key_id: &str) -> Answer {
    let (mut r, status) = json(200, body)?;
    let _ = r.headers_mut().set("x-router-key-id", key_id);
    Ok((r, status))
}

/// The error in the caller's surface's shape, with `Retry-After` and, for a caller's own
/// bucket, `x-ratelimit-*`.
pub(crate) fn error(e: &RouterError, surface: Surface) -> Result<Response> {
    let body = match surface {
        Surface::Router => e.to_json(),
        Surface::OpenAi => llm_key_router_core::wire::openai::error_body(e),
        Surface::Gemini => llm_key_router_core::wire::gemini::error_body(e),
    };
    let mut resp = body_response(e.status(), body.to_string(), "application/json")?;
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
