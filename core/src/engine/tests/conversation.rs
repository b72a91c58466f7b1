//! Conversation sends: the lock (busy, not found), the turn appended on success only, and a
//! settle failure that must not acknowledge the turn.

use super::*;
use crate::engine::conversation_turns;
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
