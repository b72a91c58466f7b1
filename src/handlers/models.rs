//! Model calls on every surface: `/v1/generate`, conversation sends, OpenAI chat completions
//! and Gemini-native `generateContent` / `streamGenerateContent` / `countTokens`. Each handler
//! parses its surface's body into one `GenerateRequest` and a [`Shape`]; [`run`] calls the
//! engine once and shapes the answer.

use super::{read_json, Ctx};
use crate::fetch::{post_init, post_text, FetchUpstream, PostError, WorkerRuntime};
use crate::relay::{self, Mode};
use crate::respond::{self, log, Answer};
use llm_key_router_core::config::LogLevel;
use llm_key_router_core::conversations;
use llm_key_router_core::engine::{classify, Attempt, DeferredSettle, Outcome, Runtime, Success};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::json;
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::store::SETTLE;
use llm_key_router_core::wire::api::{self, GeminiMethod};
use llm_key_router_core::wire::gemini::GenerateRequest;
use llm_key_router_core::wire::openai::{self, ChatRequest};
use serde_json::Value;
use worker::{Date, Request};

/// How the caller wants its answer.
enum Shape {
    /// The router's own JSON (`/v1/generate`, conversation sends).
    Router,
    OpenAi {
        stream: bool,
        include_usage: bool,
        include_thoughts: bool,
    },
    Gemini {
        stream: bool,
    },
}

impl Shape {
    fn stream_mode(&self) -> Option<Mode> {
        match *self {
            Shape::OpenAi { stream: true, include_usage, include_thoughts } => {
                Some(Mode::OpenAi { include_usage, include_thoughts })
            }
            Shape::Gemini { stream: true } => Some(Mode::Gemini),
            _ => None,
        }
    }
}

/// `X-Conversation-Id`: continue a stored conversation from the OpenAI or Gemini surface.
fn conversation_header(req: &Request) -> Result<Option<String>, RouterError> {
    match req.headers().get("x-conversation-id").ok().flatten() {
        None => Ok(None),
        Some(id) if llm_key_router_core::ids::valid_conversation_id(id.trim()) => Ok(Some(id.trim().to_string())),
        Some(_) => Err(RouterError::bad_request("invalid_conversation_id", "X-Conversation-Id is malformed")),
    }
}

/// `X-Allow-Fallback: true`: the SDK surfaces' way to allow the model's fallback chain.
fn fallback_header(req: &Request) -> Result<bool, RouterError> {
    api::allow_fallback_header(req.headers().get("x-allow-fallback").ok().flatten().as_deref())
}

/// The pool's first model: the fallback of a conversation send that named no model (the
/// reservation then picks the conversation's own, with no extra round trip).
fn first_model(cx: &Ctx) -> Option<String> {
    cx.pool.models().into_iter().next()
}

pub(super) async fn generate(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let body = read_json(req, cx.settings).await?;
    let conv_id = match body.get("conversation_id") {
        Some(Value::String(id)) if !llm_key_router_core::ids::valid_conversation_id(id) => {
            return Err(RouterError::bad_request("invalid_conversation_id", "conversation_id is malformed"));
        }
        Some(Value::String(id)) if body.get("model").is_none() => Some(id.clone()),
        _ => None,
    };
    let fallback = if conv_id.is_some() { first_model(cx) } else { None };
    let mut g = GenerateRequest::parse(&body, fallback.as_deref())?;
    g.model_from_conversation = conv_id.is_some();
    run(cx, g, Shape::Router).await
}

pub(super) async fn conversation_send(req: &mut Request, cx: &Ctx<'_>, id: &str) -> Answer {
    let body = read_json(req, cx.settings).await?;
    let pick = body.get("model").is_none();
    let mut g = conversations::parse_message(&body, id, first_model(cx))?;
    g.model_from_conversation = pick;
    run(cx, g, Shape::Router).await
}

pub(super) async fn chat(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let conv_id = conversation_header(req)?;
    let allow_fallback = fallback_header(req)?;
    let body = read_json(req, cx.settings).await?;
    let mut c = ChatRequest::parse(&body, conv_id)?;
    c.gen.allow_fallback = allow_fallback;
    let shape =
        Shape::OpenAi { stream: c.stream, include_usage: c.include_usage, include_thoughts: c.include_thoughts };
    run(cx, c.gen, shape).await
}

pub(super) async fn gemini(req: &mut Request, cx: &Ctx<'_>, model: &str, method: GeminiMethod) -> Answer {
    let conv_id = conversation_header(req)?;
    let allow_fallback = fallback_header(req)?;
    let body = read_json(req, cx.settings).await?;
    if !cx.pool.serves(model) {
        return Err(RouterError::UnknownModel { model: model.to_string() });
    }
    match method {
        GeminiMethod::CountTokens => count_tokens(cx, model, &body).await,
        GeminiMethod::Generate | GeminiMethod::Stream => {
            let mut g = GenerateRequest::from_gemini_owned(body, model, conv_id)?;
            g.allow_fallback = allow_fallback;
            run(cx, g, Shape::Gemini { stream: method == GeminiMethod::Stream }).await
        }
    }
}

/// An attempt as logged: its record plus the key masked as `AIzaSy…last4`, never the key.
fn attempt_log(cx: &Ctx, a: &Attempt) -> Value {
    let mut v = a.to_json();
    json::set(&mut v, "key", llm_key_router_core::policy::mask_key(cx.st.api_key(&a.key_id).unwrap_or("")).into());
    v
}

pub(super) fn log_attempts(cx: &Ctx, level: LogLevel, attempts: &[Attempt]) {
    for a in attempts {
        log(level.clone(), &cx.settings.log_level, "attempt", attempt_log(cx, a));
    }
}

/// Runs the settle a one-shot success deferred, after the answer (`ctx.wait_until`): the
/// request waited for one Redis round trip, the reservation. If the isolate is evicted before
/// it runs, the reservation's estimate (an upper bound) stays in the window: safe.
pub(super) fn settle_after_answer(cx: &Ctx<'_>, deferred: Option<DeferredSettle>) {
    let Some(d) = deferred else { return };
    let transport = match super::upstash(cx.st, 5_000) {
        Ok(t) => t,
        Err(_) => return,
    };
    let level = cx.settings.log_level.clone();
    let (keys, args) = d.settle_call();
    cx.wctx.wait_until(async move {
        if let Err(e) = Upstash::new(transport).eval(&SETTLE, &keys, &args).await {
            log(
                LogLevel::Warn,
                &level,
                "deferred_settle_failed",
                json::object(vec![("key_id", d.key_id().into()), ("error", e.to_string().into())]),
            );
        }
    });
}

/// One engine run, answered in the caller's shape.
async fn run(cx: &Ctx<'_>, gen: GenerateRequest, shape: Shape) -> Answer {
    let upstream = FetchUpstream { base: cx.settings.gemini_base_url.clone() };
    let router = cx.router(&upstream);
    let mode = shape.stream_mode();
    let mut s = match router.run(&gen, &cx.caller, mode.is_some()).await {
        Ok(Outcome::Done(s)) => s,
        Ok(Outcome::Stream(pending)) => {
            let mode =
                mode.ok_or_else(|| RouterError::Internal { message: "a unary request produced a stream".into() })?;
            log_attempts(cx, LogLevel::Debug, &pending.attempts);
            let transport = super::upstash(cx.st, 5_000)?;
            let resp = relay::relay(pending, mode, transport, cx.settings, cx.wctx)
                .map_err(|e| RouterError::Internal { message: format!("stream setup failed: {e}") })?;
            return Ok((resp, 200));
        }
        Err(f) => {
            log_attempts(cx, LogLevel::Info, &f.attempts);
            return Err(f.error);
        }
    };
    log_attempts(cx, LogLevel::Debug, &s.attempts);
    let answer = shape_answer(cx, &gen, &s, shape);
    settle_after_answer(cx, s.deferred.take());
    answer
}

fn shape_answer(cx: &Ctx<'_>, gen: &GenerateRequest, s: &Success, shape: Shape) -> Answer {
    match shape {
        Shape::Router => {
            let ms = Date::now().as_millis() - cx.started;
            respond::json(200, &api::generate_response(s, ms, gen.conversation_id.as_deref()))
        }
        Shape::OpenAi { include_thoughts, .. } => {
            let id = format!("chatcmpl-{}", WorkerRuntime.random_hex(12));
            let now = Date::now().as_millis() / 1000;
            let body = openai::completion(&id, now, &s.model_used, &s.reply, &s.usage, include_thoughts);
            respond::json_with_key(&body, &s.key_id)
        }
        Shape::Gemini { .. } => respond::json_with_key(&s.raw, &s.key_id),
    }
}

/// `:countTokens`, forwarded with a random key of the model; it uses no generate quota.
async fn count_tokens(cx: &Ctx<'_>, model: &str, body: &Value) -> Answer {
    let keys: Vec<&str> = cx.pool.candidates(model).filter_map(|k| cx.st.api_key(&k.key_id)).collect();
    if keys.is_empty() {
        return Err(RouterError::ConfigInvalid {
            errors: vec![format!("no key of model '{model}' has its secret set")],
        });
    }
    let secret = keys[(WorkerRuntime.random_u64() % keys.len() as u64) as usize];
    let init = post_init(&[("x-goog-api-key", secret), ("content-type", "application/json")], &body.to_string())
        .map_err(|_| RouterError::Internal { message: "could not build the countTokens request".into() })?;
    let url = crate::fetch::gemini_url(&cx.settings.gemini_base_url, model, "countTokens");
    let r = match post_text(&url, init, cx.settings.upstream_timeout_ms).await {
        Ok(r) => r,
        Err(PostError::Timeout) => return Err(RouterError::UpstreamTimeout),
        Err(PostError::Transport(e)) => {
            return Err(RouterError::UpstreamUnavailable { message: format!("upstream unreachable: {e}") })
        }
    };
    if (200..300).contains(&r.status) {
        let v: Value = json::parse(&r.body).map_err(|_| RouterError::UpstreamUnavailable {
            message: "upstream answered countTokens with an unreadable body".into(),
        })?;
        return respond::json(200, &v);
    }
    match classify::classify(r.status, &r.body) {
        classify::UpstreamOutcome::RequestRejected { status, grpc_status, message } => {
            Err(RouterError::UpstreamRejected { status, grpc_status, message })
        }
        _ => Err(RouterError::UpstreamUnavailable { message: format!("upstream answered {}", r.status) }),
    }
}
