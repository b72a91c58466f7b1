//! The stream relay, on both surfaces.
//!
//! Failover happened before the first event (in the engine); from here the stream is relayed
//! event by event, never buffered whole. The quota is settled with the last usage seen even
//! when the stream breaks; a conversation turn is stored before the final event; a break after
//! the first byte ends with an explicit error event, never silently.

use crate::fetch::{with_timeout, FetchStream, FetchTransport, WorkerRuntime};
use crate::respond::log;
use llm_key_router_core::config::{LogLevel, Settings};
use llm_key_router_core::engine::{ChunkSource, PendingStream, Runtime};
use llm_key_router_core::json::object;
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::store::SETTLE;
use llm_key_router_core::wire::openai::StreamShaper;
use llm_key_router_core::wire::sse::{frame, Event, StreamTally};
use serde_json::Value;
use worker::{Context, Date, Headers, Response, Result};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    OpenAi { include_usage: bool, include_thoughts: bool },
    Gemini,
}

/// Events the relay may hold for a slow client before it stops reading upstream.
const RELAY_CAPACITY: usize = 16;

type Item = std::result::Result<Vec<u8>, worker::Error>;

/// The bounded channel to the client's response body. Sending waits while the client is
/// [`RELAY_CAPACITY`] events behind, so a slow client slows the upstream read instead of the
/// worker buffering the whole stream.
struct Tx {
    inner: futures_channel::mpsc::Sender<Item>,
    /// The client left: keep reading upstream (so the settle is exact) but stop sending.
    gone: bool,
}

impl Tx {
    async fn send(&mut self, s: String) {
        if self.gone {
            return;
        }
        // `poll_ready` waits for room (the backpressure); it fails once the receiver is gone.
        let ready = futures_util::future::poll_fn(|cx| self.inner.poll_ready(cx)).await;
        if ready.is_err() || self.inner.start_send(Ok(s.into_bytes())).is_err() {
            self.gone = true;
        }
    }
}

struct Emitter {
    /// OpenAI surface: the chunks, built in the core.
    shaper: Option<StreamShaper>,
    /// Gemini surface: the latest event is held back so the final one goes out after the settle.
    held: Option<String>,
}

impl Emitter {
    /// Relays one event, already recorded (and parsed, once) in `tally`.
    async fn event(&mut self, tx: &mut Tx, ev: Event, tally: &StreamTally) {
        match self.shaper.as_mut() {
            None => {
                if let Some(h) = self.held.replace(ev.data) {
                    tx.send(frame(&h)).await;
                }
            }
            Some(sh) => {
                if let Some(c) = sh.shape(ev.json.as_ref().unwrap_or(&Value::Null), tally) {
                    tx.send(frame(&c.to_string())).await;
                }
            }
        }
    }
}

pub(crate) fn relay(
    pending: PendingStream<FetchStream>,
    mode: Mode,
    transport: FetchTransport,
    settings: &Settings,
    ctx: &Context,
) -> Result<Response> {
    let (tx, rx) = futures_channel::mpsc::channel::<Item>(RELAY_CAPACITY);
    let tx = Tx { inner: tx, gone: false };
    let idle_ms = settings.upstream_timeout_ms;
    let level = settings.log_level.clone();
    let key_id = pending.key_id.clone();
    ctx.wait_until(async move { relay_task(pending, mode, transport, idle_ms, level, tx).await });
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-cache")?;
    headers.set("x-router-key-id", &key_id)?;
    Ok(Response::from_stream(rx)?.with_headers(headers))
}

async fn relay_task(
    pending: PendingStream<FetchStream>,
    mode: Mode,
    transport: FetchTransport,
    idle_ms: u64,
    level: LogLevel,
    mut tx: Tx,
) {
    let PendingStream { mut source, mut parser, mut tally, first_events, finish, model_used, .. } = pending;
    let shaper = match mode {
        Mode::OpenAi { include_thoughts, .. } => Some(StreamShaper::new(
            format!("chatcmpl-{}", WorkerRuntime.random_hex(12)),
            Date::now().as_millis() / 1000,
            model_used.clone(),
            include_thoughts,
        )),
        Mode::Gemini => None,
    };
    let mut em = Emitter { shaper, held: None };
    for ev in first_events {
        em.event(&mut tx, ev, &tally).await;
    }
    let mut failure: Option<String> = None;
    loop {
        match with_timeout(source.next_chunk(), idle_ms).await {
            None => {
                failure = Some(format!("upstream stream stalled for {idle_ms} ms"));
                break;
            }
            Some(Err(e)) => {
                failure = Some(format!("upstream stream broke: {e:?}"));
                break;
            }
            Some(Ok(None)) => {
                if let Some(data) = parser.finish() {
                    let ev = tally.record(data);
                    em.event(&mut tx, ev, &tally).await;
                }
                if tally.finish_reason.is_none() {
                    failure = Some("upstream stream ended without a finish reason".into());
                }
                break;
            }
            Some(Ok(Some(bytes))) => {
                for data in parser.feed(&bytes) {
                    let ev = tally.record(data);
                    em.event(&mut tx, ev, &tally).await;
                }
            }
        }
    }
    drop(source);
    let complete = failure.is_none();
    let store = Upstash::new(transport);
    let (k, a) = finish.settle_call(&tally, complete, Date::now().as_millis());
    if let Err(e) = store.eval(&SETTLE, &k, &a).await {
        if complete && finish.conv.is_some() {
            // The turn could not be stored: do not acknowledge it with a normal ending.
            failure = Some(format!("conversation turn could not be stored: {e}"));
        }
    }
    log(
        if failure.is_some() { LogLevel::Warn } else { LogLevel::Debug },
        &level,
        "stream_end",
        object(vec![
            ("key_id", finish.key.key_id.as_str().into()),
            ("model", model_used.into()),
            ("events", tally.events.into()),
            ("complete", failure.is_none().into()),
            ("input_tokens", tally.usage.map(|u| u.input).into()),
            ("error", failure.as_deref().into()),
        ]),
    );
    match (failure, mode) {
        (None, Mode::Gemini) => {
            if let Some(h) = em.held.take() {
                tx.send(frame(&h)).await;
            }
        }
        (None, Mode::OpenAi { include_usage, .. }) => {
            for c in em.shaper.as_ref().map(|sh| sh.finish(&tally, include_usage)).unwrap_or_default() {
                tx.send(frame(&c.to_string())).await;
            }
            tx.send(frame("[DONE]")).await;
        }
        (Some(msg), Mode::Gemini) => {
            if let Some(h) = em.held.take() {
                tx.send(frame(&h)).await;
            }
            let e = object(vec![(
                "error",
                object(vec![("code", 502.into()), ("message", msg.into()), ("status", "UNAVAILABLE".into())]),
            )]);
            tx.send(frame(&e.to_string())).await;
        }
        (Some(msg), Mode::OpenAi { .. }) => {
            let e = object(vec![(
                "error",
                object(vec![
                    ("message", msg.into()),
                    ("type", "api_error".into()),
                    ("code", "upstream_stream_interrupted".into()),
                ]),
            )]);
            tx.send(frame(&e.to_string())).await;
        }
    }
}
