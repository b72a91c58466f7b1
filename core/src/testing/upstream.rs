//! A scripted upstream: each call takes the next declared [`Answer`] and is recorded, so a test
//! states exactly how many upstream calls it expects ("retried 3 times" is asserted).

use super::runtime::FakeClock;
use crate::engine::{ChunkSource, StreamOpen, Upstream, UpstreamError};
use crate::store::upstash::HttpReply;
use std::cell::RefCell;
use std::collections::VecDeque;

/// How a scripted stream ends after its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ends normally.
    Complete,
    /// The connection breaks (a transport error).
    Cut,
    /// No more bytes ever arrive: only a timer ends the wait.
    Stall,
}

/// One declared upstream answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A whole HTTP answer, after `latency_ms` on the fake clock. In stream mode a 2xx becomes
    /// a stream of the body, a non-2xx a refused stream.
    Reply { status: u16, body: String, latency_ms: u64 },
    /// The call times out: the clock advances by the timeout the engine gave.
    Timeout,
    /// The connection fails.
    Transport(String),
    /// A stream that opens, yields `chunks`, then ends as `end`.
    Stream { chunks: Vec<String>, end: StreamEnd },
}

impl Answer {
    pub fn reply(status: u16, body: impl Into<String>) -> Answer {
        Answer::Reply { status, body: body.into(), latency_ms: 0 }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamCall {
    pub model: String,
    pub api_key: String,
    pub body: String,
    pub timeout_ms: u64,
    pub stream: bool,
    /// The Gemini method: `generateContent`, `streamGenerateContent`, `embedContent`, ...
    pub method: String,
}

#[derive(Debug)]
pub struct FakeUpstream {
    clock: FakeClock,
    script: RefCell<VecDeque<Answer>>,
    calls: RefCell<Vec<UpstreamCall>>,
}

impl FakeUpstream {
    pub fn new(clock: FakeClock, script: impl IntoIterator<Item = Answer>) -> FakeUpstream {
        FakeUpstream { clock, script: RefCell::new(script.into_iter().collect()), calls: RefCell::new(Vec::new()) }
    }
    pub fn calls(&self) -> Vec<UpstreamCall> {
        self.calls.borrow().clone()
    }
    /// Answers declared but never asked for.
    pub fn unused(&self) -> usize {
        self.script.borrow().len()
    }

    fn next(&self, model: &str, api_key: &str, body: String, timeout_ms: u64, stream: bool) -> Answer {
        let method = if stream { "streamGenerateContent" } else { "generateContent" };
        self.next_method(model, method, api_key, body, timeout_ms)
    }

    fn next_method(&self, model: &str, method: &str, api_key: &str, body: String, timeout_ms: u64) -> Answer {
        let stream = method == "streamGenerateContent";
        let n = self.calls.borrow().len();
        self.calls.borrow_mut().push(UpstreamCall {
            model: model.to_string(),
            api_key: api_key.to_string(),
            body,
            timeout_ms,
            stream,
            method: method.to_string(),
        });
        let answer = self.script.borrow_mut().pop_front();
        answer.unwrap_or_else(|| panic!("unexpected upstream call #{} (only {n} declared)", n + 1))
    }
}

/// A scripted stream body.
#[derive(Debug)]
pub struct FakeStream {
    chunks: VecDeque<Vec<u8>>,
    end: StreamEnd,
}

impl ChunkSource for FakeStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, UpstreamError> {
        if let Some(c) = self.chunks.pop_front() {
            return Ok(Some(c));
        }
        match self.end {
            StreamEnd::Complete => Ok(None),
            StreamEnd::Cut => Err(UpstreamError::Transport("connection reset".into())),
            StreamEnd::Stall => futures_util::future::pending().await,
        }
    }
}

impl Upstream for FakeUpstream {
    type Stream = FakeStream;

    async fn generate(
        &self,
        model: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> Result<HttpReply, UpstreamError> {
        match self.next(model, api_key, body, timeout_ms, false) {
            Answer::Reply { status, body, latency_ms } => {
                self.clock.advance(latency_ms);
                Ok(HttpReply { status, body })
            }
            Answer::Timeout => {
                self.clock.advance(timeout_ms);
                Err(UpstreamError::Timeout)
            }
            Answer::Transport(m) => Err(UpstreamError::Transport(m)),
            Answer::Stream { .. } => panic!("a stream was scripted for a unary call"),
        }
    }

    async fn call(
        &self,
        model: &str,
        method: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> Result<HttpReply, UpstreamError> {
        match self.next_method(model, method, api_key, body, timeout_ms) {
            Answer::Reply { status, body, latency_ms } => {
                self.clock.advance(latency_ms);
                Ok(HttpReply { status, body })
            }
            Answer::Timeout => {
                self.clock.advance(timeout_ms);
                Err(UpstreamError::Timeout)
            }
            Answer::Transport(m) => Err(UpstreamError::Transport(m)),
            Answer::Stream { .. } => panic!("a stream was scripted for a unary call"),
        }
    }

    async fn open_stream(
        &self,
        model: &str,
        api_key: &str,
        body: String,
        timeout_ms: u64,
    ) -> Result<StreamOpen<FakeStream>, UpstreamError> {
        match self.next(model, api_key, body, timeout_ms, true) {
            Answer::Reply { status, body, latency_ms } => {
                self.clock.advance(latency_ms);
                if (200..300).contains(&status) {
                    let chunks = VecDeque::from([body.into_bytes()]);
                    Ok(StreamOpen::Open(FakeStream { chunks, end: StreamEnd::Complete }))
                } else {
                    Ok(StreamOpen::Refused(HttpReply { status, body }))
                }
            }
            Answer::Timeout => {
                self.clock.advance(timeout_ms);
                Err(UpstreamError::Timeout)
            }
            Answer::Transport(m) => Err(UpstreamError::Transport(m)),
            Answer::Stream { chunks, end } => {
                Ok(StreamOpen::Open(FakeStream { chunks: chunks.into_iter().map(String::into_bytes).collect(), end }))
            }
        }
    }
}
