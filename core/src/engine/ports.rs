//! The engine's ports: everything it needs from the outside world, as small traits.
//!
//! Production implements them with the Upstash REST client and `Fetch` (in the worker crate);
//! tests implement them with the fakes of [`crate::testing`]. The engine never sees `worker`,
//! `std::time` (it panics on wasm32) or an environment variable.

use crate::config::secret_names;
use crate::store::upstash::{HttpReply, StoreError, Transport, Upstash};
use crate::store::{
    parse_reserve, parse_settle, reserve_call, settle_call, Reservation, ReserveSpec, SettleSpec, Settled,
};
use crate::store::{RESERVE, SETTLE};

/// The quota store: one atomic reservation before the upstream call and one settle after it.
///
/// A trait rather than `Upstash<T>` itself so the engine's tests can model admission in memory
/// and assert the exact specs written, instead of decoding Lua arguments.
#[allow(async_fn_in_trait)]
pub trait QuotaStore {
    /// Picks a key among `spec.candidates` and reserves the estimate on it (`reserve_v1`).
    async fn reserve(&self, spec: &ReserveSpec<'_>) -> Result<Reservation, StoreError>;
    /// Replaces the estimate by the real usage, records the outcome, and unlocks (and appends
    /// to) the conversation (`settle_v1`).
    async fn settle(&self, spec: &SettleSpec<'_>) -> Result<Settled, StoreError>;
}

impl<T: Transport> QuotaStore for Upstash<T> {
    async fn reserve(&self, spec: &ReserveSpec<'_>) -> Result<Reservation, StoreError> {
        let (keys, args) = reserve_call(spec);
        parse_reserve(&self.eval(&RESERVE, &keys, &args).await?)
    }

    async fn settle(&self, spec: &SettleSpec<'_>) -> Result<Settled, StoreError> {
        let (keys, args) = settle_call(spec);
        parse_settle(&self.eval(&SETTLE, &keys, &args).await?)
    }
}

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
    /// POST `body` to `{base}/v1beta/models/{model}:{method}`: a unary call to another method
    /// (`embedContent`, `batchEmbedContents`), answered whole like `generate`.
    async fn call(
        &self,
        model: &str,
        method: &str,
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
    /// A uniform number in `[0, 1)` from the top 53 bits, for the backoff jitter.
    fn random_unit(&self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The Gemini API keys, by `key_id`. Object-safe and synchronous: the glue reads them from
/// the environment (and may cache them per isolate); the engine only asks.
pub trait Secrets {
    /// The key's secret, trimmed, or `None` when it is unset or blank: such a key is never
    /// offered to the reservation.
    fn api_key(&self, key_id: &str) -> Option<String>;
}

/// The one rule for reading a key's secret from named variables: `API_KEY_<key_id>`, then the
/// upper-cased form; trimmed, because a secret pasted with a trailing newline must not become a
/// bad header value; blank counts as unset. For [`Secrets`] implementations over an environment.
pub fn secret_from_lookup(key_id: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    secret_names(key_id).iter().find_map(|n| lookup(n)).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}
