//! Function calling: declarations, `toolConfig`, the calls the mock answers with, the text
//! it answers to `functionResponse` turns, the tool-related 400s and the tool tokens.

use serde_json::{json, Value};

use crate::schema;
use crate::tokens::text_tokens;

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|x| !x.is_null())
}

/// One function call of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub args: Value,
    /// Set for signature-requiring models (see `signatures.rs`) once the call is answered.
    pub signature: Option<String>,
}

impl Call {
    /// The answer part: `{"functionCall": {name, args}}`, plus `thoughtSignature` when set.
    pub fn part(&self) -> Value {
        let mut p = json!({"functionCall": {"name": self.name, "args": self.args}});
        if let Some(s) = &self.signature {
            p["thoughtSignature"] = json!(s);
        }
        p
    }

    /// candidatesTokenCount of the call: ceil(len of `{"name":…,"args":…}` / 4).
    pub fn tokens(&self) -> u64 {
        text_tokens(&json!({"name": self.name, "args": self.args}).to_string())
    }
}

/// A declared function: its name and its parameter schema (`parameters` or
/// `parametersJsonSchema`, either spelling).
#[derive(Debug, Clone, Copy)]
pub struct Decl<'a> {
    pub name: &'a str,
    pub schema: Option<&'a Value>,
}

fn tools(req: &Value) -> impl Iterator<Item = &Value> {
    req.get("tools").and_then(Value::as_array).into_iter().flatten()
}

fn decl_list(tool: &Value) -> impl Iterator<Item = &Value> {
    field(tool, "functionDeclarations", "function_declarations").and_then(Value::as_array).into_iter().flatten()
}

fn params(d: &Value) -> Option<&Value> {
    field(d, "parameters", "parameters")
}

fn params_json(d: &Value) -> Option<&Value> {
    field(d, "parametersJsonSchema", "parameters_json_schema")
}

/// Every declared function, in declaration order (tools, then declarations).
pub fn declarations(req: &Value) -> Vec<Decl<'_>> {
    tools(req)
        .flat_map(decl_list)
        .filter_map(|d| {
            let name = d.get("name").and_then(Value::as_str)?;
            Some(Decl { name, schema: params_json(d).or_else(|| params(d)) })
        })
        .collect()
}

/// Gemini's function-name rule: starts with a letter or `_`; then letters, digits, `_`,
/// `.`, `:` or `-`; at most 64 characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn parts(c: &Value) -> impl Iterator<Item = &Value> {
    c.get("parts").and_then(Value::as_array).into_iter().flatten()
}

pub fn function_call(part: &Value) -> Option<&Value> {
    field(part, "functionCall", "function_call")
}

pub fn function_response(part: &Value) -> Option<&Value> {
    field(part, "functionResponse", "function_response")
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The tool-related INVALID_ARGUMENT messages, in Gemini's field-path style:
/// - a declaration with a missing or invalid name;
/// - a declaration with both `parameters` and `parametersJsonSchema`;
/// - a `functionResponse` (or `functionCall`) part without a name.
pub fn validate(req: &Value) -> Result<(), String> {
    for (t, tool) in tools(req).enumerate() {
        for (i, d) in decl_list(tool).enumerate() {
            let at = format!("* GenerateContentRequest.tools[{t}].function_declarations[{i}]");
            if !d.get("name").and_then(Value::as_str).is_some_and(valid_name) {
                return Err(format!(
                    "{at}.name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n"
                ));
            }
            if params(d).is_some() && params_json(d).is_some() {
                return Err(format!(
                    "{at}: parameters and parameters_json_schema cannot both be set. Use only one of them.\n"
                ));
            }
        }
    }
    let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten();
    for (c, content) in contents.enumerate() {
        for (p, part) in parts(content).enumerate() {
            let checks = [(function_response(part), "function_response"), (function_call(part), "function_call")];
            for (v, what) in checks {
                if v.is_some_and(|v| name_of(v).is_empty()) {
                    return Err(format!(
                        "* GenerateContentRequest.contents[{c}].parts[{p}].{what}.name: Name cannot be empty.\n"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `toolConfig.functionCallingConfig.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Any,
    None,
}

/// The mode (AUTO when absent or unknown, e.g. VALIDATED) and `allowedFunctionNames`.
pub fn calling_config(req: &Value) -> (Mode, Vec<&str>) {
    let fcc = field(req, "toolConfig", "tool_config")
        .and_then(|t| field(t, "functionCallingConfig", "function_calling_config"));
    let mode = match fcc.and_then(|f| f.get("mode")).and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
        Some("ANY") => Mode::Any,
        Some("NONE") => Mode::None,
        _ => Mode::Auto,
    };
    let allowed = fcc
        .and_then(|f| field(f, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    (mode, allowed)
}

fn is_user(c: &Value) -> bool {
    c.get("role").and_then(Value::as_str).is_none_or(|r| r == "user")
}

/// The prompt a call may answer: the last content, when it is a user turn with text and
/// no `functionResponse` part (trimmed).
fn call_prompt(req: &Value) -> Option<String> {
    let last = req.get("contents").and_then(Value::as_array)?.last()?;
    if !is_user(last) || parts(last).any(|p| function_response(p).is_some()) {
        return None;
    }
    let text: Vec<&str> = parts(last).filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
    let text = text.join("\n").trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the (lower-cased) prompt names `name` as a whole word: not inside a longer
/// identifier (`get` is not named by `get_weather`).
fn mentions(lower: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(p) = lower[from..].find(&name) {
        let at = from + p;
        let end = at + name.len();
        let before = lower[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let after = lower[end..].chars().next().is_none_or(|c| !is_ident(c));
        if before && after {
            return true;
        }
        from = at + 1;
    }
    false
}

fn wants_parallel(lower: &str) -> bool {
    lower.contains("in parallel") || lower.split(|c: char| !c.is_alphanumeric()).any(|w| w == "both")
}

/// The calls to answer with (empty: answer text). Rules:
/// - mode NONE, no declarations, or a last turn that is not a user text turn: none;
/// - the functions that fit: those the prompt names (whole word, ASCII case-insensitive);
///   with mode ANY the pool is `allowedFunctionNames` (when given), and when the prompt names
///   none of them, the first of the pool fits;
/// - "in parallel" or the word "both" with only one fitting function adds the next
///   function of the pool (declaration order), for two parallel calls;
/// - calls come in declaration order, `args` from [`schema::args`].
pub fn calls(req: &Value) -> Vec<Call> {
    let decls = declarations(req);
    let (mode, allowed) = calling_config(req);
    if decls.is_empty() || mode == Mode::None {
        return Vec::new();
    }
    let Some(prompt) = call_prompt(req) else {
        return Vec::new();
    };
    let pool: Vec<&Decl> =
        decls.iter().filter(|d| mode != Mode::Any || allowed.is_empty() || allowed.contains(&d.name)).collect();
    let lower = prompt.to_ascii_lowercase();
    let mut chosen: Vec<usize> = (0..pool.len()).filter(|&i| mentions(&lower, pool[i].name)).collect();
    if chosen.is_empty() && mode == Mode::Any && !pool.is_empty() {
        chosen.push(0);
    }
    if chosen.len() == 1 && wants_parallel(&lower) {
        if let Some(i) = (0..pool.len()).find(|i| !chosen.contains(i)) {
            chosen.push(i);
            chosen.sort_unstable();
        }
    }
    chosen
        .into_iter()
        .map(|i| Call { name: pool[i].name.to_string(), args: schema::args(pool[i].schema, &prompt), signature: None })
        .collect()
}

/// The text answer to a last content carrying `functionResponse` parts: one line per
/// response, in order: `Result of <name>: <compact JSON of response>` (`{}` when absent).
pub fn responses_summary(req: &Value) -> Option<String> {
    let last = req.get("contents").and_then(Value::as_array)?.last()?;
    let lines: Vec<String> = parts(last)
        .filter_map(function_response)
        .map(|r| {
            let resp = r.get("response").cloned().unwrap_or_else(|| json!({}));
            format!("Result of {}: {}", name_of(r), resp)
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Prompt tokens of the tool material: each function declaration's JSON, each
/// `functionCall.args` and each `functionResponse.response`, ceil(utf8_len/4) apiece.
pub fn prompt_tokens(req: &Value) -> u64 {
    let decls: u64 = tools(req).flat_map(decl_list).map(|d| text_tokens(&d.to_string())).sum();
    let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten();
    let parts_tokens: u64 = contents
        .flat_map(parts)
        .map(|p| {
            let args = function_call(p).and_then(|c| c.get("args"));
            let resp = function_response(p).and_then(|r| r.get("response"));
            [args, resp].into_iter().flatten().map(|v| text_tokens(&v.to_string())).sum::<u64>()
        })
        .sum();
    decls + parts_tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather_tools() -> Value {
        json!([{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather for a city",
             "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}, "unit": {"type": "STRING"}},
                            "required": ["city"]}},
            {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
        ]}])
    }

    fn req(text: &str, tool_config: Value) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}], "tools": weather_tools(),
               "toolConfig": tool_config})
    }

    fn names(calls: &[Call]) -> Vec<&str> {
        calls.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn auto_mode_calls_named_functions() {
        let c = calls(&req("Use get_weather for the weather in Paris", json!(null)));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "get_weather");
        assert_eq!(c[0].args, json!({"city": "Paris"}));
        assert_eq!(c[0].part(), json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}));
        assert!(calls(&req("What is the weather in Paris?", json!({}))).is_empty());
        // Whole words only, case-insensitive.
        assert!(calls(&req("call get_weathers", json!(null))).is_empty());
        assert_eq!(names(&calls(&req("call GET_TIME.", json!(null)))), ["get_time"]);
        assert_eq!(calls(&req("get_time tz=UTC", json!(null)))[0].args, json!({"tz": "UTC"}));
    }

    #[test]
    fn parallel_calls_in_declaration_order() {
        let c = calls(&req("get_time and get_weather in Rome", json!(null)));
        assert_eq!(names(&c), ["get_weather", "get_time"]);
        let c = calls(&req("get_weather in Oslo, run both", json!(null)));
        assert_eq!(names(&c), ["get_weather", "get_time"]);
        let c = calls(&req("get_time in parallel", json!(null)));
        assert_eq!(names(&c), ["get_weather", "get_time"]);
        assert_eq!(c[0].args, json!({"city": "example"}));
    }

    #[test]
    fn any_and_none_modes() {
        let any = json!({"functionCallingConfig": {"mode": "ANY"}});
        assert_eq!(names(&calls(&req("Hello", any))), ["get_weather"]);
        let only_time = json!({"function_calling_config": {"mode": "any", "allowed_function_names": ["get_time"]}});
        assert_eq!(names(&calls(&req("Hello get_weather", only_time))), ["get_time"]);
        let none = json!({"functionCallingConfig": {"mode": "NONE"}});
        assert!(calls(&req("get_weather", none)).is_empty());
        // The last turn is not a user text turn: no call.
        let r = json!({"contents": [{"role": "user", "parts": [{"text": "get_weather"}]},
                                    {"role": "model", "parts": [{"text": "ok"}]}], "tools": weather_tools()});
        assert!(calls(&r).is_empty());
        let r = json!({"contents": [{"role": "user", "parts": [{"text": "get_weather"},
            {"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]}], "tools": weather_tools(),
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}});
        assert!(calls(&r).is_empty());
    }

    #[test]
    fn summarises_function_responses() {
        let r = json!({"contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"function_response": {"name": "get_time"}}]}]});
        assert_eq!(responses_summary(&r).unwrap(), "Result of get_weather: {\"temp\":21}\nResult of get_time: {}");
        assert_eq!(responses_summary(&req("hi", json!(null))), None);
    }

    #[test]
    fn validation_messages() {
        assert!(validate(&req("hi", json!(null))).is_ok());
        let bad = json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [
            {"name": "ok"}, {"description": "no name"}]}]});
        assert_eq!(
            validate(&bad).unwrap_err(),
            "* GenerateContentRequest.tools[0].function_declarations[1].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n"
        );
        let both = json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"function_declarations": [
            {"name": "f", "parameters": {"type": "OBJECT"}, "parameters_json_schema": {"type": "object"}}]}]});
        assert!(validate(&both)
            .unwrap_err()
            .starts_with("* GenerateContentRequest.tools[0].function_declarations[0]: "));
        let resp =
            json!({"contents": [{"parts": [{"text": "x"}]}, {"parts": [{"functionResponse": {"response": {}}}]}]});
        assert_eq!(
            validate(&resp).unwrap_err(),
            "* GenerateContentRequest.contents[1].parts[0].function_response.name: Name cannot be empty.\n"
        );
        assert!(valid_name("_a.b:c-d9"));
        assert!(!valid_name("9abc"));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn tool_tokens() {
        let r = json!({"contents": [
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},   // {"a":1} = 7 → 2
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": "xyz"}}}]}]}); // 11 → 3
        assert_eq!(prompt_tokens(&r), 5);
        let t = json!({"contents": [], "tools": [{"functionDeclarations": [{"name": "abc"}]}]}); // 14 → 4
        assert_eq!(prompt_tokens(&t), 4);
        let c = Call { name: "f".into(), args: json!({}), signature: None };
        assert_eq!(c.tokens(), 6); // {"args":{},"name":"f"} = 22
    }
}
