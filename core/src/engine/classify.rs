//! Whose fault an upstream error is: the one table that decides whether an answer from Gemini
//! disables a key, cools a quota group, is retried, or goes back to the caller.
//!
//! The rule that matters most: a key is disabled only when Google says the *key* is unusable
//! (an `API_KEY_*` reason, a blocked service, a suspended consumer, a 401). A 403 that names a
//! resource (a file, a cached content or a tuned model another project owns) is about the
//! request: the same request fails on every key, so failing over would walk the whole pool and
//! disabling would let any caller empty it with one request. An unknown 403 counts as about the
//! request: a key is never disabled on a guess. Facts: `shared/notes/agent-apis.md`.

use crate::policy::mask_secrets;
use crate::quota::{classify_429, Cooldown};
use serde_json::Value;

/// Whose fault an upstream error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The key is invalid, blocked or its project suspended: disable it, fail over.
    Key,
    /// The request is wrong or names something this key's project cannot see: answer the
    /// caller, no failover, no disabled key, no cooldown.
    Request,
    /// The quota group is exhausted: cool it, fail over.
    Quota,
    /// Google is failing or overloaded: retry with backoff.
    Upstream,
}

/// `ErrorInfo.reason`s of a 403 that mean the key itself is unusable. Any `API_KEY_*` reason
/// counts too, on any status.
pub const KEY_REASONS: [&str; 7] = [
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
    "API_KEY_IOS_APP_BLOCKED",
    "SERVICE_DISABLED",
    "CONSUMER_SUSPENDED",
];

fn is_key_reason(reason: &str) -> bool {
    reason.starts_with("API_KEY_") || KEY_REASONS.contains(&reason)
}

/// The classification table. `reason` is the first key-level `ErrorInfo.reason`, if any.
pub fn fault_of(status: u16, key_reason: Option<&str>) -> Fault {
    match (status, key_reason) {
        (429, _) => Fault::Quota,
        (500 | 502 | 503 | 504, _) => Fault::Upstream,
        (401, _) => Fault::Key,
        (400 | 403, Some(_)) => Fault::Key,
        // 403 PERMISSION_DENIED on a resource, unknown 403s, 400 INVALID_ARGUMENT and
        // FAILED_PRECONDITION, 404 and every other status: the request's.
        _ => Fault::Request,
    }
}

/// What an upstream answer means for the key, the quota and the request.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamOutcome {
    Success,
    /// [`Fault::Quota`]: the key's quota group cools down; fail over to another key.
    RateLimited(Cooldown),
    /// [`Fault::Upstream`]: not the key's fault; retry elsewhere with backoff.
    Transient {
        status: u16,
    },
    /// [`Fault::Key`]: disable the key until the config changes (or an operator enables it);
    /// fail over.
    KeyRejected {
        reason: String,
    },
    /// [`Fault::Request`]: hand Gemini's status and message (secrets masked) to the caller.
    RequestRejected {
        status: u16,
        grpc_status: String,
        message: String,
    },
}

/// Longest upstream message passed to a caller, in bytes.
const MAX_MESSAGE: usize = 500;

pub fn classify(status: u16, body: &str) -> UpstreamOutcome {
    if (200..300).contains(&status) {
        return UpstreamOutcome::Success;
    }
    let v: Value = crate::json::parse(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let grpc = err["status"].as_str().filter(|s| !s.is_empty());
    let key_reason =
        err["details"].as_array().into_iter().flatten().filter_map(|d| d["reason"].as_str()).find(|r| is_key_reason(r));
    match fault_of(status, key_reason) {
        Fault::Quota => UpstreamOutcome::RateLimited(classify_429(body)),
        Fault::Upstream => UpstreamOutcome::Transient { status },
        Fault::Key => {
            let why = key_reason.or(grpc).unwrap_or(if status == 401 { "UNAUTHENTICATED" } else { "FORBIDDEN" });
            UpstreamOutcome::KeyRejected { reason: format!("{status} {why}") }
        }
        Fault::Request => {
            let mut message = mask_secrets(err["message"].as_str().unwrap_or("upstream rejected the request"));
            // At a character boundary: `truncate(500)` inside a multi-byte character panics.
            let cut = (0..=MAX_MESSAGE.min(message.len())).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
            message.truncate(cut);
            // Only client-class statuses are passed through; anything odd becomes a 502.
            let status = if (400..500).contains(&status) { status } else { 502 };
            let grpc_status = grpc.map(str::to_string).unwrap_or_else(|| default_grpc(status).to_string());
            UpstreamOutcome::RequestRejected { status, grpc_status, message }
        }
    }
}

/// Gemini's canonical status for an HTTP status, when its body named none.
pub fn default_grpc(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        504 => "DEADLINE_EXCEEDED",
        500 => "INTERNAL",
        _ => "UNAVAILABLE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_info(code: u16, status: &str, message: &str, reason: &str) -> String {
        format!(
            r#"{{"error":{{"code":{code},"message":"{message}","status":"{status}","details":[{{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"{reason}","domain":"googleapis.com","metadata":{{"service":"generativelanguage.googleapis.com"}}}}]}}}}"#
        )
    }

    fn key_rejected(status: u16, body: &str) -> String {
        match classify(status, body) {
            UpstreamOutcome::KeyRejected { reason } => reason,
            o => panic!("{status} {body}: expected KeyRejected, got {o:?}"),
        }
    }

    fn request_rejected(status: u16, body: &str) -> (u16, String, String) {
        match classify(status, body) {
            UpstreamOutcome::RequestRejected { status, grpc_status, message } => (status, grpc_status, message),
            o => panic!("{status} {body}: expected RequestRejected, got {o:?}"),
        }
    }

    #[test]
    fn key_400_api_key_invalid() {
        let b =
            error_info(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID");
        assert_eq!(key_rejected(400, &b), "400 API_KEY_INVALID");
    }

    #[test]
    fn key_400_other_api_key_reasons() {
        let b = error_info(400, "INVALID_ARGUMENT", "API key expired. Please renew the API key.", "API_KEY_EXPIRED");
        assert_eq!(key_rejected(400, &b), "400 API_KEY_EXPIRED");
    }

    #[test]
    fn key_403_every_key_level_reason() {
        for reason in KEY_REASONS {
            let b = error_info(403, "PERMISSION_DENIED", "Requests to this API are blocked.", reason);
            assert_eq!(key_rejected(403, &b), format!("403 {reason}"));
        }
    }

    #[test]
    fn key_403_service_blocked_real_body() {
        let b = r#"{"error":{"code":403,"message":"Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_SERVICE_BLOCKED","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com","methodName":"google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"}}]}}"#;
        assert_eq!(key_rejected(403, b), "403 API_KEY_SERVICE_BLOCKED");
    }

    #[test]
    fn key_401_whatever_the_body() {
        assert_eq!(key_rejected(401, ""), "401 UNAUTHENTICATED");
        assert_eq!(key_rejected(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#), "401 UNAUTHENTICATED");
    }

    #[test]
    fn request_403_file_of_another_project() {
        let b = r#"{"error":{"code":403,"message":"You do not have permission to access the File abc123 or it may not exist.","status":"PERMISSION_DENIED"}}"#;
        let (status, grpc, message) = request_rejected(403, b);
        assert_eq!((status, grpc.as_str()), (403, "PERMISSION_DENIED"));
        assert!(message.contains("File abc123"), "{message}");
    }

    #[test]
    fn request_403_cached_content_and_tuned_model() {
        for msg in ["CachedContent not found (or permission denied)", "Permission denied on resource tunedModels/x"] {
            let b = format!(r#"{{"error":{{"code":403,"message":"{msg}","status":"PERMISSION_DENIED"}}}}"#);
            assert_eq!(request_rejected(403, &b).2, msg);
        }
    }

    #[test]
    fn request_403_unknown_body_is_never_a_guess_against_the_key() {
        assert_eq!(request_rejected(403, "").1, "PERMISSION_DENIED");
        assert_eq!(request_rejected(403, "<html>Forbidden</html>").0, 403);
        let other_reason = error_info(403, "PERMISSION_DENIED", "no", "ACCESS_TOKEN_SCOPE_INSUFFICIENT");
        assert_eq!(request_rejected(403, &other_reason).0, 403);
    }

    #[test]
    fn request_400_invalid_argument_and_failed_precondition() {
        let b = r#"{"error":{"code":400,"message":"bad temp","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(request_rejected(400, b), (400, "INVALID_ARGUMENT".into(), "bad temp".into()));
        let b = r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(request_rejected(400, b).1, "FAILED_PRECONDITION");
    }

    #[test]
    fn request_404_not_found() {
        let b = r#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}"#;
        assert_eq!(request_rejected(404, b).0, 404);
    }

    #[test]
    fn request_odd_status_becomes_502() {
        assert_eq!(request_rejected(501, "{}").0, 502);
    }

    #[test]
    fn request_message_masks_keys_and_is_cut_at_a_char_boundary() {
        // Key-shaped but built at run time, so no key-like literal is tracked.
        let key = format!("AIzaSy{}5p6Q", "x".repeat(29));
        let b = format!(r#"{{"error":{{"code":400,"message":"key {key} is odd","status":"INVALID_ARGUMENT"}}}}"#);
        let m = request_rejected(400, &b).2;
        assert!(!m.contains(&key), "{m}");
        assert!(m.contains("AIzaSy…5p6Q"), "{m}");
        // Found by fuzzing: a long multi-byte message used to panic at the 500-byte cut.
        let long = format!("{{\"error\":{{\"message\":\"a{}\"}}}}", "é".repeat(300));
        assert_eq!(request_rejected(400, &long).2.len(), 499);
    }

    #[test]
    fn quota_429() {
        assert!(matches!(classify(429, "{}"), UpstreamOutcome::RateLimited(Cooldown::Unknown)));
        // A 429 with a key-like reason is still about the quota.
        let b = error_info(429, "RESOURCE_EXHAUSTED", "x", "API_KEY_SERVICE_BLOCKED");
        assert!(matches!(classify(429, &b), UpstreamOutcome::RateLimited(_)));
    }

    #[test]
    fn upstream_5xx() {
        for s in [500, 502, 503, 504] {
            assert_eq!(classify(s, "{}"), UpstreamOutcome::Transient { status: s });
        }
    }

    #[test]
    fn success_2xx() {
        assert_eq!(classify(200, ""), UpstreamOutcome::Success);
    }
}
