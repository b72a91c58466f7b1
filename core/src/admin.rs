//! The admin API (`/v1/admin/...`, scope `admin`): operator changes to the key pool at run
//! time, and their audit. Each change is one `admin_v1` call (the change and its audit entry,
//! atomically); the manual mark it writes is read by `reserve_v1` itself, so no isolate can
//! hold a stale view of it. The key list reuses `/stats` (one `stats_v1` read, each key's state
//! from [`crate::observe::KeyStatus::derive`]).

use crate::config::KeyPool;
use crate::error::RouterError;
use crate::observe::Stats;
use crate::store::keys;
use crate::store::upstash::{Script, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

/// The optional JSON body of an admin change: `{"reason": "..."}`. An empty body is no reason.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Builds the action from the route and body, checking the target exists in the pool (404
/// otherwise, before any Redis call) and the reason (required to disable).
pub fn action(pool: &KeyPool, verb: AdminVerb, target: &str, body: Option<&Value>) -> Result<AdminAction, RouterError> {
    let parsed: ChangeBody = match body {
        None => ChangeBody::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| RouterError::bad_request("invalid_body", format!("admin change body: {e}")))?,
    };
    let reason = parsed.reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
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

#[derive(Debug, Serialize)]
struct AdminArgs<'a> {
    action: &'static str,
    target: &'a str,
    by: &'a str,
    reason: Option<&'a str>,
    cap: usize,
}

/// KEYS and ARGV of one `admin_v1` call, in the order of the script's header: the audit list,
/// then the key's `dis` hash, or the `cd` hash of each model of the group.
pub fn admin_call(pool: &KeyPool, action: &AdminAction, by: &str) -> (Vec<String>, Vec<String>) {
    let mut k = vec![keys::AUDIT.to_string()];
    match action {
        AdminAction::Disable { key_id, .. } | AdminAction::Enable { key_id, .. } => k.push(keys::disabled(key_id)),
        AdminAction::ClearCooldown { group, .. } => {
            let mut models: Vec<&str> =
                pool.keys.iter().filter(|c| &c.quota_group == group).map(|c| c.model.as_str()).collect();
            models.sort_unstable();
            models.dedup();
            k.extend(models.into_iter().map(|m| keys::cooldown(group, m)));
        }
    }
    let args =
        AdminArgs { action: action.name(), target: action.target(), by, reason: action.reason(), cap: AUDIT_CAP };
    (k, vec![serde_json::to_string(&args).expect("strings and integers serialize")])
}

/// The reply of `admin_v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminReply {
    pub now: u64,
    pub changed: u64,
}

pub fn parse_admin(v: &Value) -> Result<AdminReply, StoreError> {
    let s = v.as_str().ok_or_else(|| StoreError::Protocol(format!("admin_v1: expected a JSON string, got {v}")))?;
    // cjson may print a large integer in exponent form.
    let raw: Value = serde_json::from_str(s).map_err(|e| StoreError::Protocol(format!("admin_v1: {e}")))?;
    let whole = |name: &str| -> Result<u64, StoreError> {
        raw.get(name)
            .and_then(|n| n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64)))
            .ok_or_else(|| StoreError::Protocol(format!("admin_v1: missing or non-integer field `{name}` in {s}")))
    };
    if let Some(extra) = raw.as_object().and_then(|o| o.keys().find(|k| *k != "now" && *k != "changed")) {
        return Err(StoreError::Protocol(format!("admin_v1: unknown field `{extra}`")));
    }
    Ok(AdminReply { now: whole("now")?, changed: whole("changed")? })
}

/// The audit record of a change: the structured log line's fields and the API's answer (the
/// Redis entry holds the same fields).
pub fn audit_record(action: &AdminAction, by: &str, reply: &AdminReply) -> Value {
    json!({"at": reply.now, "by": by, "action": action.name(), "target": action.target(),
           "reason": action.reason().unwrap_or(""), "changed": reply.changed})
}

/// `GET /v1/admin/keys`: each key with its state, as `/stats` shows it, and the last changes.
pub fn keys_list(stats: &Stats) -> Value {
    json!({"keys": stats.keys, "audit": stats.audit, "generated_at": stats.generated_at})
}

#[cfg(test)]
mod tests {
    use super::*;

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
