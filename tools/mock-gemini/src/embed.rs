//! `:embedContent` and `:batchEmbedContents`: deterministic vectors with per-project quotas,
//! like generate. A vector has `outputDimensionality` floats (8 by default, to keep test bodies
//! small), derived from a hash of the text and normalized to length 1. Each HTTP call counts as
//! one request toward RPM/RPD; its tokens are the texts' ceil(bytes/4) plus any media. The
//! answers carry no usage, as Google's do not.

use serde_json::{json, Value};

/// Google refuses larger batches with this message.
pub const MAX_BATCH: usize = 100;
pub const DEFAULT_DIMS: u64 = 8;

/// A deterministic unit vector of `dims` floats for `text`.
pub fn vector(text: &str, dims: u64) -> Vec<f64> {
    // FNV-1a, then xorshift for each component.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let mut v: Vec<f64> = (0..dims.max(1))
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::EPSILON);
    for x in &mut v {
        // Rounded so the float32 round trip of the OpenAI base64 encoding is exact.
        *x = ((*x / norm) as f32) as f64;
    }
    v
}

fn text_of(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `EmbedContentRequest` checked: its content's text and dimensions, or the 400 message.
fn request(r: &Value, at: &str) -> Result<(String, u64, u64), String> {
    let content =
        r.get("content").filter(|c| c.is_object()).ok_or(format!("* {at}.content: content is not specified\n"))?;
    let ok = content.get("parts").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    if !ok {
        return Err(format!("* {at}.content.parts: contents.parts must not be empty.\n"));
    }
    let text = text_of(content);
    let media = crate::media::tokens(&json!({"contents": [content]}));
    let dims = r
        .get("outputDimensionality")
        .or_else(|| r.get("output_dimensionality"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_DIMS);
    Ok((text.clone(), crate::gen::text_tokens(&text) + media, dims))
}

/// The checked request: its tokens and the answer to send when admitted.
pub struct Planned {
    pub tokens: u64,
    pub answer: Value,
}

/// Checks an embed body (`batch`: `batchEmbedContents`) for `model`.
pub fn plan(body: &Value, model: &str, batch: bool) -> Result<Planned, String> {
    if !batch {
        let (text, tokens, dims) = request(body, "EmbedContentRequest")?;
        return Ok(Planned { tokens, answer: json!({"embedding": {"values": vector(&text, dims)}}) });
    }
    let reqs = body.get("requests").and_then(Value::as_array).filter(|r| !r.is_empty());
    let reqs = reqs.ok_or("* BatchEmbedContentsRequest.requests: requests is not specified\n")?;
    if reqs.len() > MAX_BATCH {
        return Err(format!(
            "* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch\n"
        ));
    }
    let mut tokens = 0;
    let mut embeddings = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let named = r.get("model").and_then(Value::as_str).map(|m| m.trim_start_matches("models/"));
        if named.is_some_and(|m| m != model) {
            return Err(format!("* BatchEmbedContentsRequest.requests[{i}].model: model must be models/{model}\n"));
        }
        let (text, t, dims) = request(r, &format!("BatchEmbedContentsRequest.requests[{i}]"))?;
        tokens += t;
        embeddings.push(json!({"values": vector(&text, dims)}));
    }
    Ok(Planned { tokens, answer: json!({"embeddings": embeddings}) })
}

/// Serves one embed call: validation, then the same locked path as generate (auth, key
/// refusals, faults, quota, stats, log), then the vectors.
pub(crate) async fn serve(
    m: &crate::Mock,
    model: &str,
    op: crate::Op,
    key: Option<&str>,
    parsed: Result<Value, String>,
    raw: &bytes::Bytes,
) -> axum::response::Response {
    let planned: Result<(crate::gen::Plan, Value), Value> = match &parsed {
        Ok(v) => plan(v, model, op == crate::Op::BatchEmbed)
            .map(|p| {
                let gen = crate::gen::Plan {
                    text: String::new(),
                    finish: "STOP",
                    prompt: p.tokens,
                    candidates: 0,
                    thoughts: 0,
                    calls: Vec::new(),
                    thought: None,
                };
                (gen, p.answer)
            })
            .map_err(|msg| crate::errors::invalid_argument(&msg)),
        Err(e) => Err(crate::errors::invalid_argument(&format!("Invalid JSON payload received. {e}"))),
    };
    let (gen_plan, answer) = match planned {
        Ok((g, a)) => (Ok(g), Some(a)),
        Err(e) => (Err(e), None),
    };
    let log_body = parsed.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into()));
    let (cfg, _seq, extra_delay_ms, _cut) = match crate::api::decide(m, model, op, key, &gen_plan, log_body) {
        Ok(d) => d,
        Err(e) => return crate::err_response(&e),
    };
    let delay = cfg.latency_ms + extra_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    crate::json_response(200, &answer.unwrap_or_default())
}
