//! Deterministic values built from a schema: function-call `args` and JSON-mode answers.
//!
//! Both schema dialects are read: Gemini's OpenAPI subset (`parameters`, `responseSchema`,
//! upper-case types such as `"OBJECT"`) and JSON Schema (`parametersJsonSchema`,
//! `responseJsonSchema`: `type` arrays, `$ref` into `$defs`/`definitions`, `anyOf`/`oneOf`/`allOf`,
//! `const`, `enum`).

use serde_json::{json, Map, Value};

/// How deep `$ref`s and nested objects are followed.
const MAX_DEPTH: usize = 8;

/// A JSON value whose object keys keep their insertion order. serde_json's `Map` sorts keys
/// in this workspace (no `preserve_order`), and a JSON-mode answer lists required properties
/// first, so it is written from this.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    Leaf(Value),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    /// Compact JSON text, keys in insertion order.
    pub fn to_json(&self) -> String {
        match self {
            Ordered::Leaf(v) => v.to_string(),
            Ordered::Object(fields) => {
                let inner: Vec<String> =
                    fields.iter().map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v.to_json())).collect();
                format!("{{{}}}", inner.join(","))
            }
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            Ordered::Leaf(v) => v,
            Ordered::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, v.into_value())).collect()),
        }
    }
}

/// Follows `$ref` (a `#/…` pointer into `root`) and takes the first non-null branch of
/// `anyOf` / `oneOf` / `allOf`, until a plain schema is reached.
pub fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..MAX_DEPTH {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(t) => {
                    s = t;
                    continue;
                }
                None => return s,
            }
        }
        let branch = ["anyOf", "oneOf", "allOf", "any_of", "one_of", "all_of"].iter().find_map(|k| {
            s.get(*k).and_then(Value::as_array).and_then(|a| a.iter().find(|b| type_of(b).as_deref() != Some("null")))
        });
        match branch {
            Some(b) => s = b,
            None => break,
        }
    }
    s
}

/// The schema's type, lower-case: `type` (the first non-null entry of a type array), else
/// inferred from `properties` / `items` / the first `enum` value.
pub fn type_of(s: &Value) -> Option<String> {
    match s.get("type") {
        Some(Value::String(t)) => return Some(t.to_ascii_lowercase()),
        Some(Value::Array(ts)) => {
            let mut names = ts.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase);
            let all: Vec<String> = names.by_ref().collect();
            return all.iter().find(|t| *t != "null").or(all.first()).cloned();
        }
        _ => {}
    }
    if s.get("properties").is_some() {
        return Some("object".into());
    }
    if s.get("items").is_some() {
        return Some("array".into());
    }
    match s.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
        Some(Value::String(_)) => Some("string".into()),
        Some(Value::Number(_)) => Some("number".into()),
        Some(Value::Bool(_)) => Some("boolean".into()),
        _ => None,
    }
}

/// Whether `args` mode (function calls) or `json` mode (a whole document) is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Nested objects are `{}`; only required properties plus those found in the prompt.
    Args,
    /// Nested objects are filled recursively, every property.
    Json,
}

/// The value of one schema: `const`, else the first `enum` value, else by type: a string
/// found in the prompt for `prop` (see [`find_in_prompt`]) or `"example"`; numbers 1;
/// booleans true; arrays `[]`; objects `{}` (args) or filled (JSON mode); null null.
fn value(root: &Value, s: &Value, prop: Option<&str>, prompt: &str, fill: Fill, depth: usize) -> Ordered {
    let s = resolve(root, s);
    if let Some(c) = s.get("const") {
        return Ordered::Leaf(c.clone());
    }
    if let Some(first) = s.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
        return Ordered::Leaf(first.clone());
    }
    match type_of(s).as_deref() {
        Some("number") | Some("integer") => Ordered::Leaf(json!(1)),
        Some("boolean") => Ordered::Leaf(json!(true)),
        Some("array") => Ordered::Leaf(json!([])),
        Some("null") => Ordered::Leaf(Value::Null),
        Some("object") if fill == Fill::Json && depth < MAX_DEPTH => object(root, s, prompt, fill, depth + 1),
        Some("object") => Ordered::Leaf(Value::Object(Map::new())),
        _ => {
            let found = prop.and_then(|p| find_in_prompt(p, prompt));
            Ordered::Leaf(Value::String(found.unwrap_or_else(|| "example".into())))
        }
    }
}

/// An object schema's fields: the `required` ones first (in their order), then the other
/// properties in name order. In args mode only the required ones, plus the string
/// properties whose value [`find_in_prompt`] finds.
fn object(root: &Value, s: &Value, prompt: &str, fill: Fill, depth: usize) -> Ordered {
    let empty = Map::new();
    let props = s.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|r| props.contains_key(*r))
        .collect();
    let mut out = Vec::new();
    for r in &required {
        out.push((r.to_string(), value(root, &props[*r], Some(r), prompt, fill, depth)));
    }
    for (name, ps) in props {
        if required.contains(&name.as_str()) {
            continue;
        }
        let wanted = match fill {
            Fill::Json => true,
            Fill::Args => {
                let rs = resolve(root, ps);
                let is_string = matches!(type_of(rs).as_deref(), Some("string") | None);
                is_string && rs.get("enum").is_none() && find_in_prompt(name, prompt).is_some()
            }
        };
        if wanted {
            out.push((name.clone(), value(root, ps, Some(name), prompt, fill, depth)));
        }
    }
    Ordered::Object(out)
}

/// Function-call `args` for a declaration's parameter schema (or `{}` without one).
pub fn args(schema: Option<&Value>, prompt: &str) -> Value {
    match schema {
        Some(root) if type_of(resolve(root, root)).as_deref() == Some("object") => {
            object(root, resolve(root, root), prompt, Fill::Args, 0).into_value()
        }
        _ => Value::Object(Map::new()),
    }
}

/// The JSON-mode answer for a response schema: an object gets every property (required
/// first, nested objects filled); an array is `[]`; a scalar its value.
pub fn json_answer(schema: &Value) -> String {
    value(schema, schema, None, "", Fill::Json, 0).to_json()
}

/// A string value the prompt gives for property `prop`, if a rule finds one:
/// - `city`, `location`, `place`, `town` (any case): the capitalised words right after
///   `in ` (e.g. "weather in New York?" → `New York`);
/// - any property: `<prop>=<value>` (up to whitespace; quotes and trailing `.,;:!?` dropped).
pub fn find_in_prompt(prop: &str, prompt: &str) -> Option<String> {
    let lower_prop = prop.to_ascii_lowercase();
    if ["city", "location", "place", "town"].contains(&lower_prop.as_str()) {
        if let Some(v) = after_in(prompt) {
            return Some(v);
        }
    }
    let lower = prompt.to_ascii_lowercase();
    let key = format!("{lower_prop}=");
    let mut from = 0;
    while let Some(p) = lower[from..].find(&key) {
        let at = from + p;
        from = at + 1;
        let boundary = lower[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_');
        if !boundary {
            continue;
        }
        let rest = &prompt[at + key.len()..];
        let raw = rest.split_whitespace().next().unwrap_or_default();
        let v = raw.trim_matches(|c| c == '"' || c == '\'').trim_end_matches(['.', ',', ';', ':', '!', '?']);
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    None
}

/// The capitalised words after the first `in ` that is followed by one.
fn after_in(prompt: &str) -> Option<String> {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if !w.eq_ignore_ascii_case("in") {
            continue;
        }
        let mut taken = Vec::new();
        for next in &words[i + 1..] {
            let clean = next.trim_end_matches(|c: char| !c.is_alphanumeric());
            if !clean.chars().next().is_some_and(char::is_uppercase) {
                break;
            }
            taken.push(clean);
            if clean.len() != next.len() {
                break; // punctuation ends the name
            }
        }
        if !taken.is_empty() {
            return Some(taken.join(" "));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_in_prompt() {
        assert_eq!(find_in_prompt("city", "What is the weather in Paris?").as_deref(), Some("Paris"));
        assert_eq!(find_in_prompt("location", "weather in New York today").as_deref(), Some("New York"));
        assert_eq!(find_in_prompt("City", "in the morning in Berlin, please").as_deref(), Some("Berlin"));
        assert_eq!(find_in_prompt("city", "weather in paris"), None);
        assert_eq!(find_in_prompt("unit", "use get_weather unit=celsius.").as_deref(), Some("celsius"));
        assert_eq!(find_in_prompt("unit", "subunit=x"), None);
        assert_eq!(find_in_prompt("query", "query=\"rust\" now").as_deref(), Some("rust"));
        assert_eq!(find_in_prompt("query", "nothing here"), None);
    }

    #[test]
    fn args_from_schema() {
        let s = json!({"type": "OBJECT", "properties": {
            "city": {"type": "STRING"}, "days": {"type": "INTEGER"}, "unit": {"type": "STRING", "enum": ["c", "f"]},
            "note": {"type": "STRING"}, "opts": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}}, "exact": {"type": "BOOLEAN"}},
            "required": ["days", "unit", "opts", "tags", "exact"]});
        let a = args(Some(&s), "weather in Paris please");
        assert_eq!(a, json!({"city": "Paris", "days": 1, "unit": "c", "opts": {}, "tags": [], "exact": true}));
        let a = args(Some(&s), "no city here");
        assert_eq!(a, json!({"days": 1, "unit": "c", "opts": {}, "tags": [], "exact": true}));
        // Required strings without a rule: "example".
        let s = json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]});
        assert_eq!(args(Some(&s), "hi"), json!({"q": "example"}));
        assert_eq!(args(None, "hi"), json!({}));
        assert_eq!(args(Some(&json!({"type": "string"})), "hi"), json!({}));
    }

    #[test]
    fn json_schema_features() {
        let s = json!({
            "$defs": {"Loc": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}},
            "type": "object",
            "properties": {
                "where": {"$ref": "#/$defs/Loc"},
                "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
                "kind": {"type": ["string", "null"], "const": "fixed"},
                "name": {"type": ["null", "string"]}
            },
            "required": ["where", "maybe"],
            "additionalProperties": false
        });
        assert_eq!(args(Some(&s), "x"), json!({"where": {}, "maybe": 1}));
        assert_eq!(json_answer(&s), r#"{"where":{"lat":1},"maybe":1,"kind":"fixed","name":"example"}"#);
    }

    #[test]
    fn json_answers() {
        let s = json!({"type": "object", "properties": {
            "b": {"type": "boolean"}, "a": {"type": "string", "enum": ["x", "y"]},
            "n": {"type": "object", "properties": {"z": {"type": "integer"}, "y": {"type": "array"}}}},
            "required": ["n"]});
        let out = json_answer(&s);
        assert_eq!(out, r#"{"n":{"y":[],"z":1},"a":"x","b":true}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["n"]["z"], 1);
        assert_eq!(json_answer(&json!({"type": "ARRAY", "items": {"type": "STRING"}})), "[]");
        assert_eq!(json_answer(&json!({"type": "string"})), "\"example\"");
        assert_eq!(json_answer(&json!({"type": "integer"})), "1");
        assert_eq!(json_answer(&json!({"type": "object"})), "{}");
        // Keys with characters to escape stay valid JSON.
        let s = json!({"type": "object", "properties": {"q\"k": {"type": "string"}}});
        assert_eq!(serde_json::from_str::<Value>(&json_answer(&s)).unwrap(), json!({"q\"k": "example"}));
    }

    #[test]
    fn recursive_refs_terminate() {
        let s = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                       "$ref": "#/$defs/N"});
        let out = json_answer(&s);
        assert!(out.starts_with(r#"{"next":{"next":"#), "{out}");
        assert!(serde_json::from_str::<Value>(&out).is_ok());
        let loop_ref = json!({"$ref": "#"});
        let _ = json_answer(&loop_ref);
    }
}
