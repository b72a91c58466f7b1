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
}
