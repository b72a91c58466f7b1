//! Server-Sent Events: splitting the upstream byte stream into events, and tracking what a
//! Gemini stream has produced so far (text, thoughts, function calls, and the last usage seen).

use crate::wire::gemini::{ModelOutput, Usage};
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

/// One upstream event: its `data` as received (the Gemini surface relays it as is) and its
/// JSON, parsed once by [`StreamTally::record`] and reused by the OpenAI shaper.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub data: String,
    pub json: Option<Value>,
}

/// What a Gemini stream has produced so far.
#[derive(Debug, Default, Clone)]
pub struct StreamTally {
    /// Text, thoughts and function calls (each call arrives whole in one event), in order.
    pub out: ModelOutput,
    /// Usage is cumulative: the last chunk that carries it wins; a chunk without it never
    /// resets a real count to zero.
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    pub events: usize,
    /// Salt of the call ids (the reservation id), so a call has one id in every shape.
    pub salt: String,
}

impl StreamTally {
    pub fn new(salt: &str) -> StreamTally {
        StreamTally { salt: salt.to_string(), ..StreamTally::default() }
    }

    /// Records one event and keeps its parsed JSON with it, so nothing parses it again.
    pub fn record(&mut self, data: String) -> Event {
        let json = self.observe(&data);
        Event { data, json }
    }

    /// Records one event's JSON; returns the parsed value (or None if it is not JSON).
    pub fn observe(&mut self, data: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(data).ok()?;
        self.events += 1;
        let cand = &v["candidates"][0];
        self.out.absorb(&cand["content"]["parts"], &self.salt);
        if let Some(u) = Usage::from_metadata(&v["usageMetadata"]) {
            if u.total > 0 || u.input > 0 {
                self.usage = Some(u);
            }
        }
        if let Some(f) = cand["finishReason"].as_str() {
            self.finish_reason = Some(f.to_string());
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
        assert_eq!(t.out.text, "Hello");
        assert_eq!(t.usage.unwrap().total, 7);
        assert_eq!(t.finish_reason.as_deref(), Some("STOP"));
    }

    #[test]
    fn tally_collects_calls_with_stable_ids_and_keeps_thoughts_apart() {
        let mut t = StreamTally::new("rid:0");
        t.observe(r#"{"candidates":[{"content":{"parts":[{"text":"plan","thought":true},{"text":"Let me look."}]}}]}"#);
        t.observe(r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},{"functionCall":{"name":"get_time"}}]},"finishReason":"STOP"}]}"#);
        assert_eq!((t.out.text.as_str(), t.out.thoughts.as_str()), ("Let me look.", "plan"));
        assert_eq!(t.out.calls.len(), 2);
        assert_eq!(t.out.calls[0].id, crate::wire::call_id::call_id("rid:0", 0, Some("c2ln")));
        assert_eq!(t.out.calls[1].args, serde_json::json!({}));
        let parts = t.out.model_parts();
        assert_eq!(parts[1]["thoughtSignature"], "c2ln");
        assert_eq!(parts[2]["functionCall"]["name"], "get_time");
    }

    #[test]
    fn record_keeps_the_parsed_json_with_the_event() {
        let mut t = StreamTally::default();
        let data = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}]}"#.to_string();
        let ev = t.record(data.clone());
        assert_eq!(ev.data, data);
        assert_eq!(ev.json.unwrap()["candidates"][0]["content"]["parts"][0]["text"], "Hi");
        assert_eq!((t.events, t.out.text.as_str()), (1, "Hi"));
        assert_eq!(t.record("not json".into()).json, None);
    }
}
