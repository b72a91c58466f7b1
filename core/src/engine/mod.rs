//! The request path: reserve a key (one Redis round trip), call Gemini, settle (one round trip),
//! and fail over or retry according to what the upstream answered.
//!
//! By phase, one file each:
//! - [`plan`]: the models (with the fallback chain), the keys with a secret, the estimate;
//! - [`reserve`]: the reservation and what its refusals mean;
//! - [`attempt`]: the upstream call, a stream read until its first event;
//! - [`classify`]: whose fault an upstream error is;
//! - [`settle`]: the settle spec and the conversation turn, for unary and streamed answers;
//! - [`failover`]: the walk over candidates that ties them together, with the backoff;
//! - [`judge`]: what one upstream result means for the walk and for the settle.
//!
//! Side effects go through the [`ports`]: the quota store, the upstream, the runtime (clock,
//! sleep, randomness) and the secrets, so the engine runs natively against the fakes of
//! `crate::testing` and on wasm against the worker's adapters.
//!
//! Accounting decisions (documented in README "Quota accounting"):
//! - a request that reached Gemini keeps its reservation, whatever the answer, except an invalid
//!   key (Google does not count it against the project) and a 4xx that is the caller's fault;
//! - a request that never left the worker (no secret, build error) is released entirely;
//! - a success replaces the estimate with the real `promptTokenCount` in the reservation's window.

mod attempt;
pub mod classify;
mod failover;
mod judge;
mod plan;
pub mod ports;
mod reserve;
mod settle;
#[cfg(test)]
mod tests;

pub use plan::{upstream_history, CONV_MEDIA_BYTES, CONV_TURN_MEDIA_BYTES};
pub use ports::{secret_from_lookup, ChunkSource, QuotaStore, Runtime, Secrets, StreamOpen, Upstream, UpstreamError};
pub use settle::{conversation_turns, DeferredSettle, PendingStream, StreamFinish};

use crate::config::{KeyPool, Settings};
use crate::error::RouterError;
use crate::store::Bucket;
use crate::wire::embeddings::EmbedRequest;
use crate::wire::gemini::{GenerateRequest, Reply, Usage};
use serde::Serialize;
use serde_json::Value;

/// Either a whole answer or a stream to relay. Built once per request and moved, so the size
/// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<S> {
    Done(Success),
    Stream(PendingStream<S>),
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

impl Attempt {
    /// The attempt as JSON, serialized here so the worker crate does not instantiate it again.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an attempt serializes")
    }
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
    /// The settle still to run, after the answer, for a one-shot request (no conversation):
    /// the caller must run it ([`Router::settle_deferred`], or `settle_v1` with
    /// [`DeferredSettle::settle_call`] in `ctx.wait_until`). `None` when the settle already
    /// ran before the answer (a conversation send: its stored turn must be readable at once).
    pub deferred: Option<DeferredSettle>,
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
    /// Tokens per Pacific day (CLIENTS_JSON `daily_tokens`).
    pub daily_tokens: Option<u64>,
    /// Tokens per rolling minute (CLIENTS_JSON `tpm`).
    pub tpm: Option<u64>,
    /// The models this caller may use; `None`: all.
    pub models: Option<Vec<String>>,
}

impl Caller {
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// The budget the reservation checks, when the caller has one.
    pub fn budget(&self) -> Option<crate::store::BudgetSpec> {
        (self.daily_tokens.is_some() || self.tpm.is_some()).then(|| crate::store::BudgetSpec {
            client: self.client_id.clone(),
            daily: self.daily_tokens,
            tpm: self.tpm,
        })
    }
}

/// The engine for one request, over borrowed config and ports.
pub struct Router<'a, Q, U, R> {
    pub pool: &'a KeyPool,
    pub settings: &'a Settings,
    pub store: &'a Q,
    pub upstream: &'a U,
    pub rt: &'a R,
    pub secrets: &'a dyn Secrets,
    /// Written with a disable, so a key disabled under one config comes back under the next.
    pub cfg_fingerprint: String,
}

impl<'a, Q: QuotaStore, U: Upstream, R: Runtime> Router<'a, Q, U, R> {
    /// The caller's and the global token buckets, checked by the first reservation.
    pub fn buckets(&self, caller: &Caller) -> Vec<Bucket> {
        plan::buckets(self.settings, caller)
    }

    pub async fn generate(&self, req: &GenerateRequest, caller: &Caller) -> Result<Success, Failure> {
        match self.run(req, caller, false).await? {
            Outcome::Done(s) => Ok(s),
            Outcome::Stream(_) => Err(Failure {
                error: RouterError::Internal { message: "a unary call produced a stream".into() },
                attempts: vec![],
            }),
        }
    }

    /// An embedding call (`:embedContent`, `:batchEmbedContents`), reserved, failed over and
    /// settled like a generate request. Google's answer carries no usage, so the settle keeps
    /// the estimate, and `usage.input` reports it. A batch is reserved as one request carrying
    /// the tokens of all its texts (the reservation script counts one RPM unit per admission).
    pub async fn embed(&self, req: &EmbedRequest, caller: &Caller) -> Result<Success, Failure> {
        let fail = |error| Failure { error, attempts: vec![] };
        let planned = req.planned().map_err(fail)?;
        let mut plan = self.plan(&planned, caller, false).map_err(fail)?;
        let est = plan.est;
        plan.embed = Some((req.method.as_str(), req.body.clone()));
        match self.walk(&planned, caller, false, plan).await? {
            Outcome::Done(mut s) => {
                if s.reply.usage.is_none() {
                    s.usage = Usage { input: est, output: 0, thoughts: 0, total: est };
                }
                Ok(s)
            }
            Outcome::Stream(_) => {
                Err(fail(RouterError::Internal { message: "an embedding call produced a stream".into() }))
            }
        }
    }

    /// Runs the settle a one-shot success left for after its answer.
    pub async fn settle_deferred(
        &self,
        d: &DeferredSettle,
    ) -> Result<crate::store::Settled, crate::store::upstash::StoreError> {
        self.store.settle(&d.settle_spec()).await
    }

    /// The request path for both unary and streamed calls.
    pub async fn run(
        &self,
        req: &GenerateRequest,
        caller: &Caller,
        stream: bool,
    ) -> Result<Outcome<U::Stream>, Failure> {
        let plan = self.plan(req, caller, stream).map_err(|error| Failure { error, attempts: vec![] })?;
        self.walk(req, caller, stream, plan).await
    }
}
