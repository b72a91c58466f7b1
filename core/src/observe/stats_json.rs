//! The `/stats` document as JSON, written field by field with [`object`]. The derived `Serialize`
//! of [`Stats`] stays the reference (the test below holds the two equal); this writer exists
//! because the derived one costs a `SerializeStruct` instance per field type in the wasm.

use super::key_status::KeyCounts;
use super::stats::{
    ClientBudget, ClientStats, Counts, Disabled, GlobalStats, KeyStats, ModelStats, Stats, Totals, Usage, Used,
};
use crate::json::object;
use serde_json::{Map, Value};

fn counts(c: &Counts) -> Value {
    let mut m = Map::new();
    for (k, v) in c.iter() {
        m.insert(k.to_owned(), v.into());
    }
    Value::Object(m)
}

fn totals(t: &Totals) -> Value {
    object(vec![
        ("requests", t.requests.into()),
        ("successes", t.successes.into()),
        ("failures", counts(&t.failures)),
        ("failures_total", t.failures_total.into()),
        ("upstream_429s", t.upstream_429s.into()),
        ("tokens_in", t.tokens_in.into()),
        ("tokens_out", t.tokens_out.into()),
        ("tokens_thinking", t.tokens_thinking.into()),
    ])
}

fn used(u: &Used) -> Value {
    object(vec![("used", u.used.into()), ("limit", u.limit.into())])
}

fn usage(u: &Usage) -> Value {
    object(vec![("rpm", used(&u.rpm)), ("tpm", used(&u.tpm)), ("rpd", used(&u.rpd))])
}

fn key_counts(c: &KeyCounts) -> Value {
    object(vec![
        ("total", c.total.into()),
        ("available", c.available.into()),
        ("cooling", c.cooling.into()),
        ("disabled", c.disabled.into()),
        ("inactive", c.inactive.into()),
    ])
}

fn disabled(d: &Disabled) -> Value {
    object(vec![
        ("reason", d.reason.as_str().into()),
        ("at", d.at.into()),
        ("manual", d.manual.into()),
        ("by", d.by.as_deref().into()),
    ])
}

/// One key of `/stats` (also the admin key list's entries).
pub(crate) fn key(k: &KeyStats) -> Value {
    object(vec![
        ("key_id", k.key_id.as_str().into()),
        ("model", k.model.as_str().into()),
        ("quota_group", k.quota_group.as_str().into()),
        ("active", k.active.into()),
        ("status", k.status.into()),
        ("usage", usage(&k.usage)),
        ("cooldown_until", k.cooldown_until.into()),
        ("cooldown_reason", k.cooldown_reason.as_deref().into()),
        ("disabled", k.disabled.as_ref().map_or(Value::Null, disabled)),
        ("totals", totals(&k.totals)),
        ("last_used", k.last_used.into()),
    ])
}

fn model(m: &ModelStats) -> Value {
    object(vec![
        ("model", m.model.as_str().into()),
        ("keys", key_counts(&m.keys)),
        ("usage", usage(&m.usage)),
        ("totals", totals(&m.totals)),
        ("last_used", m.last_used.into()),
    ])
}

fn client(c: &ClientStats) -> Value {
    object(vec![
        ("client_id", c.client_id.as_str().into()),
        ("totals", totals(&c.totals)),
        ("last_used", c.last_used.into()),
        ("budget", c.budget.as_ref().map_or(Value::Null, budget)),
    ])
}

fn budget(b: &ClientBudget) -> Value {
    let u = |x: &Option<Used>| x.as_ref().map_or(Value::Null, used);
    object(vec![("daily_tokens", u(&b.daily_tokens)), ("tpm", u(&b.tpm))])
}

fn global(g: &GlobalStats) -> Value {
    object(vec![("keys", key_counts(&g.keys)), ("usage", usage(&g.usage)), ("totals", totals(&g.totals))])
}

impl Stats {
    /// The `/stats` document as JSON.
    pub fn to_json(&self) -> Value {
        object(vec![
            ("schema_version", self.schema_version.into()),
            ("generated_at", self.generated_at.into()),
            ("window_ms", self.window_ms.into()),
            ("pacific_day", self.pacific_day.into()),
            ("keys", Value::Array(self.keys.iter().map(key).collect())),
            ("models", Value::Array(self.models.iter().map(model).collect())),
            ("clients", Value::Array(self.clients.iter().map(client).collect())),
            ("global", global(&self.global)),
            ("audit", Value::Array(self.audit.clone())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::observe::stats::tests::stats;

    #[test]
    fn the_written_document_is_the_derived_one() {
        let s = stats();
        assert!(s.keys.iter().any(|k| k.disabled.is_some()) && s.keys.iter().any(|k| k.cooldown_reason.is_some()));
        assert_eq!(s.to_json(), serde_json::to_value(&s).unwrap());
    }
}
