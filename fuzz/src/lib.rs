//! Property-based fuzzing of everything that parses outside input: request bodies, routes,
//! tokens, upstream answers and configuration. cargo-fuzz needs a nightly toolchain, which this
//! project does not use, so the targets are proptest strategies run by
//! `cargo test -p llm-key-router-fuzz` (a quick pass) and by the `fuzz-long` binary
//! (`FUZZ_SECONDS=600 cargo run --release -p llm-key-router-fuzz --bin fuzz-long`).
//!
//! Every target checks, for every input: no panic; every error is a 4xx with a stable code;
//! accepted inputs satisfy the invariants the rest of the router relies on (ranges, charsets,
//! round trips).

use llm_key_router_core::config::auth::{self, Clients};
use llm_key_router_core::config::{valid_name, KeyPool, Settings};
use llm_key_router_core::conversations::{self, CreateRequest};
use llm_key_router_core::engine::classify::{self, UpstreamOutcome};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::ids;
use llm_key_router_core::policy;
use llm_key_router_core::quota::{self, Cooldown};
use llm_key_router_core::wire::api::{self, Route};
use llm_key_router_core::wire::gemini::{self, GenerateRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

// ------------------------------------------------------------------------------------------
// Input generators
// ------------------------------------------------------------------------------------------

/// Strings that have broken parsers before: multi-byte characters at every offset, Redis
/// key syntax, control characters, path traversal, huge and NaN-like numbers as text.
const NASTY: &[&str] = &[
    "",
    " ",
    "\n",
    "\u{0}",
    "*",
    ":",
    "{",
    "}",
    "{llmr}",
    "../",
    "..",
    "%2e%2e%2f",
    "conv_",
    "conv_0123456789abcdef0123456789abcdef",
    "conv_0123456789ABCDEF0123456789ABCDEF",
    "é",
    "日本語",
    "😀",
    "Bearer ",
    "bearer\u{e9}",
    "abcdef\u{e9}tok",
    "NaN",
    "Infinity",
    "-0",
    "1e309",
    "18446744073709551616",
    "gemini-2.5-flash",
    "user",
    "model",
    "system",
    "true",
    "null",
    "retry in 1.5s",
    "Please retry in 99999999999999999999999999.9s",
    "GenerateRequestsPerMinutePerProjectPerModel",
    "GenerateRequestsPerDayPerProjectPerModel",
    "type.googleapis.com/google.rpc.QuotaFailure",
    "type.googleapis.com/google.rpc.RetryInfo",
    "type.googleapis.com/google.rpc.ErrorInfo",
    "API_KEY_INVALID",
    "17s",
    "1e300s",
    "-5s",
    "NaNs",
];

pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NASTY).prop_map(str::to_string),
        3 => any::<String>(),
        2 => "[a-z0-9_.:*{}/ -]{0,40}",
        // Long multi-byte text around the 500-byte truncation point of upstream messages.
        1 => (490usize..520, proptest::sample::select(&["é", "日", "😀", "a"][..]))
            .prop_map(|(n, c)| { let mut s = "a".repeat(n % 7); while s.len() < n { s.push_str(c); } s }),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        (-3i64..3).prop_map(Value::from),
        (-1.0f64..3.0).prop_map(|f| json!(f)),
        proptest::sample::select(&[0.0, 2.0, 2.0000001, -0.0, 1e308, -1e308, 1e-308][..]).prop_map(|f| json!(f)),
        proptest::sample::select(&[0u64, 1, 1_000_000, 1_000_001, u64::MAX][..]).prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        nasty_string().prop_map(Value::String),
    ]
}

/// Keys the parsers know, plus arbitrary ones, so objects hit the validation paths.
const FIELDS: &[&str] = &[
    "prompt",
    "contents",
    "model",
    "temperature",
    "max_output_tokens",
    "system",
    "system_instruction",
    "conversation_id",
    "allow_fallback",
    "stream",
    "content",
    "title",
    "metadata",
    "role",
    "parts",
    "text",
    "thought",
    "error",
    "details",
    "reason",
    "status",
    "message",
    "@type",
    "violations",
    "quotaId",
    "retryDelay",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(FIELDS).prop_map(str::to_string), 1 => nasty_string()]
}

/// Any JSON value, biased towards the shapes the router parses.
pub fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)].boxed()
}

fn content() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        4 => nasty_string().prop_map(|t| json!({"text": t})),
        1 => (nasty_string(), any::<bool>()).prop_map(|(t, th)| json!({"text": t, "thought": th})),
        1 => json_value(),
    ];
    let role = prop_oneof![Just(Value::Null), Just(json!("user")), Just(json!("model")), Just(json!("system")), leaf()];
    (maybe(role), proptest::collection::vec(part, 0..4), any::<bool>()).prop_map(|(role, parts, obj)| {
        let mut c = json!({"parts": parts});
        if let Some(r) = role {
            if !r.is_null() {
                c["role"] = r;
            }
        }
        if obj {
            c
        } else {
            Value::Array(vec![c])
        }
    })
}

/// A `/v1/generate` body: mostly well-formed, each field sometimes wrong.
pub fn generate_body() -> impl Strategy<Value = Value> {
    let prompt = prop_oneof![4 => nasty_string().prop_map(Value::String), 1 => leaf()];
    let contents =
        prop_oneof![4 => proptest::collection::vec(content(), 0..4).prop_map(Value::Array), 1 => json_value()];
    let model = prop_oneof![3 => Just(json!("gemini-2.5-flash")), 1 => leaf()];
    (
        maybe(prompt),
        maybe(contents),
        maybe(model),
        maybe(number()),
        maybe(number()),
        maybe(leaf()),
        maybe(leaf()),
        maybe(leaf()),
        maybe((key(), leaf())),
    )
        .prop_map(|(p, c, m, t, mx, sys, af, st, extra)| {
            let mut o = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            };
            put("prompt", p);
            put("contents", c);
            put("model", m);
            put("temperature", t);
            put("max_output_tokens", mx);
            put("system", sys);
            put("allow_fallback", af);
            put("stream", st);
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
}

pub fn content_type() -> impl Strategy<Value = Option<String>> {
    maybe(prop_oneof![
        3 => proptest::sample::select(&[
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            " application/json ;x=y",
            "text/plain",
            "application/jsonx",
            "",
            ";",
            "application/x-www-form-urlencoded",
        ][..]).prop_map(str::to_string),
        1 => nasty_string(),
    ])
}

/// Raw bodies: arbitrary bytes, serialised JSON, and JSON cut short or corrupted.
pub fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => (generate_body(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let s = v.to_string().into_bytes();
            let cut = i.index(s.len() + 1);
            s[..cut].to_vec()
        }),
        1 => (json_value(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, b)| {
            let mut s = v.to_string().into_bytes();
            if !s.is_empty() {
                let at = i.index(s.len());
                s[at] = b;
            }
            s
        }),
        1 => (1usize..200).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        1 => (100usize..400).prop_map(|d| "[".repeat(d).into_bytes()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        3 => proptest::sample::select(&[
            "", "v1", "generate", "conversations", "messages", "health", "stats", "metrics", "dashboard",
            "..", ".", "%2e%2e", "conv_0123456789abcdef0123456789abcdef", "conv_", "*", "{llmr}", "a:b",
        ][..]).prop_map(str::to_string),
        1 => nasty_string(),
    ];
    proptest::collection::vec(seg, 0..6).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "get", ""][..])
            .prop_map(str::to_string),
        1 => nasty_string(),
    ]
}

fn header_value() -> impl Strategy<Value = Option<String>> {
    maybe(prop_oneof![
        2 => nasty_string(),
        2 => (proptest::sample::select(&["Bearer ", "bearer ", "BEARER", "Basic ", "", "  Bearer  "][..]), nasty_string())
            .prop_map(|(a, b)| format!("{a}{b}")),
        // Header values decoded from Latin-1 bytes (obs-text): U+0080..U+00FF, two UTF-8 bytes each.
        1 => proptest::collection::vec(0x20u32..0x100, 0..20)
            .prop_map(|cs| cs.into_iter().filter_map(char::from_u32).collect::<String>()),
    ])
}

fn keys_json() -> impl Strategy<Value = String> {
    let key = (
        prop_oneof![3 => "[a-z0-9-]{1,8}", 1 => nasty_string()],
        prop_oneof![3 => Just("gemini-2.5-flash".to_string()), 1 => Just("gemini-2.5-pro".to_string()), 1 => nasty_string()],
        prop_oneof![5 => Just(json!("gemini")), 1 => leaf()],
        prop_oneof![3 => (1i64..100).prop_map(Value::from), 1 => number()],
        prop_oneof![3 => (1i64..1_000_000).prop_map(Value::from), 1 => number()],
        prop_oneof![3 => (1i64..2000).prop_map(Value::from), 1 => number()],
        maybe(prop_oneof![Just(json!("g1")), leaf()]),
        maybe(number()),
        maybe((key(), leaf())),
    )
        .prop_map(|(id, model, prov, rpm, tpm, rpd, group, weight, extra)| {
            let mut k = json!({"key_id": id, "model_name": model, "provider": prov, "rpm": rpm, "tpm": tpm,
                               "rpd": rpd, "active": true});
            if let Some(g) = group {
                k["quota_group"] = g;
            }
            if let Some(w) = weight {
                k["weight"] = w;
            }
            if let Some((ek, ev)) = extra {
                k[ek] = ev;
            }
            k
        });
    let structured = (
        proptest::collection::vec(key, 0..5),
        maybe(proptest::collection::btree_map(nasty_string(), proptest::collection::vec(nasty_string(), 0..3), 0..3)),
    )
        .prop_map(|(keys, fb)| {
            let mut v = json!({ "keys": keys });
            if let Some(fb) = fb {
                v["fallbacks"] = json!(fb);
            }
            v.to_string()
        });
    prop_oneof![4 => structured, 1 => json_value().prop_map(|v| v.to_string()), 1 => any::<String>()]
}

/// `(CLIENTS_JSON, [(token, id)])`: structured configs whose tokens are known, plus junk.
fn clients_json() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    let client = (
        "[a-z0-9]{8,24}",
        prop_oneof![4 => "[a-z0-9_-]{1,12}", 1 => nasty_string()],
        proptest::collection::vec(
            prop_oneof![4 => proptest::sample::select(&["generate", "conversations", "stats", "admin"][..]).prop_map(str::to_string), 1 => nasty_string()],
            0..4,
        ),
        maybe(number()),
        maybe(number()),
        any::<bool>(),
    );
    let structured = proptest::collection::vec(client, 0..5).prop_map(|cs| {
        let mut toks = Vec::new();
        let arr: Vec<Value> = cs
            .into_iter()
            .map(|(tok, id, scopes, rpm, burst, upper)| {
                let hex: String = auth::sha256(tok.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
                let hex = if upper { hex.to_uppercase() } else { hex };
                toks.push((tok, id.clone()));
                let mut c = json!({"id": id, "token_sha256": hex, "scopes": scopes});
                if let Some(r) = rpm {
                    c["rpm"] = r;
                }
                if let Some(b) = burst {
                    c["burst"] = b;
                }
                c
            })
            .collect();
        (json!({ "clients": arr }).to_string(), toks)
    });
    prop_oneof![
        4 => structured,
        1 => json_value().prop_map(|v| (v.to_string(), vec![])),
        1 => any::<String>().prop_map(|s| (s, vec![])),
        // Non-ASCII where the hex digest goes: slicing by byte offsets must not panic.
        1 => nasty_string().prop_map(|s| (json!({"clients": [{"id": "a", "token_sha256": format!("{s:0>64}"), "scopes": []}]}).to_string(), vec![])),
    ]
}

const SETTINGS: &[&str] = &[
    "LLM_MULTI_KEY_ROUTER_ENABLED",
    "USER_RPM_DEFAULT",
    "USER_BURST_DEFAULT",
    "GLOBAL_RPM_MAX",
    "GLOBAL_BURST_MAX",
    "CONVERSATION_TTL_SECONDS",
    "MAX_ATTEMPTS",
    "REQUEST_DEADLINE_MS",
    "UPSTREAM_TIMEOUT_MS",
    "QUOTA_WINDOW_MS",
    "BACKOFF_BASE_MS",
    "BACKOFF_CAP_MS",
    "MAX_BODY_BYTES",
    "CONTEXT_BUDGET_TOKENS",
    "CLIENTS_JSON",
    "LOG_LEVEL",
    "TOKEN_ESTIMATOR",
    "GEMINI_BASE_URL",
];

fn settings_env() -> impl Strategy<Value = BTreeMap<String, String>> {
    let val = prop_oneof![
        2 => nasty_string(),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|n| n.to_string()),
        1 => proptest::sample::select(&["true", "false", "0", "1", "DEBUG", "warning", "bytes", "chars4",
            "http://x", "https://y/", "ftp://z", " 5 ", "1024", "104857600", "104857601"][..]).prop_map(str::to_string),
        1 => clients_json().prop_map(|(j, _)| j),
    ];
    proptest::collection::btree_map(proptest::sample::select(SETTINGS).prop_map(str::to_string), val, 0..10)
}

fn gemini_error_body() -> impl Strategy<Value = String> {
    let detail = prop_oneof![
        (nasty_string(), proptest::collection::vec(nasty_string(), 0..3)).prop_map(|(ty, ids)| json!({
            "@type": format!("type.googleapis.com/google.rpc.{}", if ty.len() % 2 == 0 { "QuotaFailure".to_string() } else { ty }),
            "violations": ids.iter().map(|i| json!({"quotaId": i})).collect::<Vec<_>>()})),
        nasty_string().prop_map(|d| json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d})),
        nasty_string().prop_map(|r| json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r})),
        json_value(),
    ];
    let structured = (nasty_string(), maybe(nasty_string()), proptest::collection::vec(detail, 0..4)).prop_map(
        |(msg, status, details)| {
            json!({"error": {"code": 429, "message": msg, "status": status, "details": details}}).to_string()
        },
    );
    prop_oneof![4 => structured, 1 => json_value().prop_map(|v| v.to_string()), 1 => any::<String>()]
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if cond {
        Ok(())
    } else {
        Err(TestCaseError::fail(what()))
    }
}

const BODY_CODES: &[&str] =
    &["invalid_body", "unknown_field", "empty_message", "invalid_field", "missing_field", "unsupported_field"];

/// A client-input error: 4xx, a stable snake_case code, a message and a JSON rendering that
/// carries the same code.
fn client_error(e: &RouterError, codes: &[&str]) -> Result<(), TestCaseError> {
    check((400..500).contains(&e.status()), || format!("not a 4xx: {e:?}"))?;
    check(codes.contains(&e.code()), || format!("unexpected code {} ({e:?})", e.code()))?;
    check(!e.message().is_empty(), || format!("empty message: {e:?}"))?;
    let j = e.to_json();
    check(j["error"]["code"] == e.code(), || format!("JSON code differs: {j}"))?;
    check(serde_json::from_str::<Value>(&j.to_string()).is_ok(), || "error JSON does not round-trip".into())
}

fn accepted_request(r: &GenerateRequest) -> Result<(), TestCaseError> {
    check(!r.model.is_empty(), || "empty model accepted".into())?;
    check(!r.contents.is_empty(), || "no contents accepted".into())?;
    for c in &r.contents {
        check(c["role"] == "user" || c["role"] == "model", || format!("bad role passed: {c}"))?;
        let parts = c["parts"].as_array();
        check(parts.is_some_and(|p| !p.is_empty() && p.iter().all(Value::is_object)), || format!("bad parts: {c}"))?;
    }
    if let Some(t) = r.temperature {
        check((0.0..=2.0).contains(&t), || format!("temperature {t} accepted"))?;
    }
    if let Some(m) = r.max_output_tokens {
        check((1..=1_000_000).contains(&m), || format!("max_output_tokens {m} accepted"))?;
    }
    // Translation: history first, then the new turns; config only when set; valid JSON out.
    let history = vec![json!({"role": "user", "parts": [{"text": "h"}]})];
    let g = r.to_gemini(&history);
    let contents = g["contents"].as_array().cloned().unwrap_or_default();
    check(contents.len() == r.contents.len() + 1 && contents[0] == history[0], || format!("history lost: {g}"))?;
    check(contents[1..] == r.contents[..], || "turns changed in translation".into())?;
    check(g.get("systemInstruction").is_some() == r.system.is_some(), || "system dropped/invented".into())?;
    check(g.get("generationConfig").is_some() == (r.temperature.is_some() || r.max_output_tokens.is_some()), || {
        "generationConfig dropped/invented".into()
    })?;
    if let Some(m) = r.max_output_tokens {
        check(g["generationConfig"]["maxOutputTokens"] == m, || "maxOutputTokens changed".into())?;
    }
    let text = g.to_string();
    let back: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("to_gemini JSON: {e}")))?;
    check(same(&back["contents"], &g["contents"]), || "contents do not round-trip through JSON".into())?;
    // The token estimate covers every text the request carries.
    let texts = quota::request_texts(&g);
    let n_texts: usize = contents
        .iter()
        .map(|c| c["parts"].as_array().map_or(0, |p| p.iter().filter(|p| p["text"].is_string()).count()))
        .sum::<usize>()
        + usize::from(r.system.is_some());
    check(texts.len() == n_texts, || format!("estimator sees {} texts, request has {n_texts}", texts.len()))
}

/// Equal JSON, floats within a relative 1e-12 (serde_json without `float_roundtrip` may
/// differ in the last bit of a float; the router never relies on exact float bits).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn prop_parse_json_body((ct, body, max): (Option<String>, Vec<u8>, usize)) -> Result<(), TestCaseError> {
    match api::parse_json_body(ct.as_deref(), &body, max) {
        Ok(v) => {
            check(body.len() <= max, || "body over the limit accepted".into())?;
            let ctv = ct.unwrap_or_default();
            check(ctv.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"), || {
                format!("content type {ctv:?} accepted")
            })?;
            let again: Value = serde_json::from_str(&v.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check(same(&again, &v), || "accepted JSON does not round-trip".into())
        }
        Err(e) => {
            client_error(&e, &["payload_too_large", "unsupported_media_type", "invalid_utf8", "invalid_json"])?;
            if e.status() == 413 {
                check(body.len() > max, || "413 for a body within the limit".into())?;
            }
            Ok(())
        }
    }
}

fn prop_generate((body, default_model): (Value, Option<String>)) -> Result<(), TestCaseError> {
    match GenerateRequest::parse(&body, default_model.as_deref()) {
        Ok(r) => accepted_request(&r),
        Err(e) => client_error(&e, BODY_CODES),
    }
}

fn prop_conversations((create, msg, query): (Value, Value, String)) -> Result<(), TestCaseError> {
    match CreateRequest::parse(&create) {
        Ok(c) => {
            check(c.model.as_ref().is_none_or(|m| m.len() <= 64), || "long model accepted".into())?;
            check(c.title.as_ref().is_none_or(|m| m.len() <= 500), || "long title accepted".into())?;
            check(c.system.as_ref().is_none_or(|m| m.len() <= 100_000), || "long system accepted".into())?;
            check(c.metadata.as_ref().is_none_or(|m| m.is_object() && m.to_string().len() <= 16_384), || {
                "bad metadata accepted".into()
            })?;
        }
        Err(e) => client_error(&e, BODY_CODES)?,
    }
    let id = ids::conversation_id_from([0x5a; 16]);
    match conversations::parse_message(&msg, &id, Some("gemini-2.5-flash".into())) {
        Ok(r) => {
            check(r.conversation_id.as_deref() == Some(id.as_str()), || "conversation id lost".into())?;
            check(r.contents.len() == 1 && r.contents[0]["parts"][0]["text"] == msg["content"], || {
                "message content changed".into()
            })?;
            accepted_request(&r)?;
        }
        Err(e) => client_error(&e, BODY_CODES)?,
    }
    match conversations::page(&query) {
        Ok((offset, limit)) => {
            check(offset <= 1_000_000 && (1..=100).contains(&limit), || format!("page ({offset}, {limit}) accepted"))
        }
        Err(e) => client_error(&e, &["invalid_query"]),
    }
}

fn prop_route((method, path): (String, String)) -> Result<(), TestCaseError> {
    let r = api::route(&method, &path);
    match &r {
        Route::ConvGet(id) | Route::ConvDelete(id) | Route::ConvMessages(id) | Route::ConvSend(id) => {
            check(ids::valid_conversation_id(id), || format!("invalid id {id:?} routed"))?;
            check(path.contains(id.as_str()), || "id not from the path".into())?;
            check(!r.scopes().is_empty(), || "conversation route without scope".into())?;
        }
        Route::Generate | Route::Stats | Route::Metrics | Route::ConvCreate | Route::ConvList => {
            check(!r.scopes().is_empty(), || format!("{r:?} needs no scope"))?;
        }
        _ => {}
    }
    // Everything else about paths: no traversal reaches a handler.
    if path.split('/').any(|s| s == "..") {
        check(matches!(r, Route::NotFound | Route::BadConversationId | Route::MethodNotAllowed { .. }), || {
            format!("{path:?} routed to {r:?}")
        })?;
    }
    Ok(())
}

fn prop_token((authz, goog): (Option<String>, Option<String>)) -> Result<(), TestCaseError> {
    if let Some(t) = auth::extract_token(authz.as_deref(), goog.as_deref()) {
        check(!t.is_empty() && t.trim() == t, || format!("token {t:?} not trimmed"))?;
    }
    Ok(())
}

fn prop_clients((json, toks): (String, Vec<(String, String)>)) -> Result<(), TestCaseError> {
    match Clients::parse(&json) {
        Ok(c) => {
            for cl in &c.clients {
                check(valid_name(&cl.id), || format!("client id {:?} accepted", cl.id))?;
                for n in [cl.rpm, cl.burst].into_iter().flatten() {
                    check((1..=1_000_000_000).contains(&n), || format!("limit {n} accepted"))?;
                }
            }
            let unique = |t: &str| toks.iter().filter(|(o, _)| o == t).count() == 1;
            for (tok, id) in &toks {
                if unique(tok) {
                    let got = c.authenticate(tok).map(|c| c.id.clone());
                    check(got.as_deref() == Some(id.as_str()), || format!("token of {id} authenticates as {got:?}"))?;
                }
                let wrong = format!("{tok}x");
                check(c.authenticate(&wrong).is_none() || toks.iter().any(|(o, _)| *o == wrong), || {
                    "a wrong token authenticated".into()
                })?;
            }
            Ok(())
        }
        Err(errs) => check(!errs.is_empty() && errs.iter().all(|e| e.starts_with("CLIENTS_JSON")), || {
            format!("errors without field names: {errs:?}")
        }),
    }
}

fn prop_keypool(json: String) -> Result<(), TestCaseError> {
    match KeyPool::parse(&json) {
        Ok(p) => {
            check(!p.keys.is_empty(), || "empty pool accepted".into())?;
            for k in &p.keys {
                check(valid_name(&k.key_id) && valid_name(&k.model) && valid_name(&k.quota_group), || {
                    format!("bad name accepted: {k:?}")
                })?;
                check(k.rpm > 0 && k.tpm > 0 && k.rpd > 0, || format!("zero limit accepted: {k:?}"))?;
                check(k.weight.is_finite() && k.weight > 0.0 && k.weight <= 1000.0, || "bad weight".into())?;
            }
            check(p.fingerprint("x") == p.fingerprint("x"), || "fingerprint not deterministic".into())?;
            for (from, to) in &p.fallbacks {
                check(p.serves(from) && to.iter().all(|t| p.serves(t)), || "fallback to an unserved model".into())?;
            }
            Ok(())
        }
        Err(errs) => check(!errs.is_empty(), || "error without messages".into()),
    }
}

fn prop_settings(env: BTreeMap<String, String>) -> Result<(), TestCaseError> {
    match Settings::from_lookup(|n| env.get(n).cloned()) {
        Ok(s) => {
            check(env.contains_key("CLIENTS_JSON"), || "settings without CLIENTS_JSON accepted".into())?;
            check(
                (1..=1_000_000).contains(&s.user_rpm_default) && (1..=1_000_000).contains(&s.user_burst_default),
                || "user limit out of range".into(),
            )?;
            check(s.global_rpm_max >= 1 && s.global_burst_max >= 1, || "global limit out of range".into())?;
            check((60_000..=120_000).contains(&s.window_ms), || "window out of range".into())?;
            check((1024..=100 << 20).contains(&s.max_body_bytes), || "body limit out of range".into())?;
            check(s.gemini_base_url.starts_with("http"), || "base url accepted".into())
        }
        Err(errs) => check(!errs.is_empty(), || "error without messages".into()),
    }
}

fn prop_upstream((status, body): (u16, String)) -> Result<(), TestCaseError> {
    match classify::classify(status, &body) {
        UpstreamOutcome::Success => check((200..300).contains(&status), || "non-2xx success".into())?,
        UpstreamOutcome::RequestRejected { status: s, message, .. } => {
            check((400..500).contains(&s) || s == 502, || format!("client error with status {s}"))?;
            check(message.len() <= 500, || "upstream message not truncated".into())?;
        }
        UpstreamOutcome::Transient { status: s } => check(s == status, || "transient status changed".into())?,
        UpstreamOutcome::RateLimited(_) => check(status == 429, || "rate limited without 429".into())?,
        UpstreamOutcome::KeyRejected { reason } => {
            check(!reason.is_empty(), || "empty reason".into())?;
            // A key is disabled only on Google's word about the key, never on a guess.
            let says_key =
                status == 401 || body.contains("API_KEY_") || classify::KEY_REASONS.iter().any(|r| body.contains(r));
            check(says_key, || format!("key rejected on {status} without a key-level reason"))?;
        }
    }
    match quota::classify_429(&body) {
        Cooldown::Delay { ms, reason } => {
            check(ms >= 1000 && !reason.is_empty(), || format!("cooldown {ms} ms ({reason})"))?;
        }
        Cooldown::UntilPacificMidnight { reason } => {
            check(reason.contains("PerDay"), || "per-day without PerDay".into())?
        }
        Cooldown::Unknown => {}
    }
    let r = gemini::parse_reply(&serde_json::from_str(&body).unwrap_or(Value::Null), "fuzz");
    let _ = r.out.text.len();
    // Masking shows at most the `AIzaSy` prefix and the last 4 characters.
    let m = policy::mask_key(&body);
    check(m.chars().count() <= 11, || format!("mask {m:?} too long"))
}

// ------------------------------------------------------------------------------------------
// Targets and runner
// ------------------------------------------------------------------------------------------

pub type Target = (&'static str, fn(&mut TestRunner) -> Result<(), String>);

fn run<S: Strategy>(
    runner: &mut TestRunner,
    s: S,
    prop: fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String> {
    runner.run(&s, prop).map_err(|e| match e {
        TestError::Fail(why, input) => format!("{why}\nminimal input: {input:?}"),
        TestError::Abort(why) => format!("aborted: {why}"),
    })
}

pub fn targets() -> Vec<Target> {
    vec![
        ("api::parse_json_body", |r| run(r, (content_type(), body_bytes(), 0usize..400), prop_parse_json_body)),
        ("gemini::GenerateRequest::parse+to_gemini (structured)", |r| {
            run(r, (generate_body(), maybe(nasty_string())), prop_generate)
        }),
        ("gemini::GenerateRequest::parse+to_gemini (any JSON)", |r| {
            run(r, (json_value(), maybe(nasty_string())), prop_generate)
        }),
        ("conversations::{CreateRequest::parse, parse_message, page}", |r| {
            let create = prop_oneof![
                json_value(),
                (maybe(nasty_string()), maybe(nasty_string()), maybe(nasty_string()), maybe(json_value()))
                    .prop_map(|(s, m, t, md)| json!({"system": s, "model": m, "title": t, "metadata": md})),
            ];
            let msg = prop_oneof![
                json_value(),
                (leaf(), maybe(number()), maybe(number()), maybe(leaf())).prop_map(|(c, t, m, af)| {
                    let mut v = json!({ "content": c });
                    if let Some(t) = t {
                        v["temperature"] = t;
                    }
                    if let Some(m) = m {
                        v["max_output_tokens"] = m;
                    }
                    if let Some(af) = af {
                        v["allow_fallback"] = af;
                    }
                    v
                }),
            ];
            let query = prop_oneof![
                nasty_string(),
                (nasty_string(), nasty_string()).prop_map(|(a, b)| format!("offset={a}&limit={b}")),
                (any::<i64>(), any::<i64>()).prop_map(|(a, b)| format!("limit={b}&offset={a}&x")),
            ];
            run(r, (create, msg, query), prop_conversations)
        }),
        ("api::route", |r| run(r, (method(), path()), prop_route)),
        ("auth::extract_token", |r| run(r, (header_value(), header_value()), prop_token)),
        ("auth::Clients::parse+authenticate", |r| run(r, clients_json(), prop_clients)),
        ("config::KeyPool::parse", |r| run(r, keys_json(), prop_keypool)),
        ("config::Settings::from_lookup", |r| run(r, settings_env(), prop_settings)),
        ("gemini::classify+quota::classify_429+parse_reply+mask_key", |r| {
            let status = prop_oneof![
                proptest::sample::select(&[200u16, 400, 401, 403, 404, 429, 500, 502, 503, 504, 302, 600][..]),
                any::<u16>()
            ];
            run(r, (status, gemini_error_body()), prop_upstream)
        }),
    ]
}

/// A runner for `cases` cases with a fresh random seed and no failure-persistence files.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, max_shrink_iters: 20_000, ..Config::default() })
}
