//! End-to-end tests: the mock runs in-process on a free port and is driven over HTTP.

use std::time::{Duration, Instant};

use mock_gemini::Config;
use serde_json::{json, Value};

const KEY_A: &str = "AIzaSyTESTKEYaaaaaaaaaaaaaaaaaaaaaaaaa1";
const KEY_B: &str = "AIzaSyTESTKEYbbbbbbbbbbbbbbbbbbbbbbbbb2";
const KEY_DENIED: &str = "AIzaSyTESTKEYdddddddddddddddddddddddd3";
const FLASH: &str = "gemini-2.5-flash";

struct Mock {
    base: String,
    http: reqwest::Client,
}

fn config() -> Value {
    json!({
        "keys": [
            {"api_key": KEY_A, "label": "flash-a", "project": "proj-a"},
            {"api_key": KEY_B, "label": "flash-b", "project": "proj-a"},
            {"api_key": KEY_DENIED, "label": "denied", "project": "proj-d", "permission_denied": true}
        ],
        "projects": {
            "proj-a": {
                "gemini-2.5-flash": {"rpm": 3, "tpm": 1000, "rpd": 100},
                "gemini-2.5-pro": {"rpd": 2},
                "gemini-tpm": {"tpm": 10}
            }
        }
    })
}

async fn start(cfg: Value) -> Mock {
    let cfg = Config::from_json(&cfg.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(mock_gemini::serve(listener, cfg));
    Mock { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() }
}

fn user(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

impl Mock {
    async fn call(&self, key: &str, model: &str, method: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1beta/models/{model}:{method}", self.base))
            .header("x-goog-api-key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn gen(&self, key: &str, model: &str, text: &str) -> (u16, Value) {
        self.call(key, model, "generateContent", &user(text)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.request(method, format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn fault(&self, f: Value) {
        let (s, v) = self.send(reqwest::Method::POST, "/_mock/faults", f).await;
        assert_eq!(s, 200, "{v}");
    }
}

fn text_of(v: &Value) -> &str {
    v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap_or_default()
}

fn sse_events(body: &str) -> Vec<Value> {
    body.split("\r\n\r\n")
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::from_str(s.strip_prefix("data: ").expect("data: prefix")).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_models() {
    let m = start(config()).await;
    assert_eq!(m.get("/_mock/health").await, json!({"ok": true}));
    let r = m.http.get(format!("{}/v1beta/models", m.base)).header("x-goog-api-key", KEY_A).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let names: Vec<&str> = v["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"models/gemini-2.5-flash"));
    assert!(names.contains(&"models/gemini-2.5-pro"));
    assert!(names.contains(&"models/gemini-tpm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_content() {
    let m = start(config()).await;
    let (s, v) = m.gen(KEY_A, FLASH, "What is 2+2?").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(text_of(&v), "4");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["candidates"][0]["content"]["role"], "model");
    assert_eq!(v["candidates"][0]["index"], 0);
    assert_eq!(v["usageMetadata"], json!({"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}));
    assert_eq!(v["modelVersion"], FLASH);
    assert!(v["responseId"].as_str().unwrap().len() >= 16);

    let (_, v) = m.gen(KEY_A, FLASH, "Say 'Hello from Multi-Key Router!' and nothing else.").await;
    assert_eq!(text_of(&v), "Hello from Multi-Key Router!");

    // ?key= and the /v1 path, `models/` prefix repeated.
    let r = m
        .http
        .post(format!("{}/v1/models/models/gemini-2.5-pro:generateContent?key={KEY_B}", m.base))
        .json(&json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "Tell me everything"}]}],
            "generationConfig": {"maxOutputTokens": 2, "thinkingConfig": {"thinkingBudget": 100}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(text_of(&v), "Mock rep");
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 7);
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 3 + 5);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 8 + 2 + 7);

    // Body validation.
    let r = m
        .http
        .post(format!("{}/v1beta/models/{FLASH}:generateContent", m.base))
        .header("x-goog-api-key", KEY_A)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    let (s, v) = m.call(KEY_A, FLASH, "generateContent", &json!({"contents": []})).await;
    assert_eq!((s, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sse_and_array() {
    let m = start(config()).await;
    let r = m
        .http
        .post(format!("{}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", m.base))
        .header("x-goog-api-key", KEY_A)
        .json(&user("Tell me a long story about a crab that routes keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    assert!(!body.contains("[DONE]"));
    let ev = sse_events(&body);
    assert!(ev.len() >= 3, "{body}");
    let full: String = ev.iter().map(text_of).collect();
    assert_eq!(full, "Mock reply to: Tell me a long story about a crab that routes keys");
    assert_eq!(ev[0]["usageMetadata"], json!({"promptTokenCount": 13}));
    for e in &ev[1..ev.len() - 1] {
        assert!(e.get("usageMetadata").is_none());
        assert!(e["candidates"][0].get("finishReason").is_none());
    }
    let last = ev.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let cand = (full.len() as u64).div_ceil(4);
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 13, "candidatesTokenCount": cand, "totalTokenCount": 13 + cand})
    );

    // Without alt=sse: one JSON array.
    let (s, v) = m.call(KEY_A, FLASH, "streamGenerateContent", &user("What is 2+2?")).await;
    assert_eq!(s, 200);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(text_of(&arr[0]), "4");
    assert_eq!(arr[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(arr[1]["usageMetadata"]["totalTokenCount"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_and_auth_errors() {
    let m = start(config()).await;
    let (s, v) = m.call(KEY_A, FLASH, "countTokens", &user("0123456789")).await;
    assert_eq!(s, 200);
    assert_eq!(v["totalTokens"], 3);
    let (s, v) = m
        .call(
            KEY_A,
            FLASH,
            "countTokens",
            &json!({"generateContentRequest": {"model": "models/gemini-2.5-flash",
                "systemInstruction": {"parts": [{"text": "12345678"}]}, "contents": user("abcd")["contents"]}}),
        )
        .await;
    assert_eq!((s, v["totalTokens"].as_u64()), (200, Some(3)));
    let both = json!({"contents": user("x")["contents"], "generateContentRequest": user("x")});
    let (s, v) = m.call(KEY_A, FLASH, "countTokens", &both).await;
    assert_eq!((s, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    // countTokens consumes no quota: rpm 3 still allows 3 generates.
    for _ in 0..3 {
        assert_eq!(m.gen(KEY_A, FLASH, "hi").await.0, 200);
    }

    let (s, v) = m.gen("AIzaSyNOTAKEY", FLASH, "hi").await;
    assert_eq!(s, 400);
    let expected: Value = serde_json::from_str(r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#).unwrap();
    assert_eq!(v, expected);
    let (s, v) = m.gen(KEY_DENIED, FLASH, "hi").await;
    assert_eq!((s, v["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")));
    let (s, _) = m.call(KEY_DENIED, FLASH, "countTokens", &user("x")).await;
    assert_eq!(s, 403);
    let stats = m.get("/_mock/stats").await;
    assert_eq!(stats["keys"]["denied"]["requests"], 1);
    assert_eq!(stats["keys"]["denied"]["errors"], 1);
    assert_eq!(stats["invalid_key_requests"], 1);
    let r = m
        .http
        .post(format!("{}/v1beta/models/{FLASH}:generateContent", m.base))
        .json(&user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_key_accepted_without_keys() {
    let m = start(json!({"enforce_quotas": true})).await;
    let (s, _) = m.gen("whatever-key-123", FLASH, "hi").await;
    assert_eq!(s, 200);
    let stats = m.get("/_mock/stats").await;
    assert!(!stats.to_string().contains("whatever-key-123"));
    assert_eq!(stats["total_requests"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_quota_429_after_exactly_rpm_requests() {
    let m = start(config()).await;
    // Two keys of one project share the quota.
    for (i, k) in [KEY_A, KEY_B, KEY_A].iter().enumerate() {
        let (s, v) = m.gen(k, FLASH, &format!("request {i}")).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = m.gen(KEY_B, FLASH, "one too many").await;
    assert_eq!(s, 429);
    let e = &v["error"];
    assert_eq!(e["code"], 429);
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    assert!(e["message"].as_str().unwrap().contains("Please retry in"));
    let d = e["details"].as_array().unwrap();
    assert_eq!(d[0]["@type"], "type.googleapis.com/google.rpc.QuotaFailure");
    let viol = &d[0]["violations"][0];
    assert_eq!(viol["quotaId"], "GenerateRequestsPerMinutePerProjectPerModel-FreeTier");
    assert_eq!(viol["quotaMetric"], "generativelanguage.googleapis.com/generate_content_free_tier_requests");
    assert_eq!(viol["quotaDimensions"], json!({"location": "global", "model": FLASH}));
    assert_eq!(viol["quotaValue"], "3");
    assert_eq!(d[1]["@type"], "type.googleapis.com/google.rpc.Help");
    assert_eq!(d[2]["@type"], "type.googleapis.com/google.rpc.RetryInfo");
    let delay = d[2]["retryDelay"].as_str().unwrap();
    let secs: u64 = delay.trim_end_matches('s').parse().unwrap();
    assert!((55..=60).contains(&secs), "{delay}");

    // Another model of the same project is unaffected (its own group).
    assert_eq!(m.gen(KEY_A, "gemini-2.5-pro", "hi").await.0, 200);

    let stats = m.get("/_mock/stats").await;
    let g = &stats["groups"]["proj-a/gemini-2.5-flash"];
    assert_eq!(g["requests"], 4);
    assert_eq!(g["ok"], 3);
    assert_eq!(g["status_429"], 1);
    assert_eq!(g["max_requests_in_rolling_minute"], 4);
    assert_eq!(g["max_admitted_in_rolling_minute"], 3);
    assert_eq!(g["requests_today"], 3);
    assert_eq!(stats["keys"]["flash-b"]["status_429"], 1);
    assert_eq!(stats["keys"]["flash-b"]["requests"], 2);
    assert_eq!(stats["keys"]["flash-a"]["max_requests_in_rolling_minute"], 3);

    // Advancing the mock's clock by a minute frees the window.
    let (s, _) = m.send(reqwest::Method::POST, "/_mock/clock", json!({"advance_ms": 60_000})).await;
    assert_eq!(s, 200);
    assert_eq!(m.gen(KEY_A, FLASH, "again").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_and_rpd_quotas() {
    let m = start(config()).await;
    // gemini-tpm: 10 input tokens per minute. 8 bytes → 2 tokens; 5 such fit, the 6th not.
    for _ in 0..5 {
        assert_eq!(m.gen(KEY_A, "gemini-tpm", "abcdefgh").await.0, 200);
    }
    let (s, v) = m.gen(KEY_A, "gemini-tpm", "abcdefgh").await;
    assert_eq!(s, 429);
    assert_eq!(
        v["error"]["details"][0]["violations"][0]["quotaId"],
        "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    );
    assert_eq!(v["error"]["details"][0]["violations"][0]["quotaValue"], "10");
    let stats = m.get("/_mock/stats").await;
    assert_eq!(stats["groups"]["proj-a/gemini-tpm"]["max_input_tokens_in_rolling_minute"], 10);

    // gemini-2.5-pro: 2 per Pacific day.
    assert_eq!(m.gen(KEY_A, "gemini-2.5-pro", "a").await.0, 200);
    assert_eq!(m.gen(KEY_B, "gemini-2.5-pro", "b").await.0, 200);
    let (s, v) = m.gen(KEY_A, "gemini-2.5-pro", "c").await;
    assert_eq!(s, 429);
    let d = &v["error"]["details"];
    assert_eq!(d[0]["violations"][0]["quotaId"], "GenerateRequestsPerDayPerProjectPerModel-FreeTier");
    let secs: u64 = d[2]["retryDelay"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(secs > 0 && secs <= 25 * 3600);
    // PUT /_mock/config resets windows.
    let (s, _) = m.send(reqwest::Method::PUT, "/_mock/config", config()).await;
    assert_eq!(s, 200);
    assert_eq!(m.gen(KEY_A, "gemini-2.5-pro", "d").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_each_kind() {
    let m = start(config()).await;
    let cases = [
        ("500", 500, "INTERNAL"),
        ("503", 503, "UNAVAILABLE"),
        ("429_no_details", 429, "RESOURCE_EXHAUSTED"),
        ("429_rpm", 429, "RESOURCE_EXHAUSTED"),
        ("429_rpd", 429, "RESOURCE_EXHAUSTED"),
        ("invalid_key", 400, "INVALID_ARGUMENT"),
    ];
    for (kind, code, status) in cases {
        m.fault(json!({"kind": kind})).await;
        let (s, v) = m.gen(KEY_A, FLASH, "hi").await;
        assert_eq!(s, code, "{kind}: {v}");
        assert_eq!(v["error"]["status"], status, "{kind}");
        match kind {
            "429_no_details" => assert!(v["error"].get("details").is_none()),
            "429_rpm" => {
                assert_eq!(v["error"]["details"][2]["retryDelay"], "7s");
                assert_eq!(
                    v["error"]["details"][0]["violations"][0]["quotaId"],
                    "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
                );
            }
            "429_rpd" => assert_eq!(
                v["error"]["details"][0]["violations"][0]["quotaId"],
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
            ),
            "503" => assert_eq!(v["error"]["message"], "The model is overloaded. Please try again later."),
            "invalid_key" => assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID"),
            _ => {}
        }
    }
    // None of those was admitted: rpm 3 still allows 3.
    for _ in 0..3 {
        assert_eq!(m.gen(KEY_A, FLASH, "hi").await.0, 200);
    }
    assert_eq!(m.gen(KEY_A, FLASH, "hi").await.0, 429);

    // Label / model filters and counts.
    m.fault(json!({"kind": "503", "count": 2, "label": "flash-b", "model": "gemini-2.5-pro"})).await;
    let pending = m.get("/_mock/faults").await;
    assert_eq!(pending[0]["remaining"], 2);
    assert_eq!(m.gen(KEY_A, "gemini-2.5-pro", "x").await.0, 200);
    assert_eq!(m.gen(KEY_B, "gemini-2.5-pro", "x").await.0, 503);
    assert_eq!(m.gen(KEY_B, "gemini-2.5-pro", "x").await.0, 503);
    assert_eq!(m.get("/_mock/faults").await, json!([]));
    // DELETE clears the queue.
    m.fault(json!({"kind": "500", "count": 5})).await;
    let (s, _) = m.send(reqwest::Method::DELETE, "/_mock/faults", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(m.get("/_mock/faults").await, json!([]));
    let (s, v) = m.send(reqwest::Method::POST, "/_mock/faults", json!({"kind": "nope"})).await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_slow_and_cut_stream() {
    let m = start(json!({})).await;
    m.fault(json!({"kind": "slow", "delay_ms": 300})).await;
    let t = Instant::now();
    let (s, _) = m.gen("k1", FLASH, "hi").await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Streaming cut: the first event arrives, then the connection dies.
    m.fault(json!({"kind": "cut_stream"})).await;
    let mut r = m
        .http
        .post(format!("{}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", m.base))
        .header("x-goog-api-key", "k1")
        .json(&user("Tell me a long story about a crab that routes keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    let err = loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(err, "stream should end with an error");
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("data: "));
    assert!(!text.contains("finishReason"));
    assert_eq!(sse_events(&text).len(), 1);

    // Non-stream cut: the body is truncated and the read fails.
    m.fault(json!({"kind": "cut_stream"})).await;
    let res = m
        .http
        .post(format!("{}/v1beta/models/{FLASH}:generateContent", m.base))
        .header("x-goog-api-key", "k1")
        .json(&user("hi"))
        .send()
        .await;
    match res {
        Err(_) => {}
        Ok(r) => assert!(r.bytes().await.is_err()),
    }
    // The next request is normal again.
    assert_eq!(m.gen("k1", FLASH, "hi").await.0, 200);
    let log = m.get("/_mock/requests").await;
    let faults: Vec<&str> = log.as_array().unwrap().iter().filter_map(|e| e["fault"].as_str()).collect();
    assert_eq!(faults, ["slow", "cut_stream", "cut_stream"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_request_log_and_reset() {
    let m = start(config()).await;
    m.gen(KEY_A, FLASH, "What is 2+2?").await;
    m.call(KEY_B, FLASH, "countTokens", &user("x")).await;
    m.gen("AIzaSyBOGUSBOGUSBOGUS", FLASH, "x").await;
    let log = m.get("/_mock/requests").await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["seq"], 1);
    assert_eq!(log[0]["label"], "flash-a");
    assert_eq!(log[0]["model"], FLASH);
    assert_eq!(log[0]["method"], "generateContent");
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["body"], user("What is 2+2?"));
    assert!(log[0]["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(log[1]["method"], "countTokens");
    assert_eq!(log[1]["label"], "flash-b");
    assert_eq!(log[2]["status"], 400);
    assert_eq!(log[2]["label"], Value::Null);

    let stats = m.get("/_mock/stats").await;
    assert_eq!(stats["total_requests"], 2);
    assert_eq!(stats["invalid_key_requests"], 1);
    assert_eq!(stats["keys"]["flash-a"]["requests"], 1);
    assert_eq!(stats["keys"]["flash-a"]["ok"], 1);
    assert_eq!(stats["keys"]["flash-b"]["count_tokens"], 1);
    assert_eq!(stats["keys"]["denied"]["requests"], 0);

    // No secret anywhere.
    let everything = format!(
        "{}{}{}{}",
        m.get("/_mock/stats").await,
        m.get("/_mock/requests").await,
        m.get("/_mock/faults").await,
        m.get("/_mock/config").await
    );
    for k in [KEY_A, KEY_B, KEY_DENIED, "AIzaSyBOGUS"] {
        assert!(!everything.contains(k), "leaked {k}");
    }

    let since = m.get("/_mock/requests?since=2").await;
    assert_eq!(since.as_array().unwrap().len(), 1);
    let (s, _) = m.send(reqwest::Method::DELETE, "/_mock/requests", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(m.get("/_mock/requests").await, json!([]));

    let (s, _) = m.send(reqwest::Method::POST, "/_mock/reset", json!({})).await;
    assert_eq!(s, 200);
    let stats = m.get("/_mock/stats").await;
    assert_eq!(stats["total_requests"], 0);
    assert_eq!(stats["groups"], json!({}));
    assert_eq!(stats["keys"]["flash-a"]["requests"], 0);
}

fn with_file(uri: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [
        {"text": "Describe this"}, {"fileData": {"mimeType": "image/png", "fileUri": uri}}
    ]}]})
}

fn blocked_body(rpc_method: &str) -> Value {
    let rpc = format!("google.ai.generativelanguage.v1beta.{rpc_method}");
    json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
        "message": format!("Requests to this API generativelanguage.googleapis.com method {rpc} are blocked."),
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_SERVICE_BLOCKED",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com", "methodName": rpc}}]}})
}

fn file_403(id: &str) -> Value {
    json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
        "message": format!("You do not have permission to access the File {id} or it may not exist.")}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_403_for_files_uri_and_cached_content_on_every_key() {
    let m = start(config()).await;
    let cached = json!({"cachedContent": "cachedContents/xyz789", "contents": user("hi")["contents"]});
    let cached_403: Value = serde_json::from_str(
        r#"{"error":{"code":403,"message":"CachedContent not found (or permission denied)","status":"PERMISSION_DENIED"}}"#,
    )
    .unwrap();
    for key in [KEY_A, KEY_B] {
        let (s, v) = m.call(key, FLASH, "generateContent", &with_file("files/abc123")).await;
        assert_eq!((s, &v), (403, &file_403("abc123")));
        let url = "https://generativelanguage.googleapis.com/v1beta/files/abc123";
        let (s, v) = m.call(key, FLASH, "streamGenerateContent", &with_file(url)).await;
        assert_eq!((s, &v), (403, &file_403("abc123")));
        let (s, v) = m.call(key, FLASH, "generateContent", &cached).await;
        assert_eq!((s, &v), (403, &cached_403));
    }
    // Body validation comes first, and a key-level refusal before that.
    let bad = json!({"cachedContent": "cachedContents/xyz789", "contents": []});
    assert_eq!(m.call(KEY_A, FLASH, "generateContent", &bad).await.0, 400);
    let (s, v) = m.call(KEY_DENIED, FLASH, "generateContent", &with_file("files/abc123")).await;
    assert_eq!((s, v["error"]["details"][0]["reason"].as_str()), (403, Some("CONSUMER_SUSPENDED")));
    // None was admitted and no fault was used: rpm 3 still allows 3.
    m.fault(json!({"kind": "500"})).await;
    assert_eq!(m.gen(KEY_A, FLASH, "x").await.0, 500);
    for _ in 0..3 {
        assert_eq!(m.gen(KEY_B, FLASH, "hi").await.0, 200);
    }
    let stats = m.get("/_mock/stats").await;
    assert_eq!(stats["keys"]["flash-a"]["errors"], 5);
    assert_eq!(stats["keys"]["flash-b"]["errors"], 3);
    assert_eq!(stats["groups"]["proj-a/gemini-2.5-flash"]["requests_today"], 3);
    let log = m.get("/_mock/requests").await;
    let first = &log.as_array().unwrap()[0];
    assert_eq!((first["status"].as_u64(), first["label"].as_str()), (Some(403), Some("flash-a")));
    assert!(first.get("fault").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_non_files_uri_is_accepted() {
    let m = start(config()).await;
    let (s, v) = m.call(KEY_A, FLASH, "generateContent", &with_file("https://example.com/images/cat.png")).await;
    assert_eq!(s, 200, "{v}");
    let body = json!({"contents": [{"parts": [{"file_data": {"file_uri": "gs://bucket/files/cat.png"}}]}],
                      "cachedContent": "not-a-cached-content-name"});
    assert_eq!(m.call(KEY_A, FLASH, "generateContent", &body).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_blocked_fault_hits_only_labelled_key() {
    let m = start(config()).await;
    m.fault(json!({"kind": "403_service_blocked", "label": "flash-b", "count": 2})).await;
    assert_eq!(m.gen(KEY_A, FLASH, "hi").await.0, 200);
    let (s, v) = m.gen(KEY_B, FLASH, "hi").await;
    assert_eq!((s, &v), (403, &blocked_body("GenerativeService.GenerateContent")));
    let (s, v) = m.call(KEY_B, FLASH, "streamGenerateContent", &user("hi")).await;
    assert_eq!((s, &v), (403, &blocked_body("GenerativeService.StreamGenerateContent")));
    assert_eq!(m.gen(KEY_B, FLASH, "hi").await.0, 200);
    // 403_resource: the resource body, file id `fault`.
    m.fault(json!({"kind": "403_resource", "label": "flash-a"})).await;
    assert_eq!(m.gen(KEY_B, FLASH, "hi").await.0, 200);
    let (s, v) = m.gen(KEY_A, FLASH, "hi").await;
    assert_eq!((s, &v), (403, &file_403("fault")));
    let log = m.get("/_mock/requests").await;
    let faults: Vec<&str> = log.as_array().unwrap().iter().filter_map(|e| e["fault"].as_str()).collect();
    assert_eq!(faults, ["403_service_blocked", "403_service_blocked", "403_resource"]);
    let stats = m.get("/_mock/stats").await;
    assert_eq!(
        (stats["keys"]["flash-b"]["errors"].as_u64(), stats["keys"]["flash-a"]["errors"].as_u64()),
        (Some(2), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_blocked_config_flag() {
    let mut cfg = config();
    let blocked = "AIzaSyTESTKEYsssssssssssssssssssssssss4";
    cfg["keys"].as_array_mut().unwrap().push(json!({"api_key": blocked, "label": "blocked", "service_blocked": true}));
    let m = start(cfg).await;
    for _ in 0..2 {
        let (s, v) = m.gen(blocked, FLASH, "hi").await;
        assert_eq!((s, &v), (403, &blocked_body("GenerativeService.GenerateContent")));
    }
    let (s, v) = m.call(blocked, FLASH, "streamGenerateContent", &user("hi")).await;
    assert_eq!((s, &v), (403, &blocked_body("GenerativeService.StreamGenerateContent")));
    let (s, v) = m.call(blocked, FLASH, "countTokens", &user("hi")).await;
    assert_eq!((s, &v), (403, &blocked_body("GenerativeService.CountTokens")));
    let r = m.http.get(format!("{}/v1beta/models", m.base)).header("x-goog-api-key", blocked).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap(), blocked_body("ModelService.ListModels"));
    assert_eq!(m.gen(KEY_A, FLASH, "hi").await.0, 200);
    let stats = m.get("/_mock/stats").await;
    assert_eq!(
        (stats["keys"]["blocked"]["requests"].as_u64(), stats["keys"]["blocked"]["errors"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(stats["invalid_key_requests"], 0);
    assert_eq!(m.get("/_mock/config").await["keys"][3]["service_blocked"], true);
}
