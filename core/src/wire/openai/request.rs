//! The top level of a `/v1/chat/completions` body: generation settings, structured output,
//! reasoning and the `google` options (the openai SDK merges `extra_body` into the top-level
//! JSON, so `extra_body={"google": {...}}` arrives as a top-level `google` object).

use super::{bad, messages, tools};
use crate::error::RouterError;
use crate::json::float;
use crate::wire::gemini::GenerateRequest;
use serde_json::{json, Map, Value};

/// A parsed `/v1/chat/completions` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub gen: GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
    /// The caller asked for thought summaries (`google.thinking_config.include_thoughts`): they
    /// come back as `reasoning_content`.
    pub include_thoughts: bool,
}

/// Fields accepted and ignored because they have no Gemini meaning but are harmless.
pub const IGNORED: [&str; 5] = ["user", "store", "metadata", "service_tier", "parallel_tool_calls"];
/// Fields refused with a named 400.
pub const UNSUPPORTED: [&str; 9] = [
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
];
const KNOWN: [&str; 18] = [
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
    "seed",
    "tools",
    "tool_choice",
    "reasoning_effort",
    "google",
];

/// OpenAI `reasoning_effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningEffort {
    None,
    Minimal,
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    pub fn parse(v: &Value) -> Result<ReasoningEffort, RouterError> {
        Ok(match v.as_str() {
            Some("none") => ReasoningEffort::None,
            Some("minimal") => ReasoningEffort::Minimal,
            Some("low") => ReasoningEffort::Low,
            Some("medium") => ReasoningEffort::Medium,
            Some("high") => ReasoningEffort::High,
            _ => return Err(bad("invalid_field", "reasoning_effort: must be none, minimal, low, medium or high")),
        })
    }
}

/// `reasoning_effort` → `generationConfig.thinkingConfig` for `model`'s family (README
/// "Reasoning"):
///
/// | effort  | 2.5 Flash / Flash-Lite | 2.5 Pro | Gemini 3 |
/// |---------|------------------------|---------|----------|
/// | none    | budget 0 (off)         | 128 (cannot be off) | level low |
/// | minimal | 512                    | 512     | low      |
/// | low     | 1024                   | 1024    | low      |
/// | medium  | 8192                   | 8192    | high     |
/// | high    | 24576                  | 32768   | high     |
///
/// Models without thinking control (1.x, 2.0): `none` sends nothing, any other effort is a 400.
pub fn thinking_config(model: &str, effort: ReasoningEffort) -> Result<Option<Value>, RouterError> {
    use ReasoningEffort as E;
    let m = model.strip_prefix("models/").unwrap_or(model);
    if m.starts_with("gemini-3") {
        let level = if matches!(effort, E::Medium | E::High) { "high" } else { "low" };
        return Ok(Some(json!({"thinkingLevel": level})));
    }
    let no_thinking = m.contains("-1.") || m.contains("-2.0") || !(m.contains("flash") || m.contains("pro"));
    if no_thinking {
        return match effort {
            E::None => Ok(None),
            _ => Err(bad("unsupported_field", format!("reasoning_effort: model '{m}' has no thinking control"))),
        };
    }
    let pro = m.contains("pro");
    let budget = match effort {
        E::None if pro => 128,
        E::None => 0,
        E::Minimal => 512,
        E::Low => 1024,
        E::Medium => 8192,
        E::High if pro => 32768,
        E::High => 24576,
    };
    Ok(Some(json!({"thinkingBudget": budget})))
}

fn camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `google.thinking_config` (snake or camel case) → `thinkingConfig` fields.
fn google_thinking(v: &Value) -> Result<Map<String, Value>, RouterError> {
    let o = v.as_object().ok_or_else(|| bad("invalid_field", "google.thinking_config: must be an object"))?;
    let mut out = Map::new();
    for (k, v) in o {
        let ck = camel(k);
        let ok = match ck.as_str() {
            "thinkingBudget" => v.as_i64().is_some_and(|b| (-1..=32768).contains(&b)),
            "includeThoughts" => v.is_boolean(),
            "thinkingLevel" => v.is_string(),
            _ => return Err(bad("unknown_field", format!("unknown field 'google.thinking_config.{k}'"))),
        };
        if !ok {
            return Err(bad("invalid_field", format!("google.thinking_config.{k}: has the wrong type or range")));
        }
        out.insert(ck, v.clone());
    }
    Ok(out)
}

/// The `google` options: `thinking_config` (into `generationConfig.thinkingConfig`),
/// `safety_settings` and `cached_content` (top level), keys camelCased.
fn google_options(
    v: &Value,
    thinking: &mut Map<String, Value>,
    top: &mut Map<String, Value>,
) -> Result<(), RouterError> {
    let o = v.as_object().ok_or_else(|| bad("invalid_field", "google: must be an object"))?;
    for (k, v) in o {
        match camel(k).as_str() {
            "thinkingConfig" => thinking.extend(google_thinking(v)?),
            "safetySettings" => {
                let list =
                    v.as_array().ok_or_else(|| bad("invalid_field", "google.safety_settings: must be an array"))?;
                let mut out = Vec::new();
                for s in list {
                    let s = s
                        .as_object()
                        .ok_or_else(|| bad("invalid_field", "google.safety_settings[]: must be objects"))?;
                    let mut o = serde_json::Map::new();
                    for (k, v) in s {
                        o.insert(camel(k), v.clone());
                    }
                    out.push(Value::Object(o));
                }
                top.insert("safetySettings".into(), Value::Array(out));
            }
            "cachedContent" => {
                let s = v.as_str().ok_or_else(|| bad("invalid_field", "google.cached_content: must be a string"))?;
                top.insert("cachedContent".into(), json!(s));
            }
            _ => return Err(bad("unknown_field", format!("unknown field 'google.{k}'"))),
        }
    }
    Ok(())
}

/// `response_format` → `responseMimeType` (+ `responseJsonSchema`).
fn response_format(v: Option<&Value>, generation: &mut Map<String, Value>) -> Result<(), RouterError> {
    let v = match v {
        None | Some(Value::Null) => return Ok(()),
        Some(v) => v,
    };
    match v.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            generation.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            let schema = match v.get("json_schema").and_then(|j| j.get("schema")) {
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => return Err(bad("invalid_field", "response_format.json_schema.schema: must be an object")),
                None => return Err(bad("missing_field", "response_format.json_schema.schema: is required")),
            };
            // `name` and `strict` have no Gemini meaning: the schema is always enforced.
            generation.insert("responseMimeType".into(), json!("application/json"));
            generation.insert("responseJsonSchema".into(), schema);
        }
        Some(t) => return Err(bad("unsupported_field", format!("response_format.type '{t}' is not supported"))),
        None => return Err(bad("missing_field", "response_format.type: is required")),
    }
    Ok(())
}

impl ChatRequest {
    pub fn parse(body: &Value, conversation_id: Option<String>) -> Result<ChatRequest, RouterError> {
        let obj = body.as_object().ok_or_else(|| bad("invalid_body", "request body must be a JSON object"))?;
        for k in obj.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                return Err(bad("unsupported_field", format!("'{k}' is not supported by this router")));
            }
        }
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str()) && !IGNORED.contains(&k.as_str())) {
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
        let conv = messages::convert(messages, conversation_id.is_some())?;
        let num = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, RouterError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x >= lo && x <= hi => Ok(Some(x)),
                    _ => {
                        Err(bad("invalid_field", format!("{k}: must be a number from {} to {}", float(lo), float(hi))))
                    }
                },
            }
        };
        let temperature = num("temperature", 0.0, 2.0)?;
        let mut generation = Map::new();
        if let Some(p) = num("top_p", 0.0, 1.0)? {
            generation.insert("topP".into(), json!(p));
        }
        if let Some(p) = num("presence_penalty", -2.0, 2.0)? {
            generation.insert("presencePenalty".into(), json!(p));
        }
        if let Some(p) = num("frequency_penalty", -2.0, 2.0)? {
            generation.insert("frequencyPenalty".into(), json!(p));
        }
        match obj.get("seed") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64() {
                Some(s) if i32::try_from(s).is_ok() => {
                    generation.insert("seed".into(), json!(s));
                }
                _ => return Err(bad("invalid_field", "seed: must be a 32-bit integer")),
            },
        }
        let max_tokens = match (obj.get("max_completion_tokens"), obj.get("max_tokens")) {
            (Some(v), _) | (None, Some(v)) if !v.is_null() => match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => Some(n),
                _ => return Err(bad("invalid_field", "max_tokens: must be an integer from 1 to 1000000")),
            },
            _ => None,
        };
        match obj.get("stop") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                generation.insert("stopSequences".into(), json!([s]));
            }
            Some(Value::Array(a)) if a.len() <= 5 && a.iter().all(Value::is_string) => {
                generation.insert("stopSequences".into(), Value::Array(a.clone()));
            }
            Some(_) => return Err(bad("invalid_field", "stop: must be a string or an array of up to 5 strings")),
        }
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("invalid_field", "stream: must be a boolean")),
        };
        let include_usage =
            obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
        response_format(obj.get("response_format"), &mut generation)?;
        let mut passthrough = Map::new();
        let mut thinking = Map::new();
        match obj.get("reasoning_effort") {
            None | Some(Value::Null) => {}
            Some(v) => {
                if let Some(Value::Object(t)) = thinking_config(&model, ReasoningEffort::parse(v)?)? {
                    thinking.extend(t);
                }
            }
        }
        match obj.get("google") {
            None | Some(Value::Null) => {}
            Some(g) => google_options(g, &mut thinking, &mut passthrough)?,
        }
        let include_thoughts = thinking.get("includeThoughts") == Some(&Value::Bool(true));
        if !thinking.is_empty() {
            generation.insert("thinkingConfig".into(), Value::Object(thinking));
        }
        let declared = match tools::declarations(obj.get("tools"))? {
            Some((t, names)) => {
                passthrough.insert("tools".into(), t);
                names
            }
            None => Vec::new(),
        };
        if let Some(tc) = tools::tool_config(obj.get("tool_choice"), &declared)? {
            passthrough.insert("toolConfig".into(), tc);
        }
        let gen = GenerateRequest {
            model,
            contents: conv.contents,
            system: if conv.system.is_empty() { None } else { Some(conv.system.join("\n\n")) },
            temperature,
            max_output_tokens: max_tokens,
            conversation_id,
            allow_fallback: false,
            generation,
            passthrough,
            model_from_conversation: false,
        };
        Ok(ChatRequest { gen, stream, include_usage, include_thoughts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]})
    }

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
            "response_format": {"type": "json_object"}, "stream": true, "stream_options": {"include_usage": true},
            "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5
        });
        let r = ChatRequest::parse(&body, None).unwrap();
        assert!(r.stream && r.include_usage && !r.include_thoughts);
        let g = r.gen.to_gemini(&[]);
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(g["contents"].as_array().unwrap().len(), 3);
        assert_eq!(g["contents"][1]["role"], "model");
        assert_eq!(g["contents"][2]["parts"][0]["text"], "What is 2+2?");
        let gc = &g["generationConfig"];
        assert_eq!(gc["maxOutputTokens"], 50);
        assert_eq!(gc["topP"], 0.9);
        assert_eq!(gc["stopSequences"], json!(["END"]));
        assert_eq!(gc["responseMimeType"], "application/json");
        assert_eq!(
            (gc["seed"].clone(), gc["presencePenalty"].clone(), gc["frequencyPenalty"].clone()),
            (json!(7), json!(0.5), json!(-0.5))
        );
    }

    #[test]
    fn tools_and_tool_choice_reach_the_gemini_body() {
        let mut b = base();
        b["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        b["tool_choice"] = json!({"type": "function", "function": {"name": "f"}});
        b["parallel_tool_calls"] = json!(true);
        let g = ChatRequest::parse(&b, None).unwrap().gen.to_gemini(&[]);
        assert_eq!(g["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"], json!({"type": "object"}));
        assert_eq!(g["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"], json!(["f"]));
    }

    #[test]
    fn json_schema_becomes_response_json_schema() {
        let mut b = base();
        let schema = json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}});
        b["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}});
        let g = ChatRequest::parse(&b, None).unwrap().gen.to_gemini(&[]);
        assert_eq!(g["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(g["generationConfig"]["responseJsonSchema"], schema);
        b["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x"}});
        assert_eq!(ChatRequest::parse(&b, None).unwrap_err().code(), "missing_field");
    }

    #[test]
    fn reasoning_effort_follows_the_table() {
        use ReasoningEffort as E;
        let budget = |m: &str, e| thinking_config(m, e).unwrap().unwrap()["thinkingBudget"].as_i64().unwrap();
        assert_eq!(budget("gemini-2.5-flash", E::None), 0);
        assert_eq!(budget("gemini-2.5-pro", E::None), 128);
        assert_eq!(budget("gemini-2.5-flash-lite", E::Minimal), 512);
        assert_eq!(budget("gemini-2.5-flash", E::Low), 1024);
        assert_eq!(budget("gemini-2.5-pro", E::Medium), 8192);
        assert_eq!(budget("gemini-2.5-flash", E::High), 24576);
        assert_eq!(budget("gemini-2.5-pro", E::High), 32768);
        let level = |e| thinking_config("gemini-3-pro-preview", e).unwrap().unwrap()["thinkingLevel"].clone();
        assert_eq!(
            (level(E::None), level(E::Low), level(E::Medium), level(E::High)),
            (json!("low"), json!("low"), json!("high"), json!("high"))
        );
        assert_eq!(thinking_config("gemini-2.0-flash", E::None).unwrap(), None);
        assert_eq!(thinking_config("gemini-2.0-flash", E::Low).unwrap_err().code(), "unsupported_field");
        let mut b = base();
        b["reasoning_effort"] = json!("none");
        let g = ChatRequest::parse(&b, None).unwrap().gen.to_gemini(&[]);
        assert_eq!(g["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 0}));
        b["reasoning_effort"] = json!("extreme");
        assert_eq!(ChatRequest::parse(&b, None).unwrap_err().code(), "invalid_field");
    }

    #[test]
    fn google_options_are_camel_cased_and_checked() {
        let mut b = base();
        b["reasoning_effort"] = json!("low");
        b["google"] = json!({"thinking_config": {"include_thoughts": true, "thinking_budget": 2048},
            "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "cached_content": "cachedContents/abc"});
        let r = ChatRequest::parse(&b, None).unwrap();
        assert!(r.include_thoughts);
        let g = r.gen.to_gemini(&[]);
        assert_eq!(g["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 2048, "includeThoughts": true}));
        assert_eq!(g["safetySettings"][0]["threshold"], "BLOCK_NONE");
        assert_eq!(g["cachedContent"], "cachedContents/abc");
        for (google, code, needle) in [
            (json!({"bogus": 1}), "unknown_field", "google.bogus"),
            (json!({"thinking_config": {"thinking_budget": "lots"}}), "invalid_field", "thinking_budget"),
            (json!({"thinking_config": {"x": 1}}), "unknown_field", "google.thinking_config.x"),
        ] {
            b["google"] = google;
            let e = ChatRequest::parse(&b, None).unwrap_err();
            assert_eq!(e.code(), code);
            assert!(e.message().contains(needle), "{}", e.message());
        }
    }

    #[test]
    fn unsupported_fields_are_named_and_ignored_ones_accepted() {
        for (k, v) in [("n", json!(2)), ("functions", json!([])), ("logprobs", json!(true)), ("audio", json!({}))] {
            let mut b = base();
            b[k] = v;
            let e = ChatRequest::parse(&b, None).unwrap_err();
            assert_eq!(e.code(), "unsupported_field");
            assert!(e.message().contains(k), "{}", e.message());
        }
        let mut b = base();
        b["n"] = json!(1);
        for k in IGNORED {
            b[k] = json!("x");
        }
        assert!(ChatRequest::parse(&b, None).is_ok());
        b["bogus"] = json!(1);
        assert_eq!(ChatRequest::parse(&b, None).unwrap_err().code(), "unknown_field");
        let e = ChatRequest::parse(&json!({"model": "m", "messages": []}), None).unwrap_err();
        assert_eq!(e.code(), "empty_message");
    }
}
