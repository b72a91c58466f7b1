//! The `reserve_v1` and `settle_v1` scripts on a real Redis, decoded by the Rust contract.
//!
//! Every reply shape each script can return is produced here by setting up the Redis state that
//! leads to it, with KEYS and ARGV built by `reserve_call` / `settle_call` and the reply decoded
//! by `parse_reserve` / `parse_settle`. So a script and its Rust side cannot drift apart (a
//! renamed ARGV field, a reordered KEYS list, a renamed reply field) without a test failing.
//!
//! Each test starts its own `redis-server` (no persistence, a free port, killed on drop) and
//! talks to it over a minimal RESP client (`support`). A missing `redis-server` fails the tests
//! with a clear message instead of skipping them: CI installs it, and a silent pass would hide
//! the gap.

use llm_key_router_core::config::KeyConfig;
use llm_key_router_core::error::LimitKind;
use llm_key_router_core::store::{
    keys, parse_reserve, parse_settle, reserve_call, settle_call, Bucket, BudgetSettle, BudgetSpec, ConvLock,
    ConvSettle, CooldownSpec, Reservation, ReserveSpec, SettleSpec, Settled, RESERVE, SETTLE,
};
use support::{Redis, Server};

mod support;

// --------------------------------------------------------------------------- fixtures

fn key(id: &str, model: &str, rpm: u32, tpm: u32, rpd: u32) -> KeyConfig {
    KeyConfig {
        key_id: id.into(),
        model: model.into(),
        provider: "gemini".into(),
        rpm,
        tpm,
        rpd,
        active: true,
        quota_group: id.into(),
        weight: 1.0,
    }
}

const CFG: &str = "cfg-1";
const WINDOW_MS: u64 = 60_000;

fn spec<'a>(rid: &str, est: u64, candidates: Vec<&'a KeyConfig>) -> ReserveSpec<'a> {
    ReserveSpec {
        rid: rid.into(),
        est,
        window_ms: WINDOW_MS,
        cfg: CFG.into(),
        buckets: vec![],
        conv: None,
        budget: None,
        owned: vec![],
        candidates,
        model: Some("m".into()),
    }
}

fn conv(id: &str, lock_id: &str, pick_model: bool) -> ConvLock {
    ConvLock {
        id: id.into(),
        owner: "client-1".into(),
        lock_id: lock_id.into(),
        lock_ms: 30_000,
        pick_model,
        history_budget: None,
    }
}

/// A conversation owned by `client-1`, as `conversations.rs` creates it.
fn create_conv(r: &mut Redis, id: &str, fields: &[(&str, &str)], turns: &[&str]) {
    let meta = keys::conv_meta(id);
    let mut args = vec!["HSET", meta.as_str(), "owner", "client-1"];
    for (f, v) in fields {
        args.extend([*f, *v]);
    }
    r.cmd(&args);
    let list = keys::conv_turns(id);
    for t in turns {
        r.cmd(&["RPUSH", &list, t]);
    }
}

fn reserve(r: &mut Redis, spec: &ReserveSpec) -> (Reservation, String) {
    let (v, raw) = r.eval(&RESERVE, &reserve_call(spec));
    let parsed = parse_reserve(&v).unwrap_or_else(|e| panic!("reserve_v1 reply {raw} did not decode: {e}"));
    (parsed, raw)
}

/// Reserves and returns (rid, now, day) of a reservation that must succeed.
fn reserved(r: &mut Redis, spec: &ReserveSpec) -> (String, u64, i64) {
    match reserve(r, spec) {
        (Reservation::Reserved { rid, now, day, .. }, _) => (rid, now, day),
        (other, raw) => panic!("expected Reserved, got {other:?} from {raw}"),
    }
}

fn refused(r: &mut Redis, spec: &ReserveSpec) -> (LimitKind, Option<u64>, u64, Option<(u64, u64)>) {
    match reserve(r, spec) {
        (Reservation::Refused { limit, retry_at, now, bucket }, _) => (limit, retry_at, now, bucket),
        (other, raw) => panic!("expected Refused, got {other:?} from {raw}"),
    }
}

fn settle_spec<'a>(k: &'a KeyConfig, rid: &str, day: i64) -> SettleSpec<'a> {
    SettleSpec {
        key: k,
        client_id: "client-1",
        rid: rid.into(),
        day,
        outcome: "success",
        release: false,
        input: Some(12),
        output: 3,
        thoughts: 1,
        cooldown: None,
        disable: None,
        conv: None,
        budget: None,
    }
}

fn settle(r: &mut Redis, spec: &SettleSpec) -> (Settled, String) {
    let (v, raw) = r.eval(&SETTLE, &settle_call(spec));
    let parsed = parse_settle(&v).unwrap_or_else(|e| panic!("settle_v1 reply {raw} did not decode: {e}"));
    (parsed, raw)
}

// --------------------------------------------------------------------------- reserve_v1: admitted

#[test]
fn reserved_without_a_conversation() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let (got, raw) = reserve(&mut r, &spec("rid-1", 10, vec![&k]));
    assert!(!raw.contains("history"), "no conversation, no history key: {raw}");
    match got {
        Reservation::Reserved { key_id, model, rid, now, day, est, history, system } => {
            assert_eq!((key_id.as_str(), model.as_deref(), rid.as_str()), ("k1", Some("m"), "rid-1"));
            assert!(now > 1_700_000_000_000 && day > 19_000, "now {now}, day {day}");
            assert_eq!((est, history, system), (10, vec![], None));
        }
        other => panic!("expected Reserved, got {other:?}"),
    }
}

/// Issue 14: the caller's daily budget is checked with the estimate, debited on admission,
/// corrected to the real usage by the settle, and a refusal consumes no key quota.
#[test]
fn client_budget_is_checked_debited_and_settled() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 100, 100_000, 1000);
    let budget = BudgetSpec { client: "client-1".into(), daily: Some(100), tpm: None };
    let mut sp = spec("b-1", 60, vec![&k]);
    sp.budget = Some(budget.clone());
    let (rid, _, day) = reserved(&mut r, &sp);
    let used = |r: &mut Redis| match r.cmd(&["HGET", &keys::client_budget_day("client-1"), "used"]) {
        support::Resp::Bulk(Some(v)) => v.parse::<u64>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(used(&mut r), 60);
    // The real usage (12 in + 3 out + 1 thinking) replaces the estimate.
    let mut st = settle_spec(&k, &rid, day);
    st.budget = Some(BudgetSettle { client: "client-1".into(), day, est: 60 });
    settle(&mut r, &st);
    assert_eq!(used(&mut r), 16);
    // 16 + 90 > 100: refused until the next Pacific midnight, and no key quota is taken.
    let mut sp = spec("b-2", 90, vec![&k]);
    sp.budget = Some(budget);
    let (limit, retry_at, now, _) = refused(&mut r, &sp);
    assert_eq!(limit, LimitKind::ClientBudget);
    assert!(retry_at.unwrap() > now);
    match r.cmd(&["ZCARD", &keys::log("k1", "m")]) {
        support::Resp::Int(n) => assert_eq!(n, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reserved_with_a_conversation_and_an_empty_history() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    create_conv(&mut r, "c1", &[], &[]);
    let mut sp = spec("rid-1", 10, vec![&k]);
    sp.conv = Some(conv("c1", "rid-1", false));
    let (got, raw) = reserve(&mut r, &sp);
    // The case the decoder must handle explicitly: cjson writes the empty LRANGE table as `{}`.
    assert!(raw.contains(r#""history":{}"#), "{raw}");
    assert!(
        matches!(&got, Reservation::Reserved { history, system: None, est: 10, .. } if history.is_empty()),
        "{got:?}"
    );
    assert_eq!(r.get(&keys::conv_lock("c1")).as_deref(), Some("rid-1"), "the reservation took the lock");
}

#[test]
fn reserved_with_a_conversation_history_and_system_instruction() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let turns = [r#"{"role":"user","parts":[{"text":"hi \"there\""}]}"#, r#"{"role":"model","parts":[{"text":"yo"}]}"#];
    create_conv(&mut r, "c1", &[("system", "be brief"), ("hist_est", "7")], &turns);
    let mut sp = spec("rid-1", 10, vec![&k]);
    sp.conv = Some(conv("c1", "rid-1", false));
    match reserve(&mut r, &sp).0 {
        Reservation::Reserved { history, system, est, .. } => {
            assert_eq!(history, turns);
            assert_eq!(system.as_deref(), Some("be brief"));
            assert_eq!(est, 17, "the history's estimate is reserved too");
        }
        other => panic!("expected Reserved, got {other:?}"),
    }
}

#[test]
fn with_a_budget_only_the_newest_turns_that_fit_are_read_back() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1_000_000, 100);
    // 100 turns of 50 tokens each, user and model alternating, stored as the engine stores them;
    // the 41st from the end is a tool result, which never opens an exchange.
    let turns: Vec<String> = (0..100)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "model" };
            let part = if i == 60 { r#"{"functionResponse":{"name":"f","response":{}}}"# } else { r#"{"text":"x"}"# };
            format!(r#"{{"at":{i},"est":50,"parts":[{part}],"role":"{role}"}}"#)
        })
        .collect();
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    create_conv(&mut r, "c1", &[("hist_est", "5000")], &refs);
    let mut sp = spec("rid-1", 10, vec![&k]);
    sp.conv = Some(ConvLock { history_budget: Some(2_000), ..conv("c1", "rid-1", false) });
    match reserve(&mut r, &sp).0 {
        Reservation::Reserved { history, est, .. } => {
            // The 41 newest turns (2,050 tokens) exceed the budget and hold openers: the
            // engine cuts them at turn 62 (60 is a tool result), as it would the whole history.
            assert_eq!(history[0], r#"{"skipped":59}"#);
            assert_eq!(&history[1..], &refs[59..]);
            assert_eq!(est, 10 + 41 * 50, "what was read is reserved, not the whole history");
        }
        other => panic!("expected Reserved, got {other:?}"),
    }
    // Past the opener rule: with only tool results and model turns in the newest turns,
    // reading goes on until a user turn opens an exchange.
    let tail: Vec<String> = (0..60)
        .map(|i| {
            let (role, part) = if i % 2 == 0 {
                ("user", r#"{"functionResponse":{"name":"f","response":{}}}"#)
            } else {
                ("model", r#"{"functionCall":{"name":"f","args":{"role":"user"}}}"#)
            };
            format!(r#"{{"at":{i},"est":50,"parts":[{part}],"role":"{role}"}}"#)
        })
        .collect();
    let list = keys::conv_turns("c1");
    for t in &tail {
        r.cmd(&["RPUSH", &list, t]);
    }
    let mut sp = spec("rid-2", 10, vec![&k]);
    sp.conv = Some(ConvLock { history_budget: Some(2_000), ..conv("c1", "rid-1", false) });
    match reserve(&mut r, &sp).0 {
        Reservation::Reserved { history, .. } => {
            assert_eq!(history[0], r#"{"skipped":98}"#, "the last opener is turn 98");
            assert_eq!(history.len(), 1 + 2 + 60);
        }
        other => panic!("expected Reserved, got {other:?}"),
    }
}

#[test]
fn reserved_with_pick_model_uses_the_conversations_model() {
    let s = Server::start();
    let mut r = s.client();
    let k1 = key("k1", "m", 10, 1000, 100);
    let k2 = key("k2", "m2", 10, 1000, 100);
    create_conv(&mut r, "c1", &[("model", "m2")], &[]);
    let mut sp = spec("rid-1", 10, vec![&k1, &k2]);
    sp.conv = Some(conv("c1", "rid-1", true));
    match reserve(&mut r, &sp).0 {
        Reservation::Reserved { key_id, model, .. } => {
            assert_eq!((key_id.as_str(), model.as_deref()), ("k2", Some("m2")))
        }
        other => panic!("expected Reserved, got {other:?}"),
    }
}

// --------------------------------------------------------------------------- reserve_v1: refused

#[test]
fn refused_rpm_says_when_the_oldest_entry_leaves_the_window() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 1, 1000, 100);
    let (_, first, _) = reserved(&mut r, &spec("rid-1", 10, vec![&k]));
    let (limit, retry_at, now, bucket) = refused(&mut r, &spec("rid-2", 10, vec![&k]));
    assert_eq!((limit, retry_at, bucket), (LimitKind::Rpm, Some(first + WINDOW_MS), None));
    assert!(now >= first);
}

#[test]
fn refused_tpm() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 100, 100);
    let (_, first, _) = reserved(&mut r, &spec("rid-1", 60, vec![&k]));
    let (limit, retry_at, _, bucket) = refused(&mut r, &spec("rid-2", 60, vec![&k]));
    assert_eq!((limit, retry_at, bucket), (LimitKind::Tpm, Some(first + WINDOW_MS), None));
}

#[test]
fn refused_rpd_until_the_next_pacific_midnight() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 1);
    reserved(&mut r, &spec("rid-1", 10, vec![&k]));
    let (limit, retry_at, now, bucket) = refused(&mut r, &spec("rid-2", 10, vec![&k]));
    assert_eq!((limit, bucket), (LimitKind::Rpd, None));
    let at = retry_at.expect("rpd frees at midnight");
    assert!(at > now && at <= now + 25 * 3_600_000, "retry_at {at}, now {now}");
}

#[test]
fn refused_cooldown_until_the_stored_time() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let (_, now, _) = reserved(&mut r, &spec("rid-0", 1, vec![&key("k0", "m", 10, 1000, 100)]));
    let until = (now + 3_600_000).to_string();
    r.cmd(&["HSET", &keys::cooldown("k1", "m"), "until", &until, "reason", "429"]);
    let (limit, retry_at, _, bucket) = refused(&mut r, &spec("rid-1", 10, vec![&k]));
    assert_eq!((limit, retry_at, bucket), (LimitKind::Cooldown, Some(now + 3_600_000), None));
}

#[test]
fn refused_disabled_has_no_retry_time() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    r.cmd(&["HSET", &keys::disabled("k1"), "reason", "API_KEY_INVALID", "cfg", CFG, "at", "1"]);
    let (_, raw) = reserve(&mut r, &spec("rid-1", 10, vec![&k]));
    assert!(raw.contains(r#""retry_at":null"#), "{raw}");
    let (limit, retry_at, _, bucket) = refused(&mut r, &spec("rid-1", 10, vec![&k]));
    assert_eq!((limit, retry_at, bucket), (LimitKind::Disabled, None, None));
}

fn token_bucket(key: String, name: &'static str, burst: u32) -> Bucket {
    Bucket { key, name, rate_per_min: 1, burst }
}

#[test]
fn refused_client_rate_with_the_bucket_figures() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let with_bucket = |rid: &str| {
        let mut sp = spec(rid, 10, vec![&k]);
        sp.buckets = vec![token_bucket(keys::client_bucket("client-1"), "client", 1)];
        sp
    };
    reserved(&mut r, &with_bucket("rid-1"));
    let (limit, retry_at, now, bucket) = refused(&mut r, &with_bucket("rid-2"));
    assert_eq!((limit, bucket), (LimitKind::ClientRate, Some((1, 0))));
    assert!(retry_at.is_some_and(|t| t > now && t <= now + 60_000), "{retry_at:?} vs {now}");
}

#[test]
fn refused_global_rate_with_the_bucket_figures() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let with_buckets = |rid: &str| {
        let mut sp = spec(rid, 10, vec![&k]);
        sp.buckets = vec![
            token_bucket(keys::client_bucket("client-1"), "client", 5),
            token_bucket(keys::GLOBAL_BUCKET.to_string(), "global", 1),
        ];
        sp
    };
    reserved(&mut r, &with_buckets("rid-1"));
    let (limit, retry_at, now, bucket) = refused(&mut r, &with_buckets("rid-2"));
    assert_eq!((limit, bucket), (LimitKind::GlobalRate, Some((1, 0))));
    assert!(retry_at.is_some_and(|t| t > now), "{retry_at:?} vs {now}");
}

#[test]
fn prompt_too_large_for_every_candidate() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 100, 100);
    assert_eq!(reserve(&mut r, &spec("rid-1", 101, vec![&k])).0, Reservation::PromptTooLarge);
}

#[test]
fn no_candidates_for_the_model() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 100, 100);
    let mut sp = spec("rid-1", 1, vec![&k]);
    sp.model = Some("other".into());
    let (got, raw) = reserve(&mut r, &sp);
    assert!(raw.contains(r#""model":"other""#), "{raw}");
    assert_eq!(got, Reservation::NoCandidates);
    assert_eq!(reserve(&mut r, &spec("rid-2", 1, vec![])).0, Reservation::NoCandidates);
}

#[test]
fn conversation_not_found_for_another_owner_or_no_conversation() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let mut sp = spec("rid-1", 10, vec![&k]);
    sp.conv = Some(conv("nope", "rid-1", false));
    assert_eq!(reserve(&mut r, &sp).0, Reservation::ConversationNotFound);
    create_conv(&mut r, "c1", &[], &[]);
    sp.conv = Some(ConvLock { owner: "client-2".into(), ..conv("c1", "rid-1", false) });
    assert_eq!(reserve(&mut r, &sp).0, Reservation::ConversationNotFound);
}

#[test]
fn conversation_busy_while_another_request_holds_the_lock() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    create_conv(&mut r, "c1", &[], &[]);
    r.cmd(&["SET", &keys::conv_lock("c1"), "rid-other", "PX", "30000"]);
    let mut sp = spec("rid-1", 10, vec![&k]);
    sp.conv = Some(conv("c1", "rid-1", false));
    assert_eq!(reserve(&mut r, &sp).0, Reservation::ConversationBusy);
}

// --------------------------------------------------------------------------- settle_v1

#[test]
fn settled_without_cooldown_or_conversation() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let (rid, reserved_at, day) = reserved(&mut r, &spec("rid-1", 10, vec![&k]));
    let (got, raw) = settle(&mut r, &settle_spec(&k, &rid, day));
    assert!(raw.contains(r#""cooldown_until":null"#) && raw.contains(r#""message_count":null"#), "{raw}");
    assert!(got.now >= reserved_at);
    assert_eq!((got.cooldown_until, got.message_count), (None, None));
    let mut release = settle_spec(&k, &rid, day);
    release.release = true;
    release.outcome = "not_sent";
    assert_eq!(settle(&mut r, &release).0.cooldown_until, None);
}

#[test]
fn settled_with_each_kind_of_cooldown() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    let (rid, _, day) = reserved(&mut r, &spec("rid-1", 10, vec![&k]));
    let mut sp = settle_spec(&k, &rid, day);
    sp.outcome = "rate_limited";

    sp.cooldown = Some(CooldownSpec::Delay { ms: 5_000, reason: "429 retryDelay".into() });
    let got = settle(&mut r, &sp).0;
    assert_eq!(got.cooldown_until, Some(got.now + 5_000));

    sp.cooldown = Some(CooldownSpec::Unknown { reason: "429 without details".into() });
    let got = settle(&mut r, &sp).0;
    let until = got.cooldown_until.expect("a cooldown");
    // The first strike is 60 s; a longer cooldown already stored is kept.
    assert!(until >= got.now + 5_000 && until <= got.now + 60_000, "{until} vs {}", got.now);

    sp.cooldown = Some(CooldownSpec::UntilPacificMidnight { reason: "daily quota".into() });
    let got = settle(&mut r, &sp).0;
    let until = got.cooldown_until.expect("a cooldown");
    assert!(until > got.now && until <= got.now + 25 * 3_600_000, "{until} vs {}", got.now);
}

#[test]
fn settled_with_a_conversation_counts_messages_and_releases_the_lock() {
    let s = Server::start();
    let mut r = s.client();
    let k = key("k1", "m", 10, 1000, 100);
    create_conv(&mut r, "c1", &[("message_count", "2")], &["t1", "t2"]);
    let (rid, _, day) = reserved(&mut r, &sp_with_conv(&k, "rid-1"));
    let mut st = settle_spec(&k, &rid, day);
    st.conv = Some(ConvSettle {
        id: "c1".into(),
        lock_id: rid.clone(),
        turns: vec!["t3".into(), "t4".into()],
        ttl_s: 3600,
        tokens: 30,
        est: 4,
    });
    let got = settle(&mut r, &st).0;
    assert_eq!((got.message_count, got.cooldown_until), (Some(4), None));
    assert_eq!(r.get(&keys::conv_lock("c1")), None, "the lock is released");

    // A failed attempt appends nothing but still releases the lock it took.
    let (rid, _, day) = reserved(&mut r, &sp_with_conv(&k, "rid-2"));
    let mut st = settle_spec(&k, &rid, day);
    st.conv = Some(ConvSettle { id: "c1".into(), lock_id: rid, turns: vec![], ttl_s: 3600, tokens: 0, est: 0 });
    assert_eq!(settle(&mut r, &st).0.message_count, None);
    assert_eq!(r.get(&keys::conv_lock("c1")), None);
}

fn sp_with_conv<'a>(k: &'a KeyConfig, rid: &str) -> ReserveSpec<'a> {
    let mut sp = spec(rid, 10, vec![k]);
    sp.conv = Some(conv("c1", rid, false));
    sp
}
