//! The mock's configuration (file, or `PUT /_mock/config`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Limits for one (project, model). A missing field means unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct KeyConfig {
    pub api_key: String,
    pub label: Option<String>,
    pub project: Option<String>,
    /// Every call gets 403 `PERMISSION_DENIED` with `CONSUMER_SUSPENDED`.
    pub permission_denied: bool,
    /// Every call gets 403 `PERMISSION_DENIED` with `API_KEY_SERVICE_BLOCKED`.
    pub service_blocked: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub latency_ms: u64,
    pub stream_chunk_delay_ms: u64,
    pub keys: Vec<KeyConfig>,
    /// project → model → limits
    pub projects: HashMap<String, HashMap<String, Limits>>,
    pub enforce_quotas: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            latency_ms: 0,
            stream_chunk_delay_ms: 0,
            keys: Vec::new(),
            projects: HashMap::new(),
            enforce_quotas: true,
        }
    }
}

/// A resolved key: how it shows up in stats, and which project's quota it draws on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub label: String,
    pub project: String,
    pub permission_denied: bool,
    pub service_blocked: bool,
}

pub fn strip_models_prefix(model: &str) -> &str {
    let mut m = model;
    while let Some(rest) = m.strip_prefix("models/") {
        m = rest;
    }
    m
}

impl Config {
    pub fn from_json(text: &str) -> Result<Config, String> {
        let mut c: Config = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.normalize();
        Ok(c)
    }

    /// Strips `models/` from model names in the project tables.
    pub fn normalize(&mut self) {
        for table in self.projects.values_mut() {
            let fixed: HashMap<String, Limits> =
                table.drain().map(|(m, l)| (strip_models_prefix(&m).to_string(), l)).collect();
            *table = fixed;
        }
    }

    /// api_key → KeyInfo. Labels default to `key-<n>` (1-based); projects to the label.
    pub fn key_map(&self) -> HashMap<String, KeyInfo> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let label = k.label.clone().unwrap_or_else(|| format!("key-{}", i + 1));
                let project = k.project.clone().unwrap_or_else(|| label.clone());
                let info = KeyInfo {
                    label,
                    project,
                    permission_denied: k.permission_denied,
                    service_blocked: k.service_blocked,
                };
                (k.api_key.clone(), info)
            })
            .collect()
    }

    pub fn limits(&self, project: &str, model: &str) -> Option<Limits> {
        self.projects.get(project)?.get(model).copied()
    }

    /// The config as JSON with every api_key replaced by "***".
    pub fn redacted(&self) -> serde_json::Value {
        let mut c = self.clone();
        for k in &mut c.keys {
            k.api_key = "***".into();
        }
        serde_json::to_value(c).unwrap_or_default()
    }
}

/// Label for a key when no keys are configured (any key accepted): a short FNV-1a hash,
/// so the key itself never appears anywhere.
pub fn anon_label(api_key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in api_key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("anon-{:08x}", (h >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parse() {
        let c = Config::from_json("{}").unwrap();
        assert!(c.enforce_quotas);
        assert!(c.keys.is_empty());
        let c = Config::from_json(
            r#"{"keys":[{"api_key":"AIzaSyA","label":"flash-1","project":"p"},{"api_key":"AIzaSyB","service_blocked":true}],
                "projects":{"p":{"models/gemini-2.5-flash":{"rpm":10}}},"latency_ms":5}"#,
        )
        .unwrap();
        let km = c.key_map();
        assert_eq!(km["AIzaSyA"].label, "flash-1");
        assert_eq!(km["AIzaSyB"].label, "key-2");
        assert_eq!(km["AIzaSyB"].project, "key-2");
        assert!(!km["AIzaSyA"].service_blocked && !km["AIzaSyA"].permission_denied);
        assert!(km["AIzaSyB"].service_blocked);
        assert_eq!(c.limits("p", "gemini-2.5-flash"), Some(Limits { rpm: Some(10), tpm: None, rpd: None }));
        assert_eq!(c.limits("p", "gemini-2.5-pro"), None);
        assert!(!c.redacted().to_string().contains("AIzaSy"));
        assert!(!anon_label("AIzaSyXYZ").contains("AIza"));
        assert_eq!(anon_label("k"), anon_label("k"));
    }
}
