//! HTTP surface in pure Rust: which route a request is, how its body is checked, and the JSON
//! shapes the router answers. The wasm layer only moves bytes in and out.

pub use super::url::url_query;
use crate::config::auth::Scope;
use crate::engine::Success;
use crate::error::RouterError;
use crate::wire::embeddings::EmbedMethod;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Health,
    Stats,
    Metrics,
    Dashboard,
    Generate,
    ConvCreate,
    ConvList,
    ConvGet(String),
    ConvDelete(String),
    ConvMessages(String),
    ConvSend(String),
    ChatCompletions,
    Models,
    /// Gemini-native `models/{model}:{method}`.
    Gemini {
        model: String,
        method: GeminiMethod,
    },
    GeminiModels,
    /// Gemini-native `models/{model}:embedContent` or `:batchEmbedContents`.
    GeminiEmbed {
        model: String,
        method: EmbedMethod,
    },
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1beta/models/{model}` (Gemini's `models.get`).
    GeminiModel(String),
    /// `GET /v1/models/{model}` (OpenAI's).
    Model(String),
    NotFound,
    MethodNotAllowed {
        allowed: &'static str,
    },
    /// A conversation path whose id is malformed: never reaches Redis.
    BadConversationId,
    /// `POST /upload/v1beta/files` (google-genai `files.upload`: resumable start, its data
    /// (`?upload_id=`), or multipart).
    FileUpload,
    /// `GET|DELETE /v1beta/files/{id}`, `GET /v1beta/files`, and the same for `cachedContents`
    /// (plus `POST /v1beta/cachedContents`).
    Resource {
        kind: crate::files::Kind,
        /// `None`: the collection (list, or create for cached contents).
        id: Option<String>,
        method: ResourceMethod,
    },
    /// `GET /v1/admin/keys`.
    AdminKeys,
    /// `POST /v1/admin/keys/{id}/disable|enable`, `POST /v1/admin/groups/{group}/clear-cooldown`.
    AdminChange {
        verb: crate::admin::AdminVerb,
        target: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMethod {
    Get,
    List,
    Delete,
    Create,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiMethod {
    Generate,
    Stream,
    CountTokens,
}

/// Which error shape the caller's SDK expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Router,
    OpenAi,
    Gemini,
}

pub fn surface(path: &str) -> Surface {
    if path.starts_with("/v1beta/")
        || path == "/v1beta"
        || path.starts_with("/upload/")
        || path.starts_with("/v1/files")
        || path.starts_with("/v1/cachedContents")
        || (path.starts_with("/v1/models/") && path.contains(':'))
    {
        Surface::Gemini
    } else if path.starts_with("/v1/chat/") || path.starts_with("/v1/models") || path.starts_with("/v1/embeddings") {
        Surface::OpenAi
    } else {
        Surface::Router
    }
}

/// A request's route and the error shape its caller expects, decided together from the path
/// once, so the glue never classifies a path twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub route: Route,
    pub surface: Surface,
}

pub fn routed(method: &str, path: &str) -> Routed {
    Routed { route: route(method, path), surface: surface(path) }
}

impl Route {
    /// Whether the kill switch (`LLM_MULTI_KEY_ROUTER_ENABLED=false`) refuses this route: every
    /// route that would call Gemini. Conversations' reads and observability keep working.
    pub fn calls_upstream(&self) -> bool {
        matches!(
            self,
            Route::Generate
                | Route::ChatCompletions
                | Route::Gemini { .. }
                | Route::ConvSend(_)
                | Route::GeminiEmbed { .. }
                | Route::Embeddings
                | Route::FileUpload
                | Route::Resource { .. }
        )
    }

    /// Scopes a caller needs for this route (all of them). `/health` needs none.
    pub fn scopes(&self) -> &'static [Scope] {
        match self {
            Route::Health
            | Route::Dashboard
            | Route::NotFound
            | Route::MethodNotAllowed { .. }
            | Route::BadConversationId => &[],
            Route::Stats | Route::Metrics => &[Scope::Stats],
            Route::Generate
            | Route::ChatCompletions
            | Route::Models
            | Route::Gemini { .. }
            | Route::GeminiModels
            | Route::GeminiEmbed { .. }
            | Route::Embeddings
            | Route::GeminiModel(_)
            | Route::Model(_)
            | Route::FileUpload
            | Route::Resource { .. } => &[Scope::Generate],
            Route::ConvCreate | Route::ConvList | Route::ConvGet(_) | Route::ConvDelete(_) | Route::ConvMessages(_) => {
                &[Scope::Conversations]
            }
            Route::ConvSend(_) => &[Scope::Conversations, Scope::Generate],
            Route::AdminKeys | Route::AdminChange { .. } => &[Scope::Admin],
        }
    }
}

pub fn route(method: &str, path: &str) -> Route {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let pick = |allowed: &'static str, r: Route| {
        if method == allowed || (allowed == "GET" && method == "HEAD") {
            r
        } else {
            Route::MethodNotAllowed { allowed }
        }
    };
    match path {
        "/health" | "/" => return pick("GET", Route::Health),
        "/stats" => return pick("GET", Route::Stats),
        "/metrics" => return pick("GET", Route::Metrics),
        "/dashboard" => return pick("GET", Route::Dashboard),
        "/v1/generate" => return pick("POST", Route::Generate),
        "/v1/chat/completions" => return pick("POST", Route::ChatCompletions),
        "/v1/models" => return pick("GET", Route::Models),
        "/v1/embeddings" => return pick("POST", Route::Embeddings),
        "/v1beta/models" => return pick("GET", Route::GeminiModels),
        "/v1/conversations" => {
            return match method {
                "POST" => Route::ConvCreate,
                "GET" | "HEAD" => Route::ConvList,
                _ => Route::MethodNotAllowed { allowed: "GET, POST" },
            }
        }
        _ => {}
    }
    // Gemini-native paths; google-genai uses `/v1beta/`, or `/v1/` when configured so.
    if let Some(rest) = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/")) {
        let rest = rest.replace("%3A", ":").replace("%3a", ":");
        let Some((model, m)) = rest.rsplit_once(':') else {
            // `models.get`: Gemini's shape under /v1beta, OpenAI's under /v1.
            let model = rest.strip_prefix("models/").unwrap_or(&rest);
            if !crate::ids::valid_name(model) {
                return Route::NotFound;
            }
            let r = if path.starts_with("/v1beta/") {
                Route::GeminiModel(model.into())
            } else {
                Route::Model(model.into())
            };
            return pick("GET", r);
        };
        let model = model.strip_prefix("models/").unwrap_or(model);
        if !crate::ids::valid_name(model) {
            return Route::NotFound;
        }
        let method = match m {
            "generateContent" => GeminiMethod::Generate,
            "streamGenerateContent" => GeminiMethod::Stream,
            "countTokens" => GeminiMethod::CountTokens,
            "embedContent" => {
                return pick("POST", Route::GeminiEmbed { model: model.into(), method: EmbedMethod::Single })
            }
            "batchEmbedContents" => {
                return pick("POST", Route::GeminiEmbed { model: model.into(), method: EmbedMethod::Batch })
            }
            _ => return Route::NotFound,
        };
        return pick("POST", Route::Gemini { model: model.to_string(), method });
    }
    if let Some(r) = admin_route(method, path) {
        return r;
    }
    if let Some(r) = resource_route(method, path) {
        return r;
    }
    if let Some(rest) = path.strip_prefix("/v1/conversations/") {
        let (id, tail) = match rest.split_once('/') {
            Some((id, tail)) => (id, Some(tail)),
            None => (rest, None),
        };
        if !crate::ids::valid_conversation_id(id) {
            return Route::BadConversationId;
        }
        let id = id.to_string();
        return match (tail, method) {
            (None, "GET" | "HEAD") => Route::ConvGet(id),
            (None, "DELETE") => Route::ConvDelete(id),
            (None, _) => Route::MethodNotAllowed { allowed: "GET, DELETE" },
            (Some("messages"), "GET" | "HEAD") => Route::ConvMessages(id),
            (Some("messages"), "POST") => Route::ConvSend(id),
            (Some("messages"), _) => Route::MethodNotAllowed { allowed: "GET, POST" },
            (Some(_), _) => Route::NotFound,
        };
    }
    Route::NotFound
}

/// The Files API and cachedContents routes.
fn resource_route(method: &str, path: &str) -> Option<Route> {
    use crate::files::Kind;
    // google-genai uses `/v1beta/`, or `/v1/` when configured so (upload too); upstream is
    // always `v1beta`.
    if path == "/upload/v1beta/files" || path == "/upload/v1/files" {
        return Some(if method == "POST" { Route::FileUpload } else { Route::MethodNotAllowed { allowed: "POST" } });
    }
    let rest = path.strip_prefix("/v1beta/").or_else(|| path.strip_prefix("/v1/"))?;
    let (kind, tail) = if let Some(t) = rest.strip_prefix("files") {
        (Kind::File, t)
    } else if let Some(t) = rest.strip_prefix("cachedContents") {
        (Kind::CachedContent, t)
    } else {
        return None;
    };
    let r = |id: Option<String>, m: ResourceMethod| Route::Resource { kind, id, method: m };
    Some(match tail {
        "" => match (method, kind) {
            ("GET" | "HEAD", _) => r(None, ResourceMethod::List),
            ("POST", Kind::CachedContent) => r(None, ResourceMethod::Create),
            (_, Kind::CachedContent) => Route::MethodNotAllowed { allowed: "GET, POST" },
            _ => Route::MethodNotAllowed { allowed: "GET" },
        },
        t => {
            let id = t.strip_prefix('/')?;
            if !crate::ids::valid_name(id) {
                return Some(Route::NotFound);
            }
            match method {
                "GET" | "HEAD" => r(Some(id.into()), ResourceMethod::Get),
                "DELETE" => r(Some(id.into()), ResourceMethod::Delete),
                _ => Route::MethodNotAllowed { allowed: "GET, DELETE" },
            }
        }
    })
}

/// The admin routes. Any target string routes; the handler answers 404 for one not in the pool,
/// before Redis, so a path byte never forms a Redis key.
fn admin_route(method: &str, path: &str) -> Option<Route> {
    use crate::admin::AdminVerb;
    if path == "/v1/admin/keys" {
        return Some(if method == "GET" || method == "HEAD" {
            Route::AdminKeys
        } else {
            Route::MethodNotAllowed { allowed: "GET" }
        });
    }
    let (target, verb) = if let Some(rest) = path.strip_prefix("/v1/admin/keys/") {
        let (id, verb) = rest.split_once('/')?;
        let verb = match verb {
            "disable" => AdminVerb::Disable,
            "enable" => AdminVerb::Enable,
            _ => return Some(Route::NotFound),
        };
        (id, verb)
    } else if let Some(rest) = path.strip_prefix("/v1/admin/groups/") {
        let (group, verb) = rest.split_once('/')?;
        if verb != "clear-cooldown" {
            return Some(Route::NotFound);
        }
        (group, AdminVerb::ClearCooldown)
    } else {
        return None;
    };
    if target.is_empty() || target.contains('/') {
        return Some(Route::NotFound);
    }
    Some(if method == "POST" {
        Route::AdminChange { verb, target: target.to_string() }
    } else {
        Route::MethodNotAllowed { allowed: "POST" }
    })
}

/// Checks a JSON request body: content type, size, UTF-8 and syntax, with a distinct code for each.
pub fn parse_json_body(content_type: Option<&str>, body: &[u8], max: usize) -> Result<Value, RouterError> {
    if body.len() > max {
        return Err(RouterError::PayloadTooLarge { limit: max });
    }
    match content_type {
        Some(ct) if ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") => {}
        _ => return Err(RouterError::UnsupportedMediaType),
    }
    let text =
        std::str::from_utf8(body).map_err(|_| RouterError::bad_request("invalid_utf8", "body is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(RouterError::bad_request("invalid_json", "body is empty"));
    }
    serde_json::from_str(text)
        .map_err(|e| RouterError::bad_request("invalid_json", format!("body is not valid JSON: {e}")))
}

/// Whether `model` is an embedding model (by Google's naming: `gemini-embedding-001`,
/// `text-embedding-004`, `embedding-001`).
pub fn is_embedding_model(model: &str) -> bool {
    model.contains("embedding")
}

/// Gemini's `Model` resource for a pool model (`models.get`, and each entry of `models.list`).
pub fn gemini_model(model: &str) -> Value {
    let (methods, input, output) = if is_embedding_model(model) {
        (json!(["embedContent", "batchEmbedContents"]), 2_048, 1)
    } else {
        let output = if model.starts_with("gemini-2.0") || model.starts_with("gemini-1") { 8_192 } else { 65_536 };
        (json!(["generateContent", "streamGenerateContent", "countTokens"]), 1_048_576, output)
    };
    json!({"name": format!("models/{model}"), "displayName": model, "supportedGenerationMethods": methods,
           "inputTokenLimit": input, "outputTokenLimit": output})
}

/// OpenAI's model object (`GET /v1/models/{model}`).
pub fn openai_model(model: &str) -> Value {
    json!({"id": model, "object": "model", "created": 0, "owned_by": "google"})
}

/// `X-Allow-Fallback` on the OpenAI and Gemini surfaces (what `allow_fallback` is on
/// `/v1/generate`): `true`/`1` allows the model's fallback chain, absent/`false`/`0` does not,
/// anything else is a 400 `invalid_header`.
pub fn allow_fallback_header(value: Option<&str>) -> Result<bool, RouterError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(RouterError::bad_request("invalid_header", "X-Allow-Fallback: must be 'true' or 'false'")),
    }
}

/// The `/v1/generate` answer.
pub fn generate_response(s: &Success, duration_ms: u64, conversation_id: Option<&str>) -> Value {
    let mut v = json!({
        "content": s.reply.out.text,
        "model_used": s.model_used,
        "key_id": s.key_id,
        "usage": s.usage,
        "finish_reason": s.reply.finish_reason,
        "duration_ms": duration_ms,
        "attempts": s.attempts,
    });
    if let Some(b) = &s.reply.block_reason {
        v["block_reason"] = json!(b);
    }
    if let Some(id) = conversation_id {
        v["conversation_id"] = json!(id);
        v["omitted_turns"] = json!(s.omitted_turns);
        if let Some(n) = s.message_count {
            v["message_count"] = json!(n);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_fallback_header_parses() {
        assert_eq!(allow_fallback_header(None), Ok(false));
        assert_eq!(allow_fallback_header(Some("true")), Ok(true));
        assert_eq!(allow_fallback_header(Some(" TRUE ")), Ok(true));
        assert_eq!(allow_fallback_header(Some("1")), Ok(true));
        assert_eq!(allow_fallback_header(Some("false")), Ok(false));
        assert_eq!(allow_fallback_header(Some("maybe")).unwrap_err().code(), "invalid_header");
    }

    #[test]
    fn file_and_cache_routes() {
        use crate::files::Kind;
        assert_eq!(routed("POST", "/upload/v1beta/files").route, Route::FileUpload);
        assert_eq!(routed("POST", "/upload/v1beta/files").surface, Surface::Gemini);
        assert_eq!(routed("POST", "/upload/v1/files").route, Route::FileUpload);
        assert_eq!(routed("GET", "/v1/files/a").surface, Surface::Gemini);
        assert_eq!(routed("GET", "/v1/files").route, route("GET", "/v1beta/files"));
        let res = |kind, id: Option<&str>, method| Route::Resource { kind, id: id.map(String::from), method };
        assert_eq!(route("GET", "/v1beta/files"), res(Kind::File, None, ResourceMethod::List));
        assert_eq!(route("GET", "/v1beta/files/abc-1"), res(Kind::File, Some("abc-1"), ResourceMethod::Get));
        assert_eq!(route("DELETE", "/v1beta/files/abc"), res(Kind::File, Some("abc"), ResourceMethod::Delete));
        assert_eq!(route("POST", "/v1beta/files"), Route::MethodNotAllowed { allowed: "GET" });
        assert_eq!(route("POST", "/v1beta/cachedContents"), res(Kind::CachedContent, None, ResourceMethod::Create));
        assert_eq!(route("GET", "/v1beta/files/a%7Bb"), Route::NotFound);
        assert_eq!(route("GET", "/v1beta/filesx"), Route::NotFound);
        assert_eq!(Route::FileUpload.scopes(), &[Scope::Generate]);
    }

    #[test]
    fn admin_routes_need_the_admin_scope() {
        use crate::admin::AdminVerb;
        assert_eq!(route("GET", "/v1/admin/keys"), Route::AdminKeys);
        assert_eq!(route("POST", "/v1/admin/keys"), Route::MethodNotAllowed { allowed: "GET" });
        assert_eq!(
            route("POST", "/v1/admin/keys/k-1/disable"),
            Route::AdminChange { verb: AdminVerb::Disable, target: "k-1".into() }
        );
        assert_eq!(
            route("POST", "/v1/admin/keys/k-1/enable/"),
            Route::AdminChange { verb: AdminVerb::Enable, target: "k-1".into() }
        );
        assert_eq!(
            route("POST", "/v1/admin/groups/p/clear-cooldown"),
            Route::AdminChange { verb: AdminVerb::ClearCooldown, target: "p".into() }
        );
        assert_eq!(route("GET", "/v1/admin/keys/k-1/disable"), Route::MethodNotAllowed { allowed: "POST" });
        assert_eq!(route("POST", "/v1/admin/keys/k-1/delete"), Route::NotFound);
        assert_eq!(route("POST", "/v1/admin/keys//disable"), Route::NotFound);
        assert_eq!(route("POST", "/v1/admin/keys/a/b/disable"), Route::NotFound);
        assert_eq!(route("POST", "/v1/admin/other"), Route::NotFound);
        assert_eq!(Route::AdminKeys.scopes(), &[Scope::Admin]);
        assert!(!Route::AdminKeys.calls_upstream());
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(route("GET", "/health"), Route::Health);
        assert_eq!(route("POST", "/v1/generate"), Route::Generate);
        assert_eq!(route("POST", "/v1/generate/"), Route::Generate);
        assert_eq!(route("GET", "/v1/generate"), Route::MethodNotAllowed { allowed: "POST" });
        assert_eq!(route("GET", "/../etc/passwd"), Route::NotFound);
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        let id = crate::ids::conversation_id_from([7; 16]);
        assert_eq!(route("POST", &format!("/v1/conversations/{id}/messages")), Route::ConvSend(id.clone()));
        assert_eq!(route("DELETE", &format!("/v1/conversations/{id}")), Route::ConvDelete(id.clone()));
        assert_eq!(
            route("PUT", &format!("/v1/conversations/{id}")),
            Route::MethodNotAllowed { allowed: "GET, DELETE" }
        );
        for bad in ["*", "conv_%7B", "..", "conv_x:y"] {
            assert_eq!(route("GET", &format!("/v1/conversations/{bad}")), Route::BadConversationId);
        }
        assert_eq!(route("POST", "/v1/conversations/../../etc"), Route::BadConversationId);
        assert_eq!(
            route("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Route::Gemini { model: "gemini-2.5-flash".into(), method: GeminiMethod::Stream }
        );
        assert_eq!(route("POST", "/v1beta/models/x:deleteEverything"), Route::NotFound);
        assert_eq!(route("POST", "/v1beta/models/a*b:generateContent"), Route::NotFound);
        assert_eq!(surface("/v1beta/models/x:generateContent"), Surface::Gemini);
        assert_eq!(surface("/v1/chat/completions"), Surface::OpenAi);
        assert_eq!(surface("/v1/models/m:generateContent"), Surface::Gemini);
        assert_eq!(surface("/v1/models"), Surface::OpenAi);
        let r = routed("POST", "/v1beta/models/x:countTokens");
        assert_eq!(r.surface, Surface::Gemini);
        assert!(r.route.calls_upstream());
        assert!(!route("GET", "/v1/conversations").calls_upstream());
    }

    #[test]
    fn embeddings_and_model_lookups_route() {
        assert_eq!(route("POST", "/v1/embeddings"), Route::Embeddings);
        assert_eq!(route("GET", "/v1/embeddings"), Route::MethodNotAllowed { allowed: "POST" });
        assert_eq!(surface("/v1/embeddings"), Surface::OpenAi);
        assert_eq!(
            route("POST", "/v1beta/models/gemini-embedding-001:batchEmbedContents"),
            Route::GeminiEmbed { model: "gemini-embedding-001".into(), method: EmbedMethod::Batch }
        );
        assert_eq!(
            route("POST", "/v1beta/models/text-embedding-004%3AembedContent"),
            Route::GeminiEmbed { model: "text-embedding-004".into(), method: EmbedMethod::Single }
        );
        assert!(route("POST", "/v1/embeddings").calls_upstream());
        assert_eq!(route("GET", "/v1beta/models/gemini-2.5-flash"), Route::GeminiModel("gemini-2.5-flash".into()));
        assert_eq!(
            route("GET", "/v1beta/models/models/gemini-2.5-flash"),
            Route::GeminiModel("gemini-2.5-flash".into())
        );
        assert_eq!(route("GET", "/v1/models/gemini-2.5-flash"), Route::Model("gemini-2.5-flash".into()));
        assert_eq!(route("POST", "/v1/models/gemini-2.5-flash"), Route::MethodNotAllowed { allowed: "GET" });
        assert_eq!(route("GET", "/v1beta/models/a*b"), Route::NotFound);
        assert_eq!(surface("/v1beta/models/x"), Surface::Gemini);
        assert_eq!(surface("/v1/models/x"), Surface::OpenAi);
        assert_eq!(route("GET", "/v1/models/x").scopes(), &[Scope::Generate]);
        let g = gemini_model("gemini-embedding-001");
        assert_eq!(g["supportedGenerationMethods"], json!(["embedContent", "batchEmbedContents"]));
        assert_eq!(gemini_model("gemini-2.5-flash")["name"], "models/gemini-2.5-flash");
        assert_eq!(openai_model("m"), json!({"id": "m", "object": "model", "created": 0, "owned_by": "google"}));
    }

    #[test]
    fn body_checks_have_distinct_codes() {
        let ct = Some("application/json; charset=utf-8");
        assert_eq!(parse_json_body(ct, b"{\"a\":1}", 100).unwrap()["a"], 1);
        assert_eq!(parse_json_body(ct, &[b'a'; 101], 100).unwrap_err().status(), 413);
        assert_eq!(parse_json_body(Some("text/plain"), b"{}", 100).unwrap_err().status(), 415);
        assert_eq!(parse_json_body(None, b"{}", 100).unwrap_err().status(), 415);
        assert_eq!(parse_json_body(ct, b"{\"a\":", 100).unwrap_err().code(), "invalid_json");
        assert_eq!(parse_json_body(ct, b"\xff\xfe", 100).unwrap_err().code(), "invalid_utf8");
        assert_eq!(parse_json_body(ct, b"", 100).unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn the_default_body_cap_is_20_mib_and_is_stated() {
        let max = crate::config::Settings::default().max_body_bytes;
        assert_eq!(max, 20 << 20);
        let e = parse_json_body(Some("application/json"), &vec![b' '; 25_000_000], max).unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "payload_too_large"));
        assert!(e.message().contains("20971520 bytes"), "{}", e.message());
        // A 15 MB body (a large image in base64) is read.
        let big = format!("{{\"data\": \"{}\"}}", "A".repeat(15_000_000));
        assert!(parse_json_body(Some("application/json"), big.as_bytes(), max).is_ok());
    }
}
