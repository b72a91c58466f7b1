//! Streams: failover until the first event, then the relay's settle (complete or cut).

use super::*;
use crate::engine::conversation_turns;
use crate::engine::ports::ChunkSource;
use crate::testing::{bodies, FakeConversation, StreamEnd};
use crate::wire::gemini::Usage;

fn pending(o: Outcome<FakeStream>) -> crate::engine::PendingStream<FakeStream> {
    match o {
        Outcome::Stream(p) => p,
        Outcome::Done(_) => panic!("expected a stream"),
    }
}

fn two_events() -> Answer {
    Answer::Stream {
        chunks: vec![bodies::sse_event("Hel", None), bodies::sse_event("lo", Some((7, 2)))],
        end: StreamEnd::Complete,
    }
}

#[test]
fn a_stream_cut_before_its_first_event_fails_over() {
    let w = World::new([Answer::Stream { chunks: vec![], end: StreamEnd::Cut }, two_events()]);
    let p = pending(w.stream(&req(FLASH, "hello")).unwrap());
    assert_eq!(p.key_id, "k2");
    assert_eq!(w.outcomes(), ["transport"], "only the failed attempt is settled before the relay");
    assert_eq!(p.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(), ["transport", "success"]);
    assert!(w.upstream.calls().iter().all(|c| c.stream));
}

#[test]
fn a_stream_that_never_sends_a_byte_times_out_and_fails_over() {
    let mut w = World::new([Answer::Stream { chunks: vec![], end: StreamEnd::Stall }, two_events()]);
    w.settings.upstream_timeout_ms = 10_000;
    let p = pending(w.stream(&req(FLASH, "hello")).unwrap());
    assert_eq!(p.key_id, "k2");
    assert_eq!(w.outcomes(), ["timeout"]);
    // The first-byte timer, then the backoff.
    assert_eq!(w.rt.sleeps(), [10_000, 50]);
}

#[test]
fn a_refused_stream_is_classified_like_a_whole_answer() {
    let w = World::new([Answer::reply(429, bodies::quota_per_minute(FLASH, 9)), two_events()]);
    let p = pending(w.stream(&req(FLASH, "hello")).unwrap());
    assert_eq!(p.key_id, "k2");
    assert_eq!(w.outcomes(), ["rate_limited"]);
}

#[test]
fn a_stream_with_its_first_event_is_handed_over_and_settles_complete_or_cut() {
    let w = World::new([two_events()]);
    let conv = "c_stream1";
    w.store
        .add_conversation(conv, FakeConversation { owner: "alice".into(), model: FLASH.into(), ..Default::default() });
    let mut r = req(FLASH, "hello");
    r.conversation_id = Some(conv.into());
    let mut p = pending(w.stream(&r).unwrap());
    assert_eq!(p.first_events.len(), 1);
    assert!(w.store.settles().is_empty(), "the relay settles, once the stream has ended");
    assert_eq!(p.attempts.len(), 1);
    // Relay the rest, as the glue does.
    while let Some(bytes) = block_on(p.source.next_chunk()).unwrap() {
        for ev in p.parser.feed(&bytes) {
            p.tally.observe(&ev);
        }
    }
    assert_eq!(p.tally.out.text, "Hello");
    let now = w.clock.now();
    let complete = p.finish.settle_spec(&p.tally, true, now);
    assert_eq!((complete.outcome, complete.input, complete.output, complete.release), ("success", Some(7), 2, false));
    let usage = Usage { input: 7, output: 2, thoughts: 0, total: 9 };
    let c = complete.conv.as_ref().unwrap();
    assert_eq!(c.turns, conversation_turns(&r.contents, now, &text_answer("Hello"), &usage, now, w.settings.estimator));
    assert_eq!((c.lock_id.as_str(), c.tokens), (w.store.reserves()[0].conv.clone().unwrap().1.as_str(), 9));
    let cut = p.finish.settle_spec(&p.tally, false, now);
    assert_eq!(cut.outcome, "stream_cut");
    assert!(cut.conv.as_ref().unwrap().turns.is_empty(), "a cut stream only unlocks");
    // The glue's KEYS/ARGV come from the same spec.
    let (keys, args) = p.finish.settle_call(&p.tally, true, now);
    assert_eq!((keys, args), crate::store::settle_call(&complete));
}

#[test]
fn a_streamed_tool_call_has_one_id_in_the_deltas_and_the_stored_turn() {
    let call = r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"U0lH"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":2,"totalTokenCount":9}}"#;
    let w = World::new([Answer::Stream { chunks: vec![format!("data: {call}\n\n")], end: StreamEnd::Complete }]);
    let conv = "c_stream2";
    w.store
        .add_conversation(conv, FakeConversation { owner: "alice".into(), model: FLASH.into(), ..Default::default() });
    let mut r = req(FLASH, "weather?");
    r.conversation_id = Some(conv.into());
    let mut p = pending(w.stream(&r).unwrap());
    while let Some(bytes) = block_on(p.source.next_chunk()).unwrap() {
        for ev in p.parser.feed(&bytes) {
            p.tally.observe(&ev);
        }
    }
    let id = crate::wire::call_id::call_id(&w.store.reserves()[0].rid, 0, Some("U0lH"));
    let mut shaper = crate::wire::openai::StreamShaper::new("chatcmpl-t".into(), 1, FLASH.into(), false);
    let chunk = shaper.event(&p.first_events[0].data, &p.tally).unwrap();
    assert_eq!(chunk["choices"][0]["delta"]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(shaper.finish(&p.tally, false)[0]["choices"][0]["finish_reason"], "tool_calls");
    let spec = p.finish.settle_spec(&p.tally, true, w.clock.now());
    let model_turn: serde_json::Value = serde_json::from_str(&spec.conv.as_ref().unwrap().turns[1]).unwrap();
    assert_eq!(model_turn["tool_call_ids"], json!([id]));
    assert_eq!(model_turn["parts"][0]["thoughtSignature"], "U0lH");
}
