//! OpenAI Chat Completions ⇄ Gemini translation, so agents written against the OpenAI SDK
//! work with only the base URL and key changed. Fields we do not implement are refused with a
//! 400 that names them, never silently dropped.

use crate::error::RouterError;
use crate::wire::gemini::{GenerateRequest, Reply, Usage};
use serde_json::{json, Map, Value};

fn bad(code: &'static str, m: impl Into<String>) -> RouterError {
    RouterError::bad_request(code, m)
}

/// A parsed `/v1/chat/completions` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub gen: GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Fields accepted and ignored because they have no Gemini meaning but are harmless.
const IGNORED: [&str; 5] = ["user", "store", "metadata", "service_tier", "parallel_tool_calls"];
/// Fields refused with a named 400.
const UNSUPPORTED: [&str; 12] = [
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "web_search_options",
];

fn message_text(m: &Map<String, Value>, i: usize) -> Result<String, RouterError> {
    match m.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (Some(ty), _) if ty != "text" => {
                        return Err(bad(
                            "unsupported_field",
                            format!("messages[{i}].content[{j}].type '{ty}' is not supported (text only)"),
                        ))
                    }
                    _ => {
                        return Err(bad(
                            "invalid_field",
                            format!("messages[{i}].content[{j}]: must be {{type: text, text}}"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(Value::Null) | None => Err(bad("missing_field", format!("messages[{i}].content: is required"))),
        Some(_) => {
            Err(bad("invalid_field", format!("messages[{i}].content: must be a string or an array of text parts")))
        }
    }
}

impl ChatRequest {
    pub fn parse(body: &Value, conversation_id: Option<String>) -> Result<ChatRequest, RouterError> {
        let obj = body.as_object().ok_or_else(|| bad("invalid_body", "request body must be a JSON object"))?;
        for k in obj.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                return Err(bad("unsupported_field", format!("'{k}' is not supported by this router")));
            }
        }
        const KNOWN: [&str; 13] = [
            "messages",
            "model",
            "temperature",
            "top_p",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "stream",
            "stream_options",
            "response_format",
            "n",
            "presence_penalty",
            "frequency_penalty",
        ];
        if let Some(k) =
            obj.keys().find(|k| !KNOWN.contains(&k.as_str()) && !IGNORED.contains(&k.as_str()) && k.as_str() != "seed")
        {
            return Err(bad("unknown_field", format!("unknown field '{k}'")));
        }
        match obj.get("n") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(1) => {}
            Some(_) => return Err(bad("unsupported_field", "'n' other than 1 is not supported")),
        }
        let model = match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.strip_prefix("models/").unwrap_or(m).to_string(),
            _ => return Err(bad("missing_field", "model: is required")),
        };
        let messages = match obj.get("messages") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) => return Err(bad("empty_message", "messages: must not be empty")),
            Some(_) => return Err(bad("invalid_field", "messages: must be an array")),
            None => return Err(bad("missing_field", "messages: is required")),
        };
        let mut system: Vec<String> = Vec::new();
        let mut contents = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let m = m.as_object().ok_or_else(|| bad("invalid_field", format!("messages[{i}]: must be an object")))?;
            let text = message_text(m, i)?;
            match m.get("role").and_then(Value::as_str) {
                Some("system") | Some("developer") => system.push(text),
                Some("user") => contents.push(json!({"role": "user", "parts": [{"text": text}]})),
                Some("assistant") => contents.push(json!({"role": "model", "parts": [{"text": text}]})),
                Some(r) => return Err(bad("unsupported_field", format!("messages[{i}].role '{r}' is not supported"))),
                None => return Err(bad("missing_field", format!("messages[{i}].role: is required"))),
            }
        }
        if contents.is_empty() {
            return Err(bad("empty_message", "messages: needs at least one user message"));
        }
        if contents.iter().all(|c| c["parts"][0]["text"].as_str().map(|t| t.trim().is_empty()).unwrap_or(true)) {
            return Err(bad("empty_message", "messages: all message contents are empty"));
        }
        let num = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, RouterError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x >= lo && x <= hi => Ok(Some(x)),
                    _ => Err(bad("invalid_field", format!("{k}: must be a number from {lo} to {hi}"))),
                },
            }
        };
        let temperature = num("temperature", 0.0, 2.0)?;
        let top_p = num("top_p", 0.0, 1.0)?;
        num("presence_penalty", -2.0, 2.0)?;
        num("frequency_penalty", -2.0, 2.0)?;
        let max_tokens = match (obj.get("max_completion_tokens"), obj.get("max_tokens")) {
            (Some(v), _) | (None, Some(v)) if !v.is_null() => match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => Some(n),
                _ => return Err(bad("invalid_field", "max_tokens: must be an integer from 1 to 1000000")),
            },
            _ => None,
        };
        let stop: Option<Vec<String>> = match obj.get("stop") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(a)) if a.len() <= 5 && a.iter().all(Value::is_string) => {
                Some(a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            }
            Some(_) => return Err(bad("invalid_field", "stop: must be a string or an array of up to 5 strings")),
        };
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("invalid_field", "stream: must be a boolean")),
        };
        let include_usage =
            obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
        let mut generation = Map::new();
        if let Some(p) = top_p {
            generation.insert("topP".into(), json!(p));
        }
        if let Some(s) = stop {
            generation.insert("stopSequences".into(), json!(s));
        }
        match obj.get("response_format").and_then(|r| r.get("type")).and_then(Value::as_str) {
            None | Some("text") => {}
            Some("json_object") => {
                generation.insert("responseMimeType".into(), json!("application/json"));
            }
            Some(t) => return Err(bad("unsupported_field", format!("response_format.type '{t}' is not supported"))),
        }
        let gen = GenerateRequest {
            model,
            contents,
            system: if system.is_empty() { None } else { Some(system.join("\n\n")) },
            temperature,
            max_output_tokens: max_tokens,
            conversation_id,
            allow_fallback: false,
            generation,
            passthrough: Map::new(),
            model_from_conversation: false,
        };
        Ok(ChatRequest { gen, stream, include_usage })
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
pub fn finish_reason(gemini: Option<&str>) -> &'static str {
    match gemini {
        Some("MAX_TOKENS") => "length",
        Some("SAFETY") | Some("RECITATION") | Some("BLOCKLIST") | Some("PROHIBITED_CONTENT") | Some("SPII") => {
            "content_filter"
        }
        _ => "stop",
    }
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output + u.thoughts,
        "total_tokens": u.total,
        "completion_tokens_details": {"reasoning_tokens": u.thoughts},
    })
}

pub fn completion(id: &str, created: u64, model: &str, reply: &Reply, usage: &Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.text, "refusal": null},
            "finish_reason": finish_reason(reply.finish_reason.as_deref()),
            "logprobs": null,
        }],
        "usage": usage_json(usage),
    })
}

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

/// The OpenAI error body for a router error.
pub fn error_body(e: &RouterError) -> Value {
    let ty = match e.status() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    json!({"error": {"message": e.message(), "type": ty, "code": e.code(), "param": null}})
}

/// `GET /v1/models` in OpenAI's shape; `available` says whether the model has capacity now.
pub fn models_list(models: &[(String, bool)]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|(m, avail)| json!({"id": m, "object": "model", "created": 0, "owned_by": "google", "available": avail}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_messages_and_params() {
        let body = json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}
            ],
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "stop": ["END"],
            "response_format": {"type": "json_object"}, "stream": true, "stream_options": {"include_usage": true}
        });
        let r = ChatRequest::parse(&body, None).unwrap();
        assert!(r.stream && r.include_usage);
        let g = r.gen.to_gemini(&[]);
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(g["contents"].as_array().unwrap().len(), 3);
        assert_eq!(g["contents"][1]["role"], "model");
        assert_eq!(g["contents"][2]["parts"][0]["text"], "What is 2+2?");
        assert_eq!(g["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(g["generationConfig"]["topP"], 0.9);
        assert_eq!(g["generationConfig"]["stopSequences"], json!(["END"]));
        assert_eq!(g["generationConfig"]["responseMimeType"], "application/json");
    }

    #[test]
    fn unsupported_fields_are_named() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in [("n", json!(2)), ("tools", json!([])), ("logprobs", json!(true))] {
            let mut b = base.clone();
            b[k] = v;
            let e = ChatRequest::parse(&b, None).unwrap_err();
            assert_eq!(e.code(), "unsupported_field");
            assert!(e.message().contains(k), "{}", e.message());
        }
        let mut b = base.clone();
        b["n"] = json!(1);
        b["user"] = json!("u");
        assert!(ChatRequest::parse(&b, None).is_ok());
        let e = ChatRequest::parse(&json!({"model": "m", "messages": []}), None).unwrap_err();
        assert_eq!(e.code(), "empty_message");
    }

    #[test]
    fn finish_reasons_map() {
        assert_eq!(finish_reason(Some("STOP")), "stop");
        assert_eq!(finish_reason(Some("MAX_TOKENS")), "length");
        assert_eq!(finish_reason(Some("SAFETY")), "content_filter");
        assert_eq!(finish_reason(None), "stop");
    }

    #[test]
    fn error_body_has_openai_shape() {
        let e = RouterError::Unauthorized;
        let b = error_body(&e);
        assert_eq!(b["error"]["type"], "authentication_error");
        assert_eq!(b["error"]["code"], "unauthorized");
    }
}
