//! Phase 1, before any round trip: which models may serve the request (the model, then its
//! fallback chain if the caller allowed it), which keys of a model may be offered (active, with
//! a secret), what the prompt is estimated to cost, and the conversation lock to take.

use super::ports::{Runtime, Secrets};
use super::{Caller, Router};
use crate::config::{Estimator, KeyConfig, KeyPool, Settings};
use crate::error::RouterError;
use crate::quota::media::{contents_tokens, families, inline_bytes, Family};
use crate::quota::{estimate_tokens, non_text_bytes, request_texts, turn_estimate};
use crate::store::{keys, Bucket, ConvLock};
use crate::wire::gemini::GenerateRequest;
use serde_json::{json, Value};

/// The most inline media (base64 bytes of `inlineData.data`) one conversation send may add to
/// its conversation: 4 MiB, about a 3 MB image, the size of agents' screenshots (0.5–3 MB).
/// The turn is written to the store in one REST request (the settle), which stays well under
/// Upstash's 10 MB request limit of its smallest plans.
pub const CONV_TURN_MEDIA_BYTES: u64 = 4 << 20;
/// The most inline media a conversation may hold: 16 MiB (four full turns). Every send reads
/// the whole history back through REST in the reservation's reply and parses it, so this bounds
/// what each turn costs in REST transfer, worker CPU and isolate memory (the reply, the parsed
/// turns and the upstream body are each about this size, well inside the 128 MB isolate).
/// Past either cap the send is refused with 413 `conversation_too_large`; media is never
/// dropped silently. Start a new conversation, or send the media outside one.
pub const CONV_MEDIA_BYTES: u64 = 16 << 20;

/// How long a streamed conversation send may hold the conversation's lock.
pub(super) const STREAM_LOCK_MS: u64 = 600_000;

/// Everything decided once per request.
pub(super) struct Plan {
    /// Prefix of every reservation id of this request (`{request_id}:{attempt}`), and the
    /// conversation's lock id, so retries re-enter their own lock.
    pub request_id: String,
    /// The requested model, then its fallbacks in preference order.
    pub models: Vec<String>,
    /// A conversation send that named no model: the reservation picks the conversation's own.
    pub pick_model: bool,
    pub conv: Option<ConvLock>,
    /// The request as Gemini would get it without stored history, `inlineData.data` left empty:
    /// the estimate's base, and the text of the new turns that a settle adds to the
    /// conversation's estimate.
    pub bare_body: Value,
    /// Tokens reserved before the call. `to_gemini` already carries the system instruction, so
    /// it is counted once; tool declarations, schemas, calls and results count by their bytes
    /// (`quota::non_text_bytes`), media by its token cost (`quota::media`).
    pub est: u64,
    /// Absolute time after which no new attempt starts.
    pub deadline: u64,
    /// An embedding call: its Gemini method and body, sent as is on every attempt.
    pub embed: Option<(&'static str, String)>,
    /// Files and cached contents the request names: reserved only on their owner's group.
    pub owned: Vec<String>,
    /// The media of the new turns by its token cost (`quota::media`), the worst case over the
    /// chain: what they add to a conversation's history estimate besides their text.
    pub new_media_tokens: u64,
}

impl<'a, Q, U, R: Runtime> Router<'a, Q, U, R> {
    pub(super) fn plan(&self, req: &GenerateRequest, caller: &Caller, stream: bool) -> Result<Plan, RouterError> {
        if !self.pool.serves(&req.model) {
            return Err(RouterError::UnknownModel { model: req.model.clone() });
        }
        // The caller's model list, before any Redis call; fallbacks it may not use are skipped.
        let model_from_conversation = req.model_from_conversation && req.conversation_id.is_some();
        if !model_from_conversation && !caller.allows_model(&req.model) {
            return Err(RouterError::ModelNotAllowed { model: req.model.clone() });
        }
        let started = self.rt.now_ms();
        let mut models = vec![req.model.clone()];
        if req.allow_fallback {
            let chain = self.pool.fallbacks.get(&req.model).cloned().unwrap_or_default();
            models.extend(chain.into_iter().filter(|m| caller.allows_model(m)));
        }
        let request_id = self.rt.random_hex(16);
        // A conversation send that named no model uses the conversation's own, which the
        // reservation script reads: candidates of every model are offered, the script filters.
        let pick_model = req.model_from_conversation && req.conversation_id.is_some();
        let conv = req.conversation_id.as_ref().map(|id| ConvLock {
            pick_model,
            id: id.clone(),
            owner: caller.client_id.clone(),
            lock_id: request_id.clone(),
            // A stream holds the lock until its settle, which may be long after the deadline of
            // the first byte; the settle releases it as soon as the stream ends.
            lock_ms: if stream { STREAM_LOCK_MS } else { self.settings.request_deadline_ms + 5_000 },
            history_budget: Some(self.settings.context_budget_tokens),
        });
        // Media by what Google charges for it (`quota::media`), read in place, the worst case
        // over the chain; the bare body then leaves the media data out (no second copy).
        if conv.is_some() {
            check_turn_media(&req.contents)?;
        }
        let (system, gen) = (req.passthrough.get("systemInstruction"), req.passthrough.get("generationConfig"));
        let fams = families(&models);
        let worst = |contents: &mut dyn Iterator<Item = &Value>, fams: &[Family]| {
            let all: Vec<&Value> = contents.collect();
            fams.iter().map(|&f| contents_tokens(all.iter().copied(), gen, f)).max().unwrap_or(0)
        };
        let media = worst(&mut req.contents.iter().chain(system), &fams);
        let new_media_tokens = if conv.is_some() { worst(&mut req.contents.iter(), &fams) } else { 0 };
        let bare_body = req.to_gemini_without_media_data();
        let est =
            estimate_tokens(request_texts(&bare_body), self.settings.estimator) + non_text_bytes(&bare_body) + media;
        Ok(Plan {
            request_id,
            models,
            pick_model,
            conv,
            bare_body,
            est,
            deadline: started + self.settings.request_deadline_ms,
            embed: None,
            owned: crate::files::referenced(req),
            new_media_tokens,
        })
    }
}

/// A conversation send's own media must fit [`CONV_TURN_MEDIA_BYTES`].
fn check_turn_media(contents: &[Value]) -> Result<(), RouterError> {
    let turn = inline_bytes(contents);
    if turn > CONV_TURN_MEDIA_BYTES {
        return Err(RouterError::ConversationTooLarge {
            message: format!(
                "this turn carries {turn} bytes of inline media; a conversation turn may carry at most \
                 {CONV_TURN_MEDIA_BYTES} (send it outside the conversation, or use a file URL)"
            ),
        });
    }
    Ok(())
}

/// The conversation's stored media plus the new turns' must fit [`CONV_MEDIA_BYTES`].
fn check_conversation_media(history: &[Value], contents: &[Value]) -> Result<(), RouterError> {
    let (stored, new) = (inline_bytes(history), inline_bytes(contents));
    if new > 0 && stored + new > CONV_MEDIA_BYTES {
        return Err(RouterError::ConversationTooLarge {
            message: format!(
                "the conversation holds {stored} bytes of inline media and this turn adds {new}; a conversation \
                 may hold at most {CONV_MEDIA_BYTES} (start a new conversation)"
            ),
        });
    }
    Ok(())
}

/// Keys that may be offered for `model`: active and with a secret. While the conversation's
/// model is still unknown (`pick_model`), every active key with a secret; the script filters.
///
/// Fails (as a config error) when none has its secret: the request cannot leave the worker.
pub(super) fn keys_with_secret<'p>(
    pool: &'p KeyPool,
    secrets: &dyn Secrets,
    model: &str,
    pick_model: bool,
) -> Result<Vec<&'p KeyConfig>, RouterError> {
    let keys: Vec<&KeyConfig> = if pick_model {
        pool.keys.iter().filter(|k| k.active && secrets.api_key(&k.key_id).is_some()).collect()
    } else {
        pool.candidates(model).filter(|k| secrets.api_key(&k.key_id).is_some()).collect()
    };
    if keys.is_empty() {
        return Err(RouterError::ConfigInvalid {
            errors: vec![format!("no key of model '{model}' has its secret API_KEY_<key_id> set")],
        });
    }
    Ok(keys)
}

/// The caller's and the global token buckets, charged by the first reservation only.
pub(super) fn buckets(settings: &Settings, caller: &Caller) -> Vec<Bucket> {
    vec![
        Bucket {
            key: keys::client_bucket(&caller.client_id),
            name: "client",
            rate_per_min: caller.rpm,
            burst: caller.burst,
        },
        Bucket {
            key: keys::GLOBAL_BUCKET.to_string(),
            name: "global",
            rate_per_min: settings.global_rpm_max,
            burst: settings.global_burst_max,
        },
    ]
}

/// The body sent upstream: the stored history (trimmed to the context budget) before the new
/// turns, and the conversation's stored system instruction unless the request carries one.
/// Returns the body and how many stored turns were left out. `req` has its tool results
/// already named ([`resolve_tool_names`]). Fails with 413 `conversation_too_large` when the new
/// turns' media would take the conversation past [`CONV_MEDIA_BYTES`] (counted over every
/// stored turn, not only those sent).
pub(super) fn upstream_body(
    req: &GenerateRequest,
    stored: &[String],
    stored_system: Option<String>,
    settings: &Settings,
) -> Result<(String, usize), RouterError> {
    let answers_calls = req.contents.first().is_some_and(has_function_response);
    let turns = parse_turns(stored);
    if req.conversation_id.is_some() {
        check_conversation_media(&turns, &req.contents)?;
    }
    let (history, omitted) = trim_history(turns, settings.context_budget_tokens, settings.estimator, answers_calls);
    // Serialized from borrowed parts: the request's media is not copied again.
    Ok((req.to_gemini_string(&history, stored_system.as_deref()), omitted))
}

/// Stored turns as sent upstream: only `role` and `parts`.
fn parse_turns(stored: &[String]) -> Vec<Value> {
    stored
        .iter()
        .filter_map(|t| crate::json::parse(t).ok())
        .map(|mut t| crate::json::object(vec![("role", t["role"].take()), ("parts", t["parts"].take())]))
        .collect()
}

fn has_function_response(turn: &Value) -> bool {
    turn["parts"].as_array().into_iter().flatten().any(|p| p.get("functionResponse").is_some())
}

/// A user turn that opens an exchange: a cut of the history may start there.
fn opens_exchange(turn: &Value) -> bool {
    turn["role"] == "user" && !has_function_response(turn)
}

/// Stored turns as sent upstream (only `role` and `parts`, whole: text, media, `functionCall`
/// with its `thoughtSignature`, `functionResponse`), leaving out the oldest turns while the
/// estimate exceeds the context budget. They stay in storage. Media counts by its token cost
/// (`quota::media`, Gemini 2.x tiles), not its bytes: a 1.5 MB image is 516 tokens.
///
/// The history is only ever cut just before a user turn that opens an exchange (one without
/// a `functionResponse`), so it never starts with a model turn or an orphaned tool result, and
/// a `functionCall` turn is never separated from the `functionResponse` turn that answers it.
/// When the new turns start with a tool result (`answers_calls`), the last exchange, which
/// holds the call it answers, is always kept, even over budget.
pub fn upstream_history(
    stored: &[String],
    budget: u64,
    estimator: Estimator,
    answers_calls: bool,
) -> (Vec<Value>, usize) {
    trim_history(parse_turns(stored), budget, estimator, answers_calls)
}

fn trim_history(mut turns: Vec<Value>, budget: u64, estimator: Estimator, answers_calls: bool) -> (Vec<Value>, usize) {
    let sizes: Vec<u64> = turns.iter().map(|t| turn_estimate(t, estimator)).collect();
    let mut total: u64 = sizes.iter().sum();
    // Where a cut may start: before every later exchange opener, and at the end (everything
    // left out) unless the new turns answer a stored call.
    let mut cuts: Vec<usize> = (1..turns.len()).filter(|&i| opens_exchange(&turns[i])).collect();
    if !answers_calls {
        cuts.push(turns.len());
    }
    let mut start = 0;
    for cut in cuts {
        if total <= budget {
            break;
        }
        total -= sizes[start..cut].iter().sum::<u64>();
        start = cut;
    }
    (turns.split_off(start), start)
}

/// Names the tool results that a conversation send carried without their calls
/// (`functionResponse {id, response}`, see `wire::openai::messages`) from the stored turns'
/// `tool_call_ids`. `Ok(None)` when there is nothing to name; an id no stored call has is a
/// 400 `unknown_tool_call_id`.
pub(super) fn resolve_tool_names(contents: &[Value], stored: &[String]) -> Result<Option<Vec<Value>>, RouterError> {
    let pending =
        |p: &Value| p.get("functionResponse").is_some_and(|f| f.get("name").is_none() && f.get("id").is_some());
    if !contents.iter().any(|c| c["parts"].as_array().into_iter().flatten().any(pending)) {
        return Ok(None);
    }
    let mut names: Vec<(String, String)> = Vec::new();
    for t in stored.iter().filter_map(|t| crate::json::parse(t).ok()) {
        let calls = t["parts"].as_array().into_iter().flatten().filter_map(|p| p["functionCall"]["name"].as_str());
        let ids = t["tool_call_ids"].as_array().into_iter().flatten().filter_map(Value::as_str);
        names.extend(ids.zip(calls).map(|(i, n)| (i.to_string(), n.to_string())));
    }
    let mut out = contents.to_vec();
    for c in &mut out {
        for p in c.get_mut("parts").and_then(Value::as_array_mut).into_iter().flatten() {
            if !pending(p) {
                continue;
            }
            let Some(f) = p.get_mut("functionResponse") else { continue };
            let id = f["id"].as_str().unwrap_or_default().to_string();
            let name = names.iter().rev().find(|(i, _)| *i == id).map(|(_, n)| n.clone()).ok_or_else(|| {
                RouterError::bad_request(
                    "unknown_tool_call_id",
                    format!("tool_call_id '{id}' answers no tool call of the request or the conversation"),
                )
            })?;
            *f = json!({"name": name, "response": f["response"]});
        }
    }
    Ok(Some(out))
}
