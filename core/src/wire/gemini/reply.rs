//! Reading Gemini's answers: the text, function calls with their thought signatures, thought
//! summaries, the finish reason and usage.

use serde_json::{json, Value};

/// Token usage of one reply, from `usageMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub thoughts: u64,
    pub total: u64,
}

impl Usage {
    pub fn from_metadata(m: &Value) -> Option<Usage> {
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        if !m.is_object() {
            return None;
        }
        let (input, output, thoughts) = (n("promptTokenCount"), n("candidatesTokenCount"), n("thoughtsTokenCount"));
        let total = m.get("totalTokenCount").and_then(Value::as_u64).unwrap_or(input + output + thoughts);
        Some(Usage { input, output, thoughts, total })
    }
}

/// One `functionCall` part of an answer, with the id the router gives it (see
/// [`crate::wire::call_id`]) and the part's `thoughtSignature`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionCall {
    pub id: String,
    pub name: String,
    /// Always a JSON object (Gemini's `Struct`); a missing `args` is `{}`.
    pub args: Value,
    pub signature: Option<String>,
}

/// What the model said, accumulated over one reply or over a stream's events: the answer text,
/// the thought summaries (`thought: true` parts, never answer text), and the function calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOutput {
    pub text: String,
    pub thoughts: String,
    /// The `thoughtSignature` of a text part (Gemini 3 may sign the last text part).
    pub text_signature: Option<String>,
    pub calls: Vec<FunctionCall>,
}

impl ModelOutput {
    /// Adds one candidate's `parts`; a call's id is `call_id(salt, its index in the answer)`.
    pub fn absorb(&mut self, parts: &Value, salt: &str) {
        for p in parts.as_array().into_iter().flatten() {
            let signature = p.get("thoughtSignature").and_then(Value::as_str).map(str::to_string);
            if let Some(fc) = p.get("functionCall") {
                let index = self.calls.len();
                let args = match fc.get("args") {
                    Some(a @ Value::Object(_)) => a.clone(),
                    _ => json!({}),
                };
                self.calls.push(FunctionCall {
                    id: crate::wire::call_id::call_id(salt, index, signature.as_deref()),
                    name: fc.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    args,
                    signature,
                });
                continue;
            }
            let text = p.get("text").and_then(Value::as_str);
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                self.thoughts.push_str(text.unwrap_or_default());
                continue;
            }
            if let Some(t) = text {
                self.text.push_str(t);
                if signature.is_some() {
                    self.text_signature = signature;
                }
            }
        }
    }

    /// The model turn's `parts` as stored in a conversation and replayed upstream: the text
    /// (with its signature) unless empty, then one `functionCall` part per call with its
    /// `thoughtSignature`. Thought summaries are not kept. Never empty.
    pub fn model_parts(&self) -> Vec<Value> {
        let mut parts = Vec::new();
        if !self.text.is_empty() || self.text_signature.is_some() || self.calls.is_empty() {
            let mut t = json!({"text": self.text});
            if let Some(s) = &self.text_signature {
                t["thoughtSignature"] = json!(s);
            }
            parts.push(t);
        }
        for c in &self.calls {
            let mut p = json!({"functionCall": {"name": c.name, "args": c.args}});
            if let Some(s) = &c.signature {
                p["thoughtSignature"] = json!(s);
            }
            parts.push(p);
        }
        parts
    }

    pub fn call_ids(&self) -> Vec<String> {
        self.calls.iter().map(|c| c.id.clone()).collect()
    }
}

/// The useful parts of a `GenerateContentResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub out: ModelOutput,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub block_reason: Option<String>,
    pub model_version: Option<String>,
}

/// Reads a reply; call ids are salted with `salt` (the reservation id, see `call_id`).
pub fn parse_reply(body: &Value, salt: &str) -> Reply {
    let cand = &body["candidates"][0];
    let mut out = ModelOutput::default();
    out.absorb(&cand["content"]["parts"], salt);
    Reply {
        out,
        finish_reason: cand["finishReason"].as_str().map(str::to_string),
        usage: Usage::from_metadata(&body["usageMetadata"]),
        block_reason: body["promptFeedback"]["blockReason"].as_str().map(str::to_string),
        model_version: body["modelVersion"].as_str().map(str::to_string),
    }
}
