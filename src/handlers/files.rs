//! The Files API and cachedContents, proxied with project affinity (issue 14). A file or cached
//! content is created with one key; its owner record (`core::files`) keeps that key's quota
//! group and the creating client for the resource's lifetime, so later calls, and every
//! generate request that names it (through `reserve_v1`), go to that group only.

use super::Ctx;
use crate::fetch::{FetchTransport, WorkerRuntime};
use crate::respond::{self, Answer};
use crate::state::State;
use llm_key_router_core::config::KeyConfig;
use llm_key_router_core::engine::Runtime;
use llm_key_router_core::error::RouterError;
use llm_key_router_core::files::{self, Kind, Owner};
use llm_key_router_core::json::object;
use llm_key_router_core::observe::key_status::hash_from_value;
use llm_key_router_core::store::keys;
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::wire::api::ResourceMethod;
use serde_json::Value;
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

async fn record(
    store: &Upstash<FetchTransport>,
    client: &str,
    name: &str,
    key: &KeyConfig,
    meta: Value,
    ttl_s: u64,
) -> Result<(), RouterError> {
    let owner = Owner { group: key.quota_group.clone(), key_id: key.key_id.clone(), client: client.to_string(), meta };
    for r in store.multi_exec(&files::record_commands(name, &owner, ttl_s)).await? {
        r?;
    }
    Ok(())
}

/// Records a file from an upload's final answer `{"file": {...}}`.
async fn record_file(
    store: &Upstash<FetchTransport>,
    client: &str,
    up: &Upstream,
    key: &KeyConfig,
) -> Result<(), RouterError> {
    if up.status != 200 {
        return Ok(());
    }
    let v: Value = llm_key_router_core::json::parse(&up.body).unwrap_or(Value::Null);
    let file = v.get("file").cloned().unwrap_or(Value::Null);
    let name = file["name"]
        .as_str()
        .and_then(|n| n.strip_prefix("files/"))
        .and_then(|id| files::resource_name(Kind::File, id));
    if let Some(name) = name {
        record(store, client, &name, key, file, files::FILE_TTL_S).await?;
    }
    Ok(())
}

/// The upload protocol's headers and the body, size-checked.
async fn upload_parts(req: &mut Request, max: usize) -> Result<(Vec<(String, String)>, Vec<u8>), RouterError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in UPLOAD_HEADERS {
        if let Ok(Some(v)) = req.headers().get(h) {
            headers.push((h.to_string(), v));
        }
    }
    if let Some(len) = req.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok()) {
        if len > max {
            return Err(RouterError::PayloadTooLarge { limit: max });
        }
    }
    let body = req.bytes().await.map_err(|_| RouterError::bad_request("invalid_body", "could not read body"))?;
    Ok((headers, body))
}

/// The session id of a resumable upload's data request (`?upload_id=`), if it is one.
pub(super) fn upload_session_id(req: &Request) -> Option<String> {
    files::query_param(&req.inner().url(), "upload_id")
}

/// The data of a resumable upload. google-genai sends it with no credential (Google's upload
/// URL carries its own), so the session the start opened authorizes it: its key sends the
/// data, and its client owns the file.
pub(super) async fn upload_data(req: &mut Request, st: &State, session: &str) -> Answer {
    let settings = st.settings.as_ref().map_err(|e| RouterError::ConfigInvalid { errors: e.clone() })?;
    let pool = st.pool.as_ref().map_err(|e| RouterError::ConfigInvalid { errors: e.clone() })?;
    if !settings.enabled {
        return Err(RouterError::RouterDisabled);
    }
    if !files::valid_session_id(session) {
        return Err(not_found_upload());
    }
    let store = Upstash::new(super::upstash(st, 5_000)?);
    let v = store.command(&["HGETALL".into(), keys::upload_session(session)]).await?;
    let h = hash_from_value(&v).map_err(|e| RouterError::Internal { message: e })?;
    let (Some(key_id), Some(up_id), Some(client)) = (h.get("key"), h.get("up"), h.get("client")) else {
        return Err(not_found_upload());
    };
    let key = pool.keys.iter().find(|k| &k.key_id == key_id).ok_or_else(not_found_upload)?;
    let secret = st.api_key(key_id).ok_or_else(not_found_upload)?;
    let (headers, body) = upload_parts(req, settings.max_body_bytes).await?;
    let base = &settings.gemini_base_url;
    let target = format!(
        "{base}/upload/v1beta/files?upload_id={}&upload_protocol=resumable",
        js_sys::encode_uri_component(up_id)
    );
    let up = forward(Method::Post, &target, secret, &headers, Some(body)).await?;
    if up.headers.get("x-goog-upload-status").ok().flatten().as_deref() == Some("final") {
        record_file(&store, client, &up, key).await?;
        let _ = store.command(&["DEL".into(), keys::upload_session(session)]).await;
    }
    relay(&up, &[])
}

/// `POST /upload/v1beta/files`: a resumable start or a multipart upload.
pub(super) async fn upload(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let url = req.inner().url();
    let base = &cx.settings.gemini_base_url;
    let (headers, body) = upload_parts(req, cx.settings.max_body_bytes).await?;
    // A new upload: any usable key; its group then owns the file.
    let key = pick(&usable(cx, None))?;
    let up =
        forward(Method::Post, &format!("{base}/upload/v1beta/files"), secret(cx, key), &headers, Some(body)).await?;
    if let Ok(Some(upstream_url)) = up.headers.get("x-goog-upload-url") {
        let up_id = files::query_param(&upstream_url, "upload_id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| internal("upload URL without upload_id"))?;
        let session = WorkerRuntime.random_hex(16);
        let cmds = files::session_commands(&session, &key.key_id, &up_id, &cx.caller.client_id);
        for r in cx.store.multi_exec(&cmds).await? {
            r?;
        }
        let mine =
            format!("{}/upload/v1beta/files?upload_id={session}&upload_protocol=resumable", files::url_origin(&url));
        return relay(&up, &[("x-goog-upload-url", mine)]);
    }
    record_file(&cx.store, &cx.caller.client_id, &up, key).await?;
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
    let members = cx.store.command(&["SMEMBERS".into(), set]).await?;
    let prefix = format!("{}/", kind.collection());
    // In name order, by insertion: a `sort` would add its own instance to the wasm.
    let mut names: Vec<String> = Vec::new();
    for n in members.as_array().into_iter().flatten().filter_map(Value::as_str).filter(|n| n.starts_with(&prefix)) {
        let at = names.binary_search_by(|x| x.as_str().cmp(n)).unwrap_or_else(|i| i);
        names.insert(at, n.to_string());
    }
    let mut items = Vec::new();
    if !names.is_empty() {
        let cmds: Vec<Vec<String>> =
            names.iter().map(|n| vec!["HGET".into(), keys::resource(n), "meta".into()]).collect();
        for v in cx.store.pipeline(&cmds).await?.into_iter().flatten() {
            if let Some(meta) = v.as_str().and_then(|s| llm_key_router_core::json::parse(s).ok()) {
                items.push(meta);
            }
        }
    }
    respond::json(200, &object(vec![(kind.collection(), Value::Array(items))]))
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
        let meta: Value = llm_key_router_core::json::parse(&up.body).unwrap_or(Value::Null);
        if let Some(name) = meta["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("cachedContents/"))
            .and_then(|id| files::resource_name(Kind::CachedContent, id))
        {
            record(&cx.store, &cx.caller.client_id, &name, key, meta.clone(), files::cache_ttl_s(&body)).await?;
        }
    }
    relay(&up, &[])
}
