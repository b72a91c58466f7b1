//! Real Gemini response bodies, byte for byte as Google sends them (the same shapes as
//! `tools/mock-gemini/src/errors.rs`), so the engine's tests exercise the real classification.

use serde_json::{json, Value};

/// A `generateContent` answer with `text` and its `usageMetadata`.
pub fn ok(text: &str, prompt_tokens: u64, output_tokens: u64) -> String {
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "mSTMaPGnD5-_nvgP2a2D8Qs"
    })
    .to_string()
}

/// One SSE event of a streamed answer: a text delta, with usage and a finish reason on the last.
pub fn sse_event(text: &str, last: Option<(u64, u64)>) -> String {
    let mut v = json!({
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
        "modelVersion": "gemini-2.5-flash"
    });
    if let Some((prompt, output)) = last {
        v["candidates"][0]["finishReason"] = json!("STOP");
        v["usageMetadata"] = json!({
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output
        });
    }
    format!("data: {v}\r\n\r\n")
}

fn error(code: u16, status: &str, message: &str, details: Option<Value>) -> String {
    let mut err = json!({"code": code, "message": message, "status": status});
    if let Some(d) = details {
        err["details"] = d;
    }
    json!({ "error": err }).to_string()
}

/// The free tier's per-minute 429: QuotaFailure (PerMinute), Help and RetryInfo.
pub fn quota_per_minute(model: &str, retry_s: u64) -> String {
    quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", model, 10, retry_s)
}

/// The free tier's per-day 429: a PerDay quotaId (its RetryInfo is only seconds away, but the
/// quota resets at Pacific midnight).
pub fn quota_per_day(model: &str, retry_s: u64) -> String {
    quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier", model, 250, retry_s)
}

fn quota(quota_id: &str, model: &str, limit: u64, retry_s: u64) -> String {
    let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
    let message = format!(
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}\nPlease retry in {retry_s}s."
    );
    error(
        429,
        "RESOURCE_EXHAUSTED",
        &message,
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": metric,
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": limit.to_string()
                }]
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
                }]
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{retry_s}s")}
        ])),
    )
}

/// A 429 without any detail.
pub fn exhausted_no_details() -> String {
    error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", None)
}

/// 400 API_KEY_INVALID.
pub fn invalid_key() -> String {
    error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}
        }])),
    )
}

/// 403 API_KEY_SERVICE_BLOCKED, for `generateContent`.
pub fn service_blocked() -> String {
    let rpc = "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent";
    error(
        403,
        "PERMISSION_DENIED",
        &format!("Requests to this API generativelanguage.googleapis.com method {rpc} are blocked."),
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_SERVICE_BLOCKED",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com", "methodName": rpc}
        }])),
    )
}

/// The resource 403 for a Files API file another project owns: no details, the request's fault.
pub fn file_denied(id: &str) -> String {
    error(
        403,
        "PERMISSION_DENIED",
        &format!("You do not have permission to access the File {id} or it may not exist."),
        None,
    )
}

pub fn internal() -> String {
    error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        None,
    )
}

pub fn unavailable() -> String {
    error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", None)
}
