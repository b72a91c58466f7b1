//! Server-Sent Events: splitting the upstream byte stream into events, and tracking what a
//! Gemini stream has produced so far (text and the last usage seen).

use crate::wire::gemini::{parse_reply, Usage};
use serde_json::Value;

/// Incremental SSE parser: feed it byte chunks as they arrive, get complete events' `data`.
/// Multi-line `data:` fields are joined with `\n`; comments and other fields are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data).join("\n"));
                }
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if let Some(rest) = line.strip_prefix("data:") {
                self.data.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
        }
        events
    }

    /// An event left without its closing blank line when the stream ended.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let mut rest = std::mem::take(&mut self.buf);
            rest.push(b'\n');
            let mut ev = self.feed(&rest);
            if let Some(e) = ev.pop() {
                return Some(e);
            }
        }
        (!self.data.is_empty()).then(|| std::mem::take(&mut self.data).join("\n"))
    }
}

/// What a Gemini stream has produced so far.
#[derive(Debug, Default, Clone)]
pub struct StreamTally {
    pub text: String,
    /// Usage is cumulative: the last chunk that carries it wins; a chunk without it never
    /// resets a real count to zero.
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    pub events: usize,
}

impl StreamTally {
    /// Records one event's JSON; returns the parsed value (or None if it is not JSON).
    pub fn observe(&mut self, data: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(data).ok()?;
        self.events += 1;
        let r = parse_reply(&v);
        self.text.push_str(&r.text);
        if let Some(u) = r.usage {
            if u.total > 0 || u.input > 0 {
                self.usage = Some(u);
            }
        }
        if r.finish_reason.is_some() {
            self.finish_reason = r.finish_reason;
        }
        Some(v)
    }
}

pub fn frame(data: &str) -> String {
    format!("data: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunk_boundaries() {
        let stream = "data: {\"a\":1}\r\n\r\ndata: {\"b\":\n: comment\ndata: 2}\n\ndata: last";
        for cut in 1..stream.len() {
            let mut p = SseParser::default();
            let mut ev = p.feed(&stream.as_bytes()[..cut]);
            ev.extend(p.feed(&stream.as_bytes()[cut..]));
            ev.extend(p.finish());
            assert_eq!(ev, vec!["{\"a\":1}", "{\"b\":\n2}", "last"], "cut at {cut}");
        }
    }

    #[test]
    fn tally_keeps_last_real_usage() {
        let mut t = StreamTally::default();
        t.observe(r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}]}}],"usageMetadata":{"promptTokenCount":5}}"#);
        t.observe(r#"{"candidates":[{"content":{"parts":[{"text":"lo"}]}}]}"#);
        assert_eq!(t.usage.unwrap().input, 5);
        t.observe(r#"{"candidates":[{"content":{"parts":[]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}"#);
        t.observe(r#"{"candidates":[{"content":{"parts":[]}}],"usageMetadata":{}}"#);
        assert_eq!(t.text, "Hello");
        assert_eq!(t.usage.unwrap().total, 7);
        assert_eq!(t.finish_reason.as_deref(), Some("STOP"));
    }
}
