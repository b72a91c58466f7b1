//! The walk: failover on 429 and bad keys, retries with backoff, the bounds (attempts,
//! deadline), the fallback chain, and the errors that stop before any call.

use super::*;
use crate::error::{LimitKind, RouterError};
use crate::store::upstash::StoreError;
use crate::store::CooldownSpec;
use crate::testing::bodies;

const PER_MINUTE_ID: &str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier";

#[test]
fn per_minute_429_cools_the_group_with_its_retry_info_and_fails_over() {
    let w = World::new([Answer::reply(429, bodies::quota_per_minute(FLASH, 17)), ok("hi")]);
    let s = w.generate(&req(FLASH, "hello")).unwrap();
    assert_eq!((s.key_id.as_str(), s.reply.out.text.as_str()), ("k2", "hi"));
    assert_eq!(w.keys_called(), ["k1", "k2"]);
    let settles = w.store.settles();
    assert_eq!(w.outcomes(), ["rate_limited", "success"]);
    assert_eq!(settles[0].cooldown, Some(CooldownSpec::Delay { ms: 17_000, reason: format!("429 {PER_MINUTE_ID}") }));
    assert!(!settles[0].release && settles[0].disable.is_none());
    assert_eq!(s.attempts[0].cooldown_until, Some(FakeClock::START + 17_000));
    // A 429 is the quota's answer, not an outage: no backoff before the next key.
    assert!(w.rt.sleeps().is_empty());
}

#[test]
fn per_day_429_cools_until_pacific_midnight() {
    let w = World::new([Answer::reply(429, bodies::quota_per_day(FLASH, 40)), ok("hi")]);
    w.generate(&req(FLASH, "hello")).unwrap();
    let reason = "429 GenerateRequestsPerDayPerProjectPerModel-FreeTier".to_string();
    assert_eq!(w.store.settles()[0].cooldown, Some(CooldownSpec::UntilPacificMidnight { reason }));
}

#[test]
fn undetailed_429_writes_an_unknown_cooldown() {
    let w = World::new([Answer::reply(429, bodies::exhausted_no_details()), ok("hi")]);
    w.generate(&req(FLASH, "hello")).unwrap();
    let reason = "429 without details".to_string();
    assert_eq!(w.store.settles()[0].cooldown, Some(CooldownSpec::Unknown { reason }));
}

#[test]
fn every_attempt_429_answers_no_capacity_with_the_earliest_cooldown_end() {
    let w = World::new([30, 20, 40].map(|s| Answer::reply(429, bodies::quota_per_minute(FLASH, s))));
    let f = w.generate(&req(FLASH, "hello")).unwrap_err();
    let retry_after_ms = Some(20_000);
    assert_eq!(f.error, RouterError::NoCapacity { limit: LimitKind::Cooldown, retry_after_ms, bucket: None });
    assert_eq!(w.keys_called(), ["k1", "k2", "k3"]);
    assert_eq!(f.attempts.len(), 3);
}

#[test]
fn invalid_key_is_disabled_with_its_reason_released_and_fails_over() {
    let w = World::new([Answer::reply(400, bodies::invalid_key()), ok("hi")]);
    let s = w.generate(&req(FLASH, "hello")).unwrap();
    assert_eq!(s.key_id, "k2");
    let first = &w.store.settles()[0];
    assert_eq!(first.outcome, "key_rejected");
    assert!(first.release, "Google does not count a request with an invalid key");
    assert_eq!(first.disable, Some(("400 API_KEY_INVALID".to_string(), "cfg-1".to_string())));
    assert_eq!(first.cooldown, None);
    assert_eq!(w.store.disabled().keys().collect::<Vec<_>>(), ["k1"]);
    assert!(w.rt.sleeps().is_empty());
}

#[test]
fn service_blocked_403_disables_the_key() {
    let w = World::new([Answer::reply(403, bodies::service_blocked()), ok("hi")]);
    w.generate(&req(FLASH, "hello")).unwrap();
    let disable = w.store.settles()[0].disable.clone();
    assert_eq!(disable, Some(("403 API_KEY_SERVICE_BLOCKED".to_string(), "cfg-1".to_string())));
}

#[test]
fn resource_403_goes_back_to_the_caller_without_failover_disable_or_cooldown() {
    let w = World::new([Answer::reply(403, bodies::file_denied("abc123")), ok("never")]);
    let f = w.generate(&req(FLASH, "summarise files/abc123")).unwrap_err();
    match &f.error {
        RouterError::UpstreamRejected { status: 403, grpc_status, message } => {
            assert_eq!(grpc_status, "PERMISSION_DENIED");
            assert!(message.contains("File abc123"), "{message}");
        }
        e => panic!("expected UpstreamRejected, got {e:?}"),
    }
    assert_eq!(w.upstream.calls().len(), 1);
    assert_eq!(w.upstream.unused(), 1);
    let s = &w.store.settles()[0];
    assert_eq!((s.outcome, s.release, s.disable.clone(), s.cooldown.clone()), ("client_error", true, None, None));
    assert!(w.store.disabled().is_empty() && w.store.cooling().is_empty());
}

#[test]
fn server_errors_retry_with_backoff_on_untried_keys() {
    let w = World::new([Answer::reply(500, bodies::internal()), Answer::reply(503, bodies::unavailable()), ok("hi")]);
    let s = w.generate(&req(FLASH, "hello")).unwrap();
    assert_eq!(s.key_id, "k3");
    assert_eq!(w.keys_called(), ["k1", "k2", "k3"]);
    // Full jitter at one half: 100 ms * 2^0 / 2, then 100 ms * 2^1 / 2.
    assert_eq!(w.rt.sleeps(), [50, 100]);
    assert_eq!(w.outcomes(), ["transient", "transient", "success"]);
    let reserves = w.store.reserves();
    assert_eq!(reserves[1].candidates, ["k2", "k3"], "a tried key is offered again only when all were");
    assert!(reserves[0].rid.ends_with(":0") && reserves[2].rid.ends_with(":2"));
    assert_eq!(reserves[0].buckets, ["client", "global"]);
    assert!(reserves[1].buckets.is_empty(), "the caller's rate counts requests, not attempts");
}

#[test]
fn transport_errors_and_timeouts_retry_too() {
    let w = World::new([Answer::Transport("connection refused".into()), Answer::Timeout, ok("hi")]);
    w.generate(&req(FLASH, "hello")).unwrap();
    assert_eq!(w.outcomes(), ["transport", "timeout", "success"]);
    assert_eq!(w.rt.sleeps().len(), 2);
}

#[test]
fn max_attempts_bounds_the_upstream_calls() {
    let mut w = World::new([500, 503, 500].map(|s| Answer::reply(s, bodies::internal())));
    w.settings.max_attempts = 2;
    let f = w.generate(&req(FLASH, "hello")).unwrap_err();
    let message = "upstream answered 503 on every attempt".to_string();
    assert_eq!(f.error, RouterError::UpstreamUnavailable { message });
    assert_eq!(w.upstream.calls().len(), 2);
    assert_eq!(w.upstream.unused(), 1);
    // No sleep after the last attempt: nothing follows it.
    assert_eq!(w.rt.sleeps(), [50]);
}

#[test]
fn the_deadline_stops_retries_and_shrinks_the_upstream_timeout() {
    let mut w = World::new([Answer::Timeout, Answer::Timeout, ok("never")]);
    w.settings.request_deadline_ms = 45_000;
    w.settings.upstream_timeout_ms = 30_000;
    let f = w.generate(&req(FLASH, "hello")).unwrap_err();
    assert_eq!(f.error, RouterError::UpstreamTimeout);
    let timeouts: Vec<u64> = w.upstream.calls().iter().map(|c| c.timeout_ms).collect();
    // 30 s, a 50 ms backoff, then only what is left of the 45 s.
    assert_eq!(timeouts, [30_000, 14_950]);
    assert_eq!(w.rt.sleeps(), [50]);
    assert_eq!(w.clock.now(), FakeClock::START + 45_000);
    assert_eq!(w.upstream.unused(), 1, "no attempt starts after the deadline");
}

#[test]
fn fallback_model_serves_when_the_primary_is_refused_and_allowed() {
    let w = World::new([ok("from flash")]);
    w.store.refuse(Some(PRO), LimitKind::Rpm, Some(5_000));
    let mut r = req(PRO, "hello");
    r.allow_fallback = true;
    let s = w.generate(&r).unwrap();
    assert_eq!((s.model_used.as_str(), s.key_id.as_str()), (FLASH, "k1"));
    let models: Vec<_> = w.store.reserves().iter().map(|r| r.model.clone().unwrap()).collect();
    assert_eq!(models, [PRO, FLASH]);
    assert_eq!(w.upstream.calls()[0].model, FLASH);
}

#[test]
fn without_allow_fallback_a_refusal_is_a_429() {
    let w = World::new([]);
    w.store.refuse(Some(PRO), LimitKind::Rpm, Some(5_000));
    let f = w.generate(&req(PRO, "hello")).unwrap_err();
    let retry_after_ms = Some(5_000);
    assert_eq!(f.error, RouterError::NoCapacity { limit: LimitKind::Rpm, retry_after_ms, bucket: None });
    assert_eq!(w.store.reserves().len(), 1);
}

#[test]
fn a_caller_limit_ends_the_walk_even_with_fallbacks() {
    let w = World::new([]);
    w.store.refuse(None, LimitKind::ClientRate, Some(1_000));
    let mut r = req(PRO, "hello");
    r.allow_fallback = true;
    let f = w.generate(&r).unwrap_err();
    assert!(matches!(f.error, RouterError::NoCapacity { limit: LimitKind::ClientRate, .. }), "{:?}", f.error);
    assert_eq!(w.store.reserves().len(), 1);
}

#[test]
fn settle_carries_the_real_usage() {
    let w = World::new([Answer::reply(200, bodies::ok("forty-two", 42, 7))]);
    let s = w.generate(&req(FLASH, "what is six times seven?")).unwrap();
    assert_eq!((s.usage.input, s.usage.output, s.usage.total), (42, 7, 49));
    let settle = &w.store.settles()[0];
    assert_eq!((settle.input, settle.output, settle.release), (Some(42), 7, false));
    // Reserved before the call: the prompt's UTF-8 bytes, an upper bound.
    assert_eq!(w.store.reserves()[0].est, "what is six times seven?".len() as u64);
}

#[test]
fn a_store_error_on_reserve_is_store_unavailable() {
    let w = World::new([]);
    w.store.fail_reserve(StoreError::Timeout);
    let f = w.generate(&req(FLASH, "hello")).unwrap_err();
    assert_eq!(f.error, RouterError::StoreUnavailable { message: "timed out".into() });
    assert!(w.upstream.calls().is_empty());
}

#[test]
fn an_unknown_model_is_refused_before_any_round_trip() {
    let w = World::new([]);
    let f = w.generate(&req("gemini-9", "hello")).unwrap_err();
    assert_eq!(f.error, RouterError::UnknownModel { model: "gemini-9".into() });
    assert!(w.store.reserves().is_empty());
}

#[test]
fn no_secret_set_is_a_config_error_and_blank_counts_as_unset() {
    let mut w = World::new([]);
    w.secrets = FakeSecrets::default().with("k1", "  \n");
    let f = w.generate(&req(FLASH, "hello")).unwrap_err();
    assert!(matches!(&f.error, RouterError::ConfigInvalid { errors } if errors[0].contains(FLASH)), "{:?}", f.error);
    assert!(w.store.reserves().is_empty());
}

#[test]
fn only_keys_with_a_secret_are_offered_and_the_secret_is_trimmed() {
    let mut w = World::new([ok("hi")]);
    w.secrets = FakeSecrets::default().with("k2", " AIzaSyK2-secret-value-0000000000000\n");
    w.generate(&req(FLASH, "hello")).unwrap();
    assert_eq!(w.store.reserves()[0].candidates, ["k2"]);
    assert_eq!(w.upstream.calls()[0].api_key, "AIzaSyK2-secret-value-0000000000000");
}

#[test]
fn a_prompt_larger_than_every_key_tpm_is_refused() {
    let w = World::new([]);
    let prompt = "a".repeat(300_000);
    let f = w.generate(&req(FLASH, &prompt)).unwrap_err();
    assert_eq!(f.error, RouterError::PromptTooLarge { estimate: 300_000 });
    assert!(w.upstream.calls().is_empty());
}

#[test]
fn a_model_outside_the_callers_list_is_403_before_any_redis_call_and_fallbacks_it_may_not_use_are_skipped() {
    let w = World::new([]);
    let limited = Caller { models: Some(vec![FLASH.into()]), ..caller() };
    let f = block_on(w.router().generate(&req(PRO, "hello"), &limited)).unwrap_err();
    assert_eq!(f.error, RouterError::ModelNotAllowed { model: PRO.into() });
    assert_eq!((f.error.status(), f.error.code()), (403, "model_not_allowed"));
    assert!(w.store.reserves().is_empty() && w.keys_called().is_empty());
    // Allowed: it is served; a budget-less caller sends no budget.
    let w = World::new([ok("hi")]);
    assert!(block_on(w.router().generate(&req(FLASH, "hello"), &limited)).is_ok());
    assert_eq!(limited.budget(), None);
    let budgeted = Caller { daily_tokens: Some(10), ..caller() };
    assert_eq!(budgeted.budget().map(|b| (b.daily, b.tpm)), Some((Some(10), None)));
}

#[test]
fn a_one_shot_success_defers_its_settle_while_failure_settles_run_inline() {
    // k1 answers 429, k2 answers: the cooldown is written before k2 is reserved, and the
    // success's settle is handed back to run after the answer.
    let w = World::new([Answer::reply(429, bodies::quota_per_minute(FLASH, 17)), ok("hi")]);
    let s = block_on(w.router().generate(&req(FLASH, "hi"), &caller())).unwrap();
    assert_eq!(w.outcomes(), ["rate_limited"], "only the failure settled before the answer");
    assert_eq!(w.store.reserves().len(), 2);
    let d = s.deferred.expect("the success settle is deferred");
    assert_eq!(d.key_id(), s.key_id);
    let spec = d.settle_spec();
    assert_eq!((spec.outcome, spec.release, spec.input, spec.output), ("success", false, Some(12), 3));
    assert!(spec.cooldown.is_none() && spec.disable.is_none() && spec.conv.is_none());
    assert_eq!(d.settle_call(), crate::store::settle_call(&spec));
    block_on(w.router().settle_deferred(&d)).unwrap();
    assert_eq!(w.outcomes(), ["rate_limited", "success"]);
}

/// 20 keys of one model, one request per minute each.
fn large_world(answers: usize) -> World {
    let ids: Vec<String> = (0..20).map(|i| format!("w{i:02}")).collect();
    let keys: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"key_id": "{id}", "model_name": "{FLASH}", "rpm": 1, "tpm": 250000, "rpd": 250}}"#))
        .collect();
    let mut w = World::new((0..answers).map(|_| ok("hi")));
    w.pool = KeyPool::parse(&format!(r#"{{"keys": [{}]}}"#, keys.join(","))).unwrap();
    w.secrets = FakeSecrets::for_keys(ids.iter().map(String::as_str));
    w
}

#[test]
fn a_large_pool_is_offered_a_window_then_every_other_key_so_admission_stays_exact() {
    use crate::engine::failover::OFFER_WINDOW;
    let w = large_world(20);
    let mut used = std::collections::BTreeSet::new();
    for i in 0..20u64 {
        w.rt.random.set(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        used.insert(w.generate(&req(FLASH, "hi")).unwrap().key_id);
    }
    assert_eq!(used.len(), 20, "every key admits its one request: a refused window widens");
    let reserves = w.store.reserves();
    assert_eq!(reserves[0].candidates.len(), OFFER_WINDOW, "the first offer is a window");
    // Once every key is used, the window refuses, then the 12 others do: two reservations.
    let before = reserves.len();
    let f = w.generate(&req(FLASH, "hi")).unwrap_err();
    assert!(matches!(f.error, RouterError::NoCapacity { limit: LimitKind::Rpm, .. }), "{:?}", f.error);
    let last = &w.store.reserves()[before..];
    assert_eq!(last.len(), 2);
    assert_eq!((last[0].candidates.len(), last[1].candidates.len()), (OFFER_WINDOW, 20 - OFFER_WINDOW));
    assert!(last[1].candidates.iter().all(|k| !last[0].candidates.contains(k)));
    assert!(w.upstream.calls().len() == 20 && last.iter().all(|r| r.buckets == ["client", "global"]));
}

#[test]
fn the_window_is_drawn_by_weight_and_reaches_every_key() {
    use crate::engine::failover::sample_window;
    let mut pool = large_world(0).pool;
    pool.keys[0].weight = 10.0;
    let keys: Vec<&crate::config::KeyConfig> = pool.keys.iter().collect();
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for seed in 0..2000u64 {
        let w = sample_window(&keys, 4, seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        assert_eq!(w.len(), 4);
        for k in w {
            *seen.entry(k.key_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 20, "every key is offered over time");
    let heavy = seen["w00"];
    assert!(seen.iter().filter(|(k, _)| *k != "w00").all(|(_, &n)| n < heavy), "{seen:?}");
}

#[test]
fn a_request_naming_a_file_is_offered_every_key_so_the_owner_group_is_among_them() {
    // `reserve_v1` keeps only the owner group's keys, which only Redis knows: a window of 8 of
    // the 20 keys might hold none of them, so the engine offers all 20 in one reservation.
    let w = large_world(1);
    let mut r = req(FLASH, "describe");
    r.contents = vec![json!({"role": "user", "parts": [{"text": "describe"},
        {"fileData": {"fileUri": "files/abc", "mimeType": "image/png"}}]})];
    w.generate(&r).unwrap();
    let reserves = w.store.reserves();
    assert_eq!(reserves.len(), 1);
    assert_eq!(reserves[0].candidates.len(), 20, "no window for a request naming a file");
    // Without a file the same pool is offered a window.
    let w = large_world(1);
    w.generate(&req(FLASH, "hi")).unwrap();
    assert_eq!(w.store.reserves()[0].candidates.len(), crate::engine::failover::OFFER_WINDOW);
}

#[test]
fn a_budgeted_one_shot_success_still_defers_its_settle_and_the_deferred_settle_corrects_the_budget() {
    let w = World::new([ok("hi")]);
    let budgeted = Caller { daily_tokens: Some(10_000), tpm: Some(5_000), ..caller() };
    let s = block_on(w.router().generate(&req(FLASH, "hi"), &budgeted)).unwrap();
    // One reservation (with the budget block) and no settle before the answer.
    assert_eq!((w.store.reserves().len(), w.outcomes().len()), (1, 0));
    let d = s.deferred.expect("the success settle is deferred");
    let spec = d.settle_spec();
    let b = spec.budget.clone().expect("the deferred settle carries the budget debit");
    assert_eq!(b.client, "alice");
    assert!(b.est > 0);
    let (keys, args) = d.settle_call();
    assert!(keys.iter().any(|k| k.contains("alice")) && args[0].contains("\"budget\":{"), "{args:?}");
    block_on(w.router().settle_deferred(&d)).unwrap();
    assert_eq!(w.outcomes(), ["success"]);
}
