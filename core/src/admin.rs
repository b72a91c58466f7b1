//! The admin API (`/v1/admin/...`, scope `admin`): operator changes to the key pool at run
//! time, and their audit. Each change is one `admin_v1` call (the change and its audit entry,
//! atomically); the manual mark it writes is read by `reserve_v1` itself, so no isolate can
//! hold a stale view of it. The key list reuses `/stats` (one `stats_v1` read, each key's state
//! from [`crate::observe::KeyStatus::derive`]).

use crate::config::KeyPool;
use crate::error::RouterError;
use crate::json::object;
use crate::observe::Stats;
use crate::store::contract::{parse_reply, Fields};
use crate::store::keys;
use crate::store::upstash::{Script, StoreError};
use serde_json::Value;

pub static ADMIN: Script =
    Script::new("admin_v1", concat!(include_str!("store/lua/pacific.lua"), include_str!("store/lua/admin_v1.lua")));

/// Audit entries kept in Redis (the list is trimmed to this on every change).
pub const AUDIT_CAP: usize = 200;
/// Longest accepted reason, in characters.
pub const MAX_REASON: usize = 500;

/// One operator change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAction {
    /// Take a key out of rotation until enabled; the reason is required.
    Disable { key_id: String, reason: String },
    /// Put a key back, whether an operator or Google's answer disabled it.
    Enable { key_id: String, reason: Option<String> },
    /// End the cooldown of every model of a quota group.
    ClearCooldown { group: String, reason: Option<String> },
}

impl AdminAction {
    pub fn name(&self) -> &'static str {
        match self {
            AdminAction::Disable { .. } => "disable",
            AdminAction::Enable { .. } => "enable",
            AdminAction::ClearCooldown { .. } => "clear_cooldown",
        }
    }

    pub fn target(&self) -> &str {
        match self {
            AdminAction::Disable { key_id, .. } | AdminAction::Enable { key_id, .. } => key_id,
            AdminAction::ClearCooldown { group, .. } => group,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            AdminAction::Disable { reason, .. } => Some(reason),
            AdminAction::Enable { reason, .. } | AdminAction::ClearCooldown { reason, .. } => reason.as_deref(),
        }
    }
}

/// Which admin route a request is (the path's verb), before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminVerb {
    Disable,
    Enable,
    ClearCooldown,
}

/// The optional JSON body of an admin change: `{"reason": "..."}` (`reason` may be `null` or
/// absent; no other field). An empty body is no reason.
fn change_reason(body: Option<&Value>) -> Result<Option<String>, String> {
    let Some(v) = body else { return Ok(None) };
    let Value::Object(m) = v else { return Err("invalid type: expected an object".into()) };
    if let Some(k) = m.keys().find(|k| *k != "reason") {
        return Err(format!("unknown field `{k}`, expected `reason`"));
    }
    match m.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(r)) => Ok(Some(r.clone())),
        Some(_) => Err("reason: invalid type: expected a string".into()),
    }
}

/// Builds the action from the route and body, checking the target exists in the pool (404
/// otherwise, before any Redis call) and the reason (required to disable).
pub fn action(pool: &KeyPool, verb: AdminVerb, target: &str, body: Option<&Value>) -> Result<AdminAction, RouterError> {
    let reason =
        change_reason(body).map_err(|e| RouterError::bad_request("invalid_body", format!("admin change body: {e}")))?;
    let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(RouterError::bad_request("invalid_reason", format!("reason: at most {MAX_REASON} characters")));
    }
    match verb {
        AdminVerb::Disable | AdminVerb::Enable => {
            if !pool.keys.iter().any(|k| k.key_id == target) {
                return Err(RouterError::NotFound {
                    code: "key_not_found",
                    message: format!("no key '{target}' in keys.json"),
                });
            }
        }
        AdminVerb::ClearCooldown => {
            if !pool.keys.iter().any(|k| k.quota_group == target) {
                return Err(RouterError::NotFound {
                    code: "group_not_found",
                    message: format!("no quota group '{target}' in keys.json"),
                });
            }
        }
    }
    let target = target.to_string();
    Ok(match verb {
        AdminVerb::Disable => AdminAction::Disable {
            key_id: target,
            reason: reason.ok_or_else(|| {
                RouterError::bad_request("missing_reason", "disabling a key needs a `reason` in the JSON body")
            })?,
        },
        AdminVerb::Enable => AdminAction::Enable { key_id: target, reason },
        AdminVerb::ClearCooldown => AdminAction::ClearCooldown { group: target, reason },
    })
}

/// KEYS and ARGV of one `admin_v1` call, in the order of the script's header: the audit list,
/// then the key's `dis` hash, or the `cd` hash of each model of the group.
pub fn admin_call(pool: &KeyPool, action: &AdminAction, by: &str) -> (Vec<String>, Vec<String>) {
    let mut k = vec![keys::AUDIT.to_string()];
    match action {
        AdminAction::Disable { key_id, .. } | AdminAction::Enable { key_id, .. } => k.push(keys::disabled(key_id)),
        AdminAction::ClearCooldown { group, .. } => {
            // Each model once, in pool order (no sort: it would add its own instance to the wasm).
            for c in pool.keys.iter().filter(|c| &c.quota_group == group) {
                let cd = keys::cooldown(group, &c.model);
                if !k.contains(&cd) {
                    k.push(cd);
                }
            }
        }
    }
    let args = object(vec![
        ("action", action.name().into()),
        ("target", action.target().into()),
        ("by", by.into()),
        ("reason", action.reason().into()),
        ("cap", AUDIT_CAP.into()),
    ]);
    (k, vec![args.to_string()])
}

/// The reply of `admin_v1`: `{"now": ms, "changed": 0|1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminReply {
    pub now: u64,
    pub changed: u64,
}

const SCRIPT: &str = "admin_v1";

pub fn parse_admin(v: &Value) -> Result<AdminReply, StoreError> {
    let v = parse_reply(SCRIPT, v)?;
    let mut f = Fields::new(SCRIPT, "reply", &v)?;
    let r = AdminReply { now: f.u64("now")?, changed: f.u64("changed")? };
    f.finish().map(|()| r)
}

/// The audit record of a change: the structured log line's fields and the API's answer (the
/// Redis entry holds the same fields).
pub fn audit_record(action: &AdminAction, by: &str, reply: &AdminReply) -> Value {
    object(vec![
        ("at", reply.now.into()),
        ("by", by.into()),
        ("action", action.name().into()),
        ("target", action.target().into()),
        ("reason", action.reason().unwrap_or("").into()),
        ("changed", reply.changed.into()),
    ])
}

/// `GET /v1/admin/keys`: each key with its state, as `/stats` shows it, and the last changes.
pub fn keys_list(stats: &Stats) -> Value {
    object(vec![
        ("keys", Value::Array(stats.keys.iter().map(crate::observe::stats_json::key).collect())),
        ("audit", Value::Array(stats.audit.clone())),
        ("generated_at", stats.generated_at.into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool() -> KeyPool {
        crate::observe::stats_v1::tests::pool()
    }

    #[test]
    fn targets_are_checked_against_the_pool_before_any_redis_call() {
        let p = pool();
        let e = action(&p, AdminVerb::Disable, "nope", Some(&json!({"reason": "x"}))).unwrap_err();
        assert_eq!((e.status(), e.code()), (404, "key_not_found"));
        let e = action(&p, AdminVerb::ClearCooldown, "f1", None).unwrap_err();
        assert_eq!((e.status(), e.code()), (404, "group_not_found"));
        let e = action(&p, AdminVerb::Disable, "f1", None).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "missing_reason"));
        let e = action(&p, AdminVerb::Disable, "f1", Some(&json!({"reason": "x", "who": 1}))).unwrap_err();
        assert_eq!(e.code(), "invalid_body");
        let e = action(&p, AdminVerb::Enable, "f1", Some(&json!({"reason": "x".repeat(501)}))).unwrap_err();
        assert_eq!(e.code(), "invalid_reason");
        assert_eq!(
            action(&p, AdminVerb::Disable, "f1", Some(&json!({"reason": " rotating "}))).unwrap(),
            AdminAction::Disable { key_id: "f1".into(), reason: "rotating".into() }
        );
        assert_eq!(
            action(&p, AdminVerb::Enable, "f2", Some(&json!({"reason": ""}))).unwrap(),
            AdminAction::Enable { key_id: "f2".into(), reason: None }
        );
    }

    #[test]
    fn call_is_the_documented_keys_and_argv() {
        let p = pool();
        let a = AdminAction::Disable { key_id: "f2".into(), reason: "r".into() };
        let (k, args) = admin_call(&p, &a, "ops");
        assert_eq!(k, ["{llmr}:audit", "{llmr}:dis:f2"]);
        let v: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(v, json!({"action": "disable", "target": "f2", "by": "ops", "reason": "r", "cap": AUDIT_CAP}));
        let a = AdminAction::ClearCooldown { group: "p".into(), reason: None };
        let (k, args) = admin_call(&p, &a, "ops");
        assert_eq!(k, ["{llmr}:audit", "{llmr}:cd:p:flash"]);
        assert_eq!(serde_json::from_str::<Value>(&args[0]).unwrap()["reason"], Value::Null);
    }

    #[test]
    fn reply_decodes_strictly() {
        assert_eq!(
            parse_admin(&json!(r#"{"now":1.795899497469e+12,"changed":1}"#)).unwrap(),
            AdminReply { now: 1_795_899_497_469, changed: 1 }
        );
        assert!(parse_admin(&json!(r#"{"now":1}"#)).is_err());
        assert!(parse_admin(&json!(r#"{"now":1,"changed":0,"x":1}"#)).is_err());
        assert!(parse_admin(&json!(1)).is_err());
        let a = AdminAction::Enable { key_id: "f1".into(), reason: None };
        let r = audit_record(&a, "ops", &AdminReply { now: 5, changed: 1 });
        assert_eq!(r, json!({"at": 5, "by": "ops", "action": "enable", "target": "f1", "reason": "", "changed": 1}));
    }
}
