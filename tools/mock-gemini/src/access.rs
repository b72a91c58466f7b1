//! Google's two kinds of 403.
//!
//! - **Key-level** (about the key): `permission_denied` (CONSUMER_SUSPENDED) and
//!   `service_blocked` (API_KEY_SERVICE_BLOCKED) keys are refused on every call.
//! - **Resource-level** (about the request): a generate call that names a Files API file
//!   or a cached content its key's project cannot see: one another project created
//!   (`files.rs`), or one that does not exist at all.

use serde_json::Value;

use crate::config::KeyInfo;
use crate::errors;

/// The full RPC name Google reports for a REST method, e.g. `generateContent` →
/// `google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent`.
/// `listModels` and `getModel` belong to `ModelService`; every other method to
/// `GenerativeService`.
pub fn rpc_name(method: &str) -> String {
    let service = match method {
        "listModels" | "getModel" => "ModelService",
        _ => "GenerativeService",
    };
    let mut chars = method.chars();
    let capitalized: String = chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect();
    format!("google.ai.generativelanguage.v1beta.{service}.{capitalized}")
}

/// The key-level refusal for a call of `method` (REST name, e.g. `generateContent`), if any.
/// `permission_denied` wins over `service_blocked` when a key has both.
pub fn key_refusal(key: &KeyInfo, method: &str) -> Option<Value> {
    if key.permission_denied {
        Some(errors::permission_denied())
    } else if key.service_blocked {
        Some(errors::service_blocked(&rpc_name(method)))
    } else {
        None
    }
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// The file id a `fileUri` names when it is a Files API name, else None.
///
/// - `files/<id>` → `<id>`;
/// - an http(s) URL whose path has a `files` segment followed by more →
///   the last path segment (a `:download` style suffix, query and fragment dropped);
/// - anything else (a public image URL, `gs://…`, an empty id) → None: not a file name.
pub fn file_id(uri: &str) -> Option<&str> {
    let uri = uri.trim();
    let uri = uri.split(['?', '#']).next().unwrap_or_default();
    let id = if let Some(rest) = strip_prefix_ci(uri, "https://").or_else(|| strip_prefix_ci(uri, "http://")) {
        let (_authority, path) = rest.split_once('/')?;
        let mut segs = path.split('/');
        segs.by_ref().find(|seg| *seg == "files")?;
        segs.rfind(|seg| !seg.is_empty())?
    } else {
        uri.strip_prefix("files/")?.split('/').rfind(|seg| !seg.is_empty())?
    };
    let id = id.split(':').next().unwrap_or_default();
    (!id.is_empty()).then_some(id)
}

/// The parts of `systemInstruction` and of every content.
fn parts(req: &Value) -> impl Iterator<Item = &Value> {
    let system = field(req, "systemInstruction", "system_instruction").into_iter();
    let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten();
    system.chain(contents).filter_map(|c| c.get("parts").and_then(Value::as_array)).flatten()
}

/// Who owns files and cached contents (the mock's `files::Resources`): a seam, so access checks
/// need not know how resources are stored.
pub trait Owners {
    fn file_owned_by(&self, id: &str, project: &str) -> bool;
    fn cache_owned_by(&self, id: &str, project: &str) -> bool;
}

/// The resource-level refusal for a (valid) GenerateContentRequest, if any: a top-level
/// `cachedContent` naming `cachedContents/<x>` first, then the first `fileData` part whose
/// `fileUri` is a Files API name (see [`file_id`]).
/// `project` is the calling key's project (`None`: unknown key, which is refused elsewhere, so
/// nothing is checked here); only that project's own files and caches pass.
pub fn resource_refusal(req: &Value, project: Option<&str>, res: &dyn Owners) -> Option<Value> {
    let project = project?;
    let cached = field(req, "cachedContent", "cached_content").and_then(Value::as_str);
    if let Some(id) = cached.and_then(|c| c.strip_prefix("cachedContents/")).filter(|rest| !rest.is_empty()) {
        if !res.cache_owned_by(id, project) {
            return Some(errors::cached_content_denied());
        }
    }
    parts(req)
        .filter_map(|p| field(p, "fileData", "file_data"))
        .filter_map(|fd| field(fd, "fileUri", "file_uri").and_then(Value::as_str))
        .filter_map(file_id)
        .find(|id| !res.file_owned_by(id, project))
        .map(errors::file_denied)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rpc_names() {
        assert_eq!(
            rpc_name("generateContent"),
            "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"
        );
        assert_eq!(
            rpc_name("streamGenerateContent"),
            "google.ai.generativelanguage.v1beta.GenerativeService.StreamGenerateContent"
        );
        assert_eq!(rpc_name("listModels"), "google.ai.generativelanguage.v1beta.ModelService.ListModels");
    }

    #[test]
    fn key_refusals() {
        let mut k =
            KeyInfo { label: "l".into(), project: "p".into(), permission_denied: false, service_blocked: false };
        assert_eq!(key_refusal(&k, "generateContent"), None);
        k.service_blocked = true;
        assert_eq!(
            key_refusal(&k, "generateContent"),
            Some(errors::service_blocked("google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"))
        );
        k.permission_denied = true;
        assert_eq!(key_refusal(&k, "generateContent"), Some(errors::permission_denied()));
    }

    #[test]
    fn file_ids() {
        assert_eq!(file_id("files/abc123"), Some("abc123"));
        assert_eq!(file_id("https://generativelanguage.googleapis.com/v1beta/files/abc123"), Some("abc123"));
        assert_eq!(file_id("HTTP://127.0.0.1:8090/v1beta/files/xyz-9?alt=media"), Some("xyz-9"));
        assert_eq!(file_id("https://generativelanguage.googleapis.com/v1beta/files/abc:download"), Some("abc"));
        assert_eq!(file_id("https://example.com/images/cat.png"), None);
        assert_eq!(file_id("https://example.com/files"), None);
        assert_eq!(file_id("https://example.com/files/"), None);
        assert_eq!(file_id("files/"), None);
        assert_eq!(file_id("gs://bucket/files/abc"), None);
        assert_eq!(file_id("https://files.example.com/cat.png"), None);
    }

    #[test]
    fn resource_refusals() {
        let with_part = |part: Value| json!({"contents": [{"role": "user", "parts": [{"text": "hi"}, part]}]});
        let r = resource_refusal(
            &with_part(json!({"fileData": {"mimeType": "image/png", "fileUri": "files/abc123"}})),
            Some("p"),
            &crate::files::Resources::default(),
        );
        assert_eq!(r, Some(errors::file_denied("abc123")));
        let r = resource_refusal(
            &with_part(json!({"file_data": {"file_uri": "https://x.test/v1beta/files/q1"}})),
            Some("p"),
            &crate::files::Resources::default(),
        );
        assert_eq!(r, Some(errors::file_denied("q1")));
        let r = resource_refusal(
            &with_part(json!({"fileData": {"fileUri": "https://example.com/cat.png"}})),
            Some("p"),
            &crate::files::Resources::default(),
        );
        assert_eq!(r, None);
        assert_eq!(
            resource_refusal(
                &with_part(json!({"inlineData": {"data": "xx"}})),
                Some("p"),
                &crate::files::Resources::default()
            ),
            None
        );
        let si = json!({"systemInstruction": {"parts": [{"fileData": {"fileUri": "files/sys"}}]},
                        "contents": [{"parts": [{"text": "hi"}]}]});
        assert_eq!(
            resource_refusal(&si, Some("p"), &crate::files::Resources::default()),
            Some(errors::file_denied("sys"))
        );
        // cachedContent is checked before the parts.
        let mut req = with_part(json!({"fileData": {"fileUri": "files/abc123"}}));
        req["cachedContent"] = json!("cachedContents/xyz");
        assert_eq!(
            resource_refusal(&req, Some("p"), &crate::files::Resources::default()),
            Some(errors::cached_content_denied())
        );
        let req = json!({"cached_content": "cachedContents/xyz", "contents": [{"parts": [{"text": "hi"}]}]});
        assert_eq!(
            resource_refusal(&req, Some("p"), &crate::files::Resources::default()),
            Some(errors::cached_content_denied())
        );
        let req = json!({"cachedContent": "something-else", "contents": [{"parts": [{"text": "hi"}]}]});
        assert_eq!(resource_refusal(&req, Some("p"), &crate::files::Resources::default()), None);
    }
}
