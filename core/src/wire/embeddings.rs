//! Embeddings on both surfaces: Gemini-native `:embedContent` and `:batchEmbedContents` (the
//! method google-genai's `embed_content` calls), and OpenAI `POST /v1/embeddings`, which becomes
//! one `batchEmbedContents` call.
//!
//! An embedding request runs through the same engine as a generate request (reserve, fail over,
//! settle): [`EmbedRequest::planned`] gives the engine a request whose `contents` are the texts
//! to embed, so the estimate counts exactly them (text by the estimator, media by
//! `quota::media`). Google's embedding answers carry no usage, so the settle keeps the estimate;
//! the OpenAI answer's `usage` reports that same estimate.

use crate::error::RouterError;
use crate::wire::base64;
use crate::wire::gemini::{validate_content, GenerateRequest};
use serde_json::{json, Map, Value};

/// Google refuses larger batches ("at most 100 requests can be in one batch").
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedMethod {
    Single,
    Batch,
}

impl EmbedMethod {
    /// The Gemini method name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            EmbedMethod::Single => "embedContent",
            EmbedMethod::Batch => "batchEmbedContents",
        }
    }
}

/// One embedding call, validated, with its upstream body already serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub method: EmbedMethod,
    /// The upstream body, as sent on every attempt.
    pub body: String,
    /// The contents embedded, one per request of a batch: what the estimate counts.
    pub contents: Vec<Value>,
}

/// How the OpenAI caller wants its vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    /// Base64 of the little-endian float32s (the openai Python SDK's default).
    Base64,
}

fn bad(code: &'static str, msg: impl Into<String>) -> RouterError {
    RouterError::bad_request(code, msg)
}

const REQUEST_FIELDS: [&str; 5] = ["content", "taskType", "title", "outputDimensionality", "model"];

/// Checks one `EmbedContentRequest` (`at` names it in errors) and returns its content.
fn check_request(r: &Value, at: &str, model: &str) -> Result<Value, RouterError> {
    let obj = r.as_object().ok_or_else(|| bad("invalid_body", format!("{at}: must be a JSON object")))?;
    if let Some(k) = obj.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(bad("unknown_field", format!("{at}: unknown field '{k}'")));
    }
    match obj.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) if m.strip_prefix("models/").unwrap_or(m) == model => {}
        Some(_) => {
            return Err(bad("invalid_field", format!("{at}.model: must be 'models/{model}' (the model in the path)")))
        }
    }
    if let Some(d) = obj.get("outputDimensionality") {
        if !d.as_u64().is_some_and(|d| (1..=65_536).contains(&d)) {
            return Err(bad("invalid_field", format!("{at}.outputDimensionality: must be a positive integer")));
        }
    }
    let content = obj.get("content").ok_or_else(|| bad("missing_field", format!("{at}.content: is required")))?;
    validate_content(content, &format!("{at}.content"))?;
    Ok(content.clone())
}

impl EmbedRequest {
    /// A Gemini-native `:embedContent` or `:batchEmbedContents` body for `model` (from the path).
    /// Batch requests that name no model get the path's, as Google requires one on each.
    pub fn from_gemini(body: Value, model: &str, method: EmbedMethod) -> Result<EmbedRequest, RouterError> {
        let Value::Object(mut obj) = body else {
            return Err(bad("invalid_body", "request body must be a JSON object"));
        };
        let contents = match method {
            EmbedMethod::Single => vec![check_request(&Value::Object(obj.clone()), "request", model)?],
            EmbedMethod::Batch => {
                if let Some(k) = obj.keys().find(|k| k.as_str() != "requests") {
                    return Err(bad("unknown_field", format!("unknown field '{k}'")));
                }
                let Some(Value::Array(reqs)) = obj.get_mut("requests") else {
                    return Err(bad("missing_field", "requests: must be a non-empty array"));
                };
                if reqs.is_empty() {
                    return Err(bad("empty_message", "requests: must not be empty"));
                }
                if reqs.len() > MAX_BATCH {
                    return Err(bad(
                        "too_many_inputs",
                        format!("requests: at most {MAX_BATCH} per batch (Google's limit)"),
                    ));
                }
                let mut out = Vec::with_capacity(reqs.len());
                for (i, r) in reqs.iter_mut().enumerate() {
                    out.push(check_request(r, &format!("requests[{i}]"), model)?);
                    if let Some(o) = r.as_object_mut() {
                        o.entry("model").or_insert_with(|| json!(format!("models/{model}")));
                    }
                }
                out
            }
        };
        Ok(EmbedRequest { model: model.to_string(), method, body: Value::Object(obj).to_string(), contents })
    }

    /// An OpenAI `/v1/embeddings` body: `input` (a string or a list of strings), `dimensions`,
    /// `encoding_format` (`float` or `base64`, the default being `float` as in OpenAI's API).
    pub fn from_openai(body: &Value) -> Result<(EmbedRequest, Encoding), RouterError> {
        let obj = body.as_object().ok_or_else(|| bad("invalid_body", "request body must be a JSON object"))?;
        const KNOWN: [&str; 5] = ["model", "input", "dimensions", "encoding_format", "user"];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad("unknown_field", format!("unknown field '{k}'")));
        }
        let model = match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.strip_prefix("models/").unwrap_or(m).to_string(),
            Some(_) => return Err(bad("invalid_field", "model: must be a non-empty string")),
            None => return Err(bad("missing_field", "model: is required")),
        };
        let texts: Vec<&str> = match obj.get("input") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(bad("empty_message", "input: must not be empty"))
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.as_str()),
                    Value::Number(_) | Value::Array(_) => Err(bad(
                        "unsupported_field",
                        format!("input[{i}]: token arrays are not supported; send the text"),
                    )),
                    _ => Err(bad("invalid_field", format!("input[{i}]: must be a string"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("invalid_field", "input: must be a string or a list of strings")),
            None => return Err(bad("missing_field", "input: is required")),
        };
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(bad("empty_message", format!("input[{i}]: must not be empty")));
        }
        if texts.len() > MAX_BATCH {
            return Err(bad("too_many_inputs", format!("input: at most {MAX_BATCH} items (Google's batch limit)")));
        }
        let dims = match obj.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(d) if (1..=65_536).contains(&d) => Some(d),
                _ => return Err(bad("invalid_field", "dimensions: must be a positive integer")),
            },
        };
        let encoding = match obj.get("encoding_format") {
            None | Some(Value::Null) => Encoding::Float,
            Some(Value::String(s)) if s == "float" => Encoding::Float,
            Some(Value::String(s)) if s == "base64" => Encoding::Base64,
            Some(_) => return Err(bad("invalid_field", "encoding_format: must be 'float' or 'base64'")),
        };
        let contents: Vec<Value> = texts.iter().map(|t| json!({"parts": [{"text": t}]})).collect();
        let requests: Vec<Value> = contents
            .iter()
            .map(|c| {
                let mut r = Map::new();
                r.insert("model".into(), json!(format!("models/{model}")));
                r.insert("content".into(), c.clone());
                if let Some(d) = dims {
                    r.insert("outputDimensionality".into(), json!(d));
                }
                Value::Object(r)
            })
            .collect();
        let body = json!({"requests": requests}).to_string();
        Ok((EmbedRequest { model, method: EmbedMethod::Batch, body, contents }, encoding))
    }

    /// What the engine plans with: the embedded contents as a request's turns, so the estimate
    /// counts them and nothing else.
    pub fn planned(&self) -> Result<GenerateRequest, RouterError> {
        GenerateRequest::from_gemini_owned(json!({"contents": self.contents}), &self.model, None)
    }
}

/// The vectors of an embedding answer, in order: `{embedding: {values}}` or
/// `{embeddings: [{values}]}`.
pub fn vectors(raw: &Value) -> Vec<&[Value]> {
    let one = raw.get("embedding").into_iter();
    let many = raw.get("embeddings").and_then(Value::as_array).into_iter().flatten();
    one.chain(many).map(|e| e.get("values").and_then(Value::as_array).map_or(&[][..], Vec::as_slice)).collect()
}

/// The OpenAI `/v1/embeddings` answer. `prompt_tokens` is the reserved estimate: Google
/// reports no usage for embeddings.
pub fn openai_response(raw: &Value, model: &str, encoding: Encoding, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = vectors(raw)
        .into_iter()
        .enumerate()
        .map(|(i, values)| {
            let embedding = match encoding {
                Encoding::Float => Value::Array(values.to_vec()),
                Encoding::Base64 => {
                    let mut bytes = Vec::with_capacity(values.len() * 4);
                    for v in values {
                        bytes.extend_from_slice(&(v.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                    }
                    json!(base64::encode(&bytes))
                }
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_input_becomes_one_batch_call() {
        let body =
            json!({"model": "text-embedding-004", "input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"});
        let (r, enc) = EmbedRequest::from_openai(&body).unwrap();
        assert_eq!((r.method, enc, r.model.as_str()), (EmbedMethod::Batch, Encoding::Base64, "text-embedding-004"));
        let up: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            up["requests"][1],
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8})
        );
        let (one, enc) = EmbedRequest::from_openai(&json!({"model": "m", "input": "hello"})).unwrap();
        assert_eq!((one.contents.len(), enc), (1, Encoding::Float));
        let g = one.planned().unwrap();
        assert_eq!(crate::quota::request_texts(&g.to_gemini(&[])), vec!["hello"]);
    }

    #[test]
    fn openai_errors_are_named() {
        let cases = [
            (json!({"input": "x"}), "missing_field"),
            (json!({"model": "m"}), "missing_field"),
            (json!({"model": "m", "input": []}), "empty_message"),
            (json!({"model": "m", "input": ["ok", ""]}), "empty_message"),
            (json!({"model": "m", "input": [[1, 2]]}), "unsupported_field"),
            (json!({"model": "m", "input": "x", "encoding_format": "int8"}), "invalid_field"),
            (json!({"model": "m", "input": "x", "dimensions": 0}), "invalid_field"),
            (json!({"model": "m", "input": "x", "bogus": 1}), "unknown_field"),
            (json!({"model": "m", "input": vec!["x"; 101]}), "too_many_inputs"),
        ];
        for (body, code) in cases {
            let e = EmbedRequest::from_openai(&body).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, code), "{body}");
        }
    }

    #[test]
    fn gemini_bodies_pass_through_with_the_model_filled_in() {
        let single =
            json!({"content": {"parts": [{"text": "hi"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 8});
        let r = EmbedRequest::from_gemini(single.clone(), "gemini-embedding-001", EmbedMethod::Single).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap(), single);
        let batch = json!({"requests": [{"content": {"parts": [{"text": "a"}]}}, {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}}]});
        let r = EmbedRequest::from_gemini(batch, "gemini-embedding-001", EmbedMethod::Batch).unwrap();
        let up: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(up["requests"][0]["model"], "models/gemini-embedding-001");
        assert_eq!(r.contents.len(), 2);
        let e = EmbedRequest::from_gemini(
            json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}),
            "m",
            EmbedMethod::Batch,
        )
        .unwrap_err();
        assert_eq!(e.code(), "invalid_field");
        let e = EmbedRequest::from_gemini(json!({"content": {"parts": []}}), "m", EmbedMethod::Single).unwrap_err();
        assert_eq!(e.code(), "empty_message");
        let e = EmbedRequest::from_gemini(json!({"requests": []}), "m", EmbedMethod::Batch).unwrap_err();
        assert_eq!(e.code(), "empty_message");
        let e = EmbedRequest::from_gemini(json!({"contents": []}), "m", EmbedMethod::Single).unwrap_err();
        assert_eq!(e.code(), "unknown_field");
    }

    #[test]
    fn openai_answer_in_float_and_base64() {
        let raw = json!({"embeddings": [{"values": [1.0, -0.5]}, {"values": [0.25]}]});
        let f = openai_response(&raw, "m", Encoding::Float, 7);
        assert_eq!(f["data"][0], json!({"object": "embedding", "index": 0, "embedding": [1.0, -0.5]}));
        assert_eq!(f["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
        let b = openai_response(&raw, "m", Encoding::Base64, 7);
        let mut bytes = 1.0f32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(-0.5f32).to_le_bytes());
        assert_eq!(b["data"][0]["embedding"], base64::encode(&bytes));
        assert_eq!(b["data"][1]["index"], 1);
        assert_eq!(vectors(&json!({"embedding": {"values": [3.0]}})).len(), 1);
    }
}
