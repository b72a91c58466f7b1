//! wasm glue for observability: `/health`, `/stats`, `/metrics`, `/dashboard`.
//! The figures themselves are computed in the pure `observe` module; this file only does the
//! Redis round trip and builds the responses.

use crate::edge::{ok_json, FetchTransport, State};
use llm_key_router_core::config::{KeyPool, Settings};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::observe::{self, HealthInput, Layout};
use llm_key_router_core::store::upstash::Upstash;
use serde_json::Value;
use worker::*;

/// Reads everything in one `stats_v1` round trip and builds the `/stats` document.
async fn read_stats(
    store: &Upstash<FetchTransport>,
    pool: &KeyPool,
    settings: &Settings,
    fingerprint: &str,
) -> std::result::Result<observe::Stats, RouterError> {
    let clients: Vec<String> = settings.clients.clients.iter().map(|c| c.id.clone()).collect();
    let layout = Layout::new(pool, &clients);
    let raw = observe::read_stats(store, pool, &layout, settings.window_ms).await?;
    Ok(observe::build_stats(pool, &layout, &raw, fingerprint, settings.window_ms))
}

fn internal(e: impl std::fmt::Display) -> RouterError {
    RouterError::Internal { message: format!("response building failed: {e}") }
}

fn text_response(status: u16, body: String, content_type: &str) -> std::result::Result<(Response, u16), RouterError> {
    Ok((crate::edge::body_response(status, body, content_type).map_err(internal)?, status))
}

pub(crate) async fn stats(
    store: &Upstash<FetchTransport>,
    pool: &KeyPool,
    settings: &Settings,
    fingerprint: &str,
) -> std::result::Result<(Response, u16), RouterError> {
    let s = read_stats(store, pool, settings, fingerprint).await?;
    ok_json(200, &serde_json::to_value(&s).map_err(internal)?)
}

pub(crate) async fn metrics(
    store: &Upstash<FetchTransport>,
    pool: &KeyPool,
    settings: &Settings,
    fingerprint: &str,
) -> std::result::Result<(Response, u16), RouterError> {
    let s = read_stats(store, pool, settings, fingerprint).await?;
    text_response(200, observe::prometheus(&s), observe::METRICS_CONTENT_TYPE)
}

pub(crate) fn dashboard() -> std::result::Result<(Response, u16), RouterError> {
    text_response(200, include_str!("dashboard.html").to_string(), "text/html; charset=utf-8")
}

/// `/health`: config, one real Redis round trip (a read-only pipeline that also reads the key
/// states) with its latency, the key pool, the conversation store and the kill switch.
pub(crate) async fn health(st: &State, details: bool) -> (Value, u16) {
    let mut config_errors: Vec<String> = Vec::new();
    if let Err(e) = &st.pool {
        config_errors.extend(e.iter().cloned());
    }
    if let Err(e) = &st.settings {
        config_errors.extend(e.iter().cloned());
    }
    let pool = st.pool.as_ref().ok();
    let layout = pool.map(|p| Layout::new(p, &[]));
    let (redis, counts) = match &st.upstash {
        None => (Err("UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN not set".to_string()), None),
        Some((url, token)) => {
            let store = Upstash::new(FetchTransport { url: url.clone(), token: token.clone(), timeout_ms: 2_000 });
            let cmds = match (pool, &layout) {
                (Some(p), Some(l)) => observe::health_pipeline(p, l),
                _ => vec![vec!["PING".to_string()]],
            };
            let t0 = Date::now().as_millis();
            match store.pipeline(&cmds).await {
                Ok(answers) => {
                    let latency = Date::now().as_millis().saturating_sub(t0);
                    match observe::ping_ok(&answers) {
                        Ok(()) => {
                            let counts = match (pool, &layout) {
                                (Some(p), Some(l)) => observe::pool_counts(p, l, &answers, &st.fingerprint),
                                _ => None,
                            };
                            (Ok(latency), counts)
                        }
                        Err(e) => (Err(e), None),
                    }
                }
                Err(e) => (Err(e.to_string()), None),
            }
        }
    };
    let input = HealthInput {
        config_errors,
        redis,
        pool,
        counts,
        enabled: st.settings.as_ref().map(|s| s.enabled).unwrap_or(false),
        conversation_ttl_seconds: st.settings.as_ref().ok().map(|s| s.conversation_ttl_seconds),
    };
    observe::health(&input, details)
}
