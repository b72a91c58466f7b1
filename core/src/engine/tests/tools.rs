//! Tool loops through a stored conversation: the call is stored with its signature and id, a
//! tool result sent alone is named from it, an unknown id is the caller's 400, the estimate
//! counts tools, and trimming keeps calls with their results.

use super::*;
use crate::config::Estimator;
use crate::engine::upstream_history;
use crate::testing::FakeConversation;
use crate::wire::call_id::call_id;
use crate::wire::openai::ChatRequest;
use serde_json::Value;

const CONV: &str = "c_7ab31e";

fn conversation() -> FakeConversation {
    FakeConversation { owner: "alice".into(), model: FLASH.into(), turns: vec![], system: None, lock: None }
}

fn call_body() -> String {
    json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lHLTE="}]},
            "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 5, "totalTokenCount": 25}})
    .to_string()
}

fn chat(messages: Value) -> GenerateRequest {
    let body = json!({"model": FLASH, "messages": messages,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    ChatRequest::parse(&body, Some(CONV.into())).unwrap().gen
}

#[test]
fn a_tool_loop_runs_through_a_conversation_sending_only_new_messages() {
    let w = World::new([Answer::reply(200, call_body()), ok("21 degrees in Paris")]);
    w.store.add_conversation(CONV, conversation());
    // 1. The question; the model calls a function with a signature.
    let s = w.generate(&chat(json!([{"role": "user", "content": "weather in Paris?"}]))).unwrap();
    let call = &s.reply.out.calls[0];
    assert_eq!(call.signature.as_deref(), Some("U0lHLTE="));
    let stored = w.store.conversation(CONV).unwrap().turns;
    assert_eq!(stored.len(), 2);
    let model_turn: Value = serde_json::from_str(&stored[1]).unwrap();
    assert_eq!(model_turn["parts"][0]["thoughtSignature"], "U0lHLTE=");
    assert_eq!(model_turn["tool_call_ids"], json!([call.id]));
    assert_eq!(call.id, call_id(&w.store.reserves()[0].rid, 0, Some("U0lHLTE=")));

    // 2. Only the tool result, answering the call by its id.
    let result = chat(json!([{"role": "tool", "tool_call_id": call.id, "content": "{\"temp\": 21}"}]));
    let s2 = w.generate(&result).unwrap();
    assert_eq!(s2.reply.out.text, "21 degrees in Paris");
    let sent: Value = serde_json::from_str(&w.upstream.calls()[1].body).unwrap();
    let contents = sent["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "history (question, call) then the result: {sent}");
    assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "U0lHLTE=", "the signature goes back unchanged");
    assert_eq!(contents[2]["parts"][0], json!({"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}));
    assert!(sent["tools"].is_array());
    let stored = w.store.conversation(CONV).unwrap().turns;
    assert_eq!(stored.len(), 4);
    let result_turn: Value = serde_json::from_str(&stored[2]).unwrap();
    assert_eq!(result_turn["parts"][0]["functionResponse"]["name"], "get_weather", "stored named");
}

#[test]
fn an_unknown_tool_call_id_is_a_400_that_charges_nothing() {
    let w = World::new([]);
    w.store.add_conversation(CONV, conversation());
    let f = w.generate(&chat(json!([{"role": "tool", "tool_call_id": "call_nope", "content": "1"}]))).unwrap_err();
    assert_eq!(f.error.code(), "unknown_tool_call_id");
    assert_eq!(f.error.status(), 400);
    assert!(w.upstream.calls().is_empty());
    let settle = &w.store.settles()[0];
    assert!(settle.release && settle.outcome == "client_error");
    assert!(settle.conv.as_ref().unwrap().turns.is_empty());
    assert_eq!(w.store.conversation(CONV).unwrap().lock, None);
}

#[test]
fn tools_and_schemas_count_in_the_reservation() {
    let w = World::new([ok("x"), ok("x")]);
    let bare = chat(json!([{"role": "user", "content": "hi"}]));
    let mut plain = bare.clone();
    plain.passthrough.clear();
    plain.conversation_id = None;
    let mut with_tools = bare;
    with_tools.conversation_id = None;
    w.generate(&plain).unwrap();
    w.generate(&with_tools).unwrap();
    let r = w.store.reserves();
    let tools_len = with_tools.passthrough["tools"].to_string().len() as u64;
    assert_eq!(r[1].est - r[0].est, tools_len);
}

fn turn(role: &str, part: Value) -> String {
    json!({"role": role, "parts": [part], "at": 1}).to_string()
}

#[test]
fn trimming_never_splits_a_call_from_its_result_nor_starts_orphaned() {
    let long = "x".repeat(100);
    let stored = vec![
        turn("user", json!({"text": long})),
        turn("model", json!({"functionCall": {"name": "f", "args": {}}})),
        turn("user", json!({"functionResponse": {"name": "f", "response": {"r": long}}})),
        turn("model", json!({"text": "done"})),
        turn("user", json!({"text": "next"})),
        turn("model", json!({"functionCall": {"name": "g", "args": {}}})),
    ];
    for budget in 0..400 {
        for answers in [false, true] {
            let (h, omitted) = upstream_history(&stored, budget, Estimator::Bytes, answers);
            assert_eq!(h.len() + omitted, stored.len());
            if let Some(first) = h.first() {
                assert_eq!(first["role"], "user", "budget {budget}");
                assert!(first["parts"][0].get("functionResponse").is_none(), "orphaned result at budget {budget}");
            }
            assert!(omitted == 0 || omitted == 4 || (omitted == 6 && !answers), "cut at {omitted}, budget {budget}");
            if answers {
                assert_eq!(h.last().unwrap()["parts"][0]["functionCall"]["name"], "g", "the answered call stays");
            }
        }
    }
    let (h, omitted) = upstream_history(&stored, 10_000, Estimator::Bytes, false);
    assert_eq!((h.len(), omitted), (6, 0));
}
