//! Embeddings: OpenAI `POST /v1/embeddings` and Gemini-native `:embedContent` /
//! `:batchEmbedContents`. Parse (`wire::embeddings`), one engine run (reserved, failed over and
//! settled like a generate request), shape.

use super::models::{log_attempts, settle_after_answer};
use super::{read_json, Ctx};
use crate::fetch::FetchUpstream;
use crate::respond::{self, Answer};
use llm_key_router_core::config::LogLevel;
use llm_key_router_core::engine::Success;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::wire::embeddings::{self, EmbedMethod, EmbedRequest};
use worker::Request;

pub(super) async fn openai(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let body = read_json(req, cx.settings).await?;
    let (e, encoding) = EmbedRequest::from_openai(&body)?;
    drop(body);
    let s = run(cx, &e).await?;
    let answer = embeddings::openai_response(&s.raw, &s.model_used, encoding, s.usage.input);
    respond::json_with_key(&answer, &s.key_id)
}

pub(super) async fn gemini(req: &mut Request, cx: &Ctx<'_>, model: &str, method: EmbedMethod) -> Answer {
    let body = read_json(req, cx.settings).await?;
    if !cx.pool.serves(model) {
        return Err(RouterError::UnknownModel { model: model.to_string() });
    }
    let e = EmbedRequest::from_gemini(body, model, method)?;
    let s = run(cx, &e).await?;
    respond::json_with_key(&s.raw, &s.key_id)
}

async fn run(cx: &Ctx<'_>, e: &EmbedRequest) -> Result<Success, RouterError> {
    let upstream = FetchUpstream { base: cx.settings.gemini_base_url.clone() };
    let router = cx.router(&upstream);
    match router.embed(e, &cx.caller).await {
        Ok(mut s) => {
            log_attempts(cx, LogLevel::Debug, &s.attempts);
            // Settled after the answer: the shaping that follows reads nothing it writes.
            settle_after_answer(cx, s.deferred.take());
            Ok(s)
        }
        Err(f) => {
            log_attempts(cx, LogLevel::Info, &f.attempts);
            Err(f.error)
        }
    }
}
