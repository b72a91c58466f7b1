//! `messages` → Gemini `systemInstruction` text and `contents`.
//!
//! - system/developer: the system instruction;
//! - user: a `user` turn of text;
//! - assistant: a `model` turn: the text (if any; `content` may be null when there are tool
//!   calls), then one `functionCall {name, args}` part per tool call, `args` parsed from the
//!   `arguments` string. A call whose id carries a thought signature (see
//!   [`crate::wire::call_id`]) gets its `thoughtSignature` back;
//! - tool: a `functionResponse {name, response}` part. The name comes from the earlier
//!   assistant tool call with that `tool_call_id`; `response` is the content when it is a JSON
//!   object, else `{"result": content}`. Consecutive tool messages form one `user` turn, in the
//!   order of the calls they answer.
//!
//! On a conversation send (`X-Conversation-Id`) an agent may send only the tool results: a
//! `tool_call_id` not in the request is then left as `functionResponse {id, response}` without a
//! name, and the engine names it from the stored turn's call ids (`engine::plan`).

use super::bad;
use crate::error::RouterError;
use crate::wire::call_id::signature_of;
use serde_json::{json, Map, Value};

/// The system texts and the `contents` of a request's messages.
pub(super) struct Converted {
    pub system: Vec<String>,
    pub contents: Vec<Value>,
}

/// A message's text: a string, or an array of text parts; `None` for null or absent content.
fn text_of(m: &Map<String, Value>, i: usize) -> Result<Option<String>, RouterError> {
    match m.get("content") {
        Some(Value::String(s)) => Ok(Some(s.clone())),
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
            Ok(Some(out))
        }
        Some(Value::Null) | None => Ok(None),
        Some(_) => {
            Err(bad("invalid_field", format!("messages[{i}].content: must be a string or an array of text parts")))
        }
    }
}

fn required_text(m: &Map<String, Value>, i: usize) -> Result<String, RouterError> {
    text_of(m, i)?.ok_or_else(|| bad("missing_field", format!("messages[{i}].content: is required")))
}

/// One assistant `tool_calls` entry → (id, a `functionCall` part).
fn call_part(c: &Value, i: usize, j: usize) -> Result<(String, String, Value), RouterError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let c = c.as_object().ok_or_else(|| bad("invalid_field", format!("{at}: must be an object")))?;
    let id = match c.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad("missing_field", format!("{at}.id: is required (a non-empty string)"))),
    };
    if let Some(ty) = c.get("type").and_then(Value::as_str).filter(|t| *t != "function") {
        return Err(bad("unsupported_field", format!("{at}.type '{ty}' is not supported")));
    }
    let f = c.get("function").ok_or_else(|| bad("missing_field", format!("{at}.function: is required")))?;
    let name = match f.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(bad("missing_field", format!("{at}.function.name: is required"))),
    };
    let args = match f.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(o @ Value::Object(_)) => o,
            _ => {
                return Err(bad(
                    "invalid_field",
                    format!("{at}.function.arguments: must be a JSON object encoded as a string"),
                ))
            }
        },
        Some(o @ Value::Object(_)) => o.clone(),
        Some(_) => return Err(bad("invalid_field", format!("{at}.function.arguments: must be a string"))),
    };
    let mut part = json!({"functionCall": {"name": name, "args": args}});
    if let Some(sig) = signature_of(&id) {
        part["thoughtSignature"] = json!(sig);
    }
    Ok((id, name, part))
}

/// A tool result's content → the `functionResponse.response` object.
pub(super) fn response_object(content: &str) -> Value {
    match serde_json::from_str::<Value>(content) {
        Ok(o @ Value::Object(_)) => o,
        _ => json!({"result": content}),
    }
}

pub(super) fn convert(messages: &[Value], conversation: bool) -> Result<Converted, RouterError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Every assistant tool call so far (id → name), and the ids of the latest assistant turn.
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut latest: Vec<String> = Vec::new();
    // Tool results waiting to form one user turn: (the answered call's position, part).
    let mut results: Vec<(usize, Value)> = Vec::new();
    let flush = |results: &mut Vec<(usize, Value)>, contents: &mut Vec<Value>| {
        if !results.is_empty() {
            // A stable insertion sort by position: a handful of results, and no sort instance.
            for i in 1..results.len() {
                let mut j = i;
                while j > 0 && results[j - 1].0 > results[j].0 {
                    results.swap(j - 1, j);
                    j -= 1;
                }
            }
            let parts: Vec<Value> = results.drain(..).map(|(_, p)| p).collect();
            contents.push(json!({"role": "user", "parts": parts}));
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let m = m.as_object().ok_or_else(|| bad("invalid_field", format!("messages[{i}]: must be an object")))?;
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            Some(_) => return Err(bad("invalid_field", format!("messages[{i}].role: must be a string"))),
            None => return Err(bad("missing_field", format!("messages[{i}].role: is required"))),
        };
        if role != "tool" {
            flush(&mut results, &mut contents);
        }
        match role {
            "system" | "developer" => system.push(required_text(m, i)?),
            "user" => contents.push(json!({"role": "user", "parts": [{"text": required_text(m, i)?}]})),
            "assistant" => {
                let tool_calls = match m.get("tool_calls") {
                    None | Some(Value::Null) => &[][..],
                    Some(Value::Array(a)) => a.as_slice(),
                    Some(_) => return Err(bad("invalid_field", format!("messages[{i}].tool_calls: must be an array"))),
                };
                let text = if tool_calls.is_empty() { Some(required_text(m, i)?) } else { text_of(m, i)? };
                let mut parts = Vec::new();
                match text {
                    Some(t) if !t.is_empty() || tool_calls.is_empty() => parts.push(json!({"text": t})),
                    _ => {}
                }
                latest.clear();
                for (j, c) in tool_calls.iter().enumerate() {
                    let (id, name, part) = call_part(c, i, j)?;
                    latest.push(id.clone());
                    calls.push((id, name));
                    parts.push(part);
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
            "tool" => {
                let id = match m.get("tool_call_id") {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    _ => return Err(bad("missing_field", format!("messages[{i}].tool_call_id: is required"))),
                };
                let response = response_object(&text_of(m, i)?.unwrap_or_default());
                let pos = latest.iter().position(|l| *l == id).unwrap_or(usize::MAX);
                let part = match calls.iter().rev().find(|(c, _)| *c == id) {
                    Some((_, name)) => json!({"functionResponse": {"name": name, "response": response}}),
                    // Named by the engine from the stored conversation.
                    None if conversation => json!({"functionResponse": {"id": id, "response": response}}),
                    None => {
                        return Err(bad(
                            "unknown_tool_call_id",
                            format!("messages[{i}].tool_call_id: '{id}' answers no earlier assistant tool call"),
                        ))
                    }
                };
                results.push((pos, part));
            }
            "function" => {
                return Err(bad(
                    "unsupported_field",
                    format!("messages[{i}].role 'function' is not supported; use 'tool'"),
                ))
            }
            r => return Err(bad("unsupported_field", format!("messages[{i}].role '{r}' is not supported"))),
        }
    }
    flush(&mut results, &mut contents);
    if contents.is_empty() {
        return Err(bad("empty_message", "messages: needs at least one user message"));
    }
    let has_content =
        contents.iter().flat_map(|c| c["parts"].as_array().into_iter().flatten()).any(|p| match p.get("text") {
            Some(t) => t.as_str().is_some_and(|t| !t.trim().is_empty()),
            None => true,
        });
    if !has_content {
        return Err(bad("empty_message", "messages: all message contents are empty"));
    }
    Ok(Converted { system, contents })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::call_id::call_id;

    fn call(id: &str, name: &str, args: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
    }

    #[test]
    fn tool_calls_and_results_become_function_parts_in_call_order() {
        let signed = call_id("r:0", 0, Some("sig/+=="));
        let msgs = json!([
            {"role": "user", "content": "weather and time in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                call(&signed, "get_weather", r#"{"city":"Paris"}"#), call("call_b", "get_time", "")]},
            // Answered out of order: the turn follows the call order.
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
            {"role": "tool", "tool_call_id": signed, "content": "{\"temp\": 21}"},
            {"role": "assistant", "content": "Sunny, noon."},
        ]);
        let c = convert(msgs.as_array().unwrap(), false).unwrap().contents;
        assert_eq!(c.len(), 4);
        assert_eq!(c[1]["role"], "model");
        assert_eq!(c[1]["parts"].as_array().unwrap().len(), 2, "no text part for null content");
        assert_eq!(c[1]["parts"][0]["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));
        assert_eq!(c[1]["parts"][0]["thoughtSignature"], "sig/+==");
        assert!(c[1]["parts"][1].get("thoughtSignature").is_none());
        assert_eq!(c[1]["parts"][1]["functionCall"]["args"], json!({}));
        assert_eq!(c[2]["role"], "user");
        assert_eq!(
            c[2]["parts"],
            json!([{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                   {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}}])
        );
        assert_eq!(c[3]["parts"][0]["text"], "Sunny, noon.");
    }

    #[test]
    fn assistant_text_and_calls_share_a_turn() {
        let msgs = json!([{"role": "user", "content": "x"},
            {"role": "assistant", "content": "Looking.", "tool_calls": [call("a", "f", "{}")]},
            {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "[1,2]"}]}]);
        let c = convert(msgs.as_array().unwrap(), false).unwrap().contents;
        assert_eq!(c[1]["parts"][0]["text"], "Looking.");
        assert_eq!(c[1]["parts"][1]["functionCall"]["name"], "f");
        assert_eq!(c[2]["parts"][0]["functionResponse"]["response"], json!({"result": "[1,2]"}));
    }

    #[test]
    fn bad_calls_and_results_are_named() {
        let cases = [
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("a", "f", "{oops")]}]),
                "invalid_field",
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("a", "f", "[1]")]}]),
                "invalid_field",
                "arguments",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "1"}]),
                "unknown_tool_call_id",
                "messages[1].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}]),
                "missing_field",
                "messages[1].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": null}]),
                "missing_field",
                "messages[1].content",
            ),
            (json!([{"role": "function", "content": "x"}]), "unsupported_field", "messages[0].role"),
        ];
        for (msgs, code, needle) in cases {
            let e = convert(msgs.as_array().unwrap(), false).err().unwrap();
            assert_eq!(e.code(), code, "{msgs}");
            assert!(e.message().contains(needle), "{}", e.message());
        }
    }

    #[test]
    fn a_conversation_send_may_carry_only_the_tool_result() {
        let msgs = json!([{"role": "tool", "tool_call_id": "call_x", "content": "sunny"}]);
        let c = convert(msgs.as_array().unwrap(), true).unwrap().contents;
        assert_eq!(
            c,
            vec![
                json!({"role": "user", "parts": [{"functionResponse": {"id": "call_x", "response": {"result": "sunny"}}}]})
            ]
        );
    }
}
