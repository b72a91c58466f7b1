//! Phase 5: the settle that follows every attempt that reserved a key. It replaces the
//! estimate with the real usage, records the outcome (a cooldown, a disabled key), and unlocks
//! the conversation, appending the turn when the send succeeded.
//!
//! The conversation turn's JSON is built here and only here ([`conversation_turns`]), for
//! unary answers and for streams alike, so the two cannot drift apart.

use super::attempt::FirstEvents;
use super::Attempt;
use crate::config::{Estimator, KeyConfig};
use crate::quota::{estimate_tokens, non_text_bytes, request_estimate};
use crate::store::{settle_call, ConvLock, ConvSettle, CooldownSpec, SettleSpec};
use crate::wire::gemini::{ModelOutput, Usage};
use crate::wire::sse::{Event, SseParser, StreamTally};
use serde_json::{json, Value};

/// The accounting half of an attempt's verdict: what the settle writes about the key.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Charge {
    /// "success", "rate_limited", "transient", "key_rejected", "client_error", "timeout",
    /// "transport", "stream_cut".
    pub outcome: &'static str,
    /// Give the reservation back: Google did not count the request against the project.
    pub release: bool,
    /// The real usage, when the answer reported it; otherwise the estimate stays (it is an
    /// upper bound).
    pub usage: Option<Usage>,
    pub cooldown: Option<CooldownSpec>,
    /// Why the key is disabled (until the config fingerprint changes).
    pub disable: Option<String>,
}

impl Charge {
    pub fn kept(outcome: &'static str) -> Charge {
        Charge { outcome, release: false, usage: None, cooldown: None, disable: None }
    }
}

/// Identifies the reservation a settle closes.
pub(super) struct Reserved<'k> {
    pub key: &'k KeyConfig,
    pub client_id: &'k str,
    pub rid: String,
    pub day: i64,
    pub budget: Option<crate::store::BudgetSettle>,
}

pub(super) fn settle_spec<'k>(
    r: Reserved<'k>,
    charge: Charge,
    cfg_fingerprint: &str,
    conv: Option<ConvSettle>,
) -> SettleSpec<'k> {
    let usage = charge.usage.unwrap_or_default();
    SettleSpec {
        key: r.key,
        client_id: r.client_id,
        rid: r.rid,
        day: r.day,
        outcome: charge.outcome,
        release: charge.release,
        input: charge.usage.map(|u| u.input),
        output: usage.output,
        thoughts: usage.thoughts,
        cooldown: charge.cooldown,
        disable: charge.disable.map(|reason| (reason, cfg_fingerprint.to_string())),
        conv,
        budget: r.budget,
    }
}

/// The settle of a successful one-shot answer (no conversation), left to run after the answer
/// has been sent (the worker runs it in `ctx.wait_until`): the request then waits for one
/// Redis round trip, the reservation. Owned, so it outlives the request's borrows.
///
/// If it never runs (the isolate is evicted first), the reservation's estimate stays in the
/// window in place of the real usage. The estimate is an upper bound (the UTF-8 bytes, or the
/// configured estimator's), so the window only ever counts more than Google did: safe.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredSettle {
    key: KeyConfig,
    client_id: String,
    rid: String,
    day: i64,
    charge: Charge,
    /// The caller's budget debit, corrected with the real usage.
    budget: Option<crate::store::BudgetSettle>,
}

impl DeferredSettle {
    pub(super) fn new(r: Reserved<'_>, charge: Charge) -> DeferredSettle {
        DeferredSettle {
            key: r.key.clone(),
            client_id: r.client_id.to_string(),
            rid: r.rid,
            day: r.day,
            charge,
            budget: r.budget,
        }
    }

    /// The settle to write. A success never disables a key, so no fingerprint is written.
    pub fn settle_spec(&self) -> SettleSpec<'_> {
        let reserved = Reserved {
            key: &self.key,
            client_id: &self.client_id,
            rid: self.rid.clone(),
            day: self.day,
            budget: self.budget.clone(),
        };
        settle_spec(reserved, self.charge.clone(), "", None)
    }

    /// KEYS/ARGV of [`DeferredSettle::settle_spec`] for `settle_v1`, for glue that calls the
    /// script itself after the answer.
    pub fn settle_call(&self) -> (Vec<String>, Vec<String>) {
        settle_call(&self.settle_spec())
    }

    pub fn key_id(&self) -> &str {
        &self.key.key_id
    }
}

/// The turns a successful send appends to its conversation: the new turn(s) as sent (stamped
/// with when they were sent), then the model's answer with its usage.
///
/// Turns keep whole parts, so a tool loop can continue from the stored history:
///
/// ```text
/// {"role": "user",  "parts": [{"text": ...} | {"functionResponse": {"name", "response"}}, ...], "at": ms}
/// {"role": "model", "parts": [{"text": ..., "thoughtSignature"?}?,
///                             {"functionCall": {"name", "args"}, "thoughtSignature"?}, ...],
///  "at": ms, "usage": {...}, "tool_call_ids"?: ["call_...", ...]}
/// ```
///
/// `tool_call_ids` (one per `functionCall` part, in order) are the ids the caller saw; a later
/// tool result sent alone is named from them. Only `role` and `parts` go upstream.
pub fn conversation_turns(
    new_contents: &[Value],
    sent_at: u64,
    answer: &ModelOutput,
    usage: &Usage,
    answered_at: u64,
    estimator: Estimator,
) -> Vec<String> {
    // `est`: the turn's estimate as `upstream_history` computes it, read by `reserve_v1` to
    // return only the newest turns that fit the context budget. Keys serialize sorted, so every
    // turn starts `{"at":ms,"est":n,` (the script reads that prefix).
    let est = |role: &Value, parts: &Value| {
        request_estimate(&json!({"contents": [{"role": role, "parts": parts}]}), estimator)
    };
    let mut turns: Vec<String> = new_contents
        .iter()
        .map(|c| {
            json!({"role": c["role"], "parts": c["parts"], "at": sent_at, "est": est(&c["role"], &c["parts"])})
                .to_string()
        })
        .collect();
    let parts = json!(answer.model_parts());
    let est_model = est(&json!("model"), &parts);
    let mut model = json!({"role": "model", "parts": parts, "at": answered_at, "est": est_model, "usage": usage});
    if !answer.calls.is_empty() {
        model["tool_call_ids"] = json!(answer.call_ids());
    }
    turns.push(model.to_string());
    turns
}

/// What an answer adds to the conversation's history estimate: its text and its calls.
pub(super) fn answer_estimate(answer: &ModelOutput, estimator: Estimator) -> u64 {
    let turn = json!({"contents": [{"parts": answer.model_parts()}]});
    estimate_tokens([answer.text.as_str()], estimator) + non_text_bytes(&turn)
}

/// The conversation half of a settle: unlock, and append `turns` if any (none on failure).
pub(super) fn conv_settle(lock: &ConvLock, ttl_s: u64, turns: Vec<String>, tokens: u64, est: u64) -> ConvSettle {
    ConvSettle { id: lock.id.clone(), lock_id: lock.lock_id.clone(), turns, ttl_s, tokens, est }
}

/// A stream whose first event has arrived: failover is over, relaying starts. The caller
/// relays `first_events` then the rest of `source`, and settles with [`StreamFinish`].
pub struct PendingStream<S> {
    pub source: S,
    pub parser: SseParser,
    pub tally: StreamTally,
    /// The events read before the hand-over, each parsed once (recorded in `tally`).
    pub first_events: Vec<Event>,
    pub finish: StreamFinish,
    pub attempts: Vec<Attempt>,
    pub model_used: String,
    pub key_id: String,
    pub omitted_turns: usize,
}

impl<S> PendingStream<S> {
    pub(super) fn new(
        first: FirstEvents<S>,
        finish: StreamFinish,
        attempts: Vec<Attempt>,
        omitted_turns: usize,
    ) -> Self {
        PendingStream {
            source: first.source,
            parser: first.parser,
            tally: first.tally,
            first_events: first.events,
            model_used: finish.key.model.clone(),
            key_id: finish.key.key_id.clone(),
            finish,
            attempts,
            omitted_turns,
        }
    }
}

/// Everything needed to settle a streamed attempt once the stream has ended (or broken).
#[derive(Debug, Clone)]
pub struct StreamFinish {
    pub key: KeyConfig,
    pub client_id: String,
    pub rid: String,
    pub day: i64,
    pub conv: Option<ConvLock>,
    pub new_contents: Vec<Value>,
    /// Estimate of the new turns (texts and non-text parts) for the conversation's history.
    pub new_texts_est: u64,
    pub ttl_s: u64,
    pub estimator: Estimator,
    pub started_at: u64,
    /// The caller's budget debit, corrected with the stream's real usage.
    pub budget: Option<crate::store::BudgetSettle>,
}

impl StreamFinish {
    /// The settle of a stream that ended (`complete`) or broke. A complete stream appends the
    /// conversation turn; a broken one only unlocks. Usage is the last seen; if none was seen,
    /// the estimate stays (it is an upper bound).
    pub fn settle_spec(&self, tally: &StreamTally, complete: bool, now_ms: u64) -> SettleSpec<'_> {
        let usage = tally.usage.unwrap_or_default();
        let conv = self.conv.as_ref().map(|c| {
            let turns = if complete {
                conversation_turns(&self.new_contents, self.started_at, &tally.out, &usage, now_ms, self.estimator)
            } else {
                Vec::new()
            };
            let est = self.new_texts_est + answer_estimate(&tally.out, self.estimator);
            conv_settle(c, self.ttl_s, turns, usage.total, est)
        });
        let charge = Charge { usage: tally.usage, ..Charge::kept(if complete { "success" } else { "stream_cut" }) };
        let reserved = Reserved {
            key: &self.key,
            client_id: &self.client_id,
            rid: self.rid.clone(),
            day: self.day,
            budget: self.budget.clone(),
        };
        // A stream never disables a key, so the fingerprint is never written.
        settle_spec(reserved, charge, "", conv)
    }

    /// KEYS/ARGV of [`StreamFinish::settle_spec`] for `settle_v1`, for glue that calls the
    /// script itself after the relay.
    pub fn settle_call(&self, tally: &StreamTally, complete: bool, now_ms: u64) -> (Vec<String>, Vec<String>) {
        settle_call(&self.settle_spec(tally, complete, now_ms))
    }
}
