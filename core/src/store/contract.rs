//! What the `reserve_v1` and `settle_v1` replies have in common, decoded strictly.
//!
//! The scripts answer with one JSON string built by Redis' cjson, and that encoder has quirks a
//! plain `#[derive(Deserialize)]` would trip on, or worse, paper over:
//! - every Lua number is a double, so an integer may be written as a float (`1.7e12` once it
//!   needs more than 14 significant digits): [`Uint`] and [`Int`] accept integral floats and
//!   reject fractional ones instead of truncating them;
//! - Lua has no separate empty array, so an empty list is written `{}`: [`Turns`] accepts exactly
//!   the empty object, never a non-empty one;
//! - `nil` drops a key while `cjson.null` writes `null`: [`NullableUint`] is a key the script
//!   always writes but may set to `null`, so a renamed key is "missing", not "null".
//!
//! Reply structs use `deny_unknown_fields`: the scripts ship inside the binary (`include_str!`),
//! so a field the Rust side does not know is drift between the two, reported as
//! [`StoreError::Protocol`] naming the script and the field rather than read as `None` or `0`.

use crate::store::upstash::StoreError;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

pub(crate) fn protocol(script: &str, msg: impl fmt::Display) -> StoreError {
    StoreError::Protocol(format!("{script}: {msg}"))
}

/// The text of a script's reply: every script here returns `cjson.encode(...)`, a bulk string.
pub(crate) fn reply_text<'v>(script: &str, v: &'v Value) -> Result<&'v str, StoreError> {
    v.as_str().ok_or_else(|| protocol(script, format_args!("expected a JSON string reply, got {v}")))
}

/// Decodes one reply shape; serde's message names the missing, unknown or mistyped field.
pub(crate) fn decode<'a, T: Deserialize<'a>>(script: &str, shape: &str, text: &'a str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| protocol(script, format_args!("{shape} reply: {e}")))
}

const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0; // 2^64
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63

/// A non-negative integer as cjson writes it (milliseconds, counts, tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Uint(pub u64);

struct UintVisitor;

impl<'de> Visitor<'de> for UintVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer (an integral float such as 1.7e12 included)")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.is_finite() && v.fract() == 0.0 && (0.0..U64_LIMIT).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UintVisitor).map(Uint)
    }
}

/// A signed integer as cjson writes it (the Pacific day number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int(pub i64);

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer (an integral float included)")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.is_finite() && v.fract() == 0.0 && (-I64_LIMIT..I64_LIMIT).contains(&v) {
            Ok(v as i64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor).map(Int)
    }
}

/// A key the script always writes, as a number or `cjson.null`.
///
/// Deserialised through `deserialize_any` on purpose: serde fills a missing `Option` field with
/// `None` (it asks for `deserialize_option`), which would let a renamed key pass as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NullableUint(pub Option<u64>);

struct NullableUintVisitor;

impl<'de> Visitor<'de> for NullableUintVisitor {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a non-negative integer")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
        UintVisitor.visit_u64(v).map(Some)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
        UintVisitor.visit_i64(v).map(Some)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<u64>, E> {
        UintVisitor.visit_f64(v).map(Some)
    }
}

impl<'de> Deserialize<'de> for NullableUint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NullableUintVisitor).map(NullableUint)
    }
}

/// The `ok` flag of a reply shape, checked to be exactly `V` (`1` admitted, `0` not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OkFlag<const V: u64>;

impl<'de, const V: u64> Deserialize<'de> for OkFlag<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Uint(v) = Uint::deserialize(d)?;
        if v == V {
            Ok(OkFlag)
        } else {
            Err(de::Error::invalid_value(Unexpected::Unsigned(v), &format!("ok = {V}").as_str()))
        }
    }
}

/// A list of strings (conversation turns). cjson writes an empty Lua table as `{}`, so the empty
/// object, and only it, is an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Turns(pub Vec<String>);

struct TurnsVisitor;

impl<'de> Visitor<'de> for TurnsVisitor {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings, or {} (cjson's empty table)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(s) = seq.next_element::<String>()? {
            out.push(s);
        }
        Ok(out)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        match map.next_key::<IgnoredAny>()? {
            None => Ok(Vec::new()),
            Some(_) => Err(de::Error::invalid_value(Unexpected::Map, &self)),
        }
    }
}

impl<'de> Deserialize<'de> for Turns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TurnsVisitor).map(Turns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        n: Uint,
        d: Int,
        x: NullableUint,
        #[serde(default)]
        h: Option<Turns>,
    }

    fn t(s: &str) -> Result<T, StoreError> {
        decode("test_v1", "t", s)
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_errors() {
        let v = t(r#"{"n":1.7958994974690e+12,"d":2.0785e4,"x":3.0}"#).unwrap();
        assert_eq!((v.n, v.d, v.x), (Uint(1_795_899_497_469), Int(20785), NullableUint(Some(3))));
        assert!(t(r#"{"n":1.5,"d":1,"x":null}"#).is_err());
        assert!(t(r#"{"n":-1,"d":-1,"x":null}"#).is_err());
        assert_eq!(t(r#"{"n":0,"d":-1,"x":null}"#).unwrap().d, Int(-1));
    }

    #[test]
    fn a_nullable_key_must_still_be_present() {
        assert_eq!(t(r#"{"n":1,"d":1,"x":null}"#).unwrap().x, NullableUint(None));
        let e = t(r#"{"n":1,"d":1}"#).unwrap_err();
        assert!(matches!(&e, StoreError::Protocol(m) if m.starts_with("test_v1: t reply: missing field `x`")), "{e}");
    }

    #[test]
    fn an_empty_object_is_an_empty_list_but_a_full_one_is_an_error() {
        assert_eq!(t(r#"{"n":1,"d":1,"x":null,"h":{}}"#).unwrap().h, Some(Turns(vec![])));
        assert_eq!(t(r#"{"n":1,"d":1,"x":null,"h":["a","b"]}"#).unwrap().h, Some(Turns(vec!["a".into(), "b".into()])));
        assert!(t(r#"{"n":1,"d":1,"x":null,"h":{"1":"a"}}"#).is_err());
        assert!(t(r#"{"n":1,"d":1,"x":null,"h":[1]}"#).is_err());
    }
}
