//! Files and cached contents with project affinity (issue 14). A Files-API file or a cached
//! content belongs to the Google project of the key that created it, and another project's key
//! gets a 403 for it. So the router records, for each one it proxies, the quota group (project)
//! that owns it and the client that created it (`{llmr}:res:{name}`, for the resource's
//! lifetime), and a request that names one is reserved only on keys of that group: the names go
//! to `reserve_v1`, which reads the owner records and filters its candidates itself, so this
//! costs no extra round trip.

use crate::store::keys;
use crate::wire::gemini::GenerateRequest;
use serde_json::Value;

/// Files live 48 h at Google.
pub const FILE_TTL_S: u64 = 48 * 3600;
/// A cached content's TTL when the request sets none (Google's default: 1 h).
pub const DEFAULT_CACHE_TTL_S: u64 = 3600;
/// At most this many names are resolved per request.
pub const MAX_NAMES: usize = 16;

/// The kind of a named resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    CachedContent,
}

impl Kind {
    pub fn collection(self) -> &'static str {
        match self {
            Kind::File => "files",
            Kind::CachedContent => "cachedContents",
        }
    }
}

/// `files/<id>` or `cachedContents/<id>` with a valid id, as the router names resources.
pub fn resource_name(kind: Kind, id: &str) -> Option<String> {
    crate::ids::valid_name(id).then(|| format!("{}/{id}", kind.collection()))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// The file a `fileUri` names when it is a Files-API name (`files/<id>`, or an http(s) URL with
/// a `files/<id>` path), else `None` (a public URL, `gs://...`).
pub fn file_name_of_uri(uri: &str) -> Option<String> {
    let uri = uri.trim().split(['?', '#']).next().unwrap_or_default();
    let id = if let Some(rest) = strip_prefix_ci(uri, "https://").or_else(|| strip_prefix_ci(uri, "http://")) {
        let (_authority, path) = rest.split_once('/')?;
        let mut segs = path.split('/');
        segs.by_ref().find(|seg| *seg == "files")?;
        segs.rfind(|seg| !seg.is_empty())?
    } else {
        uri.strip_prefix("files/")?.split('/').rfind(|seg| !seg.is_empty())?
    };
    resource_name(Kind::File, id.split(':').next().unwrap_or_default())
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// The file names in Gemini `contents` (both spellings of `fileData`/`fileUri`).
pub fn files_in_contents<'a>(contents: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in contents {
        for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = field(p, "fileData", "file_data")
                .and_then(|fd| field(fd, "fileUri", "file_uri"))
                .and_then(Value::as_str)
                .and_then(file_name_of_uri)
            {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// The first value of the query parameter `name` in `url`, percent-decoded (`+` as a space).
/// Read from the URL's text, not through a URL parser: the `url` crate (with IDNA) would add
/// ~100 KB to the wasm for two query lookups.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = crate::wire::url::url_query(url);
    let raw = query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if pair == name => Some(""),
        _ => None,
    })?;
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `scheme://host[:port]` of an absolute URL (what `Url::origin` serializes for http(s)).
pub fn url_origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find(['/', '?', '#']).map_or(url.len(), |j| after + j);
    &url[..end]
}

/// Every owned resource a generate request names: its cached content, then its files (the
/// system instruction's and the contents'), at most [`MAX_NAMES`].
pub fn referenced(req: &GenerateRequest) -> Vec<String> {
    let mut out = Vec::new();
    let cached = req.passthrough.get("cachedContent").or_else(|| req.passthrough.get("cached_content"));
    if let Some(id) = cached.and_then(Value::as_str).and_then(|c| c.strip_prefix("cachedContents/")) {
        out.extend(resource_name(Kind::CachedContent, id));
    }
    let system = req.passthrough.get("systemInstruction");
    for name in files_in_contents(system.into_iter().chain(req.contents.iter())) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out.truncate(MAX_NAMES);
    out
}

/// The owner record of a resource, as [`record_commands`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub group: String,
    pub key_id: String,
    pub client: String,
    /// The resource as Google described it when it was created.
    pub meta: Value,
}

impl Owner {
    /// From an HGETALL answer; `None` when the record does not exist (expired or never made).
    pub fn from_hash(h: &crate::observe::Hash) -> Option<Owner> {
        Some(Owner {
            group: h.get("group")?.clone(),
            key_id: h.get("key")?.clone(),
            client: h.get("client")?.clone(),
            meta: h.get("meta").and_then(|m| crate::json::parse(m).ok()).unwrap_or(Value::Null),
        })
    }
}

/// The commands (one MULTI/EXEC) that record a new resource: its owner hash with the
/// resource's lifetime, and its name in the creating client's list.
pub fn record_commands(name: &str, owner: &Owner, ttl_s: u64) -> Vec<Vec<String>> {
    let rec = keys::resource(name);
    let list = keys::client_resources(&owner.client);
    vec![
        vec![
            "HSET".into(),
            rec.clone(),
            "group".into(),
            owner.group.clone(),
            "key".into(),
            owner.key_id.clone(),
            "client".into(),
            owner.client.clone(),
            "meta".into(),
            owner.meta.to_string(),
        ],
        vec!["EXPIRE".into(), rec, ttl_s.to_string()],
        vec!["SADD".into(), list.clone(), name.into()],
        // The list outlives any of its resources; expired names are dropped when listed.
        vec!["EXPIRE".into(), list, (FILE_TTL_S + 3600).to_string()],
    ]
}

/// The commands that forget a deleted resource.
pub fn forget_commands(name: &str, client: &str) -> Vec<Vec<String>> {
    vec![vec!["DEL".into(), keys::resource(name)], vec!["SREM".into(), keys::client_resources(client), name.into()]]
}

/// How long a resumable upload session may take.
pub const UPLOAD_SESSION_TTL_S: u64 = 24 * 3600;

/// Whether `s` is a session id the router made (32 lowercase hex digits): only those form a key.
pub fn valid_session_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The commands that open a resumable upload session.
pub fn session_commands(id: &str, key_id: &str, upstream_id: &str, client: &str) -> Vec<Vec<String>> {
    let k = keys::upload_session(id);
    vec![
        vec![
            "HSET".into(),
            k.clone(),
            "key".into(),
            key_id.into(),
            "up".into(),
            upstream_id.into(),
            "client".into(),
            client.into(),
        ],
        vec!["EXPIRE".into(), k, UPLOAD_SESSION_TTL_S.to_string()],
    ]
}

/// A cached content's TTL in seconds from its create request (`ttl: "300s"`, or an
/// `expireTime` we cannot parse here: the default), at least 60 s.
pub fn cache_ttl_s(body: &Value) -> u64 {
    body.get("ttl")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n > 0.0)
        .map(|n| (n.ceil() as u64).max(60))
        .unwrap_or(DEFAULT_CACHE_TTL_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_names_from_uris() {
        assert_eq!(file_name_of_uri("files/abc123").as_deref(), Some("files/abc123"));
        assert_eq!(
            file_name_of_uri("https://generativelanguage.googleapis.com/v1beta/files/abc-1").as_deref(),
            Some("files/abc-1")
        );
        assert_eq!(
            file_name_of_uri("http://127.0.0.1:9/v1beta/files/x:download?alt=media").as_deref(),
            Some("files/x")
        );
        assert_eq!(file_name_of_uri("https://example.com/cat.png"), None);
        assert_eq!(file_name_of_uri("gs://b/files/abc"), None);
        assert_eq!(file_name_of_uri("files/a{b}"), None, "only valid ids form a Redis key");
    }

    #[test]
    fn referenced_names_cached_content_first_then_files_once() {
        let body = json!({"model": "m", "contents": [
            {"role": "user", "parts": [{"text": "x"}, {"fileData": {"fileUri": "files/a", "mimeType": "image/png"}},
                                        {"file_data": {"file_uri": "https://h/v1beta/files/b"}},
                                        {"fileData": {"fileUri": "files/a"}}]}]});
        let mut req = GenerateRequest::parse(&json!({"model": "m", "prompt": "x"}), None).unwrap();
        req.contents = body["contents"].as_array().unwrap().clone();
        req.passthrough.insert("cachedContent".into(), json!("cachedContents/c1"));
        assert_eq!(referenced(&req), ["cachedContents/c1", "files/a", "files/b"]);
    }

    #[test]
    fn query_params_and_origins_are_read_from_the_text() {
        let u = "https://r.example:8443/upload/v1beta/files?a=1&upload_id=AB%2Bc-d_e&x#frag";
        assert_eq!(query_param(u, "upload_id").as_deref(), Some("AB+c-d_e"));
        assert_eq!(query_param(u, "x").as_deref(), Some(""));
        assert_eq!(query_param(u, "nope"), None);
        assert_eq!(query_param("http://h/p?upload_id=a+b%zz%4", "upload_id").as_deref(), Some("a b%zz%4"));
        assert_eq!(query_param("http://h/?upload_id=%é1", "upload_id").as_deref(), Some("%é1"));
        assert_eq!(url_origin(u), "https://r.example:8443");
        assert_eq!(url_origin("http://127.0.0.1:8787?q"), "http://127.0.0.1:8787");
    }

    #[test]
    fn upload_sessions() {
        assert!(valid_session_id(&"a1".repeat(16)));
        assert!(!valid_session_id("A1") && !valid_session_id(&"g".repeat(32)));
        let c = session_commands("ab", "k", "up-1", "cl");
        assert_eq!(c[0], ["HSET", "{llmr}:upl:ab", "key", "k", "up", "up-1", "client", "cl"]);
    }

    #[test]
    fn records_and_ttls() {
        let o = Owner { group: "g".into(), key_id: "k".into(), client: "c".into(), meta: json!({"name": "files/a"}) };
        let cmds = record_commands("files/a", &o, FILE_TTL_S);
        assert_eq!(cmds[0][1], "{llmr}:res:files/a");
        assert_eq!(cmds[1], ["EXPIRE", "{llmr}:res:files/a", "172800"]);
        assert_eq!(cmds[2], ["SADD", "{llmr}:res:c:c", "files/a"]);
        let h: crate::observe::Hash =
            [("group", "g"), ("key", "k"), ("client", "c"), ("meta", r#"{"name":"files/a"}"#)]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(Owner::from_hash(&h), Some(o));
        assert_eq!(Owner::from_hash(&Default::default()), None);
        assert_eq!(cache_ttl_s(&json!({"ttl": "300s"})), 300);
        assert_eq!(cache_ttl_s(&json!({"ttl": "1.5s"})), 60);
        assert_eq!(cache_ttl_s(&json!({})), DEFAULT_CACHE_TTL_S);
    }
}
