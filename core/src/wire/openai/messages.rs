//! `messages` → Gemini `systemInstruction` text and `contents`.
//!
//! - system/developer: the system instruction;
//! - user: a `user` turn: its text, and its media parts (see [`media`](self#media));
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
//!
//! # Media
//!
//! Only user messages carry media; text parts around them keep their order (adjacent text parts
//! are joined into one).
//!
//! | OpenAI part | Gemini part |
//! |---|---|
//! | `image_url {url: "data:<mime>;base64,<data>"}` | `inlineData {mimeType: <mime>, data}` |
//! | `image_url {url: "http(s)://…"}` | `fileData {mimeType, fileUri: url}`: Google fetches it, the worker never does. `mimeType` from the path's extension (png, jpg, webp, gif, heic, pdf…), else `image/jpeg` (an `image_url` is an image; Google reads the fetched bytes) |
//! | `input_audio {data, format}` | `inlineData {mimeType: audio/<format>, data}` (wav → audio/wav, mp3 → audio/mp3; also aiff, aac, ogg, flac) |
//! | `file {file_data: "data:<mime>;base64,…"}` | `inlineData {mimeType: <mime>, data}` |
//! | `file {file_data: <bare base64>, filename}` | `inlineData`, `mimeType` from the filename's extension, else sniffed from the bytes (PDF, PNG, JPEG, GIF, WebP, WAV, MP3); neither → 400 |
//! | `file {file_id}` | 400 `unsupported_field` (no Files API) |
//!
//! `image_url.detail` is accepted (`auto`, `low`, `high`) and not forwarded. Errors name the
//! part: a malformed data URL is 400 `invalid_media`, bad base64 400 `invalid_base64`
//! (`messages[i].content[j].image_url.url: not valid base64 (…)`), using the same check as
//! the native surface (`wire::base64::check`).

use super::bad;
use crate::error::RouterError;
use crate::wire::base64;
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
                    (Some(ty @ ("image_url" | "input_audio" | "file")), _) => {
                        return Err(bad(
                            "unsupported_field",
                            format!("messages[{i}].content[{j}].type '{ty}': media is only supported in user messages"),
                        ))
                    }
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

/// A user message's parts: its text (adjacent text parts joined), and its media parts in order.
fn user_parts(m: &Map<String, Value>, i: usize) -> Result<Vec<Value>, RouterError> {
    let parts = match m.get("content") {
        Some(Value::Array(parts)) if parts.iter().any(|p| p.get("type").and_then(Value::as_str) != Some("text")) => {
            parts
        }
        _ => return Ok(vec![json!({"text": required_text(m, i)?})]),
    };
    let mut out = Vec::new();
    let mut text = String::new();
    for (j, p) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(t)) => text.push_str(t),
            (Some("text"), None) | (None, _) => {
                return Err(bad("invalid_field", format!("{at}: must be {{type: text, text}} or a media part")))
            }
            (Some(ty), _) => {
                if !text.is_empty() {
                    out.push(json!({"text": std::mem::take(&mut text)}));
                }
                out.push(media_part(p, ty, &at)?);
            }
        }
    }
    if !text.is_empty() {
        out.push(json!({"text": text}));
    }
    Ok(out)
}

/// One OpenAI media part (`image_url`, `input_audio`, `file`) → a Gemini `inlineData` or
/// `fileData` part. `at` names the part (`messages[i].content[j]`).
fn media_part(p: &Value, ty: &str, at: &str) -> Result<Value, RouterError> {
    let field = |name: &str| -> Result<&Map<String, Value>, RouterError> {
        p.get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| bad("missing_field", format!("{at}.{name}: must be an object")))
    };
    match ty {
        "image_url" => {
            // Some clients send `image_url` as the URL string itself.
            let (url, at) = match p.get("image_url") {
                Some(Value::String(u)) => (u.as_str(), format!("{at}.image_url")),
                _ => {
                    let o = field("image_url")?;
                    match o.get("detail") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => {}
                        Some(_) => {
                            return Err(bad(
                                "invalid_field",
                                format!("{at}.image_url.detail: must be auto, low or high"),
                            ))
                        }
                    }
                    match o.get("url") {
                        Some(Value::String(u)) if !u.is_empty() => (u.as_str(), format!("{at}.image_url.url")),
                        _ => return Err(bad("missing_field", format!("{at}.image_url.url: is required"))),
                    }
                }
            };
            if has_prefix(url, "data:") {
                let (mime, data) = data_url(url, &at)?;
                Ok(inline(&mime, data))
            } else if has_prefix(url, "https://") || has_prefix(url, "http://") {
                let mime = mime_of_name(url_path(url)).unwrap_or("image/jpeg");
                Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
            } else {
                Err(bad(
                    "invalid_media",
                    format!("{at}: must be a data: URL (data:<mime>;base64,<data>) or an http(s) URL"),
                ))
            }
        }
        "input_audio" => {
            let o = field("input_audio")?;
            let format = match o.get("format") {
                Some(Value::String(f)) if !f.is_empty() => f.to_ascii_lowercase(),
                _ => return Err(bad("missing_field", format!("{at}.input_audio.format: is required (wav, mp3, …)"))),
            };
            if !AUDIO_FORMATS.contains(&format.as_str()) {
                return Err(bad(
                    "unsupported_field",
                    format!("{at}.input_audio.format '{format}' is not supported ({})", AUDIO_FORMATS.join(", ")),
                ));
            }
            let data = match o.get("data") {
                Some(Value::String(d)) => d.as_str(),
                _ => return Err(bad("missing_field", format!("{at}.input_audio.data: is required (base64 audio)"))),
            };
            check_base64(data, &format!("{at}.input_audio.data"))?;
            Ok(inline(&format!("audio/{format}"), data))
        }
        "file" => {
            let o = field("file")?;
            let data = match (o.get("file_data"), o.get("file_id")) {
                (Some(Value::String(d)), _) if !d.is_empty() => d.as_str(),
                (None | Some(Value::Null), Some(id)) if !id.is_null() => {
                    return Err(bad(
                        "unsupported_field",
                        format!("{at}.file.file_id: uploaded files are not supported (no Files API); send the content as file_data"),
                    ))
                }
                _ => return Err(bad("missing_field", format!("{at}.file.file_data: is required (a data: URL or base64)"))),
            };
            let at = format!("{at}.file.file_data");
            if has_prefix(data, "data:") {
                let (mime, data) = data_url(data, &at)?;
                return Ok(inline(&mime, data));
            }
            check_base64(data, &at)?;
            let filename = o.get("filename").and_then(Value::as_str).unwrap_or("");
            let mime = mime_of_name(filename).or_else(|| sniff(&base64::Decoded::new(data).read(0, 12))).ok_or_else(|| {
                bad(
                    "invalid_media",
                    format!(
                        "{at}: cannot tell the file's type; send a data: URL (data:<mime>;base64,…) or a filename with a known extension"
                    ),
                )
            })?;
            Ok(inline(mime, data))
        }
        _ => Err(bad(
            "unsupported_field",
            format!("{at}.type '{ty}' is not supported (text, image_url, input_audio, file)"),
        )),
    }
}

/// `input_audio.format` values, each sent as `audio/<format>`.
const AUDIO_FORMATS: [&str; 6] = ["wav", "mp3", "aiff", "aac", "ogg", "flac"];

fn inline(mime: &str, data: &str) -> Value {
    json!({"inlineData": {"mimeType": mime, "data": data}})
}

fn has_prefix(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

fn check_base64(data: &str, at: &str) -> Result<(), RouterError> {
    base64::check(data).map_err(|why| bad("invalid_base64", format!("{at}: {why}")))
}

/// `data:<mime>[;param…];base64,<data>` → (the MIME type, lower-cased; the base64 data, checked).
fn data_url<'u>(url: &'u str, at: &str) -> Result<(String, &'u str), RouterError> {
    let shape = "expected data:<mime>;base64,<data>";
    let Some((header, data)) = url[5..].split_once(',') else {
        return Err(bad("invalid_media", format!("{at}: not a valid data URL ({shape})")));
    };
    let mut params = header.split(';');
    let mime = params.next().unwrap_or("").trim().to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(bad("invalid_media", format!("{at}: the data URL must be base64-encoded ({shape})")));
    }
    if mime.is_empty() || !mime.contains('/') {
        return Err(bad("invalid_media", format!("{at}: the data URL needs a MIME type ({shape})")));
    }
    check_base64(data, at)?;
    Ok((mime, data))
}

/// The path of an http(s) URL, without its query or fragment.
fn url_path(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The MIME type of a file name or URL path by its extension.
fn mime_of_name(name: &str) -> Option<&'static str> {
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty() || ext.contains('/') {
        return None;
    }
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "aac" => "audio/aac",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "aiff" => "audio/aiff",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "txt" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        _ => return None,
    })
}

/// The MIME type of a file by its first bytes.
fn sniff(head: &[u8]) -> Option<&'static str> {
    Some(match head {
        [b'%', b'P', b'D', b'F', ..] => "application/pdf",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => "audio/wav",
        [b'I', b'D', b'3', ..] | [0xff, 0xfb | 0xf3 | 0xf2, ..] => "audio/mp3",
        _ => return None,
    })
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
            "user" => contents.push(json!({"role": "user", "parts": user_parts(m, i)?})),
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

    fn user(content: Value) -> Result<Vec<Value>, RouterError> {
        let msgs = json!([{"role": "user", "content": content}]);
        convert(msgs.as_array().unwrap(), false).map(|c| c.contents[0]["parts"].as_array().unwrap().clone())
    }

    fn err(content: Value) -> (String, String) {
        let e = user(content).unwrap_err();
        (e.code().to_string(), e.message())
    }

    #[test]
    fn image_urls_become_inline_or_file_data() {
        let parts = user(json!([
            {"type": "text", "text": "What is "}, {"type": "text", "text": "this?"},
            {"type": "image_url", "image_url": {"url": "data:image/PNG;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.webp?size=2#x"}},
            {"type": "image_url", "image_url": {"url": "http://example.com/photo"}},
            {"type": "image_url", "image_url": "https://example.com/doc.PDF"},
            {"type": "text", "text": "Compare."},
        ]))
        .unwrap();
        assert_eq!(
            parts,
            vec![
                json!({"text": "What is this?"}),
                json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}),
                json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/cat.webp?size=2#x"}}),
                json!({"fileData": {"mimeType": "image/jpeg", "fileUri": "http://example.com/photo"}}),
                json!({"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/doc.PDF"}}),
                json!({"text": "Compare."}),
            ]
        );
        // A message of media only is content.
        let only = user(json!([{"type": "image_url", "image_url": {"url": "https://x.test/i.png"}}])).unwrap();
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn audio_and_files_become_inline_data() {
        let pdf = base64::encode(b"%PDF-1.4 ...");
        let parts = user(json!([
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "MP3"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
            {"type": "file", "file": {"filename": "notes.txt", "file_data": "aGk="}},
            {"type": "file", "file": {"file_data": pdf}},
        ]))
        .unwrap();
        assert_eq!(parts[0], json!({"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}));
        assert_eq!(parts[1], json!({"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}}));
        assert_eq!(parts[2], json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}));
        assert_eq!(parts[3], json!({"inlineData": {"mimeType": "text/plain", "data": "aGk="}}));
        assert_eq!(parts[4]["inlineData"]["mimeType"], "application/pdf", "sniffed from %PDF");
    }

    #[test]
    fn bad_media_is_a_400_naming_the_part() {
        let cases = [
            (
                json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,not*base64"}}),
                "invalid_base64",
                "messages[0].content[0].image_url.url: not valid base64",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:image/png;base64"}}),
                "invalid_media",
                "messages[0].content[0].image_url.url: not a valid data URL",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:image/png,abcd"}}),
                "invalid_media",
                "must be base64-encoded",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:;base64,AAAA"}}),
                "invalid_media",
                "needs a MIME type",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
                "invalid_media",
                "messages[0].content[0].image_url.url: must be a data: URL",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "max"}}),
                "invalid_field",
                "image_url.detail",
            ),
            (json!({"type": "image_url", "image_url": {}}), "missing_field", "messages[0].content[0].image_url.url"),
            (json!({"type": "image_url"}), "missing_field", "messages[0].content[0].image_url"),
            (
                json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "opus"}}),
                "unsupported_field",
                "input_audio.format 'opus'",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"data": "A", "format": "wav"}}),
                "invalid_base64",
                "messages[0].content[0].input_audio.data: not valid base64 (truncated)",
            ),
            (json!({"type": "input_audio", "input_audio": {"format": "wav"}}), "missing_field", "input_audio.data"),
            (
                json!({"type": "file", "file": {"file_id": "file-abc"}}),
                "unsupported_field",
                "messages[0].content[0].file.file_id",
            ),
            (json!({"type": "file", "file": {"file_data": "AAAA"}}), "invalid_media", "cannot tell the file's type"),
            (
                json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,%%%"}}),
                "invalid_base64",
                "messages[0].content[0].file.file_data: not valid base64",
            ),
            (json!({"type": "video_url", "video_url": {}}), "unsupported_field", "content[0].type 'video_url'"),
            (json!({"image_url": {"url": "https://x/y.png"}}), "invalid_field", "messages[0].content[0]"),
        ];
        for (part, code, needle) in cases {
            let (c, m) = err(json!([part]));
            assert_eq!(c, code, "{part}: {m}");
            assert!(m.contains(needle), "{part}: {m}");
        }
        // Media only in user messages.
        let msgs = json!([{"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]);
        let e = convert(msgs.as_array().unwrap(), false).err().unwrap();
        assert_eq!(e.code(), "unsupported_field");
        assert!(e.message().contains("only supported in user messages"), "{}", e.message());
    }

    #[test]
    fn the_media_estimate_sees_openai_parts() {
        use crate::quota::media::{non_text_tokens, Family};
        let png = base64::encode(&crate::quota::media::tests::png(1000, 500, 64));
        let parts = user(json!([{"type": "text", "text": "Describe this"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]))
        .unwrap();
        let req = json!({"contents": [{"role": "user", "parts": parts}]});
        assert_eq!(non_text_tokens(&req, Family::Tiles), 2 * 258);
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
