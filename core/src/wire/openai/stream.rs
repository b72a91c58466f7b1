//! Streamed answers: `chat.completion.chunk`s built from Gemini's events.
//!
//! The glue relays each upstream event after recording it in the [`StreamTally`]; the
//! [`StreamShaper`] turns it into at most one chunk: the event's text as `delta.content`, its
//! thought summaries as `delta.reasoning_content` (only when asked for), and each call the tally
//! has not sent yet as a whole tool-call delta `{index, id, type, function: {name, arguments}}`,
//! which the openai SDK's stream accumulator assembles. The ids are the tally's, so a call has
//! the same id in the stream, in the accumulated message and in the stored conversation.

use super::response::{answer_finish_reason, usage_json};
use crate::wire::gemini::{parse_reply, Usage};
use crate::wire::sse::StreamTally;
use serde_json::{json, Value};

/// One streamed `chat.completion.chunk`.
pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

pub fn usage_chunk(id: &str, created: u64, model: &str, usage: &Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_json(usage),
    })
}

/// The OpenAI side of one stream.
#[derive(Debug, Clone)]
pub struct StreamShaper {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_thoughts: bool,
    sent_role: bool,
    sent_calls: usize,
}

impl StreamShaper {
    pub fn new(id: String, created: u64, model: String, include_thoughts: bool) -> StreamShaper {
        StreamShaper { id, created, model, include_thoughts, sent_role: false, sent_calls: 0 }
    }

    /// The chunk for one upstream event, already recorded in `tally`; None when it adds nothing.
    pub fn event(&mut self, data: &str, tally: &StreamTally) -> Option<Value> {
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        self.shape(&v, tally)
    }

    /// [`StreamShaper::event`] for an event already parsed ([`crate::wire::sse::Event::json`]):
    /// the relay's path, so each event's JSON is parsed once.
    pub fn shape(&mut self, v: &Value, tally: &StreamTally) -> Option<Value> {
        let out = parse_reply(v, "").out;
        let new_calls = &tally.out.calls[self.sent_calls.min(tally.out.calls.len())..];
        let thoughts = if self.include_thoughts { out.thoughts.as_str() } else { "" };
        if out.text.is_empty() && thoughts.is_empty() && new_calls.is_empty() && self.sent_role {
            return None;
        }
        let mut delta = serde_json::Map::new();
        if !self.sent_role {
            delta.insert("role".into(), json!("assistant"));
            self.sent_role = true;
        }
        if !out.text.is_empty() {
            delta.insert("content".into(), json!(out.text));
        } else if !new_calls.is_empty() {
            delta.insert("content".into(), Value::Null);
        } else if thoughts.is_empty() {
            delta.insert("content".into(), json!(""));
        }
        if !thoughts.is_empty() {
            delta.insert("reasoning_content".into(), json!(thoughts));
        }
        if !new_calls.is_empty() {
            let calls: Vec<Value> = new_calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    json!({"index": self.sent_calls + k, "id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.args.to_string()}})
                })
                .collect();
            self.sent_calls += calls.len();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        Some(chunk(&self.id, self.created, &self.model, Value::Object(delta), None))
    }

    /// The closing chunks of a complete stream: the finish reason (`tool_calls` when the model
    /// called a function), then the usage if asked for.
    pub fn finish(&self, tally: &StreamTally, include_usage: bool) -> Vec<Value> {
        let fr = answer_finish_reason(&tally.out, tally.finish_reason.as_deref());
        let mut out = vec![chunk(&self.id, self.created, &self.model, json!({}), Some(fr))];
        if include_usage {
            out.push(usage_chunk(&self.id, self.created, &self.model, &tally.usage.unwrap_or_default()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::call_id::call_id;

    /// What the openai SDK's accumulator does with tool-call deltas: merge by `index`, concatenate
    /// `arguments`, keep the first `id`/`name`.
    fn accumulate(chunks: &[Value]) -> (String, Vec<(String, String, String)>, Option<String>) {
        let (mut content, mut calls, mut finish) = (String::new(), Vec::<(String, String, String)>::new(), None);
        for c in chunks {
            let ch = &c["choices"][0];
            content.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if calls.len() <= i {
                    calls.resize(i + 1, Default::default());
                }
                if let Some(id) = tc["id"].as_str() {
                    calls[i].0 = id.into();
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    calls[i].1 = n.into();
                }
                calls[i].2.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = Some(f.into());
            }
        }
        (content, calls, finish)
    }

    #[test]
    fn tool_call_deltas_assemble_with_stable_ids() {
        let events = [
            r#"{"candidates":[{"content":{"parts":[{"text":"Checking"}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_time","args":{}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"totalTokenCount":9}}"#,
        ];
        let mut tally = StreamTally::new("rid:0");
        let mut sh = StreamShaper::new("chatcmpl-x".into(), 1, "m".into(), false);
        let mut chunks = Vec::new();
        for e in events {
            tally.observe(e);
            chunks.extend(sh.event(e, &tally));
        }
        chunks.extend(sh.finish(&tally, true));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let (content, calls, finish) = accumulate(&chunks);
        assert_eq!(content, "Checking");
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], (call_id("rid:0", 0, Some("c2ln")), "get_weather".into(), r#"{"city":"Paris"}"#.into()));
        assert_eq!(calls[0].0, tally.out.calls[0].id, "the stream's id is the stored one");
        assert_eq!(calls[1].1, "get_time");
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn thoughts_are_reasoning_content_only_when_asked() {
        let e = r#"{"candidates":[{"content":{"parts":[{"text":"hmm","thought":true},{"text":"4"}]},"finishReason":"STOP"}]}"#;
        for ask in [false, true] {
            let mut tally = StreamTally::new("r");
            tally.observe(e);
            let mut sh = StreamShaper::new("id".into(), 1, "m".into(), ask);
            let c = sh.event(e, &tally).unwrap();
            assert_eq!(c["choices"][0]["delta"]["content"], "4");
            assert_eq!(c["choices"][0]["delta"].get("reasoning_content").is_some(), ask);
            assert_eq!(sh.finish(&tally, false)[0]["choices"][0]["finish_reason"], "stop");
            assert!(sh.event(r#"{"candidates":[{"content":{"parts":[]}}]}"#, &tally).is_none());
        }
    }
}
