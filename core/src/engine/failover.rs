//! The walk over candidates, pingora-style: [`Walk::next_offer`] yields what may be tried next
//! in preference order (the current model's untried keys, then the next model of the fallback
//! chain when a limit refuses), and [`Router::walk`] just walks it, one reservation, one
//! upstream call and one settle per step.
//!
//! What ends the walk:
//! - an answer (or a stream's first event): done;
//! - a request-caused 4xx ([`UpstreamOutcome::RequestRejected`]): back to the caller at once,
//!   since the same request fails on every key;
//! - `max_attempts` upstream calls, or the request's deadline;
//! - a caller-level limit, or a refusal on the last model of the chain.
//!
//! What fails over: a 429 (the settle cools the quota group), an invalid key (the settle
//! disables it), and 5xx/timeout/transport errors (after a jittered backoff).

use super::attempt::Method;
use super::judge::{judge, Next, Verdict};
use super::plan::{keys_with_secret, resolve_tool_names, upstream_body, Plan};
use super::ports::{QuotaStore, Runtime, Secrets, Upstream};
use super::reserve::Offer;
use super::settle::{
    answer_estimate, conv_settle, conversation_turns, settle_spec, Charge, DeferredSettle, PendingStream, Reserved,
    StreamFinish,
};
use super::{Attempt, Caller, Failure, Outcome, Router, Success};
use crate::config::{Estimator, KeyConfig, KeyPool};
use crate::error::{LimitKind, RouterError};
use crate::policy::backoff_ms;
use crate::quota::{estimate_tokens, non_text_bytes, request_texts};
use crate::wire::gemini::GenerateRequest;
use serde_json::json;

/// Where the walk stands: the fallback chain, the keys already tried, the attempts made.
pub(super) struct Walk {
    models: Vec<String>,
    model_idx: usize,
    pick_model: bool,
    tried: Vec<String>,
    attempts: Vec<Attempt>,
    /// The error to report if the walk runs out, from the last step that failed over.
    last_error: Option<RouterError>,
    max_attempts: usize,
    deadline: u64,
    /// The keys of the last offer, and whether they were a sampled window of the model's keys.
    offered: Vec<String>,
    sampled: bool,
    /// Keys of the current model a sampled window offered and the reservation refused: the
    /// next offer is every other key (widened), so a refusal still means "no key has room".
    refused_keys: Vec<String>,
    /// The soonest refusal of the current model so far, reported if the widened offer refuses.
    held: Option<Refusal>,
    /// The request names files or cached contents: `reserve_v1` restricts the candidates to
    /// their owner's quota group, which only Redis knows, so every key is offered (a window
    /// might hold none of the owner's keys).
    names_files: bool,
}

/// A refusal as the walk reports it: the limit, when to retry, the bucket's limit/remaining.
type Refusal = (LimitKind, Option<u64>, Option<(u64, u64)>);

/// The most keys one reservation examines first. A larger pool is offered a window of this
/// many keys, drawn by weight (so every key is offered over time); if the window refuses, the
/// next reservation examines every other key of the model, so admission stays exact: a refusal
/// still means no key had room. `reserve_v1` visits each offered key, so this bounds its cost.
pub const OFFER_WINDOW: usize = 8;

/// `k` of `keys` drawn without replacement with probability proportional to their weight
/// (Efraimidis-Spirakis: the `k` largest `u^(1/w)`), kept in pool order. `seed` drives a
/// splitmix64 stream, so one random draw per offer suffices.
pub(super) fn sample_window<'p>(keys: &[&'p KeyConfig], k: usize, seed: u64) -> Vec<&'p KeyConfig> {
    if keys.len() <= k {
        return keys.to_vec();
    }
    let mut state = seed;
    let mut next_unit = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut scored: Vec<(f64, usize)> =
        keys.iter().enumerate().map(|(i, key)| (next_unit().powf(1.0 / key.weight.max(1e-9)), i)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut chosen: Vec<usize> = scored[..k].iter().map(|&(_, i)| i).collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| keys[i]).collect()
}

impl Walk {
    pub fn new(plan: &Plan, max_attempts: usize) -> Walk {
        Walk {
            models: plan.models.clone(),
            model_idx: 0,
            pick_model: plan.pick_model,
            tried: Vec::new(),
            attempts: Vec::new(),
            last_error: None,
            max_attempts,
            deadline: plan.deadline,
            offered: Vec::new(),
            sampled: false,
            refused_keys: Vec::new(),
            held: None,
            names_files: !plan.owned.is_empty(),
        }
    }

    /// The next offer, or `None` once `max_attempts` upstream calls were made or the chain is
    /// exhausted. A model none of whose keys has a secret is skipped (its error kept). Keys
    /// already tried are left out, unless every key was: transient failures may then retry on
    /// any of them.
    ///
    /// A model with more than [`OFFER_WINDOW`] such keys is offered a weighted window of them
    /// first (a request that lets the reservation pick the conversation's model is offered
    /// every key: the script filters by a model only it knows; so is one naming files or cached
    /// contents: the script keeps only their owner's quota group, which only it knows).
    pub fn next_offer<'p>(
        &mut self,
        pool: &'p KeyPool,
        secrets: &dyn Secrets,
        random: impl FnOnce() -> u64,
    ) -> Option<Offer<'p>> {
        while self.attempts.len() < self.max_attempts && self.model_idx < self.models.len() {
            let model = &self.models[self.model_idx];
            match keys_with_secret(pool, secrets, model, self.pick_model) {
                Err(e) => {
                    self.last_error = Some(e);
                    self.model_idx += 1;
                }
                Ok(with_secret) => {
                    let untried: Vec<&KeyConfig> =
                        with_secret.iter().copied().filter(|k| !self.tried.contains(&k.key_id)).collect();
                    let mut keys = if untried.is_empty() { with_secret } else { untried };
                    let widened = !self.refused_keys.is_empty();
                    if widened {
                        keys.retain(|k| !self.refused_keys.contains(&k.key_id));
                    }
                    self.sampled = !widened && !self.pick_model && !self.names_files && keys.len() > OFFER_WINDOW;
                    if self.sampled {
                        keys = sample_window(&keys, OFFER_WINDOW, random());
                    }
                    self.offered = keys.iter().map(|k| k.key_id.clone()).collect();
                    return Some(Offer { model: model.clone(), keys });
                }
            }
        }
        None
    }

    /// A limit refused the reservation. A caller-level limit, or a refusal on the last model,
    /// ends the walk with that refusal; otherwise the next model of the chain is offered.
    pub fn refused(
        &mut self,
        limit: LimitKind,
        retry_after_ms: Option<u64>,
        bucket: Option<(u64, u64)>,
    ) -> Option<RouterError> {
        if matches!(limit, LimitKind::ClientRate | LimitKind::GlobalRate | LimitKind::ClientBudget) {
            return Some(RouterError::NoCapacity { limit, retry_after_ms, bucket });
        }
        // Keep the refusal that frees soonest (a `None` retry never frees by waiting).
        let (limit, retry_after_ms, bucket) = match self.held.take() {
            Some(h) if h.1.is_some() && (retry_after_ms.is_none() || h.1 < retry_after_ms) => h,
            _ => (limit, retry_after_ms, bucket),
        };
        if self.sampled {
            // Only a window was examined: widen to every other key of the model.
            self.refused_keys = std::mem::take(&mut self.offered);
            self.held = Some((limit, retry_after_ms, bucket));
            return None;
        }
        self.refused_keys.clear();
        if self.model_idx + 1 >= self.models.len() {
            return Some(RouterError::NoCapacity { limit, retry_after_ms, bucket });
        }
        self.model_idx += 1;
        None
    }

    /// A key was reserved: earlier refusals are history.
    pub fn granted(&mut self) {
        self.refused_keys.clear();
        self.held = None;
    }

    /// The reservation read the conversation's model: from now on the request is for it alone.
    pub fn pin_model(&mut self, chosen: String) {
        self.models = vec![chosen];
        self.model_idx = 0;
        self.pick_model = false;
    }

    /// Whether a failed attempt (not yet recorded) may be followed by another.
    pub fn may_retry(&self, now: u64) -> bool {
        self.attempts.len() + 1 < self.max_attempts && now < self.deadline
    }

    pub fn fail(self, error: RouterError) -> Failure {
        Failure { error, attempts: self.attempts }
    }

    /// The walk ran out. If every attempt met a 429 (or none was made), tell the caller when
    /// the first cooldown ends.
    pub fn exhausted(self, now: u64) -> Failure {
        let error = match self.last_error {
            Some(RouterError::NoCapacity { .. }) | None => RouterError::NoCapacity {
                limit: LimitKind::Cooldown,
                retry_after_ms: self
                    .attempts
                    .iter()
                    .filter_map(|a| a.cooldown_until)
                    .min()
                    .map(|t| t.saturating_sub(now)),
                bucket: None,
            },
            Some(e) => e,
        };
        Failure { error, attempts: self.attempts }
    }
}

impl<'a, Q: QuotaStore, U: Upstream, R: Runtime> Router<'a, Q, U, R> {
    pub(super) async fn walk(
        &self,
        req: &GenerateRequest,
        caller: &Caller,
        stream: bool,
        plan: Plan,
    ) -> Result<Outcome<U::Stream>, Failure> {
        let settings = self.settings;
        let mut walk = Walk::new(&plan, settings.max_attempts as usize);
        let mut conv = plan.conv.clone();
        while let Some(offer) = walk.next_offer(self.pool, self.secrets, || self.rt.random_u64()) {
            let rid = format!("{}:{}", plan.request_id, walk.attempts.len());
            let offered_model = offer.model.clone();
            let first = walk.attempts.is_empty();
            let granted = match self.reserve(&plan, offer, rid.clone(), caller, conv.clone(), first).await {
                Ok(g) => {
                    walk.granted();
                    g
                }
                Err(super::reserve::Denied::Stop(e)) => return Err(walk.fail(e)),
                Err(super::reserve::Denied::Refused { limit, retry_after_ms, bucket }) => {
                    match walk.refused(limit, retry_after_ms, bucket) {
                        Some(e) => return Err(walk.fail(e)),
                        None => continue,
                    }
                }
            };
            if walk.pick_model {
                walk.pin_model(granted.chosen_model.unwrap_or(offered_model));
                if let Some(c) = conv.as_mut() {
                    c.pick_model = false;
                }
            }
            let key = granted.key;
            // Tool results sent without their calls are named from the stored turns.
            let named = match resolve_tool_names(&req.contents, &granted.history) {
                Ok(named) => named.map(|contents| GenerateRequest { contents, ..req.clone() }),
                Err(e) => {
                    let conv_part =
                        conv.as_ref().map(|c| conv_settle(c, settings.conversation_ttl_seconds, Vec::new(), 0, 0));
                    let reserved =
                        Reserved { key, client_id: &caller.client_id, rid, day: granted.day, budget: granted.budget };
                    let charge = Charge { release: true, ..Charge::kept("client_error") };
                    let _ = self.store.settle(&settle_spec(reserved, charge, &self.cfg_fingerprint, conv_part)).await;
                    return Err(walk.fail(e));
                }
            };
            let req = named.as_ref().unwrap_or(req);
            // Turns the reservation did not read back (older than the context budget) count as
            // omitted, like the ones trimmed here.
            let built = match &plan.embed {
                Some((_, body)) => Ok((body.clone(), 0)),
                None => upstream_body(req, &granted.history, granted.system, settings)
                    .map(|(body, omitted)| (body, omitted + granted.skipped)),
            };
            let (body, omitted_turns) = match built {
                Ok(b) => b,
                Err(e) => {
                    // The conversation is too large: give the reservation back and unlock.
                    let conv_part =
                        conv.as_ref().map(|c| conv_settle(c, settings.conversation_ttl_seconds, Vec::new(), 0, 0));
                    let reserved = Reserved {
                        key,
                        client_id: &caller.client_id,
                        rid,
                        day: granted.day,
                        budget: granted.budget.clone(),
                    };
                    let charge = Charge { release: true, ..Charge::kept("client_error") };
                    let _ = self.store.settle(&settle_spec(reserved, charge, &self.cfg_fingerprint, conv_part)).await;
                    return Err(walk.fail(e));
                }
            };
            let secret = self.secrets.api_key(&key.key_id).unwrap_or_default();
            let t0 = self.rt.now_ms();
            // The upstream timeout shrinks to what is left of the request's deadline.
            let timeout = settings.upstream_timeout_ms.min(plan.deadline.saturating_sub(t0).max(1));
            let method = match &plan.embed {
                Some((m, _)) => Method::Unary(m),
                None if stream => Method::Stream,
                None => Method::Generate,
            };
            let result = self.call_upstream(&key.model, &secret, body, timeout, method, &rid).await;
            let elapsed = self.rt.now_ms().saturating_sub(t0);
            let (verdict, charge, status) = judge(result, &rid);
            let attempt = |outcome, cooldown_until| Attempt {
                key_id: key.key_id.clone(),
                model: key.model.clone(),
                outcome,
                status,
                cooldown_until,
                duration_ms: elapsed,
            };
            let reserved =
                Reserved { key, client_id: &caller.client_id, rid, day: granted.day, budget: granted.budget.clone() };
            let next = match verdict {
                Verdict::Stream(first) => {
                    walk.attempts.push(attempt("success", None));
                    let finish = StreamFinish {
                        key: key.clone(),
                        client_id: caller.client_id.clone(),
                        rid: reserved.rid,
                        day: reserved.day,
                        conv,
                        new_contents: req.contents.clone(),
                        new_texts_est: new_turns_estimate(&plan, req, settings.estimator),
                        ttl_s: settings.conversation_ttl_seconds,
                        estimator: settings.estimator,
                        started_at: t0,
                        budget: reserved.budget,
                    };
                    return Ok(Outcome::Stream(PendingStream::new(first, finish, walk.attempts, omitted_turns)));
                }
                Verdict::Whole(next) => next,
            };
            let will_retry = matches!(next, Next::FailOver { .. }) && walk.may_retry(self.rt.now_ms());
            // A retry keeps the conversation locked (the next reservation re-enters its own
            // lock); any other end unlocks it, appending the turn only on an answer.
            let conv_part = match (&conv, &next) {
                (Some(_), _) if will_retry => None,
                (Some(c), Next::Answer { reply, usage, .. }) => {
                    let turns =
                        conversation_turns(&req.contents, t0, &reply.out, usage, self.rt.now_ms(), settings.estimator);
                    let est = new_turns_estimate(&plan, req, settings.estimator)
                        + answer_estimate(&reply.out, settings.estimator);
                    Some(conv_settle(c, settings.conversation_ttl_seconds, turns, usage.total, est))
                }
                (Some(c), _) => Some(conv_settle(c, settings.conversation_ttl_seconds, Vec::new(), 0, 0)),
                (None, _) => None,
            };
            let outcome = charge.outcome;
            // The success of a one-shot request settles after its answer: the caller runs the
            // deferred settle (in `wait_until`), so the request waits for one Redis round trip.
            // Every other settle runs here, before the next step: a cooldown or a disable must
            // be in Redis before the next key is reserved, and a conversation's turn must be
            // stored before it is acknowledged.
            if conv.is_none() {
                if let Next::Answer { reply, usage, raw } = next {
                    walk.attempts.push(attempt(outcome, None));
                    return Ok(Outcome::Done(Success {
                        reply,
                        raw,
                        usage,
                        model_used: key.model.clone(),
                        key_id: key.key_id.clone(),
                        attempts: walk.attempts,
                        omitted_turns,
                        message_count: None,
                        deferred: Some(DeferredSettle::new(reserved, charge)),
                    }));
                }
            }
            let spec = settle_spec(reserved, charge, &self.cfg_fingerprint, conv_part);
            let settled = self.store.settle(&spec).await;
            walk.attempts.push(attempt(outcome, settled.as_ref().ok().and_then(|s| s.cooldown_until)));
            match next {
                Next::Answer { reply, usage, raw } => {
                    // The answer exists; if the settle failed, the conversation turn may be
                    // missing, so say so instead of acknowledging it.
                    let message_count = match settled {
                        Ok(s) => s.message_count,
                        Err(e) if conv.is_some() => return Err(walk.fail(e.into())),
                        Err(_) => None,
                    };
                    return Ok(Outcome::Done(Success {
                        reply,
                        raw,
                        usage,
                        model_used: key.model.clone(),
                        key_id: key.key_id.clone(),
                        attempts: walk.attempts,
                        omitted_turns,
                        message_count,
                        deferred: None,
                    }));
                }
                Next::Stop(e) => return Err(walk.fail(e)),
                Next::FailOver { backoff, error } => {
                    walk.last_error = Some(error);
                    walk.tried.push(key.key_id.clone());
                    if !will_retry {
                        break;
                    }
                    if backoff {
                        self.back_off(walk.attempts.len() as u32 - 1, plan.deadline).await;
                    }
                }
            }
        }
        Err(walk.exhausted(self.rt.now_ms()))
    }

    /// Sleeps a jittered, capped exponential delay before retry `retry`, never past the deadline.
    async fn back_off(&self, retry: u32, deadline: u64) {
        let unit = self.rt.random_unit();
        let wait = backoff_ms(retry, self.settings.backoff_base_ms, self.settings.backoff_cap_ms, unit)
            .min(deadline.saturating_sub(self.rt.now_ms()));
        if wait > 0 {
            self.rt.sleep(wait).await;
        }
    }
}

/// What the new turns add to the conversation's history estimate: the request's texts (as
/// before), the non-text parts of the new turns (calls, results, signatures) by their bytes and
/// their media by its token cost (`Plan::new_media_tokens`), but not the tool declarations,
/// which are sent again with every request rather than stored. Read from the bare body, whose
/// `inlineData.data` is empty, so no media is copied.
fn new_turns_estimate(plan: &Plan, req: &GenerateRequest, estimator: Estimator) -> u64 {
    let new_turns = &plan.bare_body["contents"].as_array().map_or(&[][..], Vec::as_slice);
    let start = new_turns.len().saturating_sub(req.contents.len());
    estimate_tokens(request_texts(&plan.bare_body), estimator)
        + non_text_bytes(&json!({"contents": &new_turns[start..]}))
        + plan.new_media_tokens
}
