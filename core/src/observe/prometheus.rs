//! Prometheus text exposition (format 0.0.4) of the `/stats` document: the same figures, so
//! `/metrics` can never disagree with `/stats`.

use super::stats::{KeyStats, Stats, Totals};
use std::fmt::Write as _;

pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", esc(v));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&crate::json::float(value));
        self.text.push('\n');
    }
}

/// A per-key gauge: name, help text and how to read it.
type Gauge = (&'static str, &'static str, fn(&KeyStats) -> f64);

/// Totals of one labelled series (key, client or global) as counters.
fn totals_metrics(o: &mut Out, prefix: &str, rows: &[(Vec<(&str, &str)>, &Totals)]) {
    o.family(&format!("{prefix}_requests_total"), "counter", "Upstream attempts settled.");
    for (l, t) in rows {
        o.sample(&format!("{prefix}_requests_total"), l, t.requests as f64);
    }
    o.family(&format!("{prefix}_outcomes_total"), "counter", "Settled attempts by outcome.");
    for (l, t) in rows {
        let mut all: Vec<(&str, u64)> = vec![("success", t.successes)];
        all.extend(t.failures.iter());
        for (outcome, v) in all {
            let mut labels = l.clone();
            labels.push(("outcome", outcome));
            o.sample(&format!("{prefix}_outcomes_total"), &labels, v as f64);
        }
    }
    o.family(&format!("{prefix}_tokens_total"), "counter", "Tokens reported by the upstream's usageMetadata.");
    for (l, t) in rows {
        for (kind, v) in [("in", t.tokens_in), ("out", t.tokens_out), ("thinking", t.tokens_thinking)] {
            let mut labels = l.clone();
            labels.push(("type", kind));
            o.sample(&format!("{prefix}_tokens_total"), &labels, v as f64);
        }
    }
}

/// The Prometheus text for a `/stats` document: the same figures, low-cardinality labels only
/// (`key_id`, `model`, `client`, `outcome`, `type`).
pub fn prometheus(s: &Stats) -> String {
    let mut o = Out { text: String::new() };
    o.family("llmr_stats_schema_version", "gauge", "Version of the /stats schema these metrics mirror.");
    o.sample("llmr_stats_schema_version", &[], s.schema_version as f64);
    o.family("llmr_redis_time_seconds", "gauge", "Redis TIME when the figures were read.");
    o.sample("llmr_redis_time_seconds", &[], s.generated_at as f64 / 1000.0);
    o.family("llmr_quota_window_seconds", "gauge", "Length of the rolling quota window.");
    o.sample("llmr_quota_window_seconds", &[], s.window_ms as f64 / 1000.0);

    let kl: Vec<Vec<(&str, &str)>> =
        s.keys.iter().map(|k| vec![("key_id", k.key_id.as_str()), ("model", k.model.as_str())]).collect();
    let gauges: [Gauge; 11] = [
        ("llmr_key_rpm_used", "Requests of the key's quota group in the rolling window.", |k| k.usage.rpm.used as f64),
        ("llmr_key_rpm_limit", "The key's requests-per-minute limit.", |k| k.usage.rpm.limit as f64),
        ("llmr_key_tpm_used", "Input tokens of the key's quota group in the rolling window.", |k| {
            k.usage.tpm.used as f64
        }),
        ("llmr_key_tpm_limit", "The key's tokens-per-minute limit.", |k| k.usage.tpm.limit as f64),
        ("llmr_key_rpd_used", "Requests of the key's quota group this Pacific day.", |k| k.usage.rpd.used as f64),
        ("llmr_key_rpd_limit", "The key's requests-per-day limit.", |k| k.usage.rpd.limit as f64),
        ("llmr_key_cooling", "1 while the key's quota group cools down after a 429.", |k| {
            (k.status == "cooling") as u8 as f64
        }),
        ("llmr_key_cooldown_until_seconds", "End of the cooldown (0: none).", |k| {
            k.cooldown_until.unwrap_or(0) as f64 / 1000.0
        }),
        ("llmr_key_disabled", "1 while the key is disabled for this configuration.", |k| {
            k.disabled.is_some() as u8 as f64
        }),
        ("llmr_key_active", "1 if the key is active in keys.json.", |k| k.active as u8 as f64),
        ("llmr_key_last_used_seconds", "Last admission or settle of the key (0: never).", |k| {
            k.last_used.unwrap_or(0) as f64 / 1000.0
        }),
    ];
    for (name, help, f) in gauges {
        o.family(name, "gauge", help);
        for (k, l) in s.keys.iter().zip(&kl) {
            o.sample(name, l, f(k));
        }
    }
    let rows: Vec<(Vec<(&str, &str)>, &Totals)> = s.keys.iter().zip(&kl).map(|(k, l)| (l.clone(), &k.totals)).collect();
    totals_metrics(&mut o, "llmr_key", &rows);

    // Client token budgets (issue 14): only clients that have one.
    o.family(
        "llmr_client_budget_used_tokens",
        "gauge",
        "Tokens a client used against its budget (window: day, minute).",
    );
    o.family("llmr_client_budget_limit_tokens", "gauge", "A client's token budget (window: day, minute).");
    for c in &s.clients {
        let Some(b) = &c.budget else { continue };
        for (window, u) in [("day", &b.daily_tokens), ("minute", &b.tpm)] {
            if let Some(u) = u {
                let l = [("client", c.client_id.as_str()), ("window", window)];
                o.sample("llmr_client_budget_used_tokens", &l, u.used as f64);
                o.sample("llmr_client_budget_limit_tokens", &l, u.limit as f64);
            }
        }
    }

    o.family("llmr_model_keys", "gauge", "Keys of a model by status.");
    for m in &s.models {
        let c = &m.keys;
        for (st, v) in
            [("available", c.available), ("cooling", c.cooling), ("disabled", c.disabled), ("inactive", c.inactive)]
        {
            o.sample("llmr_model_keys", &[("model", &m.model), ("status", st)], v as f64);
        }
    }

    let rows: Vec<(Vec<(&str, &str)>, &Totals)> =
        s.clients.iter().map(|c| (vec![("client", c.client_id.as_str())], &c.totals)).collect();
    totals_metrics(&mut o, "llmr_client", &rows);

    totals_metrics(&mut o, "llmr", &[(vec![], &s.global.totals)]);
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_well_formed() {
        let text = prometheus(&crate::observe::stats::tests::stats());
        assert!(text.ends_with('\n'));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_string()), "family {name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "sample {name} before its TYPE");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
        assert!(text.contains("llmr_key_rpm_used{key_id=\"f1\",model=\"flash\"} 3\n"));
        assert!(text.contains("llmr_key_outcomes_total{key_id=\"f1\",model=\"flash\",outcome=\"rate_limited\"} 2\n"));
        assert!(text.contains("llmr_key_tokens_total{key_id=\"f1\",model=\"flash\",type=\"thinking\"} 3\n"));
        assert!(text.contains("llmr_client_requests_total{client=\"main\"} 7\n"));
        assert!(text.contains("llmr_requests_total 7\n"));
        assert!(text.contains("llmr_key_cooldown_until_seconds{key_id=\"f1\",model=\"flash\"} 1795899504.469\n"));
        assert!(text.contains("llmr_model_keys{model=\"flash\",status=\"disabled\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
