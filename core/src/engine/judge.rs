//! The policy of the walk: what one upstream result means for the next step (answer, fail
//! over with or without backoff, stop) and what the settle records. The table of whose fault an
//! error is lives in `classify`; this turns its verdict into the walk's.

use super::attempt::{Called, FirstEvents};
use super::classify::{classify, UpstreamOutcome};
use super::ports::UpstreamError;
use super::settle::Charge;
use crate::error::{LimitKind, RouterError};
use crate::quota::Cooldown;
use crate::store::CooldownSpec;
use crate::wire::gemini::{parse_reply, Reply, Usage};
use serde_json::Value;

/// What to do after a whole (non-streamed) answer.
// Built once per attempt and moved: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Next {
    Answer { reply: Reply, usage: Usage, raw: Value },
    FailOver { backoff: bool, error: RouterError },
    Stop(RouterError),
}

pub(super) enum Verdict<S> {
    Stream(FirstEvents<S>),
    Whole(Next),
}

/// The policy: what an upstream result means for the walk, and what the settle records.
/// `rid` salts the answer's tool-call ids (`wire::call_id`).
pub(super) fn judge<S>(result: Result<Called<S>, UpstreamError>, rid: &str) -> (Verdict<S>, Charge, Option<u16>) {
    let fail_over = |backoff: bool, error: RouterError| Verdict::Whole(Next::FailOver { backoff, error });
    let reply = match result {
        Err(UpstreamError::Timeout) => {
            return (fail_over(true, RouterError::UpstreamTimeout), Charge::kept("timeout"), None);
        }
        Err(UpstreamError::Transport(m)) => {
            let e = RouterError::UpstreamUnavailable { message: format!("upstream unreachable: {m}") };
            return (fail_over(true, e), Charge::kept("transport"), None);
        }
        Ok(Called::Stream(first)) => return (Verdict::Stream(first), Charge::kept("success"), Some(200)),
        Ok(Called::Whole(reply)) => reply,
    };
    let status = Some(reply.status);
    let (verdict, charge) = match classify(reply.status, &reply.body) {
        UpstreamOutcome::Success => match crate::json::parse(&reply.body) {
            Ok(raw) => {
                let r = parse_reply(&raw, rid);
                let usage = r.usage.unwrap_or_default();
                let charge = Charge { usage: r.usage, ..Charge::kept("success") };
                (Verdict::Whole(Next::Answer { reply: r, usage, raw }), charge)
            }
            Err(_) => {
                let e = RouterError::UpstreamUnavailable {
                    message: "upstream answered 200 with an unreadable body".into(),
                };
                (fail_over(true, e), Charge::kept("transient"))
            }
        },
        UpstreamOutcome::RateLimited(c) => {
            let cooldown = match c {
                Cooldown::Delay { ms, reason } => CooldownSpec::Delay { ms, reason },
                Cooldown::UntilPacificMidnight { reason } => CooldownSpec::UntilPacificMidnight { reason },
                Cooldown::Unknown => CooldownSpec::Unknown { reason: "429 without details".into() },
            };
            let e = RouterError::NoCapacity { limit: LimitKind::Cooldown, retry_after_ms: None, bucket: None };
            (fail_over(false, e), Charge { cooldown: Some(cooldown), ..Charge::kept("rate_limited") })
        }
        UpstreamOutcome::Transient { status } => {
            let e =
                RouterError::UpstreamUnavailable { message: format!("upstream answered {status} on every attempt") };
            (fail_over(true, e), Charge::kept("transient"))
        }
        UpstreamOutcome::KeyRejected { reason } => {
            let e = RouterError::UpstreamUnavailable { message: "every key tried was rejected by the upstream".into() };
            // Google does not count a request with an invalid key: give the reservation back.
            (fail_over(false, e), Charge { release: true, disable: Some(reason), ..Charge::kept("key_rejected") })
        }
        UpstreamOutcome::RequestRejected { status, grpc_status, message } => {
            let e = RouterError::UpstreamRejected { status, grpc_status, message };
            // The caller's fault: the request is not charged, the key is not blamed.
            (Verdict::Whole(Next::Stop(e)), Charge { release: true, ..Charge::kept("client_error") })
        }
    };
    (verdict, charge, status)
}
