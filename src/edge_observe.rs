//! wasm glue for observability: `/health`, `/stats`, `/metrics`, `/dashboard`.
//! The figures themselves are computed in the pure `observe` module.

use crate::config::{KeyPool, Settings};
use crate::edge::{ok_json, FetchTransport, State};
use crate::error::RouterError;
use crate::upstash::Upstash;
use serde_json::{json, Value};
use worker::*;

pub(crate) async fn stats(
    _store: &Upstash<FetchTransport>,
    _pool: &KeyPool,
    _settings: &Settings,
) -> std::result::Result<(Response, u16), RouterError> {
    Err(RouterError::NotFound { code: "not_found", message: "stats are not implemented yet".into() })
}

pub(crate) async fn metrics(
    _store: &Upstash<FetchTransport>,
    _pool: &KeyPool,
    _settings: &Settings,
) -> std::result::Result<(Response, u16), RouterError> {
    Err(RouterError::NotFound { code: "not_found", message: "metrics are not implemented yet".into() })
}

pub(crate) fn dashboard() -> std::result::Result<(Response, u16), RouterError> {
    ok_json(404, &json!({"error": {"code": "not_found", "message": "dashboard is not implemented yet"}}))
}

/// `/health`: config, a real Redis round trip with its latency, and the kill switch.
pub(crate) async fn health(st: &State, details: bool) -> (Value, u16) {
    let mut healthy = true;
    let config = match (&st.pool, &st.settings) {
        (Ok(_), Ok(_)) => json!({"healthy": true}),
        (p, s) => {
            healthy = false;
            let mut errors: Vec<String> = Vec::new();
            if let Err(e) = p {
                errors.extend(e.iter().cloned());
            }
            if let Err(e) = s {
                errors.extend(e.iter().cloned());
            }
            json!({"healthy": false, "errors": errors})
        }
    };
    let redis = match &st.upstash {
        None => {
            healthy = false;
            json!({"healthy": false, "error": "UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN not set"})
        }
        Some((url, token)) => {
            let store = Upstash::new(FetchTransport { url: url.clone(), token: token.clone(), timeout_ms: 2_000 });
            let t0 = Date::now().as_millis();
            match store.command(&["PING".to_string()]).await {
                Ok(v) if v == "PONG" => {
                    json!({"healthy": true, "latency_ms": Date::now().as_millis() - t0})
                }
                Ok(v) => {
                    healthy = false;
                    json!({"healthy": false, "error": format!("unexpected PING answer {v}")})
                }
                Err(e) => {
                    healthy = false;
                    json!({"healthy": false, "error": e.to_string()})
                }
            }
        }
    };
    let enabled = st.settings.as_ref().map(|s| s.enabled).unwrap_or(false);
    if !enabled {
        healthy = false;
    }
    let keys = match &st.pool {
        Ok(p) => {
            json!({"total": p.keys.len(), "active": p.keys.iter().filter(|k| k.active).count(),
                         "models": p.models()})
        }
        Err(_) => json!(null),
    };
    if !details {
        // Without a token only the verdict is shown.
        return (json!({"status": if healthy { "healthy" } else { "unhealthy" }}), if healthy { 200 } else { 503 });
    }
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "router_enabled": enabled,
        "components": {"config": config, "redis": redis, "keys": keys},
    });
    (body, if healthy { 200 } else { 503 })
}
