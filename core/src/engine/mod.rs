//! The request path: reserve a key (one Redis round trip), call Gemini, settle (one round trip),
//! and fail over or retry according to what the upstream answered.
//!
//! Generic over the Redis transport, the upstream and the runtime (clock, sleep, randomness), so
//! the wasm layer only supplies `Fetch`-based adapters.
//!
//! Accounting decisions (documented in README "Quota accounting"):
//! - a request that reached Gemini keeps its reservation, whatever the answer, except an invalid
//!   key (Google does not count it against the project) and a 4xx that is the caller's fault;
//! - a request that never left the worker (no secret, build error) is released entirely;
//! - a success replaces the estimate with the real `promptTokenCount` in the reservation's window.

pub mod classify;

use crate::config::{secret_names, KeyConfig, KeyPool, Settings};
use crate::engine::classify::{classify, UpstreamOutcome};
use crate::error::{LimitKind, RouterError};
use crate::policy::backoff_ms;
use crate::quota::{estimate_tokens, request_texts, Cooldown};
use crate::store::upstash::{HttpReply, Transport, Upstash};
use crate::store::{
    parse_reserve, parse_settle, reserve_call, settle_call, Bucket, ConvLock, ConvSettle, CooldownSpec, Reservation,
    SettleSpec, RESERVE, SETTLE,
};
use crate::wire::gemini::{parse_reply, GenerateRequest, Reply, Usage};
use crate::wire::sse::{SseParser, StreamTally};
use serde::Serialize;
use serde_json::{json, Value};

/// How long a streamed conversation send may hold the conversation's lock.
const STREAM_LOCK_MS: u64 = 600_000;

/// Failure of the HTTP call to Gemini itself.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    Timeout,
    Transport(String),
}

#[allow(async_fn_in_trait)]
pub trait Upstream {
    type Stream: ChunkSource;
    /// POST `body` to `{base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`.
    async fn generate(
        &self,
        model: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> Result<HttpReply, UpstreamError>;
    /// POST to `:streamGenerateContent?alt=sse`. A non-2xx answer is read whole.
    async fn open_stream(
        &self,
        model: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> Result<StreamOpen<Self::Stream>, UpstreamError>;
}

/// The body of an upstream stream, chunk by chunk; `Ok(None)` at its end.
#[allow(async_fn_in_trait)]
pub trait ChunkSource {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, UpstreamError>;
}

pub enum StreamOpen<S> {
    Refused(HttpReply),
    Open(S),
}

/// A stream whose first event has arrived: failover is over, relaying starts. The caller
/// relays `first_events` then the rest of `source`, and settles with [`StreamFinish`].
pub struct PendingStream<S> {
    pub source: S,
    pub parser: SseParser,
    pub tally: StreamTally,
    pub first_events: Vec<String>,
    pub finish: StreamFinish,
    pub attempts: Vec<Attempt>,
    pub model_used: String,
    pub key_id: String,
    pub omitted_turns: usize,
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
    pub new_texts_est: u64,
    pub ttl_s: u64,
    pub estimator: crate::config::Estimator,
    pub started_at: u64,
}

impl StreamFinish {
    /// KEYS/ARGV of the settle for a stream that ended (`complete`) or broke. A complete stream
    /// appends the conversation turn; a broken one only unlocks. Usage is the last seen; if none
    /// was seen, the estimate stays (it is an upper bound).
    pub fn settle_call(&self, tally: &StreamTally, complete: bool, now_ms: u64) -> (Vec<String>, Vec<String>) {
        let usage = tally.usage.unwrap_or_default();
        let conv = self.conv.as_ref().map(|c| {
            let mut turns = Vec::new();
            if complete {
                for content in &self.new_contents {
                    turns.push(
                        json!({"role": content["role"], "parts": content["parts"], "at": self.started_at}).to_string(),
                    );
                }
                turns.push(
                    json!({"role": "model", "parts": [{"text": tally.text}], "at": now_ms, "usage": usage}).to_string(),
                );
            }
            ConvSettle {
                id: c.id.clone(),
                lock_id: c.lock_id.clone(),
                turns,
                ttl_s: self.ttl_s,
                tokens: usage.total,
                est: self.new_texts_est + estimate_tokens([tally.text.as_str()], self.estimator),
            }
        });
        let spec = SettleSpec {
            key: &self.key,
            client_id: &self.client_id,
            rid: self.rid.clone(),
            day: self.day,
            outcome: if complete { "success" } else { "stream_cut" },
            release: false,
            input: tally.usage.map(|u| u.input),
            output: usage.output,
            thoughts: usage.thoughts,
            cooldown: None,
            disable: None,
            conv,
        };
        settle_call(&spec)
    }
}

/// What one upstream call gave back.
enum Called<S> {
    Whole(HttpReply),
    Stream { source: S, parser: SseParser, tally: StreamTally, first_events: Vec<String> },
}

/// Either a whole answer or a stream to relay. Built once per request and moved, so the size
/// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<S> {
    Done(Success),
    Stream(PendingStream<S>),
}

/// Time, sleeping and randomness, injected because `std::time` panics on wasm32.
#[allow(async_fn_in_trait)]
pub trait Runtime {
    fn now_ms(&self) -> u64;
    async fn sleep(&self, ms: u64);
    fn random_u64(&self) -> u64;
    fn random_hex(&self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes * 2);
        while s.len() < bytes * 2 {
            s.push_str(&format!("{:016x}", self.random_u64()));
        }
        s.truncate(bytes * 2);
        s
    }
}

/// One upstream attempt, as reported in the response and kept for statistics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub key_id: String,
    pub model: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<u64>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Success {
    pub reply: Reply,
    /// The upstream's own response body, for the Gemini-native surface.
    pub raw: Value,
    pub usage: Usage,
    pub model_used: String,
    pub key_id: String,
    pub attempts: Vec<Attempt>,
    pub omitted_turns: usize,
    pub message_count: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub error: RouterError,
    pub attempts: Vec<Attempt>,
}

/// Who is calling, for per-client limits and conversation ownership.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: String,
    pub rpm: u32,
    pub burst: u32,
}

pub struct Router<'a, T, U, R> {
    pub pool: &'a KeyPool,
    pub settings: &'a Settings,
    pub store: &'a Upstash<T>,
    pub upstream: &'a U,
    pub rt: &'a R,
    pub secret: &'a dyn Fn(&str) -> Option<String>,
    pub cfg_fingerprint: String,
}

/// Stored turns as sent upstream (only `role` and `parts`), leaving out the oldest turns while
/// the estimate exceeds the context budget. They stay in storage. Turns are dropped in
/// user+model pairs so the history still starts with a user turn.
pub fn upstream_history(stored: &[String], budget: u64, estimator: crate::config::Estimator) -> (Vec<Value>, usize) {
    let turns: Vec<Value> = stored
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .map(|t| json!({"role": t["role"], "parts": t["parts"]}))
        .collect();
    let sizes: Vec<u64> =
        turns.iter().map(|t| estimate_tokens(request_texts(&json!({"contents": [t]})), estimator)).collect();
    let mut total: u64 = sizes.iter().sum();
    let mut start = 0;
    while total > budget && start < turns.len() {
        let step = if start + 1 < turns.len() { 2 } else { 1 };
        for s in &sizes[start..start + step] {
            total -= s;
        }
        start += step;
    }
    (turns[start..].to_vec(), start)
}

/// What happened on one attempt, reduced to what the loop needs.
enum Step<S> {
    Stream { source: S, parser: SseParser, tally: StreamTally, first_events: Vec<String> },
    Done(Reply, Usage, Value),
    Retry { backoff: bool, exclude: bool },
    Fail(RouterError),
}

impl<'a, T: Transport, U: Upstream, R: Runtime> Router<'a, T, U, R> {
    fn secret_for(&self, key: &KeyConfig) -> Option<String> {
        // Trimmed: a secret pasted with a trailing newline must not become a bad header value.
        secret_names(&key.key_id)
            .iter()
            .find_map(|n| (self.secret)(n))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub fn buckets(&self, caller: &Caller) -> Vec<Bucket> {
        vec![
            Bucket {
                key: crate::store::keys::client_bucket(&caller.client_id),
                name: "client",
                rate_per_min: caller.rpm,
                burst: caller.burst,
            },
            Bucket {
                key: crate::store::keys::GLOBAL_BUCKET.to_string(),
                name: "global",
                rate_per_min: self.settings.global_rpm_max,
                burst: self.settings.global_burst_max,
            },
        ]
    }

    pub async fn generate(&self, req: &GenerateRequest, caller: &Caller) -> Result<Success, Failure> {
        match self.run(req, caller, false).await? {
            Outcome::Done(s) => Ok(s),
            Outcome::Stream(_) => unreachable!("a unary call never streams"),
        }
    }

    /// Reads the stream until its first event, so that a failure before any byte reaches the
    /// client can still fail over.
    async fn read_first(&self, mut source: U::Stream, timeout_ms: u64) -> Result<Called<U::Stream>, UpstreamError> {
        let mut parser = SseParser::default();
        let mut tally = StreamTally::default();
        let mut first_events = Vec::new();
        let deadline = self.rt.now_ms() + timeout_ms;
        while first_events.is_empty() {
            let left = deadline.saturating_sub(self.rt.now_ms());
            if left == 0 {
                return Err(UpstreamError::Timeout);
            }
            let chunk = {
                let next = std::pin::pin!(source.next_chunk());
                let timer = std::pin::pin!(self.rt.sleep(left));
                match futures_util::future::select(next, timer).await {
                    futures_util::future::Either::Left((c, _)) => c?,
                    futures_util::future::Either::Right(_) => return Err(UpstreamError::Timeout),
                }
            };
            let events = match chunk {
                Some(bytes) => parser.feed(&bytes),
                None => match parser.finish() {
                    Some(e) => vec![e],
                    None => return Err(UpstreamError::Transport("stream ended before its first event".into())),
                },
            };
            for e in events {
                tally.observe(&e);
                first_events.push(e);
            }
        }
        Ok(Called::Stream { source, parser, tally, first_events })
    }

    /// The request path for both unary and streamed calls.
    pub async fn run(
        &self,
        req: &GenerateRequest,
        caller: &Caller,
        stream: bool,
    ) -> Result<Outcome<U::Stream>, Failure> {
        let started = self.rt.now_ms();
        let deadline = started + self.settings.request_deadline_ms;
        let fail = |error: RouterError, attempts: Vec<Attempt>| Failure { error, attempts };
        if !self.pool.serves(&req.model) {
            return Err(fail(RouterError::UnknownModel { model: req.model.clone() }, vec![]));
        }
        let mut models = vec![req.model.clone()];
        if req.allow_fallback {
            models.extend(self.pool.fallbacks.get(&req.model).cloned().unwrap_or_default());
        }
        let request_id = self.rt.random_hex(16);
        // A conversation send that named no model uses the conversation's own, which the
        // reservation script reads: candidates of every model are offered, the script filters.
        let mut pick_model = req.model_from_conversation && req.conversation_id.is_some();
        let mut conv = req.conversation_id.as_ref().map(|id| ConvLock {
            pick_model,
            id: id.clone(),
            owner: caller.client_id.clone(),
            lock_id: request_id.clone(),
            // A stream holds the lock until its settle, which may be long after the deadline of
            // the first byte; the settle releases it as soon as the stream ends.
            lock_ms: if stream { STREAM_LOCK_MS } else { self.settings.request_deadline_ms + 5_000 },
        });
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut excluded: Vec<String> = Vec::new();
        let mut model_idx = 0;
        let mut omitted_turns;
        let mut last_error: Option<RouterError> = None;
        let max_attempts = self.settings.max_attempts as usize;

        while attempts.len() < max_attempts && model_idx < models.len() {
            let model = models[model_idx].clone();
            let model = &model;
            let with_secret: Vec<&KeyConfig> = if pick_model {
                self.pool.keys.iter().filter(|k| k.active && self.secret_for(k).is_some()).collect()
            } else {
                self.pool.candidates(model).filter(|k| self.secret_for(k).is_some()).collect()
            };
            if with_secret.is_empty() {
                last_error = Some(RouterError::ConfigInvalid {
                    errors: vec![format!("no key of model '{model}' has its secret API_KEY_<key_id> set")],
                });
                model_idx += 1;
                continue;
            }
            let mut candidates: Vec<&KeyConfig> =
                with_secret.iter().copied().filter(|k| !excluded.contains(&k.key_id)).collect();
            if candidates.is_empty() {
                // Every key was tried once; transient failures may retry on any of them.
                candidates = with_secret;
            }
            let upstream_body = req.to_gemini(&[]);
            // `to_gemini` already carries the system instruction, so it is counted once.
            let est = estimate_tokens(request_texts(&upstream_body), self.settings.estimator)
                + crate::quota::non_text_bytes(&upstream_body);
            let rid = format!("{request_id}:{}", attempts.len());
            let spec = crate::store::ReserveSpec {
                rid: rid.clone(),
                est,
                window_ms: self.settings.window_ms,
                cfg: self.cfg_fingerprint.clone(),
                buckets: if attempts.is_empty() { self.buckets(caller) } else { vec![] },
                conv: conv.clone(),
                candidates,
                model: Some(model.clone()),
            };
            let (keys, args) = reserve_call(&spec);
            let answer = match self.store.eval(&RESERVE, &keys, &args).await.and_then(|v| parse_reserve(&v)) {
                Ok(a) => a,
                Err(e) => return Err(fail(e.into(), attempts)),
            };
            let (key_id, day, history, stored_system) = match answer {
                Reservation::Reserved { key_id, day, history, system, model: chosen, .. } => {
                    if pick_model {
                        // From now on the request is for the conversation's model.
                        let chosen = chosen.unwrap_or_else(|| model.clone());
                        models = vec![chosen];
                        model_idx = 0;
                        pick_model = false;
                        if let Some(c) = conv.as_mut() {
                            c.pick_model = false;
                        }
                    }
                    (key_id, day, history, system)
                }
                Reservation::NoCandidates => {
                    return Err(fail(RouterError::UnknownModel { model: model.clone() }, attempts));
                }
                Reservation::Refused { limit, retry_at, now, bucket } => {
                    if matches!(limit, LimitKind::ClientRate | LimitKind::GlobalRate) || model_idx + 1 >= models.len() {
                        return Err(fail(
                            RouterError::NoCapacity {
                                limit,
                                retry_after_ms: retry_at.map(|t| t.saturating_sub(now)),
                                bucket,
                            },
                            attempts,
                        ));
                    }
                    model_idx += 1;
                    continue;
                }
                Reservation::PromptTooLarge => {
                    return Err(fail(RouterError::PromptTooLarge { estimate: est }, attempts));
                }
                Reservation::ConversationNotFound => return Err(fail(RouterError::ConversationNotFound, attempts)),
                Reservation::ConversationBusy => return Err(fail(RouterError::ConversationBusy, attempts)),
            };
            let Some(key) = self.pool.keys.iter().find(|k| k.key_id == key_id) else {
                let e = crate::store::upstash::StoreError::Protocol(format!("reserve_v1 chose unknown key '{key_id}'"));
                return Err(fail(e.into(), attempts));
            };
            let model = &key.model;
            let (history, omitted) =
                upstream_history(&history, self.settings.context_budget_tokens, self.settings.estimator);
            omitted_turns = omitted;
            let mut upstream_req = req.clone();
            if upstream_req.system.is_none() && !upstream_req.passthrough.contains_key("systemInstruction") {
                upstream_req.system = stored_system;
            }
            let body = upstream_req.to_gemini(&history).to_string();
            let secret = self.secret_for(key).unwrap_or_default();
            let t0 = self.rt.now_ms();
            let remaining = deadline.saturating_sub(t0).max(1);
            let timeout = self.settings.upstream_timeout_ms.min(remaining);
            let result: Result<Called<U::Stream>, UpstreamError> = if stream {
                match self.upstream.open_stream(model, &secret, body, timeout).await {
                    Ok(StreamOpen::Refused(reply)) => Ok(Called::Whole(reply)),
                    Ok(StreamOpen::Open(source)) => self.read_first(source, timeout).await,
                    Err(e) => Err(e),
                }
            } else {
                self.upstream.generate(model, &secret, body, timeout).await.map(Called::Whole)
            };
            let elapsed = self.rt.now_ms().saturating_sub(t0);

            let mut settle = SettleSpec {
                key,
                client_id: &caller.client_id,
                rid,
                day,
                outcome: "success",
                release: false,
                input: None,
                output: 0,
                thoughts: 0,
                cooldown: None,
                disable: None,
                conv: None,
            };
            let mut status = None;
            let step = match result {
                Err(UpstreamError::Timeout) => {
                    settle.outcome = "timeout";
                    last_error = Some(RouterError::UpstreamTimeout);
                    Step::Retry { backoff: true, exclude: true }
                }
                Err(UpstreamError::Transport(m)) => {
                    settle.outcome = "transport";
                    last_error =
                        Some(RouterError::UpstreamUnavailable { message: format!("upstream unreachable: {m}") });
                    Step::Retry { backoff: true, exclude: true }
                }
                Ok(Called::Stream { source, parser, tally, first_events }) => {
                    status = Some(200);
                    Step::Stream { source, parser, tally, first_events }
                }
                Ok(Called::Whole(reply)) => {
                    status = Some(reply.status);
                    match classify(reply.status, &reply.body) {
                        UpstreamOutcome::Success => match serde_json::from_str::<Value>(&reply.body) {
                            Ok(v) => {
                                let r = parse_reply(&v);
                                let usage = r.usage.unwrap_or_default();
                                settle.input = r.usage.map(|u| u.input);
                                settle.output = usage.output;
                                settle.thoughts = usage.thoughts;
                                Step::Done(r, usage, v)
                            }
                            Err(_) => {
                                settle.outcome = "transient";
                                last_error = Some(RouterError::UpstreamUnavailable {
                                    message: "upstream answered 200 with an unreadable body".into(),
                                });
                                Step::Retry { backoff: true, exclude: true }
                            }
                        },
                        UpstreamOutcome::RateLimited(c) => {
                            settle.outcome = "rate_limited";
                            settle.cooldown = Some(match c {
                                Cooldown::Delay { ms, reason } => CooldownSpec::Delay { ms, reason },
                                Cooldown::UntilPacificMidnight { reason } => {
                                    CooldownSpec::UntilPacificMidnight { reason }
                                }
                                Cooldown::Unknown => CooldownSpec::Unknown { reason: "429 without details".into() },
                            });
                            last_error = Some(RouterError::NoCapacity {
                                limit: LimitKind::Cooldown,
                                retry_after_ms: None,
                                bucket: None,
                            });
                            Step::Retry { backoff: false, exclude: true }
                        }
                        UpstreamOutcome::Transient { status } => {
                            settle.outcome = "transient";
                            last_error = Some(RouterError::UpstreamUnavailable {
                                message: format!("upstream answered {status} on every attempt"),
                            });
                            Step::Retry { backoff: true, exclude: true }
                        }
                        UpstreamOutcome::KeyRejected { reason } => {
                            settle.outcome = "key_rejected";
                            settle.release = true;
                            settle.disable = Some((reason, self.cfg_fingerprint.clone()));
                            last_error = Some(RouterError::UpstreamUnavailable {
                                message: "every key tried was rejected by the upstream".into(),
                            });
                            Step::Retry { backoff: false, exclude: true }
                        }
                        UpstreamOutcome::RequestRejected { status, grpc_status, message } => {
                            settle.outcome = "client_error";
                            settle.release = true;
                            Step::Fail(RouterError::UpstreamRejected { status, grpc_status, message })
                        }
                    }
                }
            };
            let will_retry =
                matches!(step, Step::Retry { .. }) && attempts.len() + 1 < max_attempts && self.rt.now_ms() < deadline;
            let mut conv_turns = Vec::new();
            if let (Step::Done(reply, usage, _), Some(_)) = (&step, &conv) {
                for c in &req.contents {
                    conv_turns.push(json!({"role": c["role"], "parts": c["parts"], "at": t0}).to_string());
                }
                conv_turns.push(
                    json!({"role": "model", "parts": [{"text": reply.text}], "at": self.rt.now_ms(), "usage": usage})
                        .to_string(),
                );
            }
            if let Some(c) = &conv {
                if !will_retry {
                    settle.conv = Some(ConvSettle {
                        id: c.id.clone(),
                        lock_id: c.lock_id.clone(),
                        turns: conv_turns,
                        ttl_s: self.settings.conversation_ttl_seconds,
                        tokens: 0,
                        est: 0,
                    });
                }
            }
            if let (Step::Done(reply, usage, _), Some(cs)) = (&step, settle.conv.as_mut()) {
                cs.tokens = usage.total;
                cs.est = estimate_tokens(
                    request_texts(&upstream_body).into_iter().chain([reply.text.as_str()]),
                    self.settings.estimator,
                );
            }
            if let Step::Stream { source, parser, tally, first_events } = step {
                attempts.push(Attempt {
                    key_id: key.key_id.clone(),
                    model: model.clone(),
                    outcome: "success",
                    status,
                    cooldown_until: None,
                    duration_ms: elapsed,
                });
                return Ok(Outcome::Stream(PendingStream {
                    source,
                    parser,
                    tally,
                    first_events,
                    finish: StreamFinish {
                        key: key.clone(),
                        client_id: caller.client_id.clone(),
                        rid: settle.rid.clone(),
                        day,
                        conv: conv.clone(),
                        new_contents: req.contents.clone(),
                        new_texts_est: estimate_tokens(request_texts(&upstream_body), self.settings.estimator),
                        ttl_s: self.settings.conversation_ttl_seconds,
                        estimator: self.settings.estimator,
                        started_at: t0,
                    },
                    attempts,
                    model_used: model.clone(),
                    key_id: key.key_id.clone(),
                    omitted_turns,
                }));
            }
            let (keys, args) = settle_call(&settle);
            let settled = self.store.eval(&SETTLE, &keys, &args).await.and_then(|v| parse_settle(&v));
            attempts.push(Attempt {
                key_id: key.key_id.clone(),
                model: model.clone(),
                outcome: settle.outcome,
                status,
                cooldown_until: settled.as_ref().ok().and_then(|s| s.cooldown_until),
                duration_ms: elapsed,
            });
            match step {
                Step::Done(reply, usage, raw) => {
                    // The answer exists; if the settle failed, the conversation turn may be
                    // missing, so say so instead of acknowledging it.
                    let settled = match settled {
                        Ok(s) => s,
                        Err(e) if conv.is_some() => return Err(fail(e.into(), attempts)),
                        Err(_) => crate::store::Settled { now: 0, cooldown_until: None, message_count: None },
                    };
                    return Ok(Outcome::Done(Success {
                        reply,
                        raw,
                        usage,
                        model_used: model.clone(),
                        key_id: key.key_id.clone(),
                        attempts,
                        omitted_turns,
                        message_count: settled.message_count,
                    }));
                }
                Step::Fail(e) => return Err(fail(e, attempts)),
                Step::Stream { .. } => unreachable!("streams return above"),
                Step::Retry { backoff, exclude } => {
                    if exclude {
                        excluded.push(key.key_id.clone());
                    }
                    if !will_retry {
                        break;
                    }
                    if backoff {
                        let unit = (self.rt.random_u64() >> 11) as f64 / (1u64 << 53) as f64;
                        let wait = backoff_ms(
                            attempts.len() as u32 - 1,
                            self.settings.backoff_base_ms,
                            self.settings.backoff_cap_ms,
                            unit,
                        )
                        .min(deadline.saturating_sub(self.rt.now_ms()));
                        if wait > 0 {
                            self.rt.sleep(wait).await;
                        }
                    }
                }
            }
        }
        let now = self.rt.now_ms();
        let error = match last_error {
            // Every attempt met a 429: tell the caller when the first cooldown ends.
            Some(RouterError::NoCapacity { .. }) | None => RouterError::NoCapacity {
                limit: LimitKind::Cooldown,
                retry_after_ms: attempts.iter().filter_map(|a| a.cooldown_until).min().map(|t| t.saturating_sub(now)),
                bucket: None,
            },
            Some(e) => e,
        };
        Err(fail(error, attempts))
    }
}
