//! wasm-only code, run under Node with wasm-bindgen-test-runner: the `Fetch` adapters' request
//! building and response decoding, and randomness from getrandom's JS backend.
#![cfg(target_arch = "wasm32")]

use llm_key_router::edge::{gemini_request, read_reply, upstash_request, WorkerRuntime};
use llm_key_router::router::Runtime;
use llm_key_router::upstash::decode_single;
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
async fn upstash_request_has_bearer_token_json_body_and_path() {
    let mut req = upstash_request("http://127.0.0.1:1", "tok", "/pipeline", r#"[["PING"]]"#.into()).unwrap();
    assert_eq!(req.url().unwrap().as_str(), "http://127.0.0.1:1/pipeline");
    assert_eq!(req.method().to_string(), "POST");
    assert_eq!(req.headers().get("authorization").unwrap().as_deref(), Some("Bearer tok"));
    assert_eq!(req.headers().get("content-type").unwrap().as_deref(), Some("application/json"));
    assert_eq!(req.text().await.unwrap(), r#"[["PING"]]"#);
    let single = upstash_request("http://127.0.0.1:1", "tok", "/", "[]".into()).unwrap();
    assert_eq!(single.url().unwrap().path(), "/");
}

#[wasm_bindgen_test]
async fn gemini_request_puts_key_in_header_not_url() {
    let req = gemini_request("http://127.0.0.1:2", "gemini-2.5-flash", "generateContent", "AIzaSySECRET", "{}".into())
        .unwrap();
    let url = req.url().unwrap();
    assert_eq!(url.path(), "/v1beta/models/gemini-2.5-flash:generateContent");
    assert!(url.query().is_none());
    assert_eq!(req.headers().get("x-goog-api-key").unwrap().as_deref(), Some("AIzaSySECRET"));
}

#[wasm_bindgen_test]
async fn responses_decode_into_results_and_typed_errors() {
    let ok = worker::Response::from_bytes(br#"{"result":"PONG"}"#.to_vec()).unwrap();
    let reply = read_reply(ok).await.unwrap();
    assert_eq!(decode_single(&reply).unwrap(), "PONG");
    let err =
        worker::Response::from_bytes(br#"{"error":"NOSCRIPT No matching script"}"#.to_vec()).unwrap().with_status(400);
    let reply = read_reply(err).await.unwrap();
    assert!(decode_single(&reply).unwrap_err().is_noscript());
    let auth = worker::Response::from_bytes(br#"{"error":"Unauthorized"}"#.to_vec()).unwrap().with_status(401);
    assert_eq!(decode_single(&read_reply(auth).await.unwrap()).unwrap_err(), llm_key_router::upstash::StoreError::Auth);
}

#[wasm_bindgen_test]
fn random_ids_come_from_the_js_crypto_backend() {
    let rt = WorkerRuntime;
    let a = rt.random_hex(16);
    let b = rt.random_hex(16);
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}
