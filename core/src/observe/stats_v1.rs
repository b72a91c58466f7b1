//! The `stats_v1` script call: its KEYS and ARGV, built here and only here next to [`STATS`],
//! and its reply as a typed [`Raw`]. The reply's shape is the contract written at the top of
//! `store/lua/stats_v1.lua`: a field that is missing or renamed there is a
//! [`StoreError::Protocol`] naming the field, not a silent zero on the dashboard.

use super::key_status::{hash_from_value, Hash, RedisNow};
use crate::config::KeyPool;
use crate::store::contract::{parse_reply, Fields};
use crate::store::keys;
use crate::store::upstash::{Script, StoreError, Transport, Upstash};
use serde_json::{json, Value};

pub static STATS: Script = Script::new(
    "stats_v1",
    concat!(include_str!("../store/lua/pacific.lua"), include_str!("../store/lua/stats_v1.lua")),
);

/// The (quota group, model) pairs of a pool, in first-seen order, and which pair each key uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub groups: Vec<(String, String)>,
    pub key_group: Vec<usize>,
    pub clients: Vec<String>,
}

impl Layout {
    pub fn new(pool: &KeyPool, clients: &[String]) -> Layout {
        let mut groups: Vec<(String, String)> = Vec::new();
        let mut key_group = Vec::with_capacity(pool.keys.len());
        for k in &pool.keys {
            let pair = (k.quota_group.clone(), k.model.clone());
            let i = match groups.iter().position(|g| *g == pair) {
                Some(i) => i,
                None => {
                    groups.push(pair);
                    groups.len() - 1
                }
            };
            key_group.push(i);
        }
        Layout { groups, key_group, clients: clients.to_vec() }
    }
}

/// How many of the newest admin audit entries `/stats` shows.
pub const AUDIT_SHOWN: usize = 20;

/// KEYS and ARGV of one `stats_v1` call, in the order the script's header documents.
pub fn stats_call(pool: &KeyPool, layout: &Layout, window_ms: u64) -> (Vec<String>, Vec<String>) {
    let mut k = vec![keys::LAST_USED.to_string(), keys::GLOBAL_STATS.to_string()];
    for (g, m) in &layout.groups {
        k.push(keys::log(g, m));
        k.push(keys::tokens(g, m));
        k.push(keys::day(g, m));
        k.push(keys::cooldown(g, m));
    }
    for key in &pool.keys {
        k.push(keys::disabled(&key.key_id));
        k.push(keys::key_stats(&key.key_id));
    }
    for c in &layout.clients {
        k.push(keys::client_stats(c));
    }
    k.push(keys::AUDIT.to_string());
    for c in &layout.clients {
        k.push(keys::client_budget_day(c));
        k.push(keys::client_budget_log(c));
        k.push(keys::client_budget_tokens(c));
    }
    let arg = json!({"window_ms": window_ms, "groups": layout.groups.len(), "keys": pool.keys.len(),
                     "clients": layout.clients.len(), "audit": AUDIT_SHOWN});
    (k, vec![arg.to_string()])
}

/// Runs `stats_v1` for `layout` and decodes its reply: the one way to read it, so the call and
/// its decoding cannot be paired wrongly.
pub async fn read_stats<T: Transport>(
    store: &Upstash<T>,
    pool: &KeyPool,
    layout: &Layout,
    window_ms: u64,
) -> Result<Raw, StoreError> {
    let (keys, args) = stats_call(pool, layout, window_ms);
    let v = store.eval(&STATS, &keys, &args).await?;
    parse_stats(&v, layout, pool.keys.len())
}

/// A quota group's figures: live window entries and tokens, the day count, the cooldown hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawGroup {
    pub count: u64,
    pub tokens: u64,
    /// The stored Pacific day of `day_count` (`null`: no day hash).
    pub day: Option<i64>,
    pub day_count: u64,
    /// `cd` in the reply.
    pub cooldown: Hash,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawKey {
    /// `dis` in the reply.
    pub disabled: Hash,
    pub stats: Hash,
}

/// The decoded reply of `stats_v1`. Additions to the reply are ignored; removals are errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw {
    /// Redis `TIME` in ms.
    pub now: u64,
    /// The Pacific day of `now`, as `pacific.lua` computes it.
    pub day: i64,
    pub last: Hash,
    pub global: Hash,
    pub groups: Vec<RawGroup>,
    pub keys: Vec<RawKey>,
    pub clients: Vec<Hash>,
    /// The newest admin audit entries (JSON objects as `admin_v1` wrote them), newest first.
    pub audit: Vec<String>,
    /// Each client's budget use, in `clients` order.
    pub budgets: Vec<RawBudget>,
}

/// A client's budget use: the day hash and the live tokens of its rolling minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawBudget {
    /// The stored Pacific day of `used` (`null`: no day hash).
    pub day: Option<i64>,
    pub used: u64,
    pub minute: u64,
}

impl Raw {
    /// The read's clock, for [`super::KeyStatus::derive`].
    pub fn redis_now(&self) -> RedisNow {
        RedisNow::from_script(self.now, self.day)
    }
}

const SCRIPT: &str = "stats_v1";

/// An HGETALL answer (a flat list, or `{}` when empty) as a [`Hash`].
fn hash(f: &mut Fields, name: &'static str) -> Result<Hash, StoreError> {
    let v = f.value(name)?;
    hash_from_value(v).map_err(|e| f.error(format_args!("field `{name}`: {e}")))
}

/// A Lua list of HGETALL answers.
fn hashes(f: &mut Fields, name: &'static str) -> Result<Vec<Hash>, StoreError> {
    let list = f.list(name)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        out.push(hash_from_value(v).map_err(|e| f.error(format_args!("field `{name}`: entry {i}: {e}")))?);
    }
    Ok(out)
}

/// Each entry of the Lua list `name`, read as an object by `read` (the shape is `name[i]`).
fn entries<T>(
    top: &mut Fields,
    name: &'static str,
    read: fn(&mut Fields) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let list = top.list(name)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let shape = format!("{name}[{i}]");
        out.push(read(&mut Fields::new(SCRIPT, &shape, v)?)?);
    }
    Ok(out)
}

fn group(f: &mut Fields) -> Result<RawGroup, StoreError> {
    Ok(RawGroup {
        count: f.u64("count")?,
        tokens: f.u64("tokens")?,
        day: f.nullable_int("day")?,
        day_count: f.u64("day_count")?,
        cooldown: hash(f, "cd")?,
    })
}

fn budget(f: &mut Fields) -> Result<RawBudget, StoreError> {
    Ok(RawBudget { day: f.nullable_int("day")?, used: f.u64("used")?, minute: f.u64("minute")? })
}

fn key(f: &mut Fields) -> Result<RawKey, StoreError> {
    Ok(RawKey { disabled: hash(f, "dis")?, stats: hash(f, "stats")? })
}

/// Decodes the reply (a JSON string, as the script returns `cjson.encode(...)`) and checks it
/// has one entry per group, key and client of the request.
pub fn parse_stats(v: &Value, layout: &Layout, n_keys: usize) -> Result<Raw, StoreError> {
    let v = parse_reply(SCRIPT, v)?;
    let mut f = Fields::new(SCRIPT, "stats", &v)?;
    let raw = Raw {
        now: f.u64("now")?,
        day: f.int("day")?,
        last: hash(&mut f, "last")?,
        global: hash(&mut f, "global")?,
        groups: entries(&mut f, "groups", group)?,
        keys: entries(&mut f, "keys", key)?,
        clients: hashes(&mut f, "clients")?,
        // Both may be absent (as from a reply of before the admin API): no entries.
        audit: f.turns("audit")?.unwrap_or_default(),
        budgets: match f.opt_value("budgets") {
            None => Vec::new(),
            Some(_) => entries(&mut f, "budgets", budget)?,
        },
    };
    for (name, got, want) in [
        ("groups", raw.groups.len(), layout.groups.len()),
        ("keys", raw.keys.len(), n_keys),
        ("clients", raw.clients.len(), layout.clients.len()),
        (
            "budgets",
            if raw.budgets.is_empty() { layout.clients.len() } else { raw.budgets.len() },
            layout.clients.len(),
        ),
    ] {
        if got != want {
            return Err(f.error(format_args!("`{name}` has {got} entries, the request asked for {want}")));
        }
    }
    Ok(raw)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::upstash::HttpReply;
    use std::cell::RefCell;

    pub(crate) fn pool() -> KeyPool {
        KeyPool::parse(
            r#"{"keys":[
              {"key_id":"f1","model_name":"flash","provider":"gemini","rpm":10,"tpm":1000,"rpd":100,"active":true,"quota_group":"p"},
              {"key_id":"f2","model_name":"flash","provider":"gemini","rpm":10,"tpm":1000,"rpd":100,"active":true,"quota_group":"p"},
              {"key_id":"f3","model_name":"flash","provider":"gemini","rpm":5,"tpm":500,"rpd":50,"active":true},
              {"key_id":"p1","model_name":"pro","provider":"gemini","rpm":2,"tpm":300,"rpd":30,"active":false}
            ]}"#,
        )
        .unwrap()
    }

    pub(crate) fn hgetall(pairs: &[(&str, &str)]) -> Value {
        Value::Array(pairs.iter().flat_map(|(k, v)| [json!(k), json!(v)]).collect())
    }

    pub(crate) const NOW: u64 = 1_795_899_497_469;

    /// A `stats_v1` reply for [`pool`] with clients `main` and `idle`.
    pub(crate) fn answer() -> Value {
        let v = json!({
            "now": NOW, "day": 20785,
            "last": hgetall(&[("f1", "1795899497000")]),
            "global": hgetall(&[("requests", "7"), ("outcome:success", "5"), ("outcome:rate_limited", "2"),
                                 ("tokens_in", "40"), ("tokens_out", "12"), ("last_used", "1795899497400")]),
            "groups": [
                {"count": 3, "tokens": 120, "day": 20785, "day_count": 9,
                 "cd": hgetall(&[("until", &(NOW + 7000).to_string()), ("reason", "429 per-minute"), ("strikes", "1")])},
                {"count": 1, "tokens": 10, "day": 20784, "day_count": 40, "cd": {}},
                {"count": 0, "tokens": 0, "day": null, "day_count": 0, "cd": hgetall(&[("until", "5")])}
            ],
            "keys": [
                {"dis": {}, "stats": hgetall(&[("requests", "4"), ("outcome:success", "2"), ("outcome:rate_limited", "2"),
                                                ("tokens_in", "30"), ("tokens_out", "8"), ("tokens_thinking", "3"),
                                                ("last_used", "1795899497400")])},
                {"dis": hgetall(&[("reason", "400 API_KEY_INVALID"), ("cfg", "fp"), ("at", "1795899400000")]),
                 "stats": hgetall(&[("requests", "1"), ("outcome:key_rejected", "1")])},
                {"dis": hgetall(&[("reason", "old"), ("cfg", "other-fp"), ("at", "1")]), "stats": {}},
                {"dis": {}, "stats": {}}
            ],
            "clients": [hgetall(&[("requests", "7"), ("outcome:success", "5"), ("tokens_in", "40"),
                                   ("last_used", "1795899497400")]), {}],
            "audit": [r#"{"at":1795899497000,"by":"ops","action":"disable","target":"f2","reason":"r","changed":1}"#],
            "budgets": [{"day": 20785, "used": 500, "minute": 30}, {"day": 20784, "used": 9, "minute": 0}]
        });
        json!(v.to_string())
    }

    pub(crate) fn layout() -> Layout {
        Layout::new(&pool(), &["main".into(), "idle".into()])
    }

    #[test]
    fn layout_and_call_share_groups_and_one_hash_tag() {
        let p = pool();
        let layout = Layout::new(&p, &["main".into()]);
        assert_eq!(
            layout.groups,
            vec![("p".into(), "flash".into()), ("f3".into(), "flash".into()), ("p1".into(), "pro".into())]
        );
        assert_eq!(layout.key_group, vec![0, 0, 1, 2]);
        let (k, a) = stats_call(&p, &layout, 61_000);
        assert_eq!(k.len(), 2 + 4 * 3 + 2 * 4 + 1 + 1 + 3);
        assert!(k.iter().all(|k| k.starts_with("{llmr}:")));
        assert_eq!(k[2], "{llmr}:w:p:flash");
        assert_eq!(k[k.len() - 5], "{llmr}:st:c:main");
        assert_eq!(k[k.len() - 4], "{llmr}:audit");
        assert_eq!(k.last().unwrap(), "{llmr}:cb:t:main");
        let a: Value = serde_json::from_str(&a[0]).unwrap();
        assert_eq!(a, json!({"window_ms": 61000, "groups": 3, "keys": 4, "clients": 1, "audit": AUDIT_SHOWN}));
    }

    struct Fake {
        sent: RefCell<Vec<(String, String)>>,
        reply: String,
    }

    impl Transport for Fake {
        async fn post(&self, path: &str, body: String) -> Result<HttpReply, StoreError> {
            self.sent.borrow_mut().push((path.to_string(), body));
            Ok(HttpReply { status: 200, body: self.reply.clone() })
        }
    }

    #[test]
    fn read_stats_sends_exactly_the_documented_call() {
        let p = pool();
        let layout = layout();
        let store = Upstash::new(Fake { sent: RefCell::new(vec![]), reply: json!({"result": answer()}).to_string() });
        let raw = futures_executor::block_on(read_stats(&store, &p, &layout, 61_000)).unwrap();
        assert_eq!(raw.now, NOW);
        let sent = store.transport.sent.borrow();
        assert_eq!(sent.len(), 1);
        let cmd: Vec<String> = serde_json::from_str(&sent[0].1).unwrap();
        let (keys, args) = stats_call(&p, &layout, 61_000);
        assert_eq!(cmd[..3], ["EVALSHA".to_string(), STATS.sha().to_string(), keys.len().to_string()]);
        assert_eq!(cmd[3..3 + keys.len()], keys[..]);
        assert_eq!(cmd[3 + keys.len()..], args[..]);
    }

    #[test]
    fn typed_reply_decodes_every_field() {
        let raw = parse_stats(&answer(), &layout(), 4).unwrap();
        assert_eq!((raw.now, raw.day), (NOW, 20785));
        assert_eq!(raw.groups[0].count, 3);
        assert_eq!(raw.groups[0].cooldown["reason"], "429 per-minute");
        assert_eq!(raw.groups[2].day, None);
        assert_eq!(raw.keys[1].disabled["cfg"], "fp");
        assert_eq!(raw.clients[1], Hash::new());
        assert_eq!(raw.redis_now().ms(), NOW);
        assert_eq!(raw.audit.len(), 1);
    }

    fn without(path: &[&str]) -> Value {
        let mut v: Value = serde_json::from_str(answer().as_str().unwrap()).unwrap();
        let (last, parents) = path.split_last().unwrap();
        let mut at = &mut v;
        for p in parents {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at.as_object_mut().unwrap().remove(*last);
        json!(v.to_string())
    }

    #[test]
    fn a_missing_field_is_a_protocol_error_naming_it() {
        for (path, name) in [
            (&["now"][..], "`now`"),
            (&["clients"][..], "`clients`"),
            (&["groups", "0", "day_count"][..], "`day_count`"),
            (&["groups", "1", "cd"][..], "`cd`"),
            (&["keys", "2", "dis"][..], "`dis`"),
        ] {
            match parse_stats(&without(path), &layout(), 4) {
                Err(StoreError::Protocol(m)) => assert!(m.contains(name), "{path:?}: {m}"),
                other => panic!("{path:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_lua_tables_are_empty_lists_and_hashes_but_other_shapes_are_not() {
        let layout = Layout { groups: vec![], key_group: vec![], clients: vec![] };
        let v = json!(json!({"now": NOW, "day": 1, "last": {}, "global": {}, "groups": {}, "keys": {}, "clients": {}})
            .to_string());
        let raw = parse_stats(&v, &layout, 0).unwrap();
        assert!(raw.groups.is_empty() && raw.keys.is_empty() && raw.clients.is_empty() && raw.last.is_empty());
        let v = json!(json!({"now": NOW, "day": 1, "last": {"f1": "1"}, "global": {}, "groups": {}, "keys": {},
                             "clients": {}})
        .to_string());
        assert!(matches!(parse_stats(&v, &layout, 0), Err(StoreError::Protocol(_))));
        let v =
            json!(json!({"now": -1, "day": 1, "last": {}, "global": {}, "groups": {}, "keys": {}, "clients": {}})
                .to_string());
        assert!(matches!(parse_stats(&v, &layout, 0), Err(StoreError::Protocol(_))));
        // cjson's exponent form of a large integer.
        let v = json!(
            r#"{"now": 1.795899497469e+12, "day": 1, "last": {}, "global": {}, "groups": {}, "keys": {}, "clients": {}}"#
        );
        assert_eq!(parse_stats(&v, &layout, 0).unwrap().now, NOW);
    }

    #[test]
    fn layout_mismatch_is_a_protocol_error() {
        let p = pool();
        let layout = Layout::new(&p, &[]);
        match parse_stats(&answer(), &layout, p.keys.len()) {
            Err(StoreError::Protocol(m)) => assert!(m.contains("`clients`"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(parse_stats(&json!(1), &layout, 4).is_err());
    }
}
