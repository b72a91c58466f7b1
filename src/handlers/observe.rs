//! Observability routes: `/health`, `/stats`, `/metrics`, `/dashboard` and the model lists.
//! The figures are computed in the core's `observe`; these handlers do the Redis round trip
//! and build the responses.

use super::Ctx;
use crate::fetch::FetchTransport;
use crate::respond::{self, Answer};
use crate::state::State;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::observe::{self, HealthInput, Layout};
use llm_key_router_core::store::keys;
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::wire::api::Surface;
use serde_json::{json, Value};
use worker::Date;

/// Reads everything in one `stats_v1` round trip and builds the `/stats` document.
async fn read_stats(cx: &Ctx<'_>) -> Result<observe::Stats, RouterError> {
    let (store, pool, settings, fingerprint) = (&cx.store, cx.pool, cx.settings, &cx.st.fingerprint);
    let clients: Vec<String> = settings.clients.clients.iter().map(|c| c.id.clone()).collect();
    let layout = Layout::new(pool, &clients);
    let (keys, args) = observe::stats_call(pool, &layout, settings.window_ms);
    let v = store.eval(&observe::STATS, &keys, &args).await?;
    let raw = observe::parse_stats(&v, &layout, pool.keys.len())?;
    Ok(observe::build_stats(pool, &layout, &raw, fingerprint, settings.window_ms))
}

pub(super) async fn stats(cx: &Ctx<'_>) -> Answer {
    let s = read_stats(cx).await?;
    let v = serde_json::to_value(&s).map_err(|e| RouterError::Internal { message: format!("stats: {e}") })?;
    respond::json(200, &v)
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

/// Whether each model has a key with room now: active, secret set, not disabled, not cooling,
/// under rpm and rpd. One pipelined read.
async fn model_availability(cx: &Ctx<'_>) -> Result<Vec<(String, bool)>, RouterError> {
    let (store, pool, settings) = (&cx.store, cx.pool, cx.settings);
    let now = Date::now().as_millis();
    let day = llm_key_router_core::quota::pacific_day(now as i64).0;
    let keys_: Vec<_> = pool.keys.iter().filter(|k| k.active && cx.st.api_key(&k.key_id).is_some()).collect();
    let mut cmds = Vec::new();
    for k in &keys_ {
        cmds.push(vec![
            "ZCOUNT".to_string(),
            keys::log(&k.quota_group, &k.model),
            format!("({}", now.saturating_sub(settings.window_ms)),
            "+inf".into(),
        ]);
        cmds.push(vec!["HGET".into(), keys::cooldown(&k.quota_group, &k.model), "until".into()]);
        cmds.push(vec!["HEXISTS".into(), keys::disabled(&k.key_id), "reason".into()]);
        cmds.push(vec!["HMGET".into(), keys::day(&k.quota_group, &k.model), "day".into(), "count".into()]);
    }
    let results = if cmds.is_empty() { vec![] } else { store.pipeline(&cmds).await? };
    let mut out: Vec<(String, bool)> = pool.models().into_iter().map(|m| (m, false)).collect();
    for (i, k) in keys_.iter().enumerate() {
        let r = |j: usize| results.get(4 * i + j).and_then(|r| r.as_ref().ok()).cloned().unwrap_or(Value::Null);
        let count = r(0).as_u64().unwrap_or(0);
        let until = r(1).as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let disabled = r(2).as_u64() == Some(1);
        let d = r(3);
        let dcount = if d[0].as_str().and_then(|s| s.parse::<i64>().ok()) == Some(day) {
            d[1].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        } else {
            0
        };
        if !disabled && until <= now && count < k.rpm as u64 && dcount < k.rpd as u64 {
            if let Some(e) = out.iter_mut().find(|(m, _)| *m == k.model) {
                e.1 = true;
            }
        }
    }
    Ok(out)
}

fn gemini_models_list(avail: &[(String, bool)]) -> Value {
    let models: Vec<Value> = avail
        .iter()
        .map(|(m, _)| {
            json!({"name": format!("models/{m}"), "displayName": m,
                   "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})
        })
        .collect();
    json!({"models": models})
}
