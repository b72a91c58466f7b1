//! Phase 3: one upstream call on the reserved key. A stream is read until its first event, so
//! that a failure before any byte reaches the client can still fail over; after that, the
//! caller relays and failover is over.

use super::ports::{ChunkSource, Runtime, StreamOpen, Upstream, UpstreamError};
use super::Router;
use crate::store::upstash::HttpReply;
use crate::wire::sse::{Event, SseParser, StreamTally};
use futures_util::future::{select, Either};

/// What one upstream call gave back.
// Built once per attempt and moved: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Called<S> {
    Whole(HttpReply),
    Stream(FirstEvents<S>),
}

/// A stream whose first event arrived, with the parser state to continue from.
pub(super) struct FirstEvents<S> {
    pub source: S,
    pub parser: SseParser,
    pub tally: StreamTally,
    pub events: Vec<Event>,
}

/// Which Gemini method an attempt calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method<'m> {
    Generate,
    Stream,
    /// Another unary method, e.g. `embedContent` or `batchEmbedContents`.
    Unary(&'m str),
}

impl<'a, Q, U: Upstream, R: Runtime> Router<'a, Q, U, R> {
    /// Calls Gemini with at most `timeout_ms` for the whole answer (unary) or the first event
    /// (stream). The caller shrinks the timeout to what is left of the request's deadline.
    pub(super) async fn call_upstream(
        &self,
        model: &str,
        secret: &str,
        body: String,
        timeout_ms: u64,
        method: Method<'_>,
        rid: &str,
    ) -> Result<Called<U::Stream>, UpstreamError> {
        match method {
            Method::Unary(m) => return self.upstream.call(model, m, secret, body, timeout_ms).await.map(Called::Whole),
            Method::Generate => {
                return self.upstream.generate(model, secret, body, timeout_ms).await.map(Called::Whole)
            }
            Method::Stream => {}
        }
        match self.upstream.open_stream(model, secret, body, timeout_ms).await? {
            StreamOpen::Refused(reply) => Ok(Called::Whole(reply)),
            StreamOpen::Open(source) => self.read_first(source, timeout_ms, rid).await.map(Called::Stream),
        }
    }

    /// Reads the stream until its first event, within `timeout_ms` of now. `rid` salts the
    /// tool-call ids of the stream's tally.
    async fn read_first(
        &self,
        mut source: U::Stream,
        timeout_ms: u64,
        rid: &str,
    ) -> Result<FirstEvents<U::Stream>, UpstreamError> {
        let mut parser = SseParser::default();
        let mut tally = StreamTally::new(rid);
        let mut events = Vec::new();
        let deadline = self.rt.now_ms() + timeout_ms;
        while events.is_empty() {
            let left = deadline.saturating_sub(self.rt.now_ms());
            if left == 0 {
                return Err(UpstreamError::Timeout);
            }
            let chunk = {
                let next = std::pin::pin!(source.next_chunk());
                let timer = std::pin::pin!(self.rt.sleep(left));
                match select(next, timer).await {
                    Either::Left((c, _)) => c?,
                    Either::Right(_) => return Err(UpstreamError::Timeout),
                }
            };
            let new = match chunk {
                Some(bytes) => parser.feed(&bytes),
                None => match parser.finish() {
                    Some(e) => vec![e],
                    None => return Err(UpstreamError::Transport("stream ended before its first event".into())),
                },
            };
            for e in new {
                events.push(tally.record(e));
            }
        }
        Ok(FirstEvents { source, parser, tally, events })
    }
}
