//! Deterministic token counting, answers and response bodies.

use serde_json::{json, Map, Value};

use crate::{schema, tools};

pub use crate::tokens::text_tokens;

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn part_texts(content: &Value) -> impl Iterator<Item = &str> {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
}

/// promptTokenCount of a GenerateContentRequest: text parts of `systemInstruction` and
/// `contents` (every role), ceil(bytes/4) each, plus the tool material (see
/// [`tools::prompt_tokens`]), at least 1.
pub fn prompt_tokens(req: &Value) -> u64 {
    let mut n = 0;
    if let Some(si) = field(req, "systemInstruction", "system_instruction") {
        n += part_texts(si).map(text_tokens).sum::<u64>();
    }
    if let Some(contents) = req.get("contents").and_then(Value::as_array) {
        for c in contents {
            n += part_texts(c).map(text_tokens).sum::<u64>();
        }
    }
    (n + tools::prompt_tokens(req)).max(1)
}

/// Checks the shape Gemini insists on; returns the INVALID_ARGUMENT message otherwise.
pub fn validate_generate(req: &Value) -> Result<(), String> {
    if !req.is_object() {
        return Err("Invalid JSON payload received. Expected an object.".to_string());
    }
    let contents = match req.get("contents") {
        None | Some(Value::Null) => {
            return Err("* GenerateContentRequest.contents: contents is not specified\n".into())
        }
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(
                "Invalid JSON payload received. Unknown name \"contents\": Proto field is not repeating, cannot start list."
                    .into(),
            )
        }
    };
    if contents.is_empty() {
        return Err("* GenerateContentRequest.contents: contents is not specified\n".into());
    }
    for (i, c) in contents.iter().enumerate() {
        let ok = c.get("parts").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
        if !ok {
            return Err(format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"));
        }
    }
    tools::validate(req)
}

fn content_text(c: &Value) -> String {
    part_texts(c).collect::<Vec<_>>().join("\n")
}

fn is_user(c: &Value) -> bool {
    match c.get("role").and_then(Value::as_str) {
        None => true,
        Some(r) => r == "user",
    }
}

/// `Say '(.+?)' and nothing else` (also with double quotes), ASCII case-insensitive.
pub fn say_capture(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(p) = lower[from..].find("say ") {
        let q_at = from + p + 4;
        from = from + p + 1;
        let q = match lower.as_bytes().get(q_at) {
            Some(&b) if b == b'\'' || b == b'"' => b as char,
            _ => continue,
        };
        let start = q_at + 1;
        let Some(first) = text[start..].chars().next() else {
            continue;
        };
        let search_from = start + first.len_utf8();
        let tail = format!("{q} and nothing else");
        if let Some(e) = lower[search_from..].find(&tail) {
            return Some(&text[start..search_from + e]);
        }
    }
    None
}

fn gen_config(req: &Value) -> Option<&Value> {
    field(req, "generationConfig", "generation_config")
}

fn last_user_text(req: &Value) -> String {
    let contents: &[Value] = req.get("contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let users: Vec<&Value> = contents.iter().filter(|c| is_user(c)).collect();
    users.last().copied().or(contents.last()).map(content_text).unwrap_or_default().trim().to_string()
}

fn wants_json(req: &Value) -> bool {
    gen_config(req).and_then(|g| field(g, "responseMimeType", "response_mime_type")).and_then(Value::as_str)
        == Some("application/json")
}

/// The response schema of a JSON-mode request (`responseJsonSchema` or `responseSchema`,
/// either spelling), if any.
fn response_schema(req: &Value) -> Option<&Value> {
    let g = gen_config(req).filter(|_| wants_json(req))?;
    field(g, "responseJsonSchema", "response_json_schema")
        .or_else(|| field(g, "responseSchema", "response_schema"))
        .filter(|s| !s.is_null())
}

/// The deterministic text answer for a request (before maxOutputTokens truncation).
pub fn answer(req: &Value) -> String {
    if let Some(s) = tools::responses_summary(req) {
        return s;
    }
    if let Some(s) = response_schema(req) {
        return schema::json_answer(s);
    }
    let contents: &[Value] = req.get("contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let users: Vec<&Value> = contents.iter().filter(|c| is_user(c)).collect();
    let text = last_user_text(req);
    let text = text.as_str();
    let lower = text.to_ascii_lowercase();
    if lower.contains("what is 2+2?") {
        return "4".into();
    }
    if let Some(s) = say_capture(text) {
        return s.to_string();
    }
    if lower.contains("what was my previous question?") {
        // A question is a user turn with text: tool results in between are not questions.
        let asked: Vec<String> =
            users.iter().map(|c| content_text(c).trim().to_string()).filter(|t| !t.is_empty()).collect();
        return if asked.len() >= 2 {
            asked[asked.len() - 2].clone()
        } else {
            "You have not asked anything before.".into()
        };
    }
    if wants_json(req) || lower.contains("reply with json") {
        return "{\"ok\":true}".into();
    }
    let head: String = text.chars().take(80).collect();
    format!("Mock reply to: {head}")
}

/// Everything needed to answer a generate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The answer text; empty when the answer is `calls`.
    pub text: String,
    pub finish: &'static str,
    pub prompt: u64,
    pub candidates: u64,
    pub thoughts: u64,
    /// Function calls answered instead of text (see [`tools::calls`]).
    pub calls: Vec<tools::Call>,
    /// The thought summary part's text, with `thinkingConfig.includeThoughts: true`.
    pub thought: Option<String>,
}

impl Plan {
    pub fn total(&self) -> u64 {
        self.prompt + self.candidates + self.thoughts
    }

    pub fn usage(&self) -> Value {
        let mut u = json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.candidates,
            "totalTokenCount": self.total(),
        });
        if self.thoughts > 0 {
            u["thoughtsTokenCount"] = json!(self.thoughts);
        }
        u
    }
}

pub fn plan(req: &Value) -> Plan {
    let calls = tools::calls(req);
    let mut text = if calls.is_empty() { answer(req) } else { String::new() };
    let mut finish = "STOP";
    let gc = gen_config(req);
    if let Some(max) = gc.and_then(|g| field(g, "maxOutputTokens", "max_output_tokens")).and_then(Value::as_u64) {
        if text_tokens(&text) > max {
            let mut cut = (max.saturating_mul(4)).min(text.len() as u64) as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            finish = "MAX_TOKENS";
        }
    }
    let thinking = gc.and_then(|g| field(g, "thinkingConfig", "thinking_config"));
    let budget =
        thinking.and_then(|t| field(t, "thinkingBudget", "thinking_budget")).and_then(Value::as_i64).unwrap_or(0);
    let thoughts = if budget > 0 { budget.min(7) as u64 } else { 0 };
    let include = thinking.and_then(|t| field(t, "includeThoughts", "include_thoughts")).and_then(Value::as_bool);
    let thought = (include == Some(true))
        .then(|| format!("Thinking about: {}", last_user_text(req).chars().take(40).collect::<String>()));
    let candidates = text_tokens(&text) + calls.iter().map(tools::Call::tokens).sum::<u64>();
    Plan { candidates, prompt: prompt_tokens(req), thoughts, text, finish, calls, thought }
}

fn thought_part(t: &str) -> Value {
    json!({"text": t, "thought": true})
}

/// The answer parts of a plan: the thought summary (if any), then the text or the calls.
pub fn parts(plan: &Plan) -> Vec<Value> {
    let mut out: Vec<Value> = plan.thought.iter().map(|t| thought_part(t)).collect();
    if plan.calls.is_empty() {
        out.push(json!({"text": plan.text}));
    } else {
        out.extend(plan.calls.iter().map(tools::Call::part));
    }
    out
}

/// The non-stream GenerateContentResponse of a plan.
pub fn full_response(plan: &Plan, model: &str, id: &str) -> Value {
    response_parts(parts(plan), Some(plan.finish), Some(plan.usage()), model, id)
}

/// One GenerateContentResponse object with a single text part.
pub fn response(text: &str, finish: Option<&str>, usage: Option<Value>, model: &str, id: &str) -> Value {
    response_parts(vec![json!({"text": text})], finish, usage, model, id)
}

/// One GenerateContentResponse object.
pub fn response_parts(parts: Vec<Value>, finish: Option<&str>, usage: Option<Value>, model: &str, id: &str) -> Value {
    let mut cand = Map::new();
    cand.insert("content".into(), json!({"parts": parts, "role": "model"}));
    if let Some(f) = finish {
        cand.insert("finishReason".into(), json!(f));
    }
    cand.insert("index".into(), json!(0));
    let mut v = Map::new();
    v.insert("candidates".into(), Value::Array(vec![Value::Object(cand)]));
    if let Some(u) = usage {
        v.insert("usageMetadata".into(), u);
    }
    v.insert("modelVersion".into(), json!(model));
    v.insert("responseId".into(), json!(id));
    Value::Object(v)
}

/// Splits text into word-aligned pieces whose concatenation is the text:
/// one piece per word up to 3 words, else max(3, ceil(words/6)) pieces.
pub fn split_pieces(text: &str) -> Vec<&str> {
    let mut bounds = vec![0usize];
    let mut prev_ws = false;
    for (i, ch) in text.char_indices() {
        let ws = ch.is_whitespace();
        if prev_ws && !ws {
            bounds.push(i);
        }
        prev_ws = ws;
    }
    let words = bounds.len();
    bounds.push(text.len());
    let k = if words <= 3 { words } else { 3.max(words.div_ceil(6)) };
    (0..k).map(|g| &text[bounds[g * words / k]..bounds[(g + 1) * words / k]]).collect()
}

/// The stream events (each a GenerateContentResponse): the first carries a partial
/// usageMetadata (promptTokenCount only), the last finishReason and the full usage. The
/// thought part (if any) leads the first event. Calls come whole, all in the first event,
/// followed by an empty-text event with finishReason and usage.
pub fn stream_events(plan: &Plan, model: &str, id: &str) -> Vec<Value> {
    let partial = json!({"promptTokenCount": plan.prompt});
    let first = |piece: &str| {
        let mut p: Vec<Value> = plan.thought.iter().map(|t| thought_part(t)).collect();
        p.push(json!({"text": piece}));
        response_parts(p, None, Some(partial.clone()), model, id)
    };
    if !plan.calls.is_empty() {
        return vec![
            response_parts(parts(plan), None, Some(partial.clone()), model, id),
            response("", Some(plan.finish), Some(plan.usage()), model, id),
        ];
    }
    let pieces = split_pieces(&plan.text);
    let mut out = Vec::with_capacity(pieces.len() + 1);
    if pieces.len() <= 1 {
        out.push(first(pieces.first().copied().unwrap_or("")));
        out.push(response("", Some(plan.finish), Some(plan.usage()), model, id));
        return out;
    }
    let last = pieces.len() - 1;
    for (i, p) in pieces.iter().enumerate() {
        let v = if i == 0 {
            first(p)
        } else if i == last {
            response(p, Some(plan.finish), Some(plan.usage()), model, id)
        } else {
            response(p, None, None, model, id)
        };
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_user(text: &str) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
    }

    #[test]
    fn token_counting() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("a"), 1);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("日本"), 2); // 6 bytes
        let r = json!({
            "systemInstruction": {"parts": [{"text": "You are terse."}]},  // 14 → 4
            "contents": [
                {"role": "user", "parts": [{"text": "Hello"}, {"text": "abc"}]}, // 2 + 1
                {"role": "model", "parts": [{"text": "Hi there!"}]},             // 3
                {"role": "user", "parts": [{"inlineData": {"data": "xx"}}]}
            ]
        });
        assert_eq!(prompt_tokens(&r), 10);
        assert_eq!(prompt_tokens(&req_user("")), 1);
        assert_eq!(prompt_tokens(&json!({"system_instruction": {"parts": [{"text": "abcdefgh"}]}, "contents": []})), 2);
    }

    #[test]
    fn tokens_never_exceed_bytes() {
        for s in ["x", "hello world", "ünïcödé", "日本語のテキスト", "🦀🦀", "a b c d e f g"] {
            let r = req_user(s);
            assert!(prompt_tokens(&r) <= s.len() as u64);
        }
    }

    #[test]
    fn answer_rules() {
        assert_eq!(answer(&req_user("What is 2+2?")), "4");
        assert_eq!(answer(&req_user("  what IS 2+2? Answer briefly. ")), "4");
        assert_eq!(
            answer(&req_user("Say 'Hello from Multi-Key Router!' and nothing else.")),
            "Hello from Multi-Key Router!"
        );
        assert_eq!(answer(&req_user("say \"ok\" AND NOTHING ELSE")), "ok");
        assert_eq!(answer(&req_user("Please say 'it's fine' and nothing else")), "it's fine");
        assert_eq!(answer(&req_user("Say '' and nothing else' and nothing else")), "' and nothing else");
        assert_eq!(answer(&req_user("Reply with JSON please")), "{\"ok\":true}");
        let j = json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"responseMimeType": "application/json"}});
        assert_eq!(answer(&j), "{\"ok\":true}");
        assert_eq!(answer(&req_user(" Tell me a story ")), "Mock reply to: Tell me a story");
        let long = "é".repeat(100);
        assert_eq!(answer(&req_user(&long)), format!("Mock reply to: {}", "é".repeat(80)));
    }

    #[test]
    fn previous_question() {
        let r = json!({"contents": [
            {"role": "user", "parts": [{"text": " What is the capital of France? "}]},
            {"role": "model", "parts": [{"text": "Paris"}]},
            {"role": "user", "parts": [{"text": "What was my previous question?"}]}
        ]});
        assert_eq!(answer(&r), "What is the capital of France?");
        let with_tool = json!({"contents": [
            {"role": "user", "parts": [{"text": "weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]},
            {"role": "model", "parts": [{"text": "Sunny"}]},
            {"role": "user", "parts": [{"text": "What was my previous question?"}]}
        ]});
        assert_eq!(answer(&with_tool), "weather in Paris?");
        assert_eq!(answer(&req_user("What was my previous question?")), "You have not asked anything before.");
    }

    #[test]
    fn plan_usage_and_limits() {
        let p = plan(&req_user("What is 2+2?"));
        assert_eq!(p.text, "4");
        assert_eq!((p.prompt, p.candidates, p.thoughts, p.total()), (3, 1, 0, 4));
        assert_eq!(p.finish, "STOP");
        assert!(p.usage().get("thoughtsTokenCount").is_none());

        let r = json!({"contents": [{"parts": [{"text": "Tell me about the weather today in Paris"}]}],
                       "generationConfig": {"maxOutputTokens": 3, "thinkingConfig": {"thinkingBudget": 1024}}});
        let p = plan(&r);
        assert_eq!(p.finish, "MAX_TOKENS");
        assert_eq!(p.text, "Mock reply t");
        assert_eq!(p.candidates, 3);
        assert_eq!(p.thoughts, 7);
        assert_eq!(p.usage()["thoughtsTokenCount"], 7);
        assert_eq!(p.usage()["totalTokenCount"], p.prompt + 10);
        let r = json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": 3}}});
        assert_eq!(plan(&r).thoughts, 3);
    }

    #[test]
    fn validation() {
        assert!(validate_generate(&req_user("hi")).is_ok());
        assert!(validate_generate(&json!({})).is_err());
        assert!(validate_generate(&json!({"contents": []})).is_err());
        assert!(validate_generate(&json!({"contents": "x"})).is_err());
        assert!(validate_generate(&json!({"contents": [{"role": "user"}]})).is_err());
        assert!(validate_generate(&json!([1])).is_err());
    }

    #[test]
    fn pieces_concatenate() {
        for s in [
            "4",
            "Hello there",
            "a b c",
            "Mock reply to: What is the meaning of life and everything?",
            "",
            "  lead",
            "x ".repeat(40).as_str(),
        ] {
            let p = split_pieces(s);
            assert_eq!(p.concat(), s);
        }
        assert_eq!(split_pieces("Mock reply to: Tell me a story").len(), 3);
        assert_eq!(split_pieces(&"w ".repeat(60)).len(), 10);
    }

    #[test]
    fn stream_event_shapes() {
        let p = plan(&req_user("Tell me a story about a small crab"));
        let ev = stream_events(&p, "gemini-2.5-flash", "id1");
        assert!(ev.len() >= 3);
        let text: String =
            ev.iter().map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(text, p.text);
        assert_eq!(ev[0]["usageMetadata"], json!({"promptTokenCount": p.prompt}));
        assert!(ev[1].get("usageMetadata").is_none());
        let last = ev.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"], p.usage());
        assert!(ev[0]["candidates"][0].get("finishReason").is_none());

        let p = plan(&req_user("What is 2+2?"));
        let ev = stream_events(&p, "m", "id");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["candidates"][0]["content"]["parts"][0]["text"], "4");
        assert_eq!(ev[1]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(ev[1]["usageMetadata"]["totalTokenCount"], 4);
    }

    #[test]
    fn json_mode_with_schema() {
        let r = json!({"contents": [{"parts": [{"text": "What is 2+2?"}]}], "generationConfig": {
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {"answer": {"type": "integer"}, "why": {"type": "string"}},
                                   "required": ["why"]}}});
        assert_eq!(answer(&r), r#"{"why":"example","answer":1}"#);
        let r = json!({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {
            "response_mime_type": "application/json", "response_schema": {"type": "ARRAY", "items": {"type": "STRING"}}}});
        assert_eq!(answer(&r), "[]");
        // A schema without the JSON mime type is ignored; no schema keeps {"ok":true}.
        let r = json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"responseSchema": {"type": "ARRAY"}}});
        assert_eq!(answer(&r), "Mock reply to: hi");
    }

    #[test]
    fn thought_summary_parts() {
        let r = json!({"contents": [{"parts": [{"text": "  What is 2+2? And what is the meaning of everything else?"}]}],
                       "generationConfig": {"thinkingConfig": {"includeThoughts": true, "thinkingLevel": "high"}}});
        let p = plan(&r);
        assert_eq!(p.thought.as_deref(), Some("Thinking about: What is 2+2? And what is the meaning of "));
        assert_eq!(p.thoughts, 0);
        assert_eq!(parts(&p), vec![json!({"text": p.thought, "thought": true}), json!({"text": "4"})]);
        let ev = stream_events(&p, "m", "id");
        assert_eq!(ev[0]["candidates"][0]["content"]["parts"][0]["thought"], true);
        assert_eq!(ev[0]["candidates"][0]["content"]["parts"][1]["text"], "4");
        assert!(plan(&req_user("hi")).thought.is_none());
    }

    #[test]
    fn plan_with_calls() {
        let r = json!({"contents": [{"role": "user", "parts": [{"text": "get_weather in Paris"}]}],
                       "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT",
                           "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]});
        let p = plan(&r);
        assert_eq!(p.text, "");
        assert_eq!(p.finish, "STOP");
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.candidates, p.calls[0].tokens());
        // Text "get_weather in Paris" (20 bytes) → 5, plus the declaration's JSON.
        let decl_len = r["tools"][0]["functionDeclarations"][0].to_string().len() as u64;
        assert_eq!(p.prompt, 5 + decl_len.div_ceil(4));
        let v = full_response(&p, "m", "id");
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["functionCall"]["args"], json!({"city": "Paris"}));
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        let ev = stream_events(&p, "m", "id");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "get_weather");
        assert_eq!(ev[0]["usageMetadata"], json!({"promptTokenCount": p.prompt}));
        assert_eq!(ev[1]["usageMetadata"], p.usage());
        assert_eq!(ev[1]["candidates"][0]["finishReason"], "STOP");
        assert!(prompt_tokens(&r) <= r.to_string().len() as u64);
    }
}
