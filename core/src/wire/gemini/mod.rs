//! Gemini wire formats: building `generateContent` bodies and reading replies and usage. What an
//! upstream error means is decided in `classify`.

mod reply;
mod validate;

pub use reply::{parse_reply, FunctionCall, ModelOutput, Reply, Usage};
pub use validate::{validate_content, validate_media};

use crate::error::RouterError;
use serde_json::{json, Map, Value};

/// The router's own `/v1/generate` request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    /// New user turn(s) in Gemini `contents` form.
    pub contents: Vec<Value>,
    pub system: Option<String>,
    pub temperature: Option<f64>,
    pub max_output_tokens: Option<u64>,
    pub conversation_id: Option<String>,
    pub allow_fallback: bool,
    /// Extra `generationConfig` fields (topP, stopSequences, responseMimeType, ...).
    pub generation: Map<String, Value>,
    /// Top-level Gemini fields passed through as given on the Gemini-native surface
    /// (generationConfig, safetySettings, systemInstruction, tools, ...).
    pub passthrough: Map<String, Value>,
    /// The caller named no model on a conversation send: use the conversation's stored model
    /// (read inside the reservation); `model` is then only the fallback.
    pub model_from_conversation: bool,
}

/// Top-level fields of a Gemini `generateContent` body that the native surface passes through.
pub const PASSTHROUGH: [&str; 7] =
    ["generationConfig", "safetySettings", "systemInstruction", "tools", "toolConfig", "cachedContent", "labels"];

fn field_err(code: &'static str, msg: impl Into<String>) -> RouterError {
    RouterError::bad_request(code, msg)
}

impl GenerateRequest {
    /// Parses and validates a `/v1/generate` body. `default_model` applies when `model` is absent.
    pub fn parse(body: &Value, default_model: Option<&str>) -> Result<GenerateRequest, RouterError> {
        let obj = body.as_object().ok_or_else(|| field_err("invalid_body", "request body must be a JSON object"))?;
        const KNOWN: [&str; 9] = [
            "prompt",
            "contents",
            "model",
            "temperature",
            "max_output_tokens",
            "system",
            "conversation_id",
            "allow_fallback",
            "stream",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(field_err("unknown_field", format!("unknown field '{k}'")));
        }
        let contents = match (obj.get("prompt"), obj.get("contents")) {
            (Some(_), Some(_)) => {
                return Err(field_err("invalid_body", "give either 'prompt' or 'contents', not both"))
            }
            (Some(Value::String(p)), None) => {
                if p.trim().is_empty() {
                    return Err(field_err("empty_message", "prompt: must not be empty"));
                }
                vec![json!({"role": "user", "parts": [{"text": p}]})]
            }
            (Some(_), None) => return Err(field_err("invalid_field", "prompt: must be a string")),
            (None, Some(Value::Array(cs))) => {
                if cs.is_empty() {
                    return Err(field_err("empty_message", "contents: must not be empty"));
                }
                for (i, c) in cs.iter().enumerate() {
                    validate_content(c, &format!("contents[{i}]"))?;
                }
                cs.iter()
                    .map(|c| {
                        let mut c = c.clone();
                        if c.get("role").is_none_or(Value::is_null) {
                            c["role"] = json!("user");
                        }
                        c
                    })
                    .collect()
            }
            (None, Some(_)) => return Err(field_err("invalid_field", "contents: must be an array")),
            (None, None) => return Err(field_err("missing_field", "one of 'prompt' or 'contents' is required")),
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::Null) | None => {
                // An empty default (found by fuzzing) is no default.
                default_model
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| field_err("missing_field", "model: is required"))?
            }
            Some(_) => return Err(field_err("invalid_field", "model: must be a non-empty string")),
        };
        let temperature = match obj.get("temperature") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(t) if (0.0..=2.0).contains(&t) => Some(t),
                _ => return Err(field_err("invalid_field", "temperature: must be a number from 0 to 2")),
            },
        };
        let max_output_tokens = match obj.get("max_output_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => Some(n),
                _ => return Err(field_err("invalid_field", "max_output_tokens: must be an integer from 1 to 1000000")),
            },
        };
        let system = match obj.get("system") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(field_err("invalid_field", "system: must be a string")),
        };
        let conversation_id = match obj.get("conversation_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(field_err("invalid_field", "conversation_id: must be a string")),
        };
        let allow_fallback = match obj.get("allow_fallback") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(field_err("invalid_field", "allow_fallback: must be a boolean")),
        };
        if let Some(s) = obj.get("stream") {
            if s != &Value::Bool(false) && s != &Value::Null {
                return Err(field_err(
                    "unsupported_field",
                    "stream: not supported on /v1/generate; use the streaming endpoints",
                ));
            }
        }
        Ok(GenerateRequest {
            model,
            contents,
            system,
            temperature,
            max_output_tokens,
            conversation_id,
            allow_fallback,
            generation: Map::new(),
            passthrough: Map::new(),
            model_from_conversation: false,
        })
    }

    /// A Gemini-native `generateContent` body for `model` (from the URL path).
    pub fn from_gemini(
        body: &Value,
        model: &str,
        conversation_id: Option<String>,
    ) -> Result<GenerateRequest, RouterError> {
        Self::from_gemini_owned(body.clone(), model, conversation_id)
    }

    /// [`GenerateRequest::from_gemini`] taking the parsed body by value: `contents` and the
    /// passthrough fields are moved, not copied (a 20 MB image stays one allocation).
    pub fn from_gemini_owned(
        body: Value,
        model: &str,
        conversation_id: Option<String>,
    ) -> Result<GenerateRequest, RouterError> {
        let Value::Object(mut obj) = body else {
            return Err(field_err("invalid_body", "request body must be a JSON object"));
        };
        if let Some(k) =
            obj.keys().find(|k| k.as_str() != "contents" && k.as_str() != "model" && !PASSTHROUGH.contains(&k.as_str()))
        {
            return Err(field_err("unknown_field", format!("unknown field '{k}'")));
        }
        let mut contents = match obj.remove("contents") {
            Some(Value::Array(cs)) if !cs.is_empty() => cs,
            Some(Value::Array(_)) => return Err(field_err("empty_message", "contents: must not be empty")),
            Some(_) => return Err(field_err("invalid_field", "contents: must be an array")),
            None => return Err(field_err("missing_field", "contents: is required")),
        };
        for (i, c) in contents.iter().enumerate() {
            validate_content(c, &format!("contents[{i}]"))?;
        }
        let mut passthrough = Map::new();
        for k in PASSTHROUGH {
            if let Some(v) = obj.remove(k) {
                if !v.is_null() {
                    if (k == "generationConfig" || k == "systemInstruction") && !v.is_object() {
                        return Err(field_err("invalid_field", format!("{k}: must be an object")));
                    }
                    passthrough.insert(k.to_string(), v);
                }
            }
        }
        for c in &mut contents {
            if c.get("role").is_none() {
                c["role"] = json!("user");
            }
        }
        Ok(GenerateRequest {
            model: model.to_string(),
            contents,
            system: None,
            temperature: None,
            max_output_tokens: None,
            conversation_id,
            allow_fallback: false,
            generation: Map::new(),
            passthrough,
            model_from_conversation: false,
        })
    }

    /// The upstream `generateContent` body: history (already trimmed) followed by the new turns.
    pub fn to_gemini(&self, history: &[Value]) -> Value {
        let mut body = self.head(None);
        let mut contents: Vec<Value> = history.to_vec();
        contents.extend(self.contents.iter().cloned());
        body.insert("contents".into(), Value::Array(contents));
        Value::Object(body)
    }

    /// [`GenerateRequest::to_gemini`] with every `inlineData.data` left empty: what the
    /// estimate's text scan needs, without a second copy of the media.
    pub fn to_gemini_without_media_data(&self) -> Value {
        fn part(p: &Value) -> Value {
            let Some(obj) = p.as_object() else { return p.clone() };
            let light = obj.iter().map(|(k, v)| {
                let v = match (k.as_str(), v.as_object()) {
                    ("inlineData" | "inline_data", Some(d)) => Value::Object(
                        d.iter()
                            .map(|(dk, dv)| (dk.clone(), if dk == "data" { json!("") } else { dv.clone() }))
                            .collect(),
                    ),
                    _ => v.clone(),
                };
                (k.clone(), v)
            });
            Value::Object(light.collect())
        }
        let contents: Vec<Value> = self
            .contents
            .iter()
            .map(|c| match (c.as_object(), c.get("parts").and_then(Value::as_array)) {
                (Some(obj), Some(parts)) => {
                    let mut light: Map<String, Value> = obj
                        .iter()
                        .filter(|(k, _)| k.as_str() != "parts")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    light.insert("parts".into(), Value::Array(parts.iter().map(part).collect()));
                    Value::Object(light)
                }
                _ => c.clone(),
            })
            .collect();
        let mut body = self.head(None);
        body.insert("contents".into(), Value::Array(contents));
        Value::Object(body)
    }

    /// [`GenerateRequest::to_gemini`] serialized straight from the borrowed history and turns,
    /// without copying `contents` (media included) into an intermediate value first.
    /// `default_system` (a conversation's stored instruction) applies when the request has none.
    pub fn to_gemini_string(&self, history: &[Value], default_system: Option<&str>) -> String {
        struct Chain<'a>(&'a [Value], &'a [Value]);
        impl serde::Serialize for Chain<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().chain(self.1))
            }
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            contents: Chain<'a>,
            #[serde(flatten)]
            head: Map<String, Value>,
        }
        let body = Body { contents: Chain(history, &self.contents), head: self.head(default_system) };
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// Every top-level field but `contents`.
    fn head(&self, default_system: Option<&str>) -> Map<String, Value> {
        let mut body = self.passthrough.clone();
        match (&self.system, default_system) {
            (Some(s), _) => {
                body.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
            }
            (None, Some(s)) if !body.contains_key("systemInstruction") => {
                body.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
            }
            _ => {}
        }
        let mut gen = match body.remove("generationConfig") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        gen.extend(self.generation.clone());
        if let Some(t) = self.temperature {
            gen.insert("temperature".into(), json!(t));
        }
        if let Some(m) = self.max_output_tokens {
            gen.insert("maxOutputTokens".into(), json!(m));
        }
        if !gen.is_empty() {
            body.insert("generationConfig".into(), Value::Object(gen));
        }
        body
    }
}

/// A router error in Gemini's own error shape, for the Gemini-native surface.
pub fn error_body(e: &RouterError) -> Value {
    let status = match e {
        // Gemini's own verdict on the request, exactly as Google said it.
        RouterError::UpstreamRejected { grpc_status, .. } => grpc_status.as_str(),
        _ => crate::engine::classify::default_grpc(e.status()),
    };
    json!({"error": {"code": e.status(), "message": e.message(), "status": status,
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": e.code(), "domain": "llm-key-router"}]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prompt_form_and_builds_gemini_body() {
        let r = GenerateRequest::parse(
            &json!({"prompt": "Say 'X' and nothing else.", "model": "gemini-2.5-flash", "temperature": 0.1, "system": "s"}),
            None,
        )
        .unwrap();
        let g = r.to_gemini(&[]);
        assert_eq!(g["contents"][0]["parts"][0]["text"], "Say 'X' and nothing else.");
        assert_eq!(g["contents"][0]["role"], "user");
        assert_eq!(g["generationConfig"]["temperature"], 0.1);
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "s");
    }

    #[test]
    fn rejects_bad_fields_with_named_errors() {
        let cases = [
            (json!([]), "invalid_body"),
            (json!({"model": "m"}), "missing_field"),
            (json!({"prompt": "", "model": "m"}), "empty_message"),
            (json!({"prompt": 5, "model": "m"}), "invalid_field"),
            (json!({"prompt": "x", "model": "m", "temperature": -1}), "invalid_field"),
            (json!({"prompt": "x", "model": "m", "temperature": 1e308}), "invalid_field"),
            (json!({"prompt": "x", "model": "m", "max_output_tokens": -3}), "invalid_field"),
            (json!({"prompt": "x", "model": "m", "bogus": 1}), "unknown_field"),
            (json!({"contents": [], "model": "m"}), "empty_message"),
            (json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}], "model": "m"}), "invalid_field"),
            (json!({"prompt": "x"}), "missing_field"),
            // Found by fuzzing: a non-string role used to pass through to Gemini.
            (json!({"contents": [{"role": false, "parts": [{"text": "x"}]}], "model": "m"}), "invalid_field"),
        ];
        // Found by fuzzing: an empty default model was accepted as the model.
        assert_eq!(GenerateRequest::parse(&json!({"prompt": "x"}), Some("")).unwrap_err().code(), "missing_field");
        for (body, code) in cases {
            let e = GenerateRequest::parse(&body, None).unwrap_err();
            assert_eq!(e.code(), code, "{body}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn reads_reply_and_usage_including_thoughts() {
        let body = json!({"candidates": [{"content": {"parts": [{"text": "4"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 39, "thoughtsTokenCount": 186, "totalTokenCount": 230}});
        let r = parse_reply(&body, "s");
        assert_eq!(r.out.text, "4");
        assert_eq!(r.usage, Some(Usage { input: 5, output: 39, thoughts: 186, total: 230 }));
    }

    #[test]
    fn media_parts_pass_through_in_either_spelling() {
        let body = json!({"contents": [{"parts": [
            {"text": "Describe this"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"inline_data": {"mime_type": "audio/wav", "data": "UklGRg"}},
            {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/a.pdf"}},
            {"file_data": {"file_uri": "files/abc"}}
        ]}]});
        let g = GenerateRequest::from_gemini_owned(body.clone(), "m", None).unwrap();
        assert_eq!(g.contents[0]["parts"], body["contents"][0]["parts"]);
        let up: Value = serde_json::from_str(&g.to_gemini_string(&[], None)).unwrap();
        assert_eq!(up["contents"][0]["parts"], body["contents"][0]["parts"]);
    }

    #[test]
    fn bad_media_is_a_400_naming_the_part() {
        let with = |part: Value| {
            GenerateRequest::from_gemini(&json!({"contents": [{"parts": [{"text": "x"}, part]}]}), "m", None)
                .unwrap_err()
        };
        let e = with(json!({"inlineData": {"mimeType": "image/png", "data": "not*base64"}}));
        assert_eq!((e.status(), e.code()), (400, "invalid_base64"));
        assert!(e.message().starts_with("contents[0].parts[1].inlineData.data: not valid base64"), "{}", e.message());
        let e = with(json!({"inline_data": {"mime_type": "image/png", "data": 5}}));
        assert!(e.message().starts_with("contents[0].parts[1].inline_data.data:"));
        assert_eq!(with(json!({"inlineData": {"data": "AAAA"}})).code(), "invalid_media");
        assert_eq!(with(json!({"inlineData": "AAAA"})).code(), "invalid_media");
        assert_eq!(with(json!({"fileData": {"mimeType": "image/png"}})).code(), "invalid_media");
    }

    #[test]
    fn the_upstream_string_equals_the_upstream_value() {
        let mut g = GenerateRequest::parse(&json!({"prompt": "hi", "model": "m", "temperature": 0.5}), None).unwrap();
        let history =
            vec![json!({"role": "user", "parts": [{"text": "a"}]}), json!({"role": "model", "parts": [{"text": "b"}]})];
        let s: Value = serde_json::from_str(&g.to_gemini_string(&history, None)).unwrap();
        assert_eq!(s, g.to_gemini(&history));
        // A stored system instruction applies only when the request carries none.
        let s: Value = serde_json::from_str(&g.to_gemini_string(&[], Some("stored"))).unwrap();
        assert_eq!(s["systemInstruction"]["parts"][0]["text"], "stored");
        g.system = Some("mine".into());
        let s: Value = serde_json::from_str(&g.to_gemini_string(&[], Some("stored"))).unwrap();
        assert_eq!(s["systemInstruction"]["parts"][0]["text"], "mine");
    }

    #[test]
    fn the_estimate_view_leaves_out_only_media_data() {
        let body = json!({"contents": [{"parts": [{"text": "look"}, {"inline_data": {"mime_type": "image/png", "data": "AAAA"}}]}],
            "generationConfig": {"temperature": 0.2}});
        let g = GenerateRequest::from_gemini(&body, "m", None).unwrap();
        let light = g.to_gemini_without_media_data();
        let mut want = g.to_gemini(&[]);
        want["contents"][0]["parts"][1]["inline_data"]["data"] = json!("");
        assert_eq!(light, want);
    }

    #[test]
    fn the_native_surface_passes_tools_signatures_and_results_through_unchanged() {
        let body = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "weather in Paris?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                             "thoughtSignature": "U0lH"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"$ref": "#/$defs/c"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"},
                                 "thinkingConfig": {"includeThoughts": true}}
        });
        let g = GenerateRequest::from_gemini(&body, "gemini-3-pro-preview", None).unwrap().to_gemini(&[]);
        assert_eq!(g, body, "nothing added, dropped or reshaped");
    }

    #[test]
    fn a_reply_keeps_calls_signatures_and_thoughts_apart_from_the_text() {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "hmm", "thought": true}, {"text": "Sure.", "thoughtSignature": "VFM="},
            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "RkM="}]}, "finishReason": "STOP"}]});
        let r = parse_reply(&body, "rid");
        assert_eq!((r.out.text.as_str(), r.out.thoughts.as_str()), ("Sure.", "hmm"));
        assert_eq!(
            r.out.model_parts(),
            vec![
                json!({"text": "Sure.", "thoughtSignature": "VFM="}),
                json!({"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "RkM="})
            ]
        );
        let empty = parse_reply(&json!({"candidates": [{"content": {"parts": []}}]}), "rid");
        assert_eq!(empty.out.model_parts(), vec![json!({"text": ""})], "a stored turn is never empty");
    }
}
