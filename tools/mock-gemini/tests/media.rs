//! Media and embeddings against the mock, over HTTP: image tokens by dimensions, both field
//! spellings, "describe this", bad base64, and embedContent / batchEmbedContents with quotas.

use base64::Engine;
use mock_gemini::Config;
use serde_json::{json, Value};

const KEY_A: &str = "AIzaSyTESTKEYaaaaaaaaaaaaaaaaaaaaaaaaa1";
const KEY_B: &str = "AIzaSyTESTKEYbbbbbbbbbbbbbbbbbbbbbbbbb2";
const FLASH: &str = "gemini-2.5-flash";
const EMBED: &str = "gemini-embedding-001";

async fn start() -> (String, reqwest::Client) {
    let cfg = json!({
        "keys": [
            {"api_key": KEY_A, "label": "a", "project": "proj-a"},
            {"api_key": KEY_B, "label": "b", "project": "proj-b"}
        ],
        "projects": {
            "proj-a": {"gemini-2.5-flash": {"rpm": 100, "tpm": 250000, "rpd": 1000}, "gemini-embedding-001": {"rpm": 2, "tpm": 30000, "rpd": 1000}},
            "proj-b": {"gemini-embedding-001": {"rpm": 2, "tpm": 30000, "rpd": 1000}}
        }
    });
    let cfg = Config::from_json(&cfg.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(mock_gemini::serve(listener, cfg));
    (format!("http://127.0.0.1:{port}"), reqwest::Client::new())
}

async fn call(base: &str, http: &reqwest::Client, key: &str, model: &str, method: &str, body: &Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v1beta/models/{model}:{method}"))
        .header("x-goog-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn png(w: u32, h: u32, size: usize) -> String {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.resize(size, 3);
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn a_large_png_counts_by_tiles_and_is_described() {
    let (base, http) = start().await;
    let body = json!({"contents": [{"parts": [
        {"text": "Describe this"},
        {"inlineData": {"mimeType": "image/png", "data": png(1000, 500, 1_500_000)}}
    ]}]});
    let (s, v) = call(&base, &http, KEY_A, FLASH, "generateContent", &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "I received 1 image (image/png, 1000x500)");
    // "Describe this" is 13 bytes = 4 tokens, plus 2 tiles of 258.
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 4 + 516);
}

#[tokio::test]
async fn snake_case_media_is_accepted_and_counted() {
    let (base, http) = start().await;
    let body = json!({"contents": [{"parts": [
        {"text": "What is in these?"},
        {"inline_data": {"mime_type": "image/png", "data": png(100, 100, 64)}},
        {"file_data": {"mime_type": "application/pdf", "file_uri": "https://example.com/a.pdf"}}
    ]}]});
    let (s, v) = call(&base, &http, KEY_A, FLASH, "generateContent", &body).await;
    assert_eq!(s, 200, "{v}");
    let text = v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with("I received 1 image (image/png, 100x100) and 1 file"), "{text}");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 5 + 258 + 258);
    let (s, v) = call(&base, &http, KEY_A, FLASH, "countTokens", &body).await;
    assert_eq!((s, v["totalTokens"].as_u64()), (200, Some(5 + 258 + 258)));
}

#[tokio::test]
async fn bad_base64_is_invalid_argument() {
    let (base, http) = start().await;
    let body =
        json!({"contents": [{"parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": "**"}}]}]});
    let (s, v) = call(&base, &http, KEY_A, FLASH, "generateContent", &body).await;
    assert_eq!((s, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    assert!(v["error"]["message"].as_str().unwrap().contains("contents[0].parts[1].inline_data.data"));
}

#[tokio::test]
async fn embed_content_gives_deterministic_vectors_without_usage() {
    let (base, http) = start().await;
    let body = json!({"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4});
    let (s, a) = call(&base, &http, KEY_A, EMBED, "embedContent", &body).await;
    assert_eq!(s, 200, "{a}");
    let (_, b) = call(&base, &http, KEY_B, EMBED, "embedContent", &body).await;
    assert_eq!(a["embedding"]["values"].as_array().unwrap().len(), 4);
    assert_eq!(a, b);
    assert!(a.get("usageMetadata").is_none());
    let (s, v) = call(&base, &http, KEY_A, EMBED, "embedContent", &json!({"content": {"parts": []}})).await;
    assert_eq!((s, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

#[tokio::test]
async fn batch_embed_contents_answers_in_order_and_enforces_quotas() {
    let (base, http) = start().await;
    let reqs: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|t| json!({"model": format!("models/{EMBED}"), "content": {"parts": [{"text": t}]}}))
        .collect();
    let body = json!({"requests": reqs});
    let (s, v) = call(&base, &http, KEY_B, EMBED, "batchEmbedContents", &body).await;
    assert_eq!(s, 200, "{v}");
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["values"].as_array().unwrap().len(), 8);
    assert_ne!(e[0], e[1]);
    // proj-b allows 2 requests per minute: the third call is a 429 with Google's details.
    let (s, _) = call(&base, &http, KEY_B, EMBED, "batchEmbedContents", &body).await;
    assert_eq!(s, 200);
    let (s, v) = call(&base, &http, KEY_B, EMBED, "batchEmbedContents", &body).await;
    assert_eq!((s, v["error"]["status"].as_str()), (429, Some("RESOURCE_EXHAUSTED")));
    // Too many requests in one batch, or a request for another model: 400.
    let big = json!({"requests": vec![json!({"content": {"parts": [{"text": "x"}]}}); 101]});
    let (s, _) = call(&base, &http, KEY_A, EMBED, "batchEmbedContents", &big).await;
    assert_eq!(s, 400);
    let other = json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "x"}]}}]});
    let (s, _) = call(&base, &http, KEY_A, EMBED, "batchEmbedContents", &other).await;
    assert_eq!(s, 400);
}
