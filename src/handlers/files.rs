//! The Files API and cachedContents, proxied with project affinity (issue 14). A file or cached
//! content is created with one key; its owner record (`core::files`) keeps that key's quota
//! group and the creating client for the resource's lifetime, so later calls, and every
//! generate request that names it (through `reserve_v1`), go to that group only.

use super::Ctx;
use crate::fetch::WorkerRuntime;
use crate::respond::{self, Answer};
use llm_key_router_core::config::KeyConfig;
use llm_key_router_core::engine::Runtime;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::files::{self, Kind, Owner};
use llm_key_router_core::observe::key_status::hash_from_value;
use llm_key_router_core::store::keys;
use llm_key_router_core::wire::api::ResourceMethod;
use serde_json::{json, Value};
use worker::{js_sys, Fetch, Headers, Method, Request, RequestInit};

/// Headers of the upload protocol that go upstream unchanged.
const UPLOAD_HEADERS: [&str; 6] = [
    "x-goog-upload-protocol",
    "x-goog-upload-command",
    "x-goog-upload-offset",
    "x-goog-upload-header-content-length",
    "x-goog-upload-header-content-type",
    "content-type",
];

struct Upstream {
    status: u16,
    headers: Headers,
    body: String,
}

fn internal(e: impl std::fmt::Display) -> RouterError {
    RouterError::UpstreamUnavailable { message: format!("upstream call failed: {e}") }
}

async fn forward(
    method: Method,
    url: &str,
    api_key: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
) -> Result<Upstream, RouterError> {
    let h = Headers::new();
    for (k, v) in headers {
        h.set(k, v).map_err(internal)?;
    }
    h.set("x-goog-api-key", api_key).map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(h);
    if let Some(b) = body {
        init.with_body(Some(js_sys::Uint8Array::from(b.as_slice()).into()));
    }
    let req = Request::new_with_init(url, &init).map_err(internal)?;
    let mut resp = Fetch::Request(req).send().await.map_err(internal)?;
    let status = resp.status_code();
    let headers = resp.headers().clone();
    let body = resp.text().await.map_err(internal)?;
    Ok(Upstream { status, headers, body })
}

/// Keys that can serve a resource call: active and with a secret, of `group` if given.
fn usable<'p>(cx: &Ctx<'p>, group: Option<&str>) -> Vec<&'p KeyConfig> {
    cx.pool
        .keys
        .iter()
        .filter(|k| k.active && cx.st.api_key(&k.key_id).is_some())
        .filter(|k| group.is_none_or(|g| k.quota_group == g))
        .collect()
}

fn pick<'p>(keys: &[&'p KeyConfig]) -> Result<&'p KeyConfig, RouterError> {
    if keys.is_empty() {
        return Err(RouterError::ConfigInvalid { errors: vec!["no active key with its secret set".into()] });
    }
    Ok(keys[(WorkerRuntime.random_u64() % keys.len() as u64) as usize])
}

fn secret<'a>(cx: &'a Ctx<'_>, k: &KeyConfig) -> &'a str {
    cx.st.api_key(&k.key_id).unwrap_or_default()
}

/// The upstream answer as is (Gemini's body and status), with the upload headers it carries.
fn relay(up: &Upstream, extra: &[(&str, String)]) -> Answer {
    let (mut r, status) = respond::text(up.status, up.body.clone(), "application/json; charset=UTF-8")?;
    if let Ok(Some(s)) = up.headers.get("x-goog-upload-status") {
        let _ = r.headers_mut().set("x-goog-upload-status", &s);
    }
    for (k, v) in extra {
        let _ = r.headers_mut().set(k, v);
    }
    Ok((r, status))
}

async fn record(cx: &Ctx<'_>, name: &str, key: &KeyConfig, meta: Value, ttl_s: u64) -> Result<(), RouterError> {
    let owner =
        Owner { group: key.quota_group.clone(), key_id: key.key_id.clone(), client: cx.caller.client_id.clone(), meta };
    for r in cx.store.multi_exec(&files::record_commands(name, &owner, ttl_s)).await? {
        r?;
    }
    Ok(())
}

/// Records a file from an upload's final answer `{"file": {...}}`.
async fn record_file(cx: &Ctx<'_>, up: &Upstream, key: &KeyConfig) -> Result<(), RouterError> {
    if up.status != 200 {
        return Ok(());
    }
    let v: Value = serde_json::from_str(&up.body).unwrap_or(Value::Null);
    let file = v.get("file").cloned().unwrap_or(Value::Null);
    if let Some(name) =
        file["name"].as_str().and_then(|n| n.strip_prefix("files/")).and_then(|id| files::resource_name(Kind::File, id))
    {
        record(cx, &name, key, file, files::FILE_TTL_S).await?;
    }
    Ok(())
}

/// `POST /upload/v1beta/files`.
pub(super) async fn upload(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let url = req.url().map_err(internal)?;
    let base = &cx.settings.gemini_base_url;
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in UPLOAD_HEADERS {
        if let Ok(Some(v)) = req.headers().get(h) {
            headers.push((h.to_string(), v));
        }
    }
    if let Some(len) = req.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok()) {
        if len > cx.settings.max_body_bytes {
            return Err(RouterError::PayloadTooLarge { limit: cx.settings.max_body_bytes });
        }
    }
    let body = req.bytes().await.map_err(|_| RouterError::bad_request("invalid_body", "could not read body"))?;
    let upload_id = url.query_pairs().find(|(k, _)| k == "upload_id").map(|(_, v)| v.into_owned());
    if let Some(upload_id) = upload_id {
        // The data of a resumable upload: `{key_id}~{Google's upload id}`, sent with that key.
        let (key_id, up_id) = upload_id.split_once('~').ok_or_else(not_found_upload)?;
        let key = usable(cx, None).into_iter().find(|k| k.key_id == key_id).ok_or_else(not_found_upload)?;
        let target = format!("{base}/upload/v1beta/files?upload_id={up_id}&upload_protocol=resumable");
        let up = forward(Method::Post, &target, secret(cx, key), &headers, Some(body)).await?;
        let finalized = up.headers.get("x-goog-upload-status").ok().flatten().as_deref() == Some("final");
        if finalized {
            record_file(cx, &up, key).await?;
        }
        return relay(&up, &[]);
    }
    // A new upload: any usable key; its group then owns the file.
    let key = pick(&usable(cx, None))?;
    let up =
        forward(Method::Post, &format!("{base}/upload/v1beta/files"), secret(cx, key), &headers, Some(body)).await?;
    if let Ok(Some(upstream_url)) = up.headers.get("x-goog-upload-url") {
        let up_id = worker::Url::parse(&upstream_url)
            .ok()
            .and_then(|u| u.query_pairs().find(|(k, _)| k == "upload_id").map(|(_, v)| v.into_owned()))
            .ok_or_else(|| internal("upload URL without upload_id"))?;
        let mine = format!(
            "{}/upload/v1beta/files?upload_id={}~{}&upload_protocol=resumable",
            url.origin().ascii_serialization(),
            key.key_id,
            js_sys::encode_uri_component(&up_id)
        );
        return relay(&up, &[("x-goog-upload-url", mine)]);
    }
    record_file(cx, &up, key).await?;
    relay(&up, &[])
}

fn not_found_upload() -> RouterError {
    RouterError::NotFound { code: "upload_not_found", message: "no such upload session".into() }
}

fn not_found(kind: Kind, id: &str) -> RouterError {
    RouterError::NotFound {
        code: "resource_not_found",
        message: format!("{}/{id} is not found (or belongs to another client)", kind.collection()),
    }
}

async fn owner(cx: &Ctx<'_>, name: &str) -> Result<Option<Owner>, RouterError> {
    let v = cx.store.command(&["HGETALL".into(), keys::resource(name)]).await?;
    let h = hash_from_value(&v).map_err(|e| RouterError::Internal { message: e })?;
    Ok(Owner::from_hash(&h))
}

/// Files and cachedContents: get, list, delete, and create for cached contents.
pub(super) async fn resource(
    req: &mut Request,
    cx: &Ctx<'_>,
    kind: Kind,
    id: Option<&str>,
    method: ResourceMethod,
) -> Answer {
    let base = &cx.settings.gemini_base_url;
    match (method, id) {
        (ResourceMethod::List, _) => list(cx, kind).await,
        (ResourceMethod::Create, _) => create_cache(req, cx).await,
        (m, Some(id)) => {
            let name = files::resource_name(kind, id).ok_or_else(|| not_found(kind, id))?;
            let o = owner(cx, &name).await?.filter(|o| o.client == cx.caller.client_id);
            let o = o.ok_or_else(|| not_found(kind, id))?;
            let keys = usable(cx, Some(&o.group));
            let key = keys.iter().find(|k| k.key_id == o.key_id).copied().map_or_else(|| pick(&keys), Ok)?;
            let url = format!("{base}/v1beta/{name}");
            let verb = if m == ResourceMethod::Delete { Method::Delete } else { Method::Get };
            let up = forward(verb, &url, secret(cx, key), &[], None).await?;
            if m == ResourceMethod::Delete && up.status == 200 {
                for r in cx.store.multi_exec(&files::forget_commands(&name, &o.client)).await? {
                    r?;
                }
            }
            relay(&up, &[])
        }
        (_, None) => Err(RouterError::NotFound { code: "not_found", message: "no such route".into() }),
    }
}

/// Lists the calling client's own files (or cached contents) from their owner records.
async fn list(cx: &Ctx<'_>, kind: Kind) -> Answer {
    let set = keys::client_resources(&cx.caller.client_id);
    let names = cx.store.command(&["SMEMBERS".into(), set]).await?;
    let prefix = format!("{}/", kind.collection());
    let mut names: Vec<String> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    names.sort();
    let mut items = Vec::new();
    if !names.is_empty() {
        let cmds: Vec<Vec<String>> =
            names.iter().map(|n| vec!["HGET".into(), keys::resource(n), "meta".into()]).collect();
        for v in cx.store.pipeline(&cmds).await?.into_iter().flatten() {
            if let Some(meta) = v.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                items.push(meta);
            }
        }
    }
    respond::json(200, &json!({ kind.collection(): items }))
}

/// `POST /v1beta/cachedContents`: with a key of the group owning the files it names.
async fn create_cache(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let body = super::read_json(req, cx.settings).await?;
    let contents = body.get("contents").and_then(Value::as_array).cloned().unwrap_or_default();
    let system = body.get("systemInstruction").or_else(|| body.get("system_instruction"));
    let named = files::files_in_contents(system.into_iter().chain(contents.iter()));
    let mut group = None;
    for name in &named {
        if let Some(o) = owner(cx, name).await? {
            group = Some(o.group);
            break;
        }
    }
    let key = pick(&usable(cx, group.as_deref()))?;
    let url = format!("{}/v1beta/cachedContents", cx.settings.gemini_base_url);
    let json_ct = [("content-type".to_string(), "application/json".to_string())];
    let up = forward(Method::Post, &url, secret(cx, key), &json_ct, Some(body.to_string().into_bytes())).await?;
    if up.status == 200 {
        let meta: Value = serde_json::from_str(&up.body).unwrap_or(Value::Null);
        if let Some(name) = meta["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("cachedContents/"))
            .and_then(|id| files::resource_name(Kind::CachedContent, id))
        {
            record(cx, &name, key, meta.clone(), files::cache_ttl_s(&body)).await?;
        }
    }
    relay(&up, &[])
}
