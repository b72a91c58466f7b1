//! Gemini error bodies, shaped like the real API's.

use serde_json::{json, Value};

use crate::window::MinuteLimit;

pub fn body(code: u16, status: &str, message: &str, details: Option<Value>) -> Value {
    let mut err = json!({"code": code, "message": message, "status": status});
    if let Some(d) = details {
        err["details"] = d;
    }
    json!({ "error": err })
}

pub fn invalid_key() -> Value {
    body(
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

pub fn missing_key() -> Value {
    body(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        None,
    )
}

pub fn permission_denied() -> Value {
    body(
        403,
        "PERMISSION_DENIED",
        "Permission denied: Consumer has been suspended.",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "CONSUMER_SUSPENDED",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}
        }])),
    )
}

/// The key-level 403 for a key whose API restrictions exclude this service (or method).
/// `rpc` is the full method name, e.g.
/// `google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent`.
pub fn service_blocked(rpc: &str) -> Value {
    body(
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

/// The request-level 403 for a Files API file the key's project does not own (or that
/// does not exist). No details: nothing here is about the key.
pub fn file_denied(id: &str) -> Value {
    body(
        403,
        "PERMISSION_DENIED",
        &format!("You do not have permission to access the File {id} or it may not exist."),
        None,
    )
}

/// The request-level 403 for a `cachedContents/...` name the key's project cannot see.
pub fn cached_content_denied() -> Value {
    body(403, "PERMISSION_DENIED", "CachedContent not found (or permission denied)", None)
}

pub fn internal() -> Value {
    body(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        None,
    )
}

pub fn unavailable() -> Value {
    body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", None)
}

pub fn exhausted_no_details() -> Value {
    body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", None)
}

pub fn invalid_argument(message: &str) -> Value {
    body(400, "INVALID_ARGUMENT", message, None)
}

/// Gemini 3's 400 for a model turn whose `functionCall` part lacks its `thoughtSignature`.
/// `position` is the 1-based index of that content in `contents`.
pub fn missing_thought_signature(name: &str, position: usize) -> Value {
    invalid_argument(&format!(
        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {position}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
    ))
}

/// The 400 for a `thoughtSignature` the mock never issued.
pub fn corrupted_thought_signature() -> Value {
    invalid_argument("Corrupted thought signature.")
}

pub fn not_found(message: &str) -> Value {
    body(404, "NOT_FOUND", message, None)
}

/// Which quota a 429 reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    Rpm,
    Tpm,
    Rpd,
}

impl From<MinuteLimit> for QuotaKind {
    fn from(m: MinuteLimit) -> Self {
        match m {
            MinuteLimit::Rpm => QuotaKind::Rpm,
            MinuteLimit::Tpm => QuotaKind::Tpm,
        }
    }
}

impl QuotaKind {
    pub fn quota_id(self) -> &'static str {
        match self {
            QuotaKind::Rpm => "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            QuotaKind::Tpm => "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            QuotaKind::Rpd => "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        }
    }

    pub fn metric(self) -> &'static str {
        match self {
            QuotaKind::Rpm | QuotaKind::Rpd => "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            QuotaKind::Tpm => "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Rpm => "rpm",
            QuotaKind::Tpm => "tpm",
            QuotaKind::Rpd => "rpd",
        }
    }
}

/// Whole seconds for `RetryInfo.retryDelay` (rounded up, at least 1).
pub fn retry_secs(retry_ms: u64) -> u64 {
    retry_ms.div_ceil(1000).max(1)
}

/// The full 429 with QuotaFailure, Help and RetryInfo details.
pub fn quota(kind: QuotaKind, model: &str, limit: u64, retry_ms: u64) -> Value {
    let secs_exact = retry_ms as f64 / 1000.0;
    let message = format!(
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {}, limit: {}, model: {}\nPlease retry in {}s.",
        kind.metric(),
        limit,
        model,
        secs_exact
    );
    body(
        429,
        "RESOURCE_EXHAUSTED",
        &message,
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": kind.metric(),
                    "quotaId": kind.quota_id(),
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
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{}s", retry_secs(retry_ms))
            }
        ])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_body_shape() {
        let v = quota(QuotaKind::Rpm, "gemini-2.5-flash", 10, 17_200);
        assert_eq!(v["error"]["code"], 429);
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert!(v["error"]["message"].as_str().unwrap().ends_with("Please retry in 17.2s."));
        let d = &v["error"]["details"];
        assert_eq!(d[0]["violations"][0]["quotaId"], "GenerateRequestsPerMinutePerProjectPerModel-FreeTier");
        assert_eq!(d[0]["violations"][0]["quotaValue"], "10");
        assert_eq!(d[0]["violations"][0]["quotaDimensions"]["model"], "gemini-2.5-flash");
        assert_eq!(d[2]["@type"], "type.googleapis.com/google.rpc.RetryInfo");
        assert_eq!(d[2]["retryDelay"], "18s");
        assert_eq!(retry_secs(1), 1);
        assert_eq!(retry_secs(7_000), 7);
        assert_eq!(retry_secs(7_001), 8);
    }

    #[test]
    fn invalid_key_body_is_exact() {
        let expected: Value = serde_json::from_str(r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#).unwrap();
        assert_eq!(invalid_key(), expected);
    }

    #[test]
    fn service_blocked_body_is_exact() {
        let expected: Value = serde_json::from_str(r#"{"error":{"code":403,"message":"Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_SERVICE_BLOCKED","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com","methodName":"google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"}}]}}"#).unwrap();
        assert_eq!(service_blocked("google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"), expected);
    }

    #[test]
    fn resource_403_bodies_are_exact() {
        let expected: Value = serde_json::from_str(r#"{"error":{"code":403,"message":"You do not have permission to access the File abc123 or it may not exist.","status":"PERMISSION_DENIED"}}"#).unwrap();
        assert_eq!(file_denied("abc123"), expected);
        let expected: Value = serde_json::from_str(r#"{"error":{"code":403,"message":"CachedContent not found (or permission denied)","status":"PERMISSION_DENIED"}}"#).unwrap();
        assert_eq!(cached_content_denied(), expected);
    }

    #[test]
    fn thought_signature_bodies_are_exact() {
        let expected: Value = serde_json::from_str(r#"{"error":{"code":400,"message":"Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:get_weather` , position 2. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.","status":"INVALID_ARGUMENT"}}"#).unwrap();
        assert_eq!(missing_thought_signature("get_weather", 2), expected);
        let expected: Value = serde_json::from_str(
            r#"{"error":{"code":400,"message":"Corrupted thought signature.","status":"INVALID_ARGUMENT"}}"#,
        )
        .unwrap();
        assert_eq!(corrupted_thought_signature(), expected);
    }

    #[test]
    fn permission_denied_body_is_exact() {
        let expected: Value = serde_json::from_str(r#"{"error":{"code":403,"message":"Permission denied: Consumer has been suspended.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CONSUMER_SUSPENDED","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#).unwrap();
        assert_eq!(permission_denied(), expected);
    }
}
