//! Function calling, thought signatures, thought summaries and JSON mode, over HTTP.

mod common;

use common::{parts_of, start};
use serde_json::{json, Value};

const KEY: &str = "AIzaSyTESTKEYtools000000000000000000001";
const FLASH: &str = "gemini-2.5-flash";
const G3: &str = "gemini-3-pro-preview";

fn tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Current weather",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}, "unit": {"type": "STRING"}},
                        "required": ["city"]}},
        {"name": "get_time", "description": "Current time",
         "parametersJsonSchema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}
    ]}])
}

fn ask(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}], "tools": tools()})
}

/// The request after the model's call `part` was answered with `{"temp": 21}`.
fn follow_up(call_part: Value) -> Value {
    json!({"contents": [
        {"role": "user", "parts": [{"text": "Use get_weather: weather in Paris?"}]},
        {"role": "model", "parts": [call_part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}
    ], "tools": tools()})
}

fn b64(s: &str) -> String {
    mock_gemini::signatures::base64(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_round_trip() {
    let m = start(json!({})).await;
    let req = ask("Use get_weather: weather in Paris?");
    let (s, v) = m.call(KEY, FLASH, "generateContent", &req).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(parts_of(&v), &vec![json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})]);
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    // Prompt: the text (34 bytes → 9) plus each declaration's JSON.
    let decls: u64 = tools()[0]["functionDeclarations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d.to_string().len() as u64).div_ceil(4))
        .sum();
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 9 + decls);
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().unwrap() <= req.to_string().len() as u64);

    // The answer to the function response: Gemini 2.5 accepts a call without a signature.
    let call = parts_of(&v)[0].clone();
    let (s, v) = m.call(KEY, FLASH, "generateContent", &follow_up(call)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(parts_of(&v), &vec![json!({"text": "Result of get_weather: {\"temp\":21}"})]);

    // No function named: plain text.
    let (_, v) = m.call(KEY, FLASH, "generateContent", &ask("What is 2+2?")).await;
    assert_eq!(parts_of(&v), &vec![json!({"text": "4"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_and_calling_modes() {
    let m = start(json!({})).await;
    let (_, v) = m.call(KEY, FLASH, "generateContent", &ask("get_time tz=UTC and get_weather in Rome")).await;
    assert_eq!(
        parts_of(&v),
        &vec![
            json!({"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}),
            json!({"functionCall": {"name": "get_time", "args": {"tz": "UTC"}}}),
        ]
    );
    let (_, v) = m.call(KEY, FLASH, "generateContent", &ask("Call get_weather and the other one, both")).await;
    assert_eq!(parts_of(&v).len(), 2);

    let mut any = ask("Hello there");
    any["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let (_, v) = m.call(KEY, FLASH, "generateContent", &any).await;
    assert_eq!(parts_of(&v), &vec![json!({"functionCall": {"name": "get_time", "args": {"tz": "example"}}})]);

    let mut none = ask("get_weather in Paris");
    none["tool_config"] = json!({"function_calling_config": {"mode": "NONE"}});
    let (_, v) = m.call(KEY, FLASH, "generateContent", &none).await;
    assert_eq!(parts_of(&v), &vec![json!({"text": "Mock reply to: get_weather in Paris"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini3_thought_signatures() {
    let m = start(json!({})).await;
    let (s, v) = m.call(KEY, G3, "generateContent", &ask("get_weather in Paris")).await;
    assert_eq!(s, 200, "{v}");
    let part = parts_of(&v)[0].clone();
    assert_eq!(part["thoughtSignature"], b64("sig:get_weather:1"));

    // Replayed unchanged: accepted.
    let (s, v) = m.call(KEY, G3, "generateContent", &follow_up(part.clone())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(parts_of(&v)[0]["text"], "Result of get_weather: {\"temp\":21}");

    // Stripped: the real 400, position = 1-based index of the model turn.
    let stripped = json!({"functionCall": part["functionCall"]});
    let (s, v) = m.call(KEY, G3, "generateContent", &follow_up(stripped.clone())).await;
    assert_eq!(s, 400);
    let expected: Value = serde_json::from_str(r#"{"error":{"code":400,"message":"Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:get_weather` , position 2. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.","status":"INVALID_ARGUMENT"}}"#).unwrap();
    assert_eq!(v, expected);

    // Unknown signature.
    let mut forged = part.clone();
    forged["thoughtSignature"] = json!(b64("sig:get_weather:999"));
    let (s, v) = m.call(KEY, G3, "generateContent", &follow_up(forged)).await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"error": {"code": 400, "message": "Corrupted thought signature.", "status": "INVALID_ARGUMENT"}})
    );

    // Gemini 2.5 takes the stripped history; the refused calls were logged as 400s.
    let (s, _) = m.call(KEY, FLASH, "generateContent", &follow_up(stripped)).await;
    assert_eq!(s, 200);
    let log = m.get("/_mock/requests").await;
    let statuses: Vec<u64> = log.as_array().unwrap().iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 400, 400, 200]);

    // Parallel calls: each part carries its own signature; the counter goes on.
    let (_, v) = m.call(KEY, G3, "generateContent", &ask("get_weather in Oslo and get_time tz=CET")).await;
    let p = parts_of(&v);
    assert_eq!(p[0]["thoughtSignature"], b64("sig:get_weather:2"));
    assert_eq!(p[1]["thoughtSignature"], b64("sig:get_time:3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_function_call_is_whole() {
    let m = start(json!({})).await;
    let (s, ev) = m.stream_sse(KEY, G3, &ask("Please call get_weather for the weather in Lisbon")).await;
    assert_eq!(s, 200);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let p = parts_of(&ev[0]);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["functionCall"], json!({"name": "get_weather", "args": {"city": "Lisbon"}}));
    assert_eq!(p[0]["thoughtSignature"], b64("sig:get_weather:1"));
    let prompt = ev[0]["usageMetadata"]["promptTokenCount"].as_u64().unwrap();
    assert_eq!(ev[0]["usageMetadata"], json!({"promptTokenCount": prompt}));
    assert!(ev[0]["candidates"][0].get("finishReason").is_none());
    assert_eq!(ev[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(ev[1]["usageMetadata"]["promptTokenCount"], prompt);
    assert!(ev[1]["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_and_json_mode() {
    let m = start(json!({})).await;
    let req = json!({"contents": [{"role": "user", "parts": [{"text": "Give me a city record"}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 512},
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "population": {"type": "integer"},
                "kind": {"enum": ["city", "town"]}, "tags": {"type": "array", "items": {"type": "string"}},
                "geo": {"type": "object", "properties": {"lat": {"type": "number"}}}}}}});
    let (s, v) = m.call(KEY, FLASH, "generateContent", &req).await;
    assert_eq!(s, 200, "{v}");
    let p = parts_of(&v);
    assert_eq!(p[0], json!({"text": "Thinking about: Give me a city record", "thought": true}));
    assert_eq!(p[1]["text"], r#"{"name":"example","geo":{"lat":1},"kind":"city","population":1,"tags":[]}"#);
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 7);

    // Gemini 3's thinkingLevel is accepted; JSON mode without a schema keeps {"ok":true}.
    let req = json!({"contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "low"}, "responseMimeType": "application/json"}});
    let (s, v) = m.call(KEY, G3, "generateContent", &req).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(parts_of(&v), &vec![json!({"text": "{\"ok\":true}"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tool_requests() {
    let m = start(json!({})).await;
    let cases = [
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"description": "d"}]}]}),
            "* GenerateContentRequest.tools[0].function_declarations[0].name: Invalid function name.",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [
                {"name": "f", "parameters": {"type": "OBJECT"}, "parametersJsonSchema": {"type": "object"}}]}]}),
            "* GenerateContentRequest.tools[0].function_declarations[0]: parameters and parameters_json_schema",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]},
                                {"role": "user", "parts": [{"functionResponse": {"response": {"a": 1}}}]}]}),
            "* GenerateContentRequest.contents[1].parts[0].function_response.name: Name cannot be empty.",
        ),
    ];
    for (body, msg) in cases {
        for method in ["generateContent", "streamGenerateContent"] {
            let (s, v) = m.call(KEY, FLASH, method, &body).await;
            assert_eq!(s, 400, "{v}");
            assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
            assert!(v["error"]["message"].as_str().unwrap().starts_with(msg), "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_tokens_in_count_tokens() {
    let m = start(json!({})).await;
    let req = follow_up(json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}));
    let (_, g) = m.call(KEY, FLASH, "generateContent", &req).await;
    let prompt = g["usageMetadata"]["promptTokenCount"].as_u64().unwrap();
    let (s, c) = m.call(KEY, FLASH, "countTokens", &json!({"generateContentRequest": req})).await;
    assert_eq!(s, 200);
    assert_eq!(c["totalTokens"], prompt);
    // Text 9, args {"city":"Paris"} 16 → 4, response {"temp":21} 11 → 3, declarations.
    let decls: u64 = tools()[0]["functionDeclarations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d.to_string().len() as u64).div_ceil(4))
        .sum();
    assert_eq!(prompt, 9 + 4 + 3 + decls);
    assert!(prompt <= req.to_string().len() as u64);
}
