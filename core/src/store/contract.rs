//! How the scripts' replies decode, strictly and with one small non-generic reader.
//!
//! The scripts answer with one JSON string built by Redis' cjson. The text is parsed once into a
//! [`Value`] ([`parse_reply`]) and each reply shape is read field by field through [`Fields`],
//! which knows the encoder's quirks a plain `#[derive(Deserialize)]` would trip on, or worse,
//! paper over:
//! - every Lua number is a double, so an integer may be written as a float (`1.7e12` once it
//!   needs more than 14 significant digits): [`Fields::u64`] and [`Fields::int`] accept integral
//!   floats and reject fractional or out-of-range ones instead of truncating them;
//! - Lua has no separate empty array, so an empty list is written `{}`: [`Fields::turns`] and
//!   [`Fields::list`] accept exactly the empty object, never a non-empty one;
//! - `nil` drops a key while `cjson.null` writes `null`: [`Fields::nullable_u64`] reads a key the
//!   script always writes but may set to `null`, so a renamed key is "missing", not "null".
//!
//! [`Fields::finish`] rejects the fields a shape does not read: the scripts ship inside the binary
//! (`include_str!`), so a field the Rust side does not know is drift between the two, reported
//! as [`StoreError::Protocol`] naming the script and the field rather than read as `None` or `0`.

use crate::store::upstash::StoreError;
use serde_json::{Map, Value};
use std::fmt;

pub(crate) fn protocol(script: &str, msg: impl fmt::Display) -> StoreError {
    StoreError::Protocol(format!("{script}: {msg}"))
}

/// The text of a script's reply: every script here returns `cjson.encode(...)`, a bulk string.
pub(crate) fn reply_text<'v>(script: &str, v: &'v Value) -> Result<&'v str, StoreError> {
    v.as_str().ok_or_else(|| protocol(script, format_args!("expected a JSON string reply, got {v}")))
}

/// Parses a script's reply (the bulk string holding `cjson.encode(...)`) into a [`Value`].
pub(crate) fn parse_reply(script: &str, v: &Value) -> Result<Value, StoreError> {
    crate::json::parse(reply_text(script, v)?).map_err(|e| protocol(script, format_args!("reply: {e}")))
}

const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0; // 2^64
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63

/// A non-negative integer as cjson writes it (milliseconds, counts, tokens).
fn as_uint(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        let f = v.as_f64()?;
        (f.fract() == 0.0 && (0.0..U64_LIMIT).contains(&f)).then_some(f as u64)
    })
}

/// A signed integer as cjson writes it (the Pacific day number).
fn as_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        let f = v.as_f64()?;
        (f.fract() == 0.0 && (-I64_LIMIT..I64_LIMIT).contains(&f)).then_some(f as i64)
    })
}

const UINT: &str = "a non-negative integer (an integral float such as 1.7e12 included)";
const NULL_OR_UINT: &str = "null or a non-negative integer";

/// One reply shape (a JSON object) read field by field; every error names the script, the shape
/// and the field.
pub(crate) struct Fields<'a> {
    script: &'a str,
    shape: &'a str,
    map: &'a Map<String, Value>,
    read: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(script: &'a str, shape: &'a str, v: &'a Value) -> Result<Self, StoreError> {
        match v {
            Value::Object(map) => Ok(Fields { script, shape, map, read: Vec::new() }),
            _ => Err(protocol(script, format_args!("{shape} reply: expected an object, got {v}"))),
        }
    }

    /// A protocol error about this shape.
    pub(crate) fn error(&self, msg: impl fmt::Display) -> StoreError {
        StoreError::Protocol(format!("{}: {} reply: {msg}", self.script, self.shape))
    }

    fn invalid(&self, name: &str, expected: &str, got: &Value) -> StoreError {
        self.error(format_args!("field `{name}`: expected {expected}, got {got}"))
    }

    /// The field, if present (`null` included); the name counts as known either way.
    pub(crate) fn opt_value(&mut self, name: &'a str) -> Option<&'a Value> {
        self.read.push(name);
        self.map.get(name)
    }

    /// A field the shape always has.
    pub(crate) fn value(&mut self, name: &'a str) -> Result<&'a Value, StoreError> {
        self.opt_value(name).ok_or_else(|| self.error(format_args!("missing field `{name}`")))
    }

    pub(crate) fn u64(&mut self, name: &'a str) -> Result<u64, StoreError> {
        let v = self.value(name)?;
        as_uint(v).ok_or_else(|| self.invalid(name, UINT, v))
    }

    /// A key the script always writes, as a number or `cjson.null`: missing is an error.
    pub(crate) fn nullable_u64(&mut self, name: &'a str) -> Result<Option<u64>, StoreError> {
        match self.value(name)? {
            Value::Null => Ok(None),
            v => as_uint(v).map(Some).ok_or_else(|| self.invalid(name, NULL_OR_UINT, v)),
        }
    }

    pub(crate) fn int(&mut self, name: &'a str) -> Result<i64, StoreError> {
        let v = self.value(name)?;
        as_int(v).ok_or_else(|| self.invalid(name, "an integer (an integral float included)", v))
    }

    /// A key the script always writes, as an integer or `cjson.null`.
    pub(crate) fn nullable_int(&mut self, name: &'a str) -> Result<Option<i64>, StoreError> {
        match self.value(name)? {
            Value::Null => Ok(None),
            v => as_int(v).map(Some).ok_or_else(|| self.invalid(name, "null or an integer", v)),
        }
    }

    /// `ok`, checked to be exactly `want` (`1` admitted, `0` not).
    pub(crate) fn flag(&mut self, name: &'a str, want: u64) -> Result<(), StoreError> {
        match self.u64(name)? {
            v if v == want => Ok(()),
            v => Err(self.error(format_args!("field `{name}`: expected {want}, got {v}"))),
        }
    }

    pub(crate) fn string(&mut self, name: &'a str) -> Result<&'a str, StoreError> {
        let v = self.value(name)?;
        v.as_str().ok_or_else(|| self.invalid(name, "a string", v))
    }

    /// A string the script may leave out (`nil`) or write as `null`.
    pub(crate) fn opt_string(&mut self, name: &'a str) -> Result<Option<&'a str>, StoreError> {
        match self.opt_value(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.invalid(name, "a string or null", v)),
        }
    }

    /// A string naming one of `variants`: its index.
    pub(crate) fn one_of(&mut self, name: &'a str, variants: &[&str]) -> Result<usize, StoreError> {
        let s = self.string(name)?;
        variants.iter().position(|v| *v == s).ok_or_else(|| {
            self.error(format_args!("field `{name}`: unknown variant `{s}`, expected one of {variants:?}"))
        })
    }

    /// A Lua list: an array, or `{}` (cjson's empty table); never a non-empty object.
    pub(crate) fn list(&mut self, name: &'a str) -> Result<&'a [Value], StoreError> {
        match self.value(name)? {
            Value::Array(a) => Ok(a),
            Value::Object(m) if m.is_empty() => Ok(&[]),
            v => Err(self.invalid(name, "an array, or {} (cjson's empty table)", v)),
        }
    }

    /// A list of strings the script may leave out (conversation turns).
    pub(crate) fn turns(&mut self, name: &'a str) -> Result<Option<Vec<String>>, StoreError> {
        const TURNS: &str = "an array of strings, or {} (cjson's empty table)";
        if matches!(self.opt_value(name), None | Some(Value::Null)) {
            return Ok(None);
        }
        let list = self.list(name).map_err(|_| self.invalid(name, TURNS, &self.map[name]))?;
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            out.push(v.as_str().ok_or_else(|| self.invalid(name, TURNS, v))?.to_owned());
        }
        Ok(Some(out))
    }

    /// Every field of the reply was read: an unknown one is drift between script and Rust.
    pub(crate) fn finish(self) -> Result<(), StoreError> {
        match self.map.keys().find(|k| !self.read.contains(&k.as_str())) {
            Some(k) => Err(self.error(format_args!("unknown field `{k}`"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug)]
    struct T {
        n: u64,
        d: i64,
        x: Option<u64>,
        h: Option<Vec<String>>,
    }

    fn t(s: &str) -> Result<T, StoreError> {
        let v = parse_reply("test_v1", &json!(s))?;
        let mut f = Fields::new("test_v1", "t", &v)?;
        let t = T { n: f.u64("n")?, d: f.int("d")?, x: f.nullable_u64("x")?, h: f.turns("h")? };
        f.finish().map(|()| t)
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_errors() {
        let v = t(r#"{"n":1.7958994974690e+12,"d":2.0785e4,"x":3.0}"#).unwrap();
        assert_eq!((v.n, v.d, v.x), (1_795_899_497_469, 20785, Some(3)));
        assert!(t(r#"{"n":1.5,"d":1,"x":null}"#).is_err());
        assert!(t(r#"{"n":-1,"d":-1,"x":null}"#).is_err());
        assert!(t(r#"{"n":1e20,"d":1,"x":null}"#).is_err());
        assert!(t(r#"{"n":1,"d":1.5,"x":null}"#).is_err());
        assert!(t(r#"{"n":1,"d":1,"x":-2.0}"#).is_err());
        assert_eq!(t(r#"{"n":0,"d":-1,"x":null}"#).unwrap().d, -1);
        assert_eq!(t(r#"{"n":0,"d":-2.0,"x":null}"#).unwrap().d, -2);
    }

    #[test]
    fn a_nullable_key_must_still_be_present() {
        assert_eq!(t(r#"{"n":1,"d":1,"x":null}"#).unwrap().x, None);
        let e = t(r#"{"n":1,"d":1}"#).unwrap_err();
        assert!(matches!(&e, StoreError::Protocol(m) if m.starts_with("test_v1: t reply: missing field `x`")), "{e}");
        let e = t(r#"{"n":1,"d":1,"x":"soon"}"#).unwrap_err();
        assert!(matches!(&e, StoreError::Protocol(m) if m.contains("field `x`") && m.contains(r#""soon""#)), "{e}");
    }

    #[test]
    fn unknown_fields_and_non_objects_are_errors() {
        let e = t(r#"{"n":1,"d":1,"x":null,"y":2}"#).unwrap_err();
        assert!(matches!(&e, StoreError::Protocol(m) if m.starts_with("test_v1: t reply: unknown field `y`")), "{e}");
        assert!(t("[1]").is_err());
        assert!(t("not json").is_err());
    }

    #[test]
    fn an_empty_object_is_an_empty_list_but_a_full_one_is_an_error() {
        assert_eq!(t(r#"{"n":1,"d":1,"x":null,"h":{}}"#).unwrap().h, Some(vec![]));
        assert_eq!(t(r#"{"n":1,"d":1,"x":null,"h":["a","b"]}"#).unwrap().h, Some(vec!["a".into(), "b".into()]));
        assert_eq!(t(r#"{"n":1,"d":1,"x":null}"#).unwrap().h, None);
        let e = t(r#"{"n":1,"d":1,"x":null,"h":{"1":"a"}}"#).unwrap_err();
        assert!(matches!(&e, StoreError::Protocol(m) if m.contains("cjson's empty table")), "{e}");
        assert!(t(r#"{"n":1,"d":1,"x":null,"h":[1]}"#).is_err());
    }
}
