//! Non-generic JSON helpers. serde_json's generic code (the `Value` parser, map insertion,
//! `to_value`) is instantiated once per crate that calls it, and once more for each generic
//! engine function instantiated in the worker crate. The worker and the generic engine code call
//! these instead of `serde_json::from_str::<Value>`, `json!` and `to_value`, so the wasm holds one
//! copy of each, here.

use serde_json::{Map, Value};

/// Parses JSON text into a [`Value`].
#[inline(never)]
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

/// A JSON object from its fields, in any order (the map sorts them). A field given twice keeps
/// its last value.
#[inline(never)]
pub fn object(fields: Vec<(&str, Value)>) -> Value {
    let mut map = Map::new();
    for (k, v) in fields {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

/// Sets `key` on an object (no-op on anything else).
#[inline(never)]
pub fn set(v: &mut Value, key: &str, value: Value) {
    if let Value::Object(m) = v {
        m.insert(key.to_owned(), value);
    }
}

/// A float as text without `core`'s float formatting (its Grisu/Dragon tables are over 15 KB of
/// wasm): integral values as integers (`2`, `-2`, `1795899497`), others through serde_json's
/// shortest round-trip form (`0.5`, `1795899497.469`), and `NaN`, `+Inf`, `-Inf` as Prometheus
/// writes them.
#[inline(never)]
pub fn float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        (f as i64).to_string()
    } else if let Some(n) = serde_json::Number::from_f64(f) {
        n.to_string()
    } else if f.is_nan() {
        "NaN".into()
    } else if f > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_and_set_build_what_json_would() {
        let mut v = object(vec![("b", 1.into()), ("a", Value::Null), ("c", "x".into()), ("b", 2.into())]);
        assert_eq!(v, json!({"a": null, "b": 2, "c": "x"}));
        set(&mut v, "d", true.into());
        assert_eq!(v["d"], json!(true));
        assert_eq!(parse(r#"{"x":[1]}"#).unwrap(), json!({"x": [1]}));
        assert!(parse("{").is_err());
    }

    #[test]
    fn floats_print_as_display_would_for_the_values_we_write() {
        for f in [0.0, 2.0, -2.0, 0.5, 1.5, 1000.0, 1_795_899_497.469, 61.0, 0.1, -0.25] {
            assert_eq!(float(f), f.to_string());
        }
        assert_eq!(
            (float(f64::NAN), float(f64::INFINITY), float(f64::NEG_INFINITY)),
            ("NaN".into(), "+Inf".into(), "-Inf".into())
        );
    }
}
