//! LLM key router: an edge router for Gemini API keys, as a Cloudflare Worker.
//!
//! This crate is only the wasm glue: the fetch event (here), the route table and small
//! handlers (`handlers`), the adapters for Fetch, the clock and randomness (`fetch`), the
//! per-isolate config and secrets (`state`), responses and logs (`respond`) and the stream
//! relay (`relay`). Every decision lives in `llm-key-router-core` (`core/`), tested natively.
#![cfg(target_arch = "wasm32")]

pub mod fetch;
mod handlers;
mod relay;
mod respond;
mod state;

use llm_key_router_core::config::LogLevel;
use llm_key_router_core::json::object;
use llm_key_router_core::wire::api;
use worker::{event, Context, Date, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let st = state::State::get(&env);
    let started = Date::now().as_millis();
    let method = req.method().to_string();
    let path = req.path();
    let routed = api::routed(&method, &path);
    let result = handlers::dispatch(&mut req, &ctx, &st, &routed.route, started).await;
    let level = st.settings.as_ref().map(|s| s.log_level.clone()).unwrap_or(LogLevel::Info);
    let (resp, status, code) = match result {
        Ok((r, status)) => (Ok(r), status, None),
        Err(e) => (respond::error(&e, routed.surface), e.status(), Some(e.code())),
    };
    respond::log(
        if status >= 500 { LogLevel::Error } else { LogLevel::Info },
        &level,
        "request",
        object(vec![
            ("method", method.into()),
            ("path", llm_key_router_core::log::safe_path(&path).into()),
            ("status", status.into()),
            ("code", code.into()),
            ("duration_ms", Date::now().as_millis().saturating_sub(started).into()),
        ]),
    );
    resp
}
