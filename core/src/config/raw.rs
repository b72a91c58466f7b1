//! `keys.json` and `CLIENTS_JSON` as written, read from a parsed [`Value`] through one small
//! non-generic reader instead of `#[derive(Deserialize)]` (whose per-struct instances cost more
//! wasm than the whole validation). Unknown fields are rejected, missing required ones and wrong
//! types are errors naming the path, as serde would; the validation proper is the callers'.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One object being read; every error names `at` (`keys[2]`) and the field.
struct Obj<'a> {
    at: String,
    map: &'a Map<String, Value>,
    read: Vec<&'a str>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    fn new(at: String, v: &'a Value) -> Result<Self, String> {
        match v {
            Value::Object(map) => Ok(Obj { at, map, read: Vec::new() }),
            v if at.is_empty() => Err(format!("invalid type: {}, expected an object", kind(v))),
            v => Err(format!("{at}: invalid type: {}, expected an object", kind(v))),
        }
    }

    /// `at.name`, or `name` at the top level.
    fn path(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    fn wrong(&self, name: &str, expected: &str, v: &Value) -> String {
        format!("{}: invalid type: {}, expected {expected}", self.path(name), kind(v))
    }

    /// The field as written (`null` included), if present.
    fn field(&mut self, name: &'a str) -> Option<&'a Value> {
        self.read.push(name);
        self.map.get(name)
    }

    /// The field if present and not `null` (a missing optional field and `null` read alike).
    fn opt(&mut self, name: &'a str) -> Option<&'a Value> {
        self.field(name).filter(|v| !v.is_null())
    }

    fn req(&mut self, name: &'a str) -> Result<&'a Value, String> {
        match self.field(name) {
            Some(v) => Ok(v),
            None if self.at.is_empty() => Err(format!("missing field `{name}`")),
            None => Err(format!("{}: missing field `{name}`", self.at)),
        }
    }

    fn string(&mut self, name: &'a str) -> Result<String, String> {
        let v = self.req(name)?;
        v.as_str().map(str::to_owned).ok_or_else(|| self.wrong(name, "a string", v))
    }

    fn opt_string(&mut self, name: &'a str) -> Result<Option<String>, String> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(|s| Some(s.to_owned())).ok_or_else(|| self.wrong(name, "a string", v)),
        }
    }

    fn int_of(&self, name: &str, v: &Value) -> Result<i64, String> {
        v.as_i64().ok_or_else(|| self.wrong(name, "an integer", v))
    }

    fn int(&mut self, name: &'a str) -> Result<i64, String> {
        let v = self.req(name)?;
        self.int_of(name, v)
    }

    fn opt_int(&mut self, name: &'a str) -> Result<Option<i64>, String> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => self.int_of(name, v).map(Some),
        }
    }

    fn array(&mut self, name: &'a str) -> Result<&'a [Value], String> {
        let v = self.req(name)?;
        v.as_array().map(Vec::as_slice).ok_or_else(|| self.wrong(name, "an array", v))
    }

    fn strings(&mut self, name: &'a str) -> Result<Vec<String>, String> {
        let at = self.path(name);
        strings(&at, self.array(name)?)
    }

    /// Every field was read: an unknown one is an error, as with `deny_unknown_fields`.
    fn finish(self) -> Result<(), String> {
        match self.map.keys().find(|k| !self.read.contains(&k.as_str())) {
            Some(k) if self.at.is_empty() => Err(format!("unknown field `{k}`")),
            Some(k) => Err(format!("{}: unknown field `{k}`", self.at)),
            None => Ok(()),
        }
    }
}

fn strings(at: &str, list: &[Value]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some(s) => out.push(s.to_owned()),
            None => return Err(format!("{at}[{i}]: invalid type: {}, expected a string", kind(v))),
        }
    }
    Ok(out)
}

/// One key as written in `keys.json`. Limits are read as signed numbers so that a negative
/// value gets a clear "must be > 0" instead of a type error.
#[derive(Debug)]
pub(super) struct RawKey {
    pub key_id: String,
    pub model_name: String,
    /// `gemini` when absent.
    pub provider: String,
    pub rpm: i64,
    pub tpm: i64,
    pub rpd: i64,
    /// `true` when absent.
    pub active: bool,
    pub quota_group: Option<String>,
    pub weight: Option<f64>,
}

#[derive(Debug)]
pub(super) struct RawKeysFile {
    pub keys: Vec<RawKey>,
    /// Model fallback chains, e.g. `{"gemini-2.5-pro": ["gemini-2.5-flash"]}`. Used only when a
    /// request opts in with `allow_fallback`.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

fn raw_key(at: String, v: &Value) -> Result<RawKey, String> {
    let mut o = Obj::new(at, v)?;
    let key = RawKey {
        key_id: o.string("key_id")?,
        model_name: o.string("model_name")?,
        provider: match o.field("provider") {
            None => "gemini".into(),
            Some(v) => v.as_str().map(str::to_owned).ok_or_else(|| o.wrong("provider", "a string", v))?,
        },
        rpm: o.int("rpm")?,
        tpm: o.int("tpm")?,
        rpd: o.int("rpd")?,
        active: match o.field("active") {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| o.wrong("active", "a boolean", v))?,
        },
        quota_group: o.opt_string("quota_group")?,
        weight: match o.opt("weight") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| o.wrong("weight", "a number", v))?),
        },
    };
    o.finish().map(|()| key)
}

impl RawKeysFile {
    pub fn parse(json: &str) -> Result<RawKeysFile, String> {
        let v = crate::json::parse(json).map_err(|e| e.to_string())?;
        let mut o = Obj::new(String::new(), &v)?;
        let mut keys = Vec::new();
        for (i, k) in o.array("keys")?.iter().enumerate() {
            keys.push(raw_key(format!("keys[{i}]"), k)?);
        }
        let mut fallbacks = BTreeMap::new();
        match o.field("fallbacks") {
            None => {}
            Some(Value::Object(m)) => {
                for (from, chain) in m {
                    let at = format!("fallbacks.{from}");
                    let chain = chain
                        .as_array()
                        .ok_or_else(|| format!("{at}: invalid type: {}, expected an array", kind(chain)))?;
                    fallbacks.insert(from.clone(), strings(&at, chain)?);
                }
            }
            Some(v) => return Err(o.wrong("fallbacks", "an object", v)),
        }
        o.finish().map(|()| RawKeysFile { keys, fallbacks })
    }
}

#[derive(Debug)]
pub(super) struct RawClient {
    pub id: String,
    pub token_sha256: String,
    pub scopes: Vec<String>,
    pub rpm: Option<i64>,
    pub burst: Option<i64>,
    pub daily_tokens: Option<i64>,
    pub tpm: Option<i64>,
    pub models: Option<Vec<String>>,
}

/// `CLIENTS_JSON`: `{"clients": [...]}`.
pub(super) fn raw_clients(json: &str) -> Result<Vec<RawClient>, String> {
    let v = crate::json::parse(json).map_err(|e| e.to_string())?;
    let mut top = Obj::new(String::new(), &v)?;
    let mut out = Vec::new();
    for (i, c) in top.array("clients")?.iter().enumerate() {
        let mut o = Obj::new(format!("clients[{i}]"), c)?;
        let client = RawClient {
            id: o.string("id")?,
            token_sha256: o.string("token_sha256")?,
            scopes: o.strings("scopes")?,
            rpm: o.opt_int("rpm")?,
            burst: o.opt_int("burst")?,
            daily_tokens: o.opt_int("daily_tokens")?,
            tpm: o.opt_int("tpm")?,
            models: match o.opt("models") {
                None => None,
                Some(Value::Array(list)) => Some(strings(&o.path("models"), list)?),
                Some(v) => return Err(o.wrong("models", "an array", v)),
            },
        };
        o.finish()?;
        out.push(client);
    }
    top.finish().map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Result<RawKeysFile, String> {
        RawKeysFile::parse(s)
    }

    #[test]
    fn defaults_nulls_and_fallbacks() {
        let f = keys(
            r#"{"keys":[{"key_id":"a","model_name":"m","rpm":1,"tpm":2,"rpd":3,"quota_group":null,"weight":2}],
                         "fallbacks":{"m":["n"]}}"#,
        )
        .unwrap();
        let k = &f.keys[0];
        assert_eq!((k.provider.as_str(), k.active, &k.quota_group, k.weight), ("gemini", true, &None, Some(2.0)));
        assert_eq!(f.fallbacks["m"], ["n"]);
    }

    #[test]
    fn shape_errors_name_the_path() {
        let e = keys(r#"{"keys":[{"key_id":"a","model_name":"m","rpm":1.5,"tpm":2,"rpd":3}]}"#).unwrap_err();
        assert_eq!(e, "keys[0].rpm: invalid type: a number, expected an integer");
        let e = keys(r#"{"keys":[{"key_id":"a","model_name":"m","tpm":2,"rpd":3}]}"#).unwrap_err();
        assert_eq!(e, "keys[0]: missing field `rpm`");
        let e = keys(r#"{"keys":[{"key_id":"a","model_name":"m","rpm":1,"tpm":2,"rpd":3,"active":"yes"}]}"#);
        assert_eq!(e.unwrap_err(), "keys[0].active: invalid type: a string, expected a boolean");
        assert_eq!(keys(r#"{"keys":[],"extra":1}"#).unwrap_err(), "unknown field `extra`");
        assert_eq!(
            keys(r#"{"keys":[],"fallbacks":{"m":[1]}}"#).unwrap_err(),
            "fallbacks.m[0]: invalid type: a number, expected a string"
        );
        assert_eq!(keys("[]").unwrap_err(), "invalid type: an array, expected an object");
        assert_eq!(keys("{}").unwrap_err(), "missing field `keys`");
        assert!(keys("{").is_err());
    }

    #[test]
    fn clients_are_read_strictly() {
        let c = raw_clients(r#"{"clients":[{"id":"a","token_sha256":"t","scopes":["admin"],"rpm":null,"burst":5}]}"#);
        let c = c.unwrap();
        assert_eq!((c[0].scopes.as_slice(), c[0].rpm, c[0].burst), (&["admin".to_string()][..], None, Some(5)));
        let e = raw_clients(r#"{"clients":[{"id":"a","token_sha256":"t","scopes":"admin"}]}"#).unwrap_err();
        assert_eq!(e, "clients[0].scopes: invalid type: a string, expected an array");
        let e = raw_clients(r#"{"clients":[{"id":"a","token_sha256":"t","scopes":[],"rpx":1}]}"#).unwrap_err();
        assert_eq!(e, "clients[0]: unknown field `rpx`");
    }
}
