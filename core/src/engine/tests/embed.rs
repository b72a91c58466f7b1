//! Embedding calls and media requests through the engine: same reservation, failover and
//! settle as a generate request, another upstream method, and an estimate by token cost.

use super::*;
use crate::quota::media::tile_tokens;
use crate::testing::bodies;
use crate::wire::base64::encode;
use crate::wire::embeddings::{EmbedMethod, EmbedRequest};

const EMBED: &str = "gemini-embedding-001";

fn embed_pool() -> KeyPool {
    KeyPool::parse(
        r#"{"keys": [
            {"key_id": "k1", "model_name": "gemini-embedding-001", "rpm": 10, "tpm": 30000, "rpd": 1000},
            {"key_id": "k2", "model_name": "gemini-embedding-001", "rpm": 10, "tpm": 30000, "rpd": 1000},
            {"key_id": "k3", "model_name": "gemini-2.5-flash", "rpm": 10, "tpm": 250000, "rpd": 250}
        ]}"#,
    )
    .expect("test pool is valid")
}

fn world(script: impl IntoIterator<Item = Answer>) -> World {
    let mut w = World::new(script);
    w.pool = embed_pool();
    w
}

fn embedded(values: &[f64]) -> Answer {
    Answer::reply(200, json!({"embedding": {"values": values}}).to_string())
}

#[test]
fn an_embedding_is_reserved_called_and_settled_with_its_estimate() {
    let w = world([embedded(&[0.5, 0.25])]);
    let body = json!({"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 2});
    let r = EmbedRequest::from_gemini(body.clone(), EMBED, EmbedMethod::Single).unwrap();
    let s = w.embed(&r).unwrap();
    let calls = w.upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].method.as_str(), calls[0].model.as_str()), ("embedContent", EMBED));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&calls[0].body).unwrap(), body);
    assert_eq!(s.raw["embedding"]["values"], json!([0.5, 0.25]));
    // No usage upstream: the settle keeps the reservation's estimate, and reports it.
    let reserved = w.store.reserves()[0].est;
    assert_eq!(reserved, "hello world".len() as u64);
    assert_eq!(w.store.settles()[0].input, None);
    assert_eq!(w.store.settles()[0].outcome, "success");
    assert_eq!((s.usage.input, s.usage.total), (reserved, reserved));
}

#[test]
fn a_429_on_an_embedding_fails_over_to_the_next_key() {
    let w = world([Answer::reply(429, bodies::quota_per_minute(EMBED, 20)), embedded(&[1.0])]);
    let (r, _) = EmbedRequest::from_openai(&json!({"model": EMBED, "input": ["a", "bb"]})).unwrap();
    let s = w.embed(&r).unwrap();
    assert_eq!(w.keys_called(), ["k1", "k2"]);
    assert!(w.upstream.calls().iter().all(|c| c.method == "batchEmbedContents"));
    assert_eq!(w.outcomes(), ["rate_limited", "success"]);
    assert_eq!(s.key_id, "k2");
    // One reservation for the batch, carrying the tokens of all its texts.
    assert_eq!(w.store.reserves()[0].est, 3);
}

#[test]
fn an_embedding_model_outside_the_pool_is_unknown() {
    let w = world([]);
    let (r, _) = EmbedRequest::from_openai(&json!({"model": "text-embedding-3-small", "input": "a"})).unwrap();
    let f = w.embed(&r).unwrap_err();
    assert_eq!(f.error.code(), "unknown_model");
}

#[test]
fn a_large_screenshot_is_reserved_by_its_tiles() {
    // A 1.5 MB, 1000 × 500 PNG fits a 250k TPM key: 516 tokens plus its prompt.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&1000u32.to_be_bytes());
    png.extend_from_slice(&500u32.to_be_bytes());
    png.resize(1_500_000, 7);
    let body = json!({"contents": [{"parts": [{"text": "Describe this"}, {"inline_data": {"mime_type": "image/png", "data": encode(&png)}}]}]});
    let g = GenerateRequest::from_gemini_owned(body, FLASH, None).unwrap();
    let w = World::new([ok("a chart")]);
    w.generate(&g).unwrap();
    assert_eq!(w.store.reserves()[0].est, "Describe this".len() as u64 + tile_tokens(1000, 500));
    let sent = &w.upstream.calls()[0].body;
    assert!(sent.len() > 2_000_000 && sent.contains("\"inline_data\""));
}

#[test]
fn a_burst_of_embeddings_on_two_keys_of_10_rpm_admits_exactly_20() {
    let w = world((0..20).map(|_| embedded(&[0.1])));
    let (r, _) = EmbedRequest::from_openai(&json!({"model": EMBED, "input": "ping"})).unwrap();
    let results: Vec<_> = (0..25).map(|_| w.embed(&r)).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 20);
    for f in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(f.error.code(), "rate_limited");
        assert!(f.attempts.is_empty(), "refused before any upstream call");
    }
    assert_eq!(w.upstream.calls().len(), 20);
    assert_eq!(w.upstream.unused(), 0);
}
