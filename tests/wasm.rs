//! wasm-only code, run under Node with wasm-bindgen-test-runner: the `Fetch` adapters' request
//! building and response decoding, and randomness from getrandom's JS backend.
#![cfg(target_arch = "wasm32")]

use llm_key_router::fetch::{
    gemini_request, gemini_url, post_init, post_text, read_reply, upstash_url, PostError, WorkerRuntime,
};
use llm_key_router_core::engine::Runtime;
use llm_key_router_core::store::upstash::decode_single;
use wasm_bindgen_test::wasm_bindgen_test;
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys;

#[wasm_bindgen_test]
async fn upstash_post_has_bearer_token_json_body_and_path() {
    let init =
        post_init(&[("authorization", "Bearer tok"), ("content-type", "application/json")], r#"[["PING"]]"#).unwrap();
    let url = upstash_url("http://127.0.0.1:1", "/pipeline");
    let req = web_sys::Request::new_with_str_and_init(&url, &init).unwrap();
    assert_eq!(req.url(), "http://127.0.0.1:1/pipeline");
    assert_eq!(req.method(), "POST");
    assert_eq!(req.headers().get("authorization").unwrap().as_deref(), Some("Bearer tok"));
    assert_eq!(req.headers().get("content-type").unwrap().as_deref(), Some("application/json"));
    let body = JsFuture::from(req.text().unwrap()).await.unwrap();
    assert_eq!(body.as_string().unwrap(), r#"[["PING"]]"#);
    assert_eq!(upstash_url("http://127.0.0.1:1", "/"), "http://127.0.0.1:1");
}

#[wasm_bindgen_test]
async fn gemini_request_puts_key_in_header_not_url() {
    let url = gemini_url("http://127.0.0.1:2", "gemini-2.5-flash", "generateContent");
    assert_eq!(url, "http://127.0.0.1:2/v1beta/models/gemini-2.5-flash:generateContent");
    let init = post_init(&[("x-goog-api-key", "AIzaSySECRET"), ("content-type", "application/json")], "{}").unwrap();
    let req = web_sys::Request::new_with_str_and_init(&url, &init).unwrap();
    assert!(!req.url().contains("SECRET"));
    assert_eq!(req.headers().get("x-goog-api-key").unwrap().as_deref(), Some("AIzaSySECRET"));
    // The streaming path builds a worker::Request the same way.
    let sreq = gemini_request("http://127.0.0.1:2", "m", "streamGenerateContent?alt=sse", "AIzaSySECRET", "{}".into())
        .unwrap();
    assert_eq!(sreq.url().unwrap().query(), Some("alt=sse"));
    assert_eq!(sreq.headers().get("x-goog-api-key").unwrap().as_deref(), Some("AIzaSySECRET"));
}

#[wasm_bindgen_test]
async fn post_to_a_closed_loopback_port_is_a_transport_error() {
    let init = post_init(&[("content-type", "application/json")], "{}").unwrap();
    let r = post_text("http://127.0.0.1:9/", init, 5_000).await;
    assert!(matches!(r, Err(PostError::Transport(_))), "{r:?}");
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
    assert_eq!(
        decode_single(&read_reply(auth).await.unwrap()).unwrap_err(),
        llm_key_router_core::store::upstash::StoreError::Auth
    );
}

#[wasm_bindgen_test]
fn random_ids_come_from_the_js_crypto_backend() {
    let rt = WorkerRuntime;
    let a = rt.random_hex(16);
    let b = rt.random_hex(16);
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}
