//! The one error type of the router, and its single mapping to HTTP.
//!
//! Every variant maps to a status and a stable machine-readable `code` in [`RouterError::status`]
//! and [`RouterError::code`]. Both matches are exhaustive with no `_` arm on purpose: a new
//! variant must choose its status, so it can never silently become a 500.
//! Messages never carry secrets or raw upstream bodies.

use serde_json::{json, Value};

/// Which limit refused a request, as reported to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Rpm,
    Tpm,
    Rpd,
    Cooldown,
    Disabled,
    ClientRate,
    GlobalRate,
    /// The caller's own token budget (`daily_tokens` or `tpm` in CLIENTS_JSON): code `client_budget`.
    ClientBudget,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Rpm => "rpm",
            LimitKind::Tpm => "tpm",
            LimitKind::Rpd => "rpd",
            LimitKind::Cooldown => "cooldown",
            LimitKind::Disabled => "disabled",
            LimitKind::ClientRate => "client_rate",
            LimitKind::GlobalRate => "global_rate",
            LimitKind::ClientBudget => "client_budget",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "rpm" => LimitKind::Rpm,
            "tpm" => LimitKind::Tpm,
            "rpd" => LimitKind::Rpd,
            "cooldown" => LimitKind::Cooldown,
            "disabled" => LimitKind::Disabled,
            "client_rate" => LimitKind::ClientRate,
            "global_rate" => LimitKind::GlobalRate,
            "client_budget" => LimitKind::ClientBudget,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouterError {
    /// The request body or a parameter is invalid. `code` is a stable snake_case identifier.
    BadRequest {
        code: &'static str,
        message: String,
    },
    PayloadTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    NotFound {
        code: &'static str,
        message: String,
    },
    MethodNotAllowed {
        allowed: &'static str,
    },
    Unauthorized,
    Forbidden {
        scope: &'static str,
    },
    /// The caller's `models` list (CLIENTS_JSON) does not name the model.
    ModelNotAllowed {
        model: String,
    },
    UnknownModel {
        model: String,
    },
    /// No key (or caller bucket) has room now. `retry_after_ms` is when the earliest one frees.
    NoCapacity {
        limit: LimitKind,
        retry_after_ms: Option<u64>,
        bucket: Option<(u64, u64)>,
    },
    /// The prompt alone exceeds every candidate key's tokens-per-minute limit.
    PromptTooLarge {
        estimate: u64,
    },
    /// Gemini refused the request itself (a 4xx that is the caller's doing).
    UpstreamRejected {
        status: u16,
        /// Gemini's own status (`PERMISSION_DENIED`, `INVALID_ARGUMENT`, ...), shown as-is.
        grpc_status: String,
        message: String,
    },
    /// Every attempt failed with transient upstream errors.
    UpstreamUnavailable {
        message: String,
    },
    UpstreamTimeout,
    ConversationNotFound,
    ConversationBusy,
    /// A conversation send whose media would pass the per-turn or per-conversation cap
    /// (`engine::plan::CONV_TURN_MEDIA_BYTES`, `CONV_MEDIA_BYTES`).
    ConversationTooLarge {
        message: String,
    },
    RouterDisabled,
    StoreUnavailable {
        message: String,
    },
    ConfigInvalid {
        errors: Vec<String>,
    },
    /// A bug: something the code assumed could not happen.
    Internal {
        message: String,
    },
}

impl RouterError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        RouterError::BadRequest { code, message: message.into() }
    }

    pub fn status(&self) -> u16 {
        match self {
            RouterError::BadRequest { .. } => 400,
            RouterError::PayloadTooLarge { .. } => 413,
            RouterError::UnsupportedMediaType => 415,
            RouterError::NotFound { .. } => 404,
            RouterError::MethodNotAllowed { .. } => 405,
            RouterError::Unauthorized => 401,
            RouterError::Forbidden { .. } => 403,
            RouterError::ModelNotAllowed { .. } => 403,
            RouterError::UnknownModel { .. } => 400,
            RouterError::NoCapacity { .. } => 429,
            RouterError::PromptTooLarge { .. } => 413,
            RouterError::UpstreamRejected { status, .. } => *status,
            RouterError::UpstreamUnavailable { .. } => 502,
            RouterError::UpstreamTimeout => 504,
            RouterError::ConversationNotFound => 404,
            RouterError::ConversationBusy => 409,
            RouterError::ConversationTooLarge { .. } => 413,
            RouterError::RouterDisabled => 503,
            RouterError::StoreUnavailable { .. } => 503,
            RouterError::ConfigInvalid { .. } => 503,
            RouterError::Internal { .. } => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RouterError::BadRequest { code, .. } => code,
            RouterError::PayloadTooLarge { .. } => "payload_too_large",
            RouterError::UnsupportedMediaType => "unsupported_media_type",
            RouterError::NotFound { code, .. } => code,
            RouterError::MethodNotAllowed { .. } => "method_not_allowed",
            RouterError::Unauthorized => "unauthorized",
            RouterError::Forbidden { .. } => "forbidden",
            RouterError::ModelNotAllowed { .. } => "model_not_allowed",
            RouterError::UnknownModel { .. } => "unknown_model",
            RouterError::NoCapacity { limit: LimitKind::ClientBudget, .. } => "client_budget",
            RouterError::NoCapacity { .. } => "rate_limited",
            RouterError::PromptTooLarge { .. } => "prompt_too_large",
            RouterError::UpstreamRejected { .. } => "upstream_rejected",
            RouterError::UpstreamUnavailable { .. } => "upstream_unavailable",
            RouterError::UpstreamTimeout => "upstream_timeout",
            RouterError::ConversationNotFound => "conversation_not_found",
            RouterError::ConversationBusy => "conversation_busy",
            RouterError::ConversationTooLarge { .. } => "conversation_too_large",
            RouterError::RouterDisabled => "router_disabled",
            RouterError::StoreUnavailable { .. } => "store_unavailable",
            RouterError::ConfigInvalid { .. } => "config_invalid",
            RouterError::Internal { .. } => "internal_error",
        }
    }

    /// Whether the same request may succeed if the caller sends it again later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            RouterError::NoCapacity { .. }
                | RouterError::UpstreamUnavailable { .. }
                | RouterError::UpstreamTimeout
                | RouterError::ConversationBusy
                | RouterError::StoreUnavailable { .. }
        )
    }

    pub fn message(&self) -> String {
        match self {
            RouterError::BadRequest { message, .. } | RouterError::NotFound { message, .. } => message.clone(),
            RouterError::PayloadTooLarge { limit } => {
                format!("request body exceeds the limit of {limit} bytes (MAX_BODY_BYTES)")
            }
            RouterError::UnsupportedMediaType => "content-type must be application/json".into(),
            RouterError::MethodNotAllowed { allowed } => {
                format!("method not allowed; use {allowed}")
            }
            RouterError::Unauthorized => "missing or unknown API token".into(),
            RouterError::Forbidden { scope } => format!("token lacks the '{scope}' scope"),
            RouterError::ModelNotAllowed { model } => format!("this token may not use model '{model}'"),
            RouterError::UnknownModel { model } => {
                format!("no key in the pool serves model '{model}'")
            }
            RouterError::NoCapacity { limit: LimitKind::ClientBudget, .. } => {
                "this token's token budget is used up (daily_tokens or tpm); see Retry-After".into()
            }
            RouterError::NoCapacity { limit, .. } => {
                format!("no capacity: {} limit reached", limit.as_str())
            }
            RouterError::PromptTooLarge { estimate } => {
                format!("prompt (~{estimate} input tokens) exceeds every key's tokens-per-minute limit")
            }
            RouterError::UpstreamRejected { message, .. } => message.clone(),
            RouterError::UpstreamUnavailable { message } => message.clone(),
            RouterError::ConversationTooLarge { message } => message.clone(),
            RouterError::UpstreamTimeout => "upstream did not answer before the deadline".into(),
            RouterError::ConversationNotFound => "conversation not found or expired".into(),
            RouterError::ConversationBusy => "another message to this conversation is in progress".into(),
            RouterError::RouterDisabled => "the router is disabled (LLM_MULTI_KEY_ROUTER_ENABLED=false)".into(),
            RouterError::StoreUnavailable { message } => {
                format!("state store unavailable: {message}")
            }
            RouterError::ConfigInvalid { errors } => {
                format!("configuration invalid: {}", errors.join("; "))
            }
            RouterError::Internal { message } => message.clone(),
        }
    }

    /// Seconds for a `Retry-After` header, when the error has one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            RouterError::NoCapacity { retry_after_ms: Some(ms), .. } => Some(ms.div_ceil(1000).max(1)),
            RouterError::ConversationBusy | RouterError::StoreUnavailable { .. } => Some(1),
            _ => None,
        }
    }

    /// The stable JSON error body: `{"error": {"code", "message", "status", ...}}`.
    pub fn to_json(&self) -> Value {
        let mut err = json!({
            "code": self.code(),
            "message": self.message(),
            "status": self.status(),
            "retryable": self.retryable(),
        });
        if let RouterError::NoCapacity { limit, retry_after_ms, .. } = self {
            err["limit"] = json!(limit.as_str());
            if let Some(ms) = retry_after_ms {
                err["retry_after_ms"] = json!(ms);
            }
        }
        if let RouterError::UpstreamRejected { grpc_status, .. } = self {
            err["upstream_status"] = json!(grpc_status);
        }
        if let RouterError::ConfigInvalid { errors } = self {
            err["errors"] = json!(errors);
        }
        json!({ "error": err })
    }
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for RouterError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_capacity_is_429_with_limit_and_retry_after() {
        let e = RouterError::NoCapacity { limit: LimitKind::Rpm, retry_after_ms: Some(1200), bucket: None };
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after_secs(), Some(2));
        let j = e.to_json();
        assert_eq!(j["error"]["code"], "rate_limited");
        assert_eq!(j["error"]["limit"], "rpm");
        assert_eq!(j["error"]["retry_after_ms"], 1200);
    }

    #[test]
    fn every_client_error_is_4xx_and_only_bugs_are_500() {
        let cases = [
            RouterError::bad_request("invalid_json", "x"),
            RouterError::PayloadTooLarge { limit: 1 },
            RouterError::UnsupportedMediaType,
            RouterError::MethodNotAllowed { allowed: "POST" },
            RouterError::Unauthorized,
            RouterError::Forbidden { scope: "admin" },
            RouterError::ModelNotAllowed { model: "m".into() },
            RouterError::UnknownModel { model: "m".into() },
            RouterError::ConversationNotFound,
            RouterError::ConversationBusy,
            RouterError::ConversationTooLarge { message: "m".into() },
        ];
        for c in cases {
            assert!((400..500).contains(&c.status()), "{c:?}");
        }
        assert_eq!(RouterError::Internal { message: "bug".into() }.status(), 500);
        assert_eq!(RouterError::StoreUnavailable { message: "down".into() }.status(), 503);
    }

    #[test]
    fn limit_kind_round_trips() {
        for k in [
            LimitKind::Rpm,
            LimitKind::Tpm,
            LimitKind::Rpd,
            LimitKind::Cooldown,
            LimitKind::Disabled,
            LimitKind::ClientRate,
            LimitKind::GlobalRate,
            LimitKind::ClientBudget,
        ] {
            assert_eq!(LimitKind::parse(k.as_str()), Some(k));
        }
    }
}
