//! Thought signatures on function calls.
//!
//! Models whose name starts with `gemini-3` require them: every `functionCall` part the mock
//! answers with carries a `thoughtSignature`, `base64("sig:<name>:<n>")` with `n` counting
//! up from 1 per mock process, and every model turn of a later request must bring each
//! `functionCall` part back with a signature the mock issued. Gemini 2.x models get none
//! and accept anything.

use std::collections::HashSet;

use serde_json::Value;

use crate::errors;
use crate::tools::function_call;

/// The values Google documents for skipping validation (history from another model, or
/// made up by the client). They are accepted as if issued.
pub const DUMMY_SIGNATURES: [&str; 2] = ["skip_thought_signature_validator", "context_engineering_is_the_way_to_go"];

/// Whether the model requires signatures (`gemini-3*`, a `models/` prefix ignored).
pub fn required(model: &str) -> bool {
    crate::config::strip_models_prefix(model).starts_with("gemini-3")
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHA[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The signatures one mock has issued.
#[derive(Debug, Default)]
pub struct Signatures {
    next: u64,
    issued: HashSet<String>,
}

impl Signatures {
    /// A new signature for a call of `name`: base64("sig:<name>:<n>").
    pub fn issue(&mut self, name: &str) -> String {
        self.next += 1;
        let sig = base64(format!("sig:{name}:{}", self.next).as_bytes());
        self.issued.insert(sig.clone());
        sig
    }

    pub fn is_known(&self, sig: &str) -> bool {
        self.issued.contains(sig) || DUMMY_SIGNATURES.contains(&sig)
    }

    /// For a signature-requiring model: every `functionCall` part of every `model` turn
    /// must carry a `thoughtSignature` (or `thought_signature`) the mock issued. The first
    /// offending part gives the 400 (position: the 1-based index of its content).
    pub fn check(&self, req: &Value) -> Result<(), Value> {
        let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten();
        for (i, c) in contents.enumerate() {
            if c.get("role").and_then(Value::as_str) != Some("model") {
                continue;
            }
            let parts = c.get("parts").and_then(Value::as_array).into_iter().flatten();
            for p in parts {
                let Some(call) = function_call(p) else {
                    continue;
                };
                let sig = p.get("thoughtSignature").or_else(|| p.get("thought_signature")).and_then(Value::as_str);
                match sig {
                    None | Some("") => {
                        let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                        return Err(errors::missing_thought_signature(name, i + 1));
                    }
                    Some(s) if !self.is_known(s) => return Err(errors::corrupted_thought_signature()),
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(b"sig:get_weather:1"), "c2lnOmdldF93ZWF0aGVyOjE=");
    }

    #[test]
    fn models_requiring_signatures() {
        assert!(required("gemini-3-pro-preview"));
        assert!(required("models/gemini-3-flash"));
        assert!(!required("gemini-2.5-flash"));
    }

    #[test]
    fn issue_and_check() {
        let mut s = Signatures::default();
        let a = s.issue("get_weather");
        assert_eq!(a, base64(b"sig:get_weather:1"));
        assert_eq!(s.issue("get_weather"), base64(b"sig:get_weather:2"));
        let turn = |part: Value| {
            json!({"contents": [
                {"role": "user", "parts": [{"text": "weather"}]},
                {"role": "model", "parts": [part]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}]})
        };
        let call = json!({"name": "get_weather", "args": {}});
        assert!(s.check(&turn(json!({"functionCall": call, "thoughtSignature": a}))).is_ok());
        assert!(s.check(&turn(json!({"function_call": call, "thought_signature": a}))).is_ok());
        assert!(s
            .check(&turn(json!({"functionCall": call, "thoughtSignature": "skip_thought_signature_validator"})))
            .is_ok());
        assert_eq!(
            s.check(&turn(json!({"functionCall": call}))),
            Err(errors::missing_thought_signature("get_weather", 2))
        );
        assert_eq!(
            s.check(&turn(json!({"functionCall": call, "thoughtSignature": "bm9wZQ=="}))),
            Err(errors::corrupted_thought_signature())
        );
        // Text-only model turns need nothing.
        assert!(s.check(&turn(json!({"text": "hi"}))).is_ok());
    }
}
