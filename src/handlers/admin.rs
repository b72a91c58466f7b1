//! The admin routes (`/v1/admin/...`, scope `admin`): the key list and operator changes. The
//! core decides (`llm_key_router_core::admin`); this reads the body, runs the one `admin_v1`
//! call and writes the audit log line.

use super::Ctx;
use crate::respond::{self, Answer};
use llm_key_router_core::admin::{self, AdminVerb, ADMIN};
use llm_key_router_core::config::LogLevel;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::wire::api;
use worker::Request;

/// `GET /v1/admin/keys`: every key with its state (the `/stats` derivation) and the last changes.
pub(super) async fn keys(cx: &Ctx<'_>) -> Answer {
    let s = super::observe::read_stats(cx).await?;
    respond::json(200, &admin::keys_list(&s))
}

/// `POST /v1/admin/keys/{id}/disable|enable`, `POST /v1/admin/groups/{group}/clear-cooldown`.
pub(super) async fn change(req: &mut Request, cx: &Ctx<'_>, verb: AdminVerb, target: &str) -> Answer {
    let bytes = req.bytes().await.map_err(|_| RouterError::bad_request("invalid_body", "could not read body"))?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let ct = req.headers().get("content-type").ok().flatten();
        Some(api::parse_json_body(ct.as_deref(), &bytes, cx.settings.max_body_bytes)?)
    };
    // The target is checked against the pool before Redis: an unknown id is a 404.
    let action = admin::action(cx.pool, verb, target, body.as_ref())?;
    let by = &cx.caller.client_id;
    let (keys, args) = admin::admin_call(cx.pool, &action, by);
    let reply = admin::parse_admin(&cx.store.eval(&ADMIN, &keys, &args).await?)?;
    let record = admin::audit_record(&action, by, &reply);
    respond::log(LogLevel::Info, &cx.settings.log_level, "admin_change", record.clone());
    respond::json(200, &llm_key_router_core::json::object(vec![("ok", true.into()), ("change", record)]))
}
