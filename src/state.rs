//! Per-isolate state. Env vars and secrets cannot change while an isolate lives, so config is
//! parsed and every secret is read exactly once, on the isolate's first request, and shared by
//! every later request as an `Rc`.

use llm_key_router_core::config::{KeyPool, Settings};
use llm_key_router_core::engine::{secret_from_lookup, Secrets};
use std::collections::BTreeMap;
use std::rc::Rc;
use worker::Env;

pub(crate) struct State {
    pub(crate) pool: Result<KeyPool, Vec<String>>,
    pub(crate) settings: Result<Settings, Vec<String>>,
    /// The Upstash REST URL (without a trailing `/`) and token.
    pub(crate) upstash: Option<(String, String)>,
    /// Changes when keys.json or the set of Gemini secrets changes: keys disabled under another
    /// fingerprint count as enabled again.
    pub(crate) fingerprint: String,
    /// Gemini keys by `key_id`, trimmed (a secret pasted with a trailing newline must not become
    /// a bad header value); empty secrets are left out.
    api_keys: BTreeMap<String, String>,
}

thread_local! {
    static STATE: std::cell::RefCell<Option<Rc<State>>> = const { std::cell::RefCell::new(None) };
}

/// A secret or, failing that, a plain variable of that name.
fn lookup(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

impl State {
    /// The isolate's state, built on first use.
    pub(crate) fn get(env: &Env) -> Rc<State> {
        if let Some(s) = STATE.with(|s| s.borrow().clone()) {
            return s;
        }
        let st = Rc::new(State::read(env));
        STATE.with(|s| *s.borrow_mut() = Some(st.clone()));
        st
    }

    fn read(env: &Env) -> State {
        let keys_json = lookup(env, "KEYS_JSON").unwrap_or_else(|| include_str!("../keys.json").to_string());
        let pool = KeyPool::parse(&keys_json);
        let settings = Settings::from_lookup(|n| lookup(env, n));
        let upstash = match (lookup(env, "UPSTASH_REDIS_REST_URL"), lookup(env, "UPSTASH_REDIS_REST_TOKEN")) {
            (Some(u), Some(t)) if !u.trim().is_empty() => {
                Some((u.trim().trim_end_matches('/').to_string(), t.trim().to_string()))
            }
            _ => None,
        };
        let mut api_keys = BTreeMap::new();
        if let Ok(p) = &pool {
            for k in &p.keys {
                if let Some(s) = secret_from_lookup(&k.key_id, |n| lookup(env, n)) {
                    api_keys.insert(k.key_id.clone(), s);
                }
            }
        }
        // The fingerprint covers which secrets exist (their length and last 4 characters, never
        // the value): rotating a disabled key's secret and redeploying re-enables it.
        let secrets_digest = match &pool {
            Ok(p) => p
                .keys
                .iter()
                .map(|k| {
                    let s = api_keys.get(&k.key_id).map(String::as_str).unwrap_or("");
                    format!("{}:{}:{}", k.key_id, s.len(), s.get(s.len().saturating_sub(4)..).unwrap_or(""))
                })
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => String::new(),
        };
        let fingerprint = pool.as_ref().map(|p| p.fingerprint(&secrets_digest)).unwrap_or_default();
        State { pool, settings, upstash, fingerprint, api_keys }
    }

    /// The Gemini key of `key_id`, if its secret is set.
    pub(crate) fn api_key(&self, key_id: &str) -> Option<&str> {
        self.api_keys.get(key_id).map(String::as_str)
    }
}

/// The engine's secrets port, answered from the per-isolate cache.
impl Secrets for State {
    fn api_key(&self, key_id: &str) -> Option<String> {
        State::api_key(self, key_id).map(str::to_string)
    }
}
