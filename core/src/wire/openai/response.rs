//! A whole answer as a `chat.completion`, the OpenAI error body and the model list.

use crate::error::RouterError;
use crate::wire::gemini::{ModelOutput, Reply, Usage};
use serde_json::{json, Value};

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

/// The answer's `finish_reason`: `tool_calls` whenever the model called a function.
pub(super) fn answer_finish_reason(out: &ModelOutput, gemini: Option<&str>) -> &'static str {
    if out.calls.is_empty() {
        finish_reason(gemini)
    } else {
        "tool_calls"
    }
}

/// One call in OpenAI's shape; `arguments` is the JSON text of `args`.
pub(super) fn tool_call(id: &str, name: &str, args: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output + u.thoughts,
        "total_tokens": u.total,
        "completion_tokens_details": {"reasoning_tokens": u.thoughts},
    })
}

/// A `chat.completion`. `content` is null when the model only called functions; thought
/// summaries are `reasoning_content`, only when the caller asked for them.
pub fn completion(id: &str, created: u64, model: &str, reply: &Reply, usage: &Usage, include_thoughts: bool) -> Value {
    let out = &reply.out;
    let content = if out.text.is_empty() && !out.calls.is_empty() { Value::Null } else { json!(out.text) };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !out.calls.is_empty() {
        message["tool_calls"] = out.calls.iter().map(|c| tool_call(&c.id, &c.name, &c.args)).collect();
    }
    if include_thoughts && !out.thoughts.is_empty() {
        message["reasoning_content"] = json!(out.thoughts);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": answer_finish_reason(out, reply.finish_reason.as_deref()),
            "logprobs": null,
        }],
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
    use crate::wire::call_id::{call_id, signature_of};
    use crate::wire::gemini::parse_reply;

    #[test]
    fn finish_reasons_map() {
        assert_eq!(finish_reason(Some("STOP")), "stop");
        assert_eq!(finish_reason(Some("MAX_TOKENS")), "length");
        assert_eq!(finish_reason(Some("SAFETY")), "content_filter");
        assert_eq!(finish_reason(None), "stop");
    }

    #[test]
    fn error_body_has_openai_shape() {
        let b = error_body(&RouterError::Unauthorized);
        assert_eq!(b["error"]["type"], "authentication_error");
        assert_eq!(b["error"]["code"], "unauthorized");
    }

    #[test]
    fn function_calls_become_tool_calls_with_signed_ids() {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]}, "finishReason": "STOP"}]});
        let r = parse_reply(&body, "rid:1");
        let c = completion("chatcmpl-1", 1, "gemini-3-pro-preview", &r, &Usage::default(), false);
        let choice = &c["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert!(choice["message"].get("reasoning_content").is_none(), "not asked for");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        let id0 = calls[0]["id"].as_str().unwrap();
        assert_eq!(id0, call_id("rid:1", 0, Some("U0lH")));
        assert_eq!(signature_of(id0).as_deref(), Some("U0lH"));
        assert_eq!(calls[1]["id"], call_id("rid:1", 1, None));
        let with = completion("chatcmpl-1", 1, "m", &r, &Usage::default(), true);
        assert_eq!(with["choices"][0]["message"]["reasoning_content"], "thinking...");
    }

    #[test]
    fn a_text_answer_keeps_its_content_and_stop() {
        let r =
            parse_reply(&json!({"candidates": [{"content": {"parts": [{"text": "4"}]}, "finishReason": "STOP"}]}), "s");
        let c = completion("id", 1, "m", &r, &Usage::default(), true);
        assert_eq!(c["choices"][0]["message"]["content"], "4");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert!(c["choices"][0]["message"].get("tool_calls").is_none());
    }
}
