//! The Files API and cachedContents, each resource owned by the project of the key that created
//! it (as at Google): upload (resumable: `start` → `x-goog-upload-url` → `upload, finalize`;
//! multipart), get, list, delete; cachedContents create, get, list, delete. Another project's
//! key gets Google's resource-level 403 for it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use crate::access::Owners;
use crate::api::{api_key, query_param};
use crate::{err_response, errors, json_response, Mock};

#[derive(Debug, Default)]
pub struct Resources {
    /// upload id -> (project, file metadata from `start`, bytes so far)
    uploads: HashMap<String, (String, Value, usize)>,
    /// file id -> (project, metadata)
    files: HashMap<String, (String, Value)>,
    /// cached content id -> (project, metadata)
    caches: HashMap<String, (String, Value)>,
    seq: u64,
}

impl Resources {
    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        let x = (self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66) % 1_000_000_007;
        format!("{prefix}{x:x}{}", self.seq)
    }
}

/// Whether a project owns a file or cached content id.
impl crate::access::Owners for Resources {
    fn file_owned_by(&self, id: &str, project: &str) -> bool {
        self.files.get(id).is_some_and(|(p, _)| p == project)
    }

    fn cache_owned_by(&self, id: &str, project: &str) -> bool {
        self.caches.get(id).is_some_and(|(p, _)| p == project)
    }
}

fn rfc3339(ms: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn with_headers(mut r: Response, pairs: &[(&'static str, String)]) -> Response {
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

/// The key's project, or the error answer for a missing, invalid or key-level-refused key.
fn project(m: &Mock, headers: &HeaderMap, uri: &Uri, method: &str) -> Result<String, Value> {
    let Some(key) = api_key(headers, uri) else { return Err(errors::missing_key()) };
    let info = m.lock().resolve(&key);
    let Some(info) = info else { return Err(errors::invalid_key()) };
    if let Some(e) = crate::access::key_refusal(&info, method) {
        return Err(e);
    }
    Ok(info.project)
}

/// Whether this request is one of the Files / cachedContents calls; answers it if so.
pub async fn serve(m: &Mock, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let path = uri.path();
    if path == "/upload/v1beta/files" && method == Method::POST {
        return Some(upload(m, uri, headers, body));
    }
    let rest = path.strip_prefix("/v1beta/")?;
    let (coll, id) = match rest.split_once('/') {
        Some((c, id)) => (c, Some(id)),
        None => (rest, None),
    };
    if coll != "files" && coll != "cachedContents" {
        return None;
    }
    let files = coll == "files";
    let rpc = match (files, method.as_str(), id.is_some()) {
        (true, "GET", true) => "getFile",
        (true, "GET", false) => "listFiles",
        (true, "DELETE", true) => "deleteFile",
        (false, "POST", false) => "createCachedContent",
        (false, "GET", true) => "getCachedContent",
        (false, "GET", false) => "listCachedContents",
        (false, "DELETE", true) => "deleteCachedContent",
        _ => return Some(err_response(&errors::not_found("Method not found."))),
    };
    let project = match project(m, headers, uri, rpc) {
        Ok(p) => p,
        Err(e) => return Some(err_response(&e)),
    };
    let now = m.now_ms();
    let mut g = m.lock();
    let res = &mut g.resources;
    let denied = |id: &str| if files { errors::file_denied(id) } else { errors::cached_content_denied() };
    Some(match rpc {
        "listFiles" | "listCachedContents" => {
            let map = if files { &res.files } else { &res.caches };
            let mut items: Vec<&Value> = map.values().filter(|(p, _)| *p == project).map(|(_, v)| v).collect();
            items.sort_by_key(|v| v["name"].as_str().unwrap_or_default().to_string());
            json_response(200, &json!({ coll: items }))
        }
        "getFile" | "getCachedContent" | "deleteFile" | "deleteCachedContent" => {
            let id = id.unwrap_or_default();
            let map = if files { &mut res.files } else { &mut res.caches };
            match map.get(id) {
                Some((p, v)) if *p == project => {
                    if rpc.starts_with("delete") {
                        map.remove(id);
                        json_response(200, &json!({}))
                    } else {
                        json_response(200, v)
                    }
                }
                // Google answers 403 whether the resource is another project's or does not exist.
                _ => err_response(&denied(id)),
            }
        }
        _ => {
            // createCachedContent: every file it names must be the project's own.
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return Some(err_response(&errors::invalid_argument("Invalid JSON payload received.")));
            };
            let contents = req.get("contents").and_then(Value::as_array).cloned().unwrap_or_default();
            for c in &contents {
                for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
                    let uri = p
                        .get("fileData")
                        .or_else(|| p.get("file_data"))
                        .and_then(|fd| fd.get("fileUri").or_else(|| fd.get("file_uri")))
                        .and_then(Value::as_str);
                    if let Some(fid) = uri.and_then(crate::access::file_id) {
                        if !res.file_owned_by(fid, &project) {
                            return Some(err_response(&errors::file_denied(fid)));
                        }
                    }
                }
            }
            let ttl_s = req
                .get("ttl")
                .and_then(Value::as_str)
                .and_then(|t| t.trim_end_matches('s').parse::<f64>().ok())
                .unwrap_or(3600.0);
            let id = res.next_id("c");
            let v = json!({
                "name": format!("cachedContents/{id}"),
                "model": req.get("model").cloned().unwrap_or(Value::Null),
                "displayName": req.get("displayName").cloned().unwrap_or(json!("")),
                "createTime": rfc3339(now), "updateTime": rfc3339(now),
                "expireTime": rfc3339(now + (ttl_s * 1000.0) as u64),
                "usageMetadata": {"totalTokenCount": 1000}
            });
            res.caches.insert(id, (project, v.clone()));
            json_response(200, &v)
        }
    })
}

/// Google accepts both spellings of the file's fields (the SDK may send either).
fn normalize(mut meta: Value) -> Value {
    for (snake, camel) in [("display_name", "displayName"), ("mime_type", "mimeType")] {
        if meta.get(camel).is_none() {
            if let Some(v) = meta.get(snake).cloned() {
                meta[camel] = v;
            }
        }
    }
    meta
}

fn file_meta(id: &str, display: &Value, mime: &str, size: usize, now: u64, host: &str) -> Value {
    json!({
        "name": format!("files/{id}"),
        "displayName": display,
        "mimeType": mime,
        "sizeBytes": size.to_string(),
        "createTime": rfc3339(now), "updateTime": rfc3339(now),
        "expirationTime": rfc3339(now + 48 * 3600 * 1000),
        "sha256Hash": "",
        "uri": format!("http://{host}/v1beta/files/{id}"),
        "state": "ACTIVE",
        "source": "UPLOADED"
    })
}

fn upload(m: &Mock, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let project = match project(m, headers, uri, "createFile") {
        Ok(p) => p,
        Err(e) => return err_response(&e),
    };
    let host = header(headers, "host").unwrap_or("127.0.0.1").to_string();
    let now = m.now_ms();
    let protocol = header(headers, "x-goog-upload-protocol").unwrap_or("").to_ascii_lowercase();
    let command = header(headers, "x-goog-upload-command").unwrap_or("").to_ascii_lowercase();
    let mut g = m.lock();
    let res = &mut g.resources;
    if let Some(upload_id) = query_param(uri, "upload_id") {
        // A resumable upload's data: the session is bound to the project that started it.
        let Some((owner, _, size)) = res.uploads.get_mut(&upload_id) else {
            return err_response(&errors::not_found("Upload session not found."));
        };
        if *owner != project {
            return err_response(&errors::permission_denied());
        }
        *size += body.len();
        if !command.contains("finalize") {
            return with_headers(json_response(200, &json!({})), &[("x-goog-upload-status", "active".into())]);
        }
        let (owner, meta, size) = res.uploads.remove(&upload_id).expect("present");
        let id = res.next_id("f");
        let mime = meta["mimeType"].as_str().unwrap_or("application/octet-stream").to_string();
        let v = file_meta(&id, &meta["displayName"], &mime, size, now, &host);
        res.files.insert(id, (owner, v.clone()));
        return with_headers(json_response(200, &json!({"file": v})), &[("x-goog-upload-status", "final".into())]);
    }
    if protocol == "resumable" && command == "start" {
        let meta = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("file").cloned()).unwrap_or(json!({}));
        let mut meta = normalize(meta);
        if meta.get("mimeType").is_none() {
            if let Some(ct) = header(headers, "x-goog-upload-header-content-type") {
                meta["mimeType"] = json!(ct);
            }
        }
        let upload_id = res.next_id("u");
        res.uploads.insert(upload_id.clone(), (project, meta, 0));
        let url = format!("http://{host}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable");
        return with_headers(
            json_response(200, &json!({})),
            &[("x-goog-upload-url", url), ("x-goog-upload-status", "active".into())],
        );
    }
    if protocol == "multipart" {
        let ct = header(headers, "content-type").unwrap_or("");
        let Some((meta, data)) = multipart(ct, body) else {
            return err_response(&errors::invalid_argument("Bad multipart body."));
        };
        let meta = normalize(meta.get("file").cloned().unwrap_or(meta));
        let mime = meta["mimeType"].as_str().unwrap_or("application/octet-stream").to_string();
        let id = res.next_id("f");
        let v = file_meta(&id, &meta["displayName"], &mime, data, now, &host);
        res.files.insert(id, (project, v.clone()));
        return json_response(200, &json!({"file": v}));
    }
    err_response(&errors::invalid_argument("Upload protocol must be resumable or multipart."))
}

/// A `multipart/related` body: the JSON metadata part and the size of the data part.
fn multipart(content_type: &str, body: &[u8]) -> Option<(Value, usize)> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delim = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut at = 0;
    let find = |from: usize| -> Option<usize> {
        text.get(from..)?.windows(delim.len()).position(|w| w == delim.as_bytes()).map(|p| p + from)
    };
    while let Some(start) = find(at) {
        let after = start + delim.len();
        if text.get(after..after + 2) == Some(b"--") {
            break;
        }
        let next = find(after)?;
        let part = &text[after..next];
        let sep = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let mut content = &part[sep + 4..];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        }
        parts.push(content.to_vec());
        at = next;
    }
    let meta: Value = serde_json::from_slice(parts.first()?).ok()?;
    Some((meta, parts.get(1).map_or(0, Vec::len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_multipart() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_899_497_469), "2026-11-28T20:58:17.469Z");
        let body = b"--b1\r\nContent-Type: application/json\r\n\r\n{\"file\":{\"displayName\":\"x\"}}\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n";
        let (meta, n) = multipart("multipart/related; boundary=b1", body).unwrap();
        assert_eq!((meta["file"]["displayName"].as_str(), n), (Some("x"), 5));
        assert!(multipart("multipart/related", body).is_none());
    }
}
