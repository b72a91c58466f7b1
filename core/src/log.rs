//! Structured JSON log lines, filtered by `LOG_LEVEL`. Callers pass only non-secret fields;
//! keys are masked with `policy::mask_key` and client tokens are never passed at all.

use crate::config::LogLevel;
use serde_json::{json, Value};

fn rank(l: &LogLevel) -> u8 {
    match l {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
    }
}

pub fn enabled(level: &LogLevel, min: &LogLevel) -> bool {
    rank(level) >= rank(min)
}

pub fn line(level: &LogLevel, event: &str, fields: Value) -> String {
    let name = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let mut v = json!({"level": name, "event": event});
    if let Value::Object(m) = fields {
        for (k, val) in m {
            v[k] = val;
        }
    }
    v.to_string()
}

/// A request path safe to log: at most 200 characters, and no query string (a caller might
/// put a token in `?key=`).
pub fn safe_path(path: &str) -> String {
    let p = path.split('?').next().unwrap_or("");
    p.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_level_and_emits_json() {
        assert!(!enabled(&LogLevel::Debug, &LogLevel::Info));
        assert!(enabled(&LogLevel::Error, &LogLevel::Info));
        let l = line(&LogLevel::Info, "request", json!({"status": 200}));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "request");
        assert_eq!(v["status"], 200);
        assert_eq!(safe_path("/v1beta/models/x?key=AIzaSySECRET"), "/v1beta/models/x");
    }
}
