//! Observability routes: `/health`, `/stats`, `/metrics`, `/dashboard` and the model lists.
//! The figures are computed in the core's `observe`; these handlers do the Redis round trip
//! and build the responses.

use super::Ctx;
use crate::fetch::FetchTransport;
use crate::respond::{self, Answer};
use crate::state::State;
use llm_key_router_core::config::KeyConfig;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::json::object;
use llm_key_router_core::observe::{self, AvailabilityRead, HealthInput, Layout};
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::wire::api::Surface;
use serde_json::Value;
use worker::Date;

/// Reads everything in one `stats_v1` round trip and builds the `/stats` document.
pub(super) async fn read_stats(cx: &Ctx<'_>) -> Result<observe::Stats, RouterError> {
    let (store, pool, settings, fingerprint) = (&cx.store, cx.pool, cx.settings, &cx.st.fingerprint);
    let clients: Vec<String> = settings.clients.clients.iter().map(|c| c.id.clone()).collect();
    let layout = Layout::new(pool, &clients);
    let raw = observe::read_stats(store, pool, &layout, settings.window_ms).await?;
    let mut s = observe::build_stats(pool, &layout, &raw, fingerprint, settings.window_ms);
    let limits: Vec<(Option<u64>, Option<u64>)> =
        settings.clients.clients.iter().map(|c| (c.daily_tokens, c.tpm)).collect();
    observe::add_client_budgets(&mut s, &raw, &limits);
    Ok(s)
}

pub(super) async fn stats(cx: &Ctx<'_>) -> Answer {
    let s = read_stats(cx).await?;
    respond::json(200, &s.to_json())
}

pub(super) async fn metrics(cx: &Ctx<'_>) -> Answer {
    let s = read_stats(cx).await?;
    respond::text(200, observe::prometheus(&s), observe::METRICS_CONTENT_TYPE)
}

pub(super) fn dashboard() -> Answer {
    respond::text(200, include_str!("../dashboard.html").to_string(), "text/html; charset=utf-8")
}

/// `GET /v1/models` (OpenAI's shape) or `GET /v1beta/models` (Gemini's), each with whether the
/// model has capacity now.
pub(super) async fn models(cx: &Ctx<'_>, surface: Surface) -> Answer {
    let avail = model_availability(cx).await?;
    let body = match surface {
        Surface::Gemini => gemini_models_list(&avail),
        Surface::OpenAi | Surface::Router => llm_key_router_core::wire::openai::models_list(&avail),
    };
    respond::json(200, &body)
}

/// `GET /v1beta/models/{model}` (Gemini's `models.get`) or `GET /v1/models/{model}`: a pool
/// model's description, from config alone; 404 in the surface's shape for any other.
pub(super) fn model(cx: &Ctx<'_>, model: &str, surface: Surface) -> Answer {
    if !cx.pool.serves(model) {
        return Err(RouterError::NotFound {
            code: "model_not_found",
            message: format!("models/{model} is not found: no key in the pool serves it"),
        });
    }
    let body = match surface {
        Surface::Gemini => llm_key_router_core::wire::api::gemini_model(model),
        Surface::OpenAi | Surface::Router => llm_key_router_core::wire::api::openai_model(model),
    };
    respond::json(200, &body)
}

/// `/health`: config, one real Redis round trip (a read-only pipeline that also reads the key
/// states) with its latency, the key pool, the conversation store and the kill switch.
pub(super) async fn health(st: &State, details: bool) -> Answer {
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
    let (body, status) = observe::health(&input, details);
    respond::json(status, &body)
}

/// Whether each model has a key with room now. The core decides (`observe::AvailabilityRead`,
/// the same key-state derivation as `/stats` and `/health`, on Redis `TIME`); this only sends
/// its read-only pipeline. A key disabled under an older configuration fingerprint counts as
/// enabled again, as in admission.
async fn model_availability(cx: &Ctx<'_>) -> Result<Vec<(String, bool)>, RouterError> {
    let has_secret = |k: &KeyConfig| cx.st.api_key(&k.key_id).is_some();
    let read = AvailabilityRead::new(cx.pool, cx.settings.window_ms, &has_secret);
    let answers = if read.commands().is_empty() { vec![] } else { cx.store.pipeline(read.commands()).await? };
    Ok(read.decide(cx.pool, &answers, &cx.st.fingerprint)?)
}

fn gemini_models_list(avail: &[(String, bool)]) -> Value {
    let models: Vec<Value> = avail.iter().map(|(m, _)| llm_key_router_core::wire::api::gemini_model(m)).collect();
    object(vec![("models", models.into())])
}
