//! wasm glue for streaming (SSE relay on both surfaces), `countTokens` and model lists.
//!
//! Relay rules: failover happened before the first event (in `router::run`); from here the
//! stream is relayed event by event, never buffered whole. The quota is settled with the last
//! usage seen even when the stream breaks; a conversation turn is stored before the final
//! event; a break after the first byte ends with an explicit error event, never silently.

use crate::edge::{log, post_init, post_text, with_timeout, FetchStream, FetchTransport, PostError, WorkerRuntime};
use llm_key_router_core::config::{KeyConfig, KeyPool, Settings};
use llm_key_router_core::engine::{ChunkSource, PendingStream, Runtime};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::observe::AvailabilityRead;
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::store::SETTLE;
use llm_key_router_core::wire::sse::frame;
use serde_json::{json, Value};
use worker::*;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    OpenAi { include_usage: bool },
    Gemini,
}

type Tx = futures_channel::mpsc::UnboundedSender<std::result::Result<Vec<u8>, worker::Error>>;

fn send(tx: &Tx, s: String) {
    // A closed channel means the client left; keep reading upstream so the settle is exact.
    let _ = tx.unbounded_send(Ok(s.into_bytes()));
}

struct Emitter {
    mode: Mode,
    id: String,
    created: u64,
    model: String,
    sent_role: bool,
    /// Gemini surface: the latest event is held back so the final one goes out after the settle.
    held: Option<String>,
}

impl Emitter {
    fn event(&mut self, tx: &Tx, data: String) {
        match self.mode {
            Mode::Gemini => {
                if let Some(h) = self.held.replace(data) {
                    send(tx, frame(&h));
                }
            }
            Mode::OpenAi { .. } => {
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                let text = llm_key_router_core::wire::gemini::parse_reply(&v).text;
                if text.is_empty() && self.sent_role {
                    return;
                }
                let mut delta = json!({"content": text});
                if !self.sent_role {
                    delta["role"] = json!("assistant");
                    self.sent_role = true;
                }
                let c = llm_key_router_core::wire::openai::chunk(&self.id, self.created, &self.model, delta, None);
                send(tx, frame(&c.to_string()));
            }
        }
    }
}

pub(crate) fn relay(
    pending: PendingStream<FetchStream>,
    mode: Mode,
    transport: FetchTransport,
    settings: &Settings,
    ctx: &Context,
) -> Result<Response> {
    let (tx, rx) = futures_channel::mpsc::unbounded::<std::result::Result<Vec<u8>, worker::Error>>();
    let idle_ms = settings.upstream_timeout_ms;
    let level = settings.log_level.clone();
    let key_id = pending.key_id.clone();
    ctx.wait_until(async move { relay_task(pending, mode, transport, idle_ms, level, tx).await });
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-cache")?;
    headers.set("x-router-key-id", &key_id)?;
    Ok(Response::from_stream(rx)?.with_headers(headers))
}

async fn relay_task(
    pending: PendingStream<FetchStream>,
    mode: Mode,
    transport: FetchTransport,
    idle_ms: u64,
    level: llm_key_router_core::config::LogLevel,
    tx: Tx,
) {
    let PendingStream { mut source, mut parser, mut tally, first_events, finish, model_used, .. } = pending;
    let mut em = Emitter {
        mode,
        id: format!("chatcmpl-{}", WorkerRuntime.random_hex(12)),
        created: Date::now().as_millis() / 1000,
        model: model_used.clone(),
        sent_role: false,
        held: None,
    };
    for ev in first_events {
        em.event(&tx, ev);
    }
    let mut failure: Option<String> = None;
    loop {
        match with_timeout(source.next_chunk(), idle_ms).await {
            None => {
                failure = Some(format!("upstream stream stalled for {idle_ms} ms"));
                break;
            }
            Some(Err(e)) => {
                failure = Some(format!("upstream stream broke: {e:?}"));
                break;
            }
            Some(Ok(None)) => {
                if let Some(ev) = parser.finish() {
                    tally.observe(&ev);
                    em.event(&tx, ev);
                }
                if tally.finish_reason.is_none() {
                    failure = Some("upstream stream ended without a finish reason".into());
                }
                break;
            }
            Some(Ok(Some(bytes))) => {
                for ev in parser.feed(&bytes) {
                    tally.observe(&ev);
                    em.event(&tx, ev);
                }
            }
        }
    }
    drop(source);
    let complete = failure.is_none();
    let store = Upstash::new(transport);
    let (k, a) = finish.settle_call(&tally, complete, Date::now().as_millis());
    if let Err(e) = store.eval(&SETTLE, &k, &a).await {
        if complete && finish.conv.is_some() {
            // The turn could not be stored: do not acknowledge it with a normal ending.
            failure = Some(format!("conversation turn could not be stored: {e}"));
        }
    }
    log(
        if failure.is_some() {
            llm_key_router_core::config::LogLevel::Warn
        } else {
            llm_key_router_core::config::LogLevel::Debug
        },
        &level,
        "stream_end",
        json!({"key_id": finish.key.key_id, "model": model_used, "events": tally.events, "complete": failure.is_none(),
               "input_tokens": tally.usage.map(|u| u.input), "error": failure}),
    );
    match (failure, mode) {
        (None, Mode::Gemini) => {
            if let Some(h) = em.held.take() {
                send(&tx, frame(&h));
            }
        }
        (None, Mode::OpenAi { include_usage }) => {
            let fr = llm_key_router_core::wire::openai::finish_reason(tally.finish_reason.as_deref());
            let c = llm_key_router_core::wire::openai::chunk(&em.id, em.created, &em.model, json!({}), Some(fr));
            send(&tx, frame(&c.to_string()));
            if include_usage {
                let u = llm_key_router_core::wire::openai::usage_chunk(
                    &em.id,
                    em.created,
                    &em.model,
                    &tally.usage.unwrap_or_default(),
                );
                send(&tx, frame(&u.to_string()));
            }
            send(&tx, frame("[DONE]"));
        }
        (Some(msg), Mode::Gemini) => {
            if let Some(h) = em.held.take() {
                send(&tx, frame(&h));
            }
            let e = json!({"error": {"code": 502, "message": msg, "status": "UNAVAILABLE"}});
            send(&tx, frame(&e.to_string()));
        }
        (Some(msg), Mode::OpenAi { .. }) => {
            let e = json!({"error": {"message": msg, "type": "api_error", "code": "upstream_stream_interrupted"}});
            send(&tx, frame(&e.to_string()));
        }
    }
}

/// `:countTokens`, forwarded with a key of the model; it uses no generate quota.
pub(crate) async fn count_tokens(
    pool: &KeyPool,
    settings: &Settings,
    env: &Env,
    model: &str,
    body: &Value,
) -> std::result::Result<(Response, u16), RouterError> {
    let mut keys: Vec<_> = pool
        .candidates(model)
        .filter_map(|k| {
            llm_key_router_core::config::secret_names(&k.key_id)
                .iter()
                .find_map(|n| crate::edge::lookup(env, n))
                .map(|s| (k, s))
        })
        .collect();
    if keys.is_empty() {
        return Err(RouterError::ConfigInvalid {
            errors: vec![format!("no key of model '{model}' has its secret set")],
        });
    }
    let (_, secret) = keys.swap_remove((WorkerRuntime.random_u64() % keys.len() as u64) as usize);
    let init = post_init(&[("x-goog-api-key", &secret), ("content-type", "application/json")], &body.to_string())
        .map_err(|_| RouterError::Internal { message: "could not build the countTokens request".into() })?;
    let url = crate::edge::gemini_url(&settings.gemini_base_url, model, "countTokens");
    match post_text(&url, init, settings.upstream_timeout_ms).await.map(Some).map_err(|e| match e {
        PostError::Timeout => None,
        PostError::Transport(m) => Some(m),
    }) {
        Ok(Some(r)) if (200..300).contains(&r.status) => {
            let v: Value = serde_json::from_str(&r.body).map_err(|_| RouterError::UpstreamUnavailable {
                message: "upstream answered countTokens with an unreadable body".into(),
            })?;
            crate::edge::ok_json(200, &v)
        }
        Ok(Some(r)) => match llm_key_router_core::engine::classify::classify(r.status, &r.body) {
            llm_key_router_core::engine::classify::UpstreamOutcome::RequestRejected {
                status,
                grpc_status,
                message,
            } => Err(RouterError::UpstreamRejected { status, grpc_status, message }),
            _ => Err(RouterError::UpstreamUnavailable { message: format!("upstream answered {}", r.status) }),
        },
        Ok(None) | Err(None) => Err(RouterError::UpstreamTimeout),
        Err(Some(e)) => Err(RouterError::UpstreamUnavailable { message: format!("upstream unreachable: {e}") }),
    }
}

/// Whether each model has a key with room now. The core decides (`observe::AvailabilityRead`,
/// the same key-state derivation as `/stats` and `/health`, on Redis `TIME`); this only sends
/// its read-only pipeline. `fingerprint` is the current config's: a key disabled under an older
/// configuration counts as enabled again, as in admission.
pub(crate) async fn model_availability(
    store: &Upstash<FetchTransport>,
    pool: &KeyPool,
    settings: &Settings,
    fingerprint: &str,
    secret: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<(String, bool)>, RouterError> {
    let has_secret =
        |k: &KeyConfig| llm_key_router_core::config::secret_names(&k.key_id).iter().any(|n| secret(n).is_some());
    let read = AvailabilityRead::new(pool, settings.window_ms, &has_secret);
    let answers = if read.commands().is_empty() { vec![] } else { store.pipeline(read.commands()).await? };
    Ok(read.decide(pool, &answers, fingerprint)?)
}

pub(crate) fn gemini_models_list(avail: &[(String, bool)]) -> Value {
    let models: Vec<Value> = avail
        .iter()
        .map(|(m, _)| {
            json!({"name": format!("models/{m}"), "displayName": m,
                   "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})
        })
        .collect();
    json!({"models": models})
}
