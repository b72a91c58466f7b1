//! Conversation sends: the lock (busy, not found), the turn appended on success only, and a
//! settle failure that must not acknowledge the turn.

use super::*;
use crate::engine::conversation_turns;
use crate::engine::{CONV_MEDIA_BYTES, CONV_TURN_MEDIA_BYTES};
use crate::error::RouterError;
use crate::store::upstash::StoreError;
use crate::testing::{bodies, FakeConversation};
use crate::wire::gemini::Usage;

const CONV: &str = "c_4f2a9d";

fn conv_req(prompt: &str) -> GenerateRequest {
    let mut r = req(FLASH, prompt);
    r.conversation_id = Some(CONV.into());
    r
}

fn stored(lock: Option<&str>) -> FakeConversation {
    FakeConversation {
        owner: "alice".into(),
        model: FLASH.into(),
        turns: vec![
            json!({"role": "user", "parts": [{"text": "my name is Ada"}], "at": 1}).to_string(),
            json!({"role": "model", "parts": [{"text": "hello Ada"}], "at": 2}).to_string(),
        ],
        system: Some("be brief".into()),
        lock: lock.map(str::to_string),
    }
}

#[test]
fn a_locked_conversation_is_busy() {
    let w = World::new([]);
    w.store.add_conversation(CONV, stored(Some("another-request")));
    let f = w.generate(&conv_req("hi")).unwrap_err();
    assert_eq!(f.error, RouterError::ConversationBusy);
    assert!(w.upstream.calls().is_empty());
}

#[test]
fn an_unknown_or_foreign_conversation_is_not_found() {
    let w = World::new([]);
    assert_eq!(w.generate(&conv_req("hi")).unwrap_err().error, RouterError::ConversationNotFound);
    w.store.add_conversation(CONV, FakeConversation { owner: "bob".into(), ..stored(None) });
    assert_eq!(w.generate(&conv_req("hi")).unwrap_err().error, RouterError::ConversationNotFound);
}

#[test]
fn a_successful_send_carries_history_upstream_and_the_turn_in_its_settle() {
    let w = World::new([Answer::reply(200, bodies::ok("your name is Ada", 30, 5))]);
    w.store.add_conversation(CONV, stored(None));
    let s = w.generate(&conv_req("what is my name?")).unwrap();
    let sent: serde_json::Value = serde_json::from_str(&w.upstream.calls()[0].body).unwrap();
    assert_eq!(sent["contents"].as_array().unwrap().len(), 3, "history then the new turn: {sent}");
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "be brief");
    let conv = w.store.settles()[0].conv.clone().expect("the settle unlocks the conversation");
    let usage = Usage { input: 30, output: 5, thoughts: 0, total: 35 };
    let now = w.clock.now();
    let r = conv_req("what is my name?");
    assert_eq!(
        conv.turns,
        conversation_turns(&r.contents, now, &text_answer("your name is Ada"), &usage, now, w.settings.estimator)
    );
    assert_eq!(conv.tokens, 35);
    assert_eq!(s.message_count, Some(4));
    assert_eq!(w.store.conversation(CONV).unwrap().lock, None);
}

#[test]
fn a_failed_send_keeps_the_lock_while_retrying_then_only_unlocks() {
    let w = World::new([500, 500, 500].map(|s| Answer::reply(s, bodies::internal())));
    w.store.add_conversation(CONV, stored(None));
    w.generate(&conv_req("hi")).unwrap_err();
    let convs: Vec<_> = w.store.settles().into_iter().map(|s| s.conv).collect();
    assert_eq!(convs[0], None);
    assert_eq!(convs[1], None);
    let last = convs[2].clone().expect("the last settle unlocks");
    assert!(last.turns.is_empty(), "a failure appends no turn");
    let after = w.store.conversation(CONV).unwrap();
    assert_eq!((after.lock, after.turns.len()), (None, 2));
    // Every reservation re-entered the same lock.
    let locks: Vec<_> = w.store.reserves().iter().map(|r| r.conv.clone().unwrap().1).collect();
    assert!(locks.windows(2).all(|p| p[0] == p[1]));
}

#[test]
fn a_request_rejection_unlocks_without_a_turn() {
    let w =
        World::new([Answer::reply(400, r#"{"error":{"code":400,"message":"bad temp","status":"INVALID_ARGUMENT"}}"#)]);
    w.store.add_conversation(CONV, stored(None));
    w.generate(&conv_req("hi")).unwrap_err();
    let conv = w.store.settles()[0].conv.clone().unwrap();
    assert!(conv.turns.is_empty());
    assert_eq!(w.store.conversation(CONV).unwrap().lock, None);
}

#[test]
fn a_settle_failure_on_a_conversation_send_is_an_error_not_an_acknowledged_turn() {
    let w = World::new([ok("hi")]);
    w.store.add_conversation(CONV, stored(None));
    w.store.fail_settle(StoreError::Transport("reset".into()));
    let f = w.generate(&conv_req("hi")).unwrap_err();
    assert!(matches!(f.error, RouterError::StoreUnavailable { .. }), "{:?}", f.error);
    assert_eq!(f.attempts.len(), 1);
}

#[test]
fn a_settle_failure_without_a_conversation_still_answers() {
    let w = World::new([ok("hi")]);
    w.store.fail_settle(StoreError::Transport("reset".into()));
    let s = w.generate(&req(FLASH, "hi")).unwrap();
    assert_eq!((s.reply.out.text.as_str(), s.message_count), ("hi", None));
}

#[test]
fn a_send_without_a_model_uses_the_conversations_own() {
    let w = World::new([ok("hi")]);
    w.store.add_conversation(CONV, stored(None));
    let mut r = conv_req("hi");
    r.model = PRO.into();
    r.model_from_conversation = true;
    let s = w.generate(&r).unwrap();
    assert_eq!(s.model_used, FLASH);
    let reserve = &w.store.reserves()[0];
    assert_eq!(reserve.candidates, ["k1", "k2", "k3", "p1"], "every model is offered; the script filters");
    assert!(reserve.conv.as_ref().unwrap().2);
}

// --- Media in stored conversations --------------------------------------------------------------

fn image_turn(text: &str, w: u32, h: u32, body: usize) -> serde_json::Value {
    let data = crate::wire::base64::encode(&crate::quota::media::tests::png(w, h, body));
    json!({"role": "user", "parts": [{"text": text}, {"inlineData": {"mimeType": "image/png", "data": data}}]})
}

fn conv_media_req(turn: serde_json::Value) -> GenerateRequest {
    GenerateRequest::from_gemini(&json!({"contents": [turn]}), FLASH, Some(CONV.into())).unwrap()
}

#[test]
fn a_turn_with_media_is_stored_whole_and_counted_by_its_token_cost() {
    let w = World::new([
        Answer::reply(200, bodies::ok("a cat", 600, 5)),
        Answer::reply(200, bodies::ok("still a cat", 700, 5)),
    ]);
    w.store.add_conversation(CONV, stored(None));
    let turn = image_turn("Describe this", 1000, 500, 1_500_000);
    w.generate(&conv_media_req(turn.clone())).unwrap();
    let conv = w.store.settles()[0].conv.clone().unwrap();
    let user: serde_json::Value = serde_json::from_str(&conv.turns[0]).unwrap();
    assert_eq!(user["parts"], turn["parts"], "the stored turn keeps the inlineData");
    // The history estimate grows by the image's 2 tiles (516) and the text, not its 2 MB.
    assert!(conv.est >= 516 && conv.est < 1_000, "{}", conv.est);
    // The next send carries the image in its history, and the budget counts it as 516 tokens.
    let s = w.generate(&conv_req("what was in it?")).unwrap();
    assert_eq!(s.omitted_turns, 0);
    let sent: serde_json::Value = serde_json::from_str(&w.upstream.calls()[1].body).unwrap();
    assert_eq!(sent["contents"][2]["parts"][1], turn["parts"][1], "{}", sent["contents"][2]["parts"][0]);
}

#[test]
fn a_turn_over_the_media_cap_is_413_before_any_reservation() {
    let w = World::new([ok("fine")]);
    w.store.add_conversation(CONV, stored(None));
    let big = CONV_TURN_MEDIA_BYTES as usize * 3 / 4 + 10_000;
    let e = w.generate(&conv_media_req(image_turn("x", 100, 100, big))).unwrap_err().error;
    assert_eq!((e.status(), e.code()), (413, "conversation_too_large"));
    assert!(e.message().contains(&CONV_TURN_MEDIA_BYTES.to_string()), "{}", e.message());
    assert!(w.store.reserves().is_empty() && w.upstream.calls().is_empty());
    // A request outside a conversation is not capped by it, even past the conversation cap.
    let mut r = conv_media_req(image_turn("x", 100, 100, CONV_MEDIA_BYTES as usize));
    r.conversation_id = None;
    w.generate(&r).unwrap();
}

#[test]
fn a_conversation_over_its_media_cap_is_413_and_gives_the_reservation_back() {
    let w = World::new([ok("sure")]);
    // Four stored turns of 3.5 MiB of base64 each: 14 MiB; 2.7 MiB more passes 16 MiB.
    let each = (3.5 * 1024.0 * 1024.0) as usize * 3 / 4;
    let mut conv = stored(None);
    for _ in 0..4 {
        conv.turns.push(image_turn("look", 100, 100, each).to_string());
        conv.turns.push(json!({"role": "model", "parts": [{"text": "ok"}]}).to_string());
    }
    w.store.add_conversation(CONV, conv);
    let e = w.generate(&conv_media_req(image_turn("and this", 100, 100, 2 << 20))).unwrap_err().error;
    assert_eq!((e.status(), e.code()), (413, "conversation_too_large"));
    assert!(e.message().contains(&CONV_MEDIA_BYTES.to_string()), "{}", e.message());
    assert!(w.upstream.calls().is_empty());
    let s = &w.store.settles()[0];
    assert!(s.release, "the reservation is given back");
    assert!(s.conv.as_ref().unwrap().turns.is_empty());
    assert_eq!(w.store.conversation(CONV).unwrap().lock, None, "and the conversation unlocked");
    // A text turn still goes through: only new media is refused.
    w.generate(&conv_req("summarize")).unwrap();
}

#[test]
fn a_conversation_send_settles_before_its_answer_not_after() {
    // Read-after-write of the stored turn is a promise: its settle is not deferred.
    let w = World::new([ok("hi")]);
    w.store.add_conversation(CONV, stored(None));
    let s = block_on(w.router().generate(&conv_req("hi"), &caller())).unwrap();
    assert!(s.deferred.is_none());
    assert_eq!(w.outcomes(), ["success"]);
    assert_eq!(s.message_count, Some(4));
}
