//! Configuration, parsed once into validated types.
//!
//! `keys.json` describes the key pool (the prototype's schema plus `quota_group`, `weight` and
//! `fallbacks`); environment variables carry the limits and switches. Every error names the
//! field and the reason, and all errors are collected, so `/health` can show them at once.

pub mod auth;
mod raw;

pub use crate::ids::valid_name;

use std::collections::BTreeMap;

/// A validated key of the pool. The secret is not here: it is looked up by [`secret_names`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConfig {
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub rpm: u32,
    pub tpm: u32,
    pub rpd: u32,
    pub active: bool,
    /// Keys of one Google Cloud project share one quota per model; defaults to the key's own id.
    pub quota_group: String,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyPool {
    pub keys: Vec<KeyConfig>,
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

impl KeyPool {
    pub fn parse(json: &str) -> Result<KeyPool, Vec<String>> {
        let raw = raw::RawKeysFile::parse(json).map_err(|e| vec![format!("keys.json: {e}")])?;
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        if raw.keys.is_empty() {
            errors.push("keys: must list at least one key".to_string());
        }
        for (i, k) in raw.keys.into_iter().enumerate() {
            let at = format!("keys[{i}]");
            if !valid_name(&k.key_id) {
                errors.push(format!("{at}.key_id: must be 1-64 characters of A-Z a-z 0-9 - _ ."));
            } else if !seen.insert(k.key_id.clone()) {
                errors.push(format!("{at}.key_id: duplicate key_id '{}'", k.key_id));
            }
            if !valid_name(&k.model_name) {
                errors.push(format!("{at}.model_name: must be 1-64 characters of A-Z a-z 0-9 - _ ."));
            }
            if k.provider != "gemini" {
                errors.push(format!("{at}.provider: only 'gemini' is supported, got '{}'", k.provider));
            }
            let mut limit = |name: &str, v: i64| -> u32 {
                if v <= 0 {
                    errors.push(format!("{at}.{name}: must be > 0, got {v}"));
                    0
                } else if v > u32::MAX as i64 {
                    errors.push(format!("{at}.{name}: must be <= {}, got {v}", u32::MAX));
                    0
                } else {
                    v as u32
                }
            };
            let (rpm, tpm, rpd) = (limit("rpm", k.rpm), limit("tpm", k.tpm), limit("rpd", k.rpd));
            let quota_group = k.quota_group.unwrap_or_else(|| k.key_id.clone());
            if !valid_name(&quota_group) {
                errors.push(format!("{at}.quota_group: must be 1-64 characters of A-Z a-z 0-9 - _ ."));
            }
            let weight = k.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0 && weight <= 1000.0) {
                errors.push(format!("{at}.weight: must be > 0 and <= 1000, got {}", crate::json::float(weight)));
            }
            keys.push(KeyConfig {
                key_id: k.key_id,
                model: k.model_name,
                provider: k.provider,
                rpm,
                tpm,
                rpd,
                active: k.active,
                quota_group,
                weight,
            });
        }
        // Keys of one quota group share one quota per model, so their limits must agree.
        for (i, a) in keys.iter().enumerate() {
            if let Some(b) = keys[..i].iter().find(|b| b.quota_group == a.quota_group && b.model == a.model) {
                if (a.rpm, a.tpm, a.rpd) != (b.rpm, b.tpm, b.rpd) {
                    errors.push(format!(
                        "keys[{i}]: quota_group '{}' model '{}' has limits that differ from key '{}'",
                        a.quota_group, a.model, b.key_id
                    ));
                }
            }
        }
        let serves = |m: &str| keys.iter().any(|k: &KeyConfig| k.model == m);
        for (from, chain) in &raw.fallbacks {
            if !serves(from) {
                errors.push(format!("fallbacks.{from}: no key serves model '{from}'"));
            }
            for to in chain {
                if !serves(to) {
                    errors.push(format!("fallbacks.{from}: no key serves fallback model '{to}'"));
                }
            }
        }
        if errors.is_empty() {
            Ok(KeyPool { keys, fallbacks: raw.fallbacks })
        } else {
            Err(errors)
        }
    }

    /// Active keys serving `model`, in file order.
    pub fn candidates(&self, model: &str) -> impl Iterator<Item = &KeyConfig> {
        let model = model.to_string();
        self.keys.iter().filter(move |k| k.active && k.model == model)
    }

    pub fn serves(&self, model: &str) -> bool {
        self.keys.iter().any(|k| k.model == model)
    }

    pub fn models(&self) -> Vec<String> {
        // Sorted and deduplicated by inserting in place: no sort instance for one short list.
        let mut out: Vec<String> = Vec::new();
        for k in &self.keys {
            if let Err(at) = out.binary_search(&k.model) {
                out.insert(at, k.model.clone());
            }
        }
        out
    }

    /// A short fingerprint of the pool: a key disabled for an invalid secret stays disabled until
    /// this changes (someone edited keys.json or rotated secrets and redeployed).
    pub fn fingerprint(&self, secrets_digest: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for k in &self.keys {
            for part in [&k.key_id, &k.model, &k.quota_group] {
                h.update(part.as_bytes());
                h.update([0u8]);
            }
            for n in [k.rpm, k.tpm, k.rpd, k.active as u32] {
                h.update(n.to_le_bytes());
            }
        }
        h.update(secrets_digest.as_bytes());
        // 64 bits are plenty to tell configurations apart, and keep Redis values short.
        hex::encode(&h.finalize()[..8])
    }
}

/// The binding names under which a key's secret may be found: the exact `API_KEY_<key_id>`,
/// then the upper-case form with `-` and `.` turned into `_`, because binding names may not
/// contain `-`.
pub fn secret_names(key_id: &str) -> [String; 2] {
    let upper: String =
        key_id.chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_uppercase() }).collect();
    [format!("API_KEY_{key_id}"), format!("API_KEY_{upper}")]
}

/// How the input tokens of a request are estimated before the upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// UTF-8 byte length: a strict upper bound (no token covers less than one byte), so the TPM
    /// guarantee is exact; it over-reserves about 4x for English until settled.
    Bytes,
    /// ceil(chars / 4) + 8: close for English, may undershoot for CJK or code by the estimation error.
    Chars4,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Settings from environment variables. Names kept from the prototype where they existed.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub user_rpm_default: u32,
    pub user_burst_default: u32,
    pub global_rpm_max: u32,
    pub global_burst_max: u32,
    pub conversation_ttl_seconds: u64,
    pub log_level: LogLevel,
    pub gemini_base_url: String,
    pub max_attempts: u32,
    pub request_deadline_ms: u64,
    pub upstream_timeout_ms: u64,
    pub estimator: Estimator,
    /// Length of the rolling quota window. 60 s plus a margin for the skew between Redis time
    /// and the moment Google sees the request (network jitter); see docs in README.
    pub window_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// The request body cap (`MAX_BODY_BYTES`): 20 MiB by default, at most 100 MiB (what
    /// Workers' paid plans accept). A body is parsed once, so a 20 MiB image costs about twice
    /// its size in the isolate's 128 MB.
    pub max_body_bytes: usize,
    /// Stored history beyond this many (estimated) tokens is left out of the upstream request,
    /// oldest first. `CONTEXT_BUDGET_TOKENS`.
    pub context_budget_tokens: u64,
    /// Clients and their token digests (`CLIENTS_JSON`).
    pub clients: crate::config::auth::Clients,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            user_rpm_default: 10,
            user_burst_default: 20,
            global_rpm_max: 1000,
            global_burst_max: 2000,
            conversation_ttl_seconds: 86400,
            log_level: LogLevel::Info,
            gemini_base_url: "https://generativelanguage.googleapis.com".into(),
            max_attempts: 3,
            request_deadline_ms: 60_000,
            upstream_timeout_ms: 30_000,
            estimator: Estimator::Bytes,
            window_ms: 61_000,
            backoff_base_ms: 100,
            backoff_cap_ms: 2_000,
            max_body_bytes: 20 << 20,
            context_budget_tokens: 900_000,
            clients: crate::config::auth::Clients::default(),
        }
    }
}

impl Settings {
    /// Builds settings from a variable lookup (the worker's `env`, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, Vec<String>> {
        let mut s = Settings::default();
        let mut errors = Vec::new();
        fn num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
            min: T,
            max: T,
            slot: &mut T,
            errors: &mut Vec<String>,
        ) {
            if let Some(v) = get(name) {
                match v.trim().parse::<T>() {
                    Ok(n) if n >= min && n <= max => *slot = n,
                    _ => errors.push(format!("{name}: must be a number from {min} to {max}, got '{v}'")),
                }
            }
        }
        if let Some(v) = get("LLM_MULTI_KEY_ROUTER_ENABLED") {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => s.enabled = true,
                "false" | "0" | "no" | "off" => s.enabled = false,
                _ => errors.push(format!("LLM_MULTI_KEY_ROUTER_ENABLED: must be true or false, got '{v}'")),
            }
        }
        num(&get, "USER_RPM_DEFAULT", 1, 1_000_000, &mut s.user_rpm_default, &mut errors);
        num(&get, "USER_BURST_DEFAULT", 1, 1_000_000, &mut s.user_burst_default, &mut errors);
        num(&get, "GLOBAL_RPM_MAX", 1, 100_000_000, &mut s.global_rpm_max, &mut errors);
        num(&get, "GLOBAL_BURST_MAX", 1, 100_000_000, &mut s.global_burst_max, &mut errors);
        num(&get, "CONVERSATION_TTL_SECONDS", 1, 31_536_000, &mut s.conversation_ttl_seconds, &mut errors);
        num(&get, "MAX_ATTEMPTS", 1, 10, &mut s.max_attempts, &mut errors);
        num(&get, "REQUEST_DEADLINE_MS", 100, 600_000, &mut s.request_deadline_ms, &mut errors);
        num(&get, "UPSTREAM_TIMEOUT_MS", 100, 600_000, &mut s.upstream_timeout_ms, &mut errors);
        num(&get, "QUOTA_WINDOW_MS", 60_000, 120_000, &mut s.window_ms, &mut errors);
        num(&get, "BACKOFF_BASE_MS", 0, 60_000, &mut s.backoff_base_ms, &mut errors);
        num(&get, "BACKOFF_CAP_MS", 0, 60_000, &mut s.backoff_cap_ms, &mut errors);
        num(&get, "MAX_BODY_BYTES", 1024, 100 << 20, &mut s.max_body_bytes, &mut errors);
        num(&get, "CONTEXT_BUDGET_TOKENS", 100, 10_000_000, &mut s.context_budget_tokens, &mut errors);
        match get("CLIENTS_JSON") {
            Some(j) => match crate::config::auth::Clients::parse(&j) {
                Ok(c) => s.clients = c,
                Err(e) => errors.extend(e),
            },
            None => errors.push("CLIENTS_JSON: not set; no client could authenticate".into()),
        }
        if let Some(v) = get("LOG_LEVEL") {
            s.log_level = match v.trim().to_ascii_uppercase().as_str() {
                "DEBUG" => LogLevel::Debug,
                "INFO" => LogLevel::Info,
                "WARN" | "WARNING" => LogLevel::Warn,
                "ERROR" => LogLevel::Error,
                _ => {
                    errors.push(format!("LOG_LEVEL: must be DEBUG, INFO, WARN or ERROR, got '{v}'"));
                    LogLevel::Info
                }
            };
        }
        if let Some(v) = get("TOKEN_ESTIMATOR") {
            s.estimator = match v.trim() {
                "bytes" => Estimator::Bytes,
                "chars4" => Estimator::Chars4,
                _ => {
                    errors.push(format!("TOKEN_ESTIMATOR: must be 'bytes' or 'chars4', got '{v}'"));
                    Estimator::Bytes
                }
            };
        }
        if let Some(v) = get("GEMINI_BASE_URL") {
            let v = v.trim().trim_end_matches('/').to_string();
            if v.starts_with("https://") || v.starts_with("http://") {
                s.gemini_base_url = v;
            } else {
                errors.push(format!("GEMINI_BASE_URL: must be an http(s) URL, got '{v}'"));
            }
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"keys":[
        {"key_id":"gemini-flash-01","model_name":"gemini-2.5-flash","provider":"gemini","rpm":10,"tpm":250000,"rpd":1500,"active":true},
        {"key_id":"gemini-flash-02","model_name":"gemini-2.5-flash","provider":"gemini","rpm":10,"tpm":250000,"rpd":1500,"active":true},
        {"key_id":"gemini-pro-01","model_name":"gemini-2.5-pro","provider":"gemini","rpm":5,"tpm":100000,"rpd":50,"active":true}]}"#;

    #[test]
    fn seed_keys_json_loads() {
        let pool = KeyPool::parse(SEED).unwrap();
        assert_eq!(pool.keys.len(), 3);
        assert_eq!(pool.keys[0].quota_group, "gemini-flash-01");
        assert_eq!(pool.candidates("gemini-2.5-flash").count(), 2);
        assert_eq!(pool.models(), vec!["gemini-2.5-flash", "gemini-2.5-pro"]);
    }

    #[test]
    fn the_repo_keys_json_is_valid() {
        KeyPool::parse(include_str!("../../../keys.json")).unwrap();
    }

    #[test]
    fn errors_name_field_and_reason() {
        let bad = r#"{"keys":[
            {"key_id":"a","model_name":"m","rpm":0,"tpm":-5,"rpd":1},
            {"key_id":"a","model_name":"m","rpm":1,"tpm":1,"rpd":1}]}"#;
        let errs = KeyPool::parse(bad).unwrap_err();
        assert!(errs.contains(&"keys[0].rpm: must be > 0, got 0".to_string()), "{errs:?}");
        assert!(errs.contains(&"keys[0].tpm: must be > 0, got -5".to_string()), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("keys[1].key_id: duplicate")), "{errs:?}");
    }

    #[test]
    fn unknown_fields_and_bad_names_are_rejected() {
        let errs =
            KeyPool::parse(r#"{"keys":[{"key_id":"a","model_name":"m","rpm":1,"tpm":1,"rpd":1,"colour":"red"}]}"#)
                .unwrap_err();
        assert!(errs[0].contains("unknown field `colour`"), "{errs:?}");
        let errs =
            KeyPool::parse(r#"{"keys":[{"key_id":"a:b*","model_name":"m","rpm":1,"tpm":1,"rpd":1}]}"#).unwrap_err();
        assert!(errs[0].starts_with("keys[0].key_id"), "{errs:?}");
    }

    #[test]
    fn fallbacks_must_name_served_models() {
        let errs = KeyPool::parse(
            r#"{"keys":[{"key_id":"a","model_name":"m","rpm":1,"tpm":1,"rpd":1}],"fallbacks":{"m":["nope"]}}"#,
        )
        .unwrap_err();
        assert_eq!(errs, vec!["fallbacks.m: no key serves fallback model 'nope'"]);
    }

    #[test]
    fn shared_group_limits_must_agree() {
        let errs = KeyPool::parse(
            r#"{"keys":[{"key_id":"a","model_name":"m","rpm":1,"tpm":1,"rpd":1,"quota_group":"p"},
                        {"key_id":"b","model_name":"m","rpm":2,"tpm":1,"rpd":1,"quota_group":"p"}]}"#,
        )
        .unwrap_err();
        assert!(errs[0].contains("differ"), "{errs:?}");
    }

    #[test]
    fn secret_names_cover_binding_safe_form() {
        assert_eq!(secret_names("gemini-flash-01"), ["API_KEY_gemini-flash-01", "API_KEY_GEMINI_FLASH_01"]);
    }

    #[test]
    fn settings_parse_and_report_every_bad_field() {
        let vars = [
            ("USER_RPM_DEFAULT", "5"),
            ("LLM_MULTI_KEY_ROUTER_ENABLED", "false"),
            ("LOG_LEVEL", "debug"),
            ("CLIENTS_JSON", r#"{"clients":[]}"#),
        ];
        let s = Settings::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
        assert_eq!(s.user_rpm_default, 5);
        assert!(!s.enabled);
        assert_eq!(s.log_level, LogLevel::Debug);
        let bad = [("USER_RPM_DEFAULT", "-1"), ("GEMINI_BASE_URL", "ftp://x"), ("CLIENTS_JSON", r#"{"clients":[]}"#)];
        let errs =
            Settings::from_lookup(|k| bad.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("USER_RPM_DEFAULT"));
    }
}
