//! Conversations: create, read, list, page through and delete, owned by the client that created
//! them. Sending a message goes through the quota path (`router`), which reads the history in the
//! reservation's round trip and appends the turn in the settle's.
//!
//! Concurrency: a send takes a per-conversation lock inside `reserve_v1`; a second concurrent
//! send is rejected with 409 `conversation_busy` (not queued), so turns never interleave.

use crate::error::RouterError;
use crate::json::object;
use crate::store::keys;
use crate::store::upstash::{Transport, Upstash};
use crate::wire::gemini::GenerateRequest;
use serde_json::{json, Map, Value};

/// `POST /v1/conversations` body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreateRequest {
    pub system: Option<String>,
    pub model: Option<String>,
    pub title: Option<String>,
    pub metadata: Option<Value>,
}

fn bad(code: &'static str, m: impl Into<String>) -> RouterError {
    RouterError::bad_request(code, m)
}

fn opt_string(obj: &Map<String, Value>, k: &str, max: usize) -> Result<Option<String>, RouterError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(bad("invalid_field", format!("{k}: must be at most {max} bytes"))),
        Some(_) => Err(bad("invalid_field", format!("{k}: must be a string"))),
    }
}

impl CreateRequest {
    pub fn parse(body: &Value) -> Result<CreateRequest, RouterError> {
        let obj = body.as_object().ok_or_else(|| bad("invalid_body", "request body must be a JSON object"))?;
        const KNOWN: [&str; 5] = ["system", "system_instruction", "model", "title", "metadata"];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad("unknown_field", format!("unknown field '{k}'")));
        }
        let system = match opt_string(obj, "system", 100_000)? {
            Some(s) => Some(s),
            None => opt_string(obj, "system_instruction", 100_000)?,
        };
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(m @ Value::Object(_)) if m.to_string().len() <= 16_384 => Some(m.clone()),
            Some(Value::Object(_)) => return Err(bad("invalid_field", "metadata: must be at most 16 KiB")),
            Some(_) => return Err(bad("invalid_field", "metadata: must be an object")),
        };
        Ok(CreateRequest {
            system,
            model: opt_string(obj, "model", 64)?,
            title: opt_string(obj, "title", 500)?,
            metadata,
        })
    }
}

/// `POST /v1/conversations/{id}/messages` body → a generate request on that conversation.
pub fn parse_message(body: &Value, id: &str, model: Option<String>) -> Result<GenerateRequest, RouterError> {
    let obj = body.as_object().ok_or_else(|| bad("invalid_body", "request body must be a JSON object"))?;
    const KNOWN: [&str; 5] = ["content", "model", "temperature", "max_output_tokens", "allow_fallback"];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad("unknown_field", format!("unknown field '{k}'")));
    }
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("invalid_field", "content: must be a string")),
        None => return Err(bad("missing_field", "content: is required")),
    };
    let mut g = json!({"prompt": content, "conversation_id": id});
    for k in ["temperature", "max_output_tokens", "allow_fallback"] {
        if let Some(v) = obj.get(k) {
            g[k] = v.clone();
        }
    }
    if let Some(m) = obj.get("model") {
        g["model"] = m.clone();
    }
    GenerateRequest::parse(&g, model.as_deref())
}

/// A stored turn as shown to clients (`GET /v1/conversations/{id}/messages`):
///
/// ```text
/// {"role": "user" | "assistant", "content": "<the text parts joined>", "created_at": ms,
///  "usage"?: {...},                                   model turns
///  "tool_calls"?: [{"id", "name", "arguments"}],      model turns that called functions;
///                                                     `arguments` is a JSON string, as in OpenAI
///  "tool_results"?: [{"name", "response"}],          user turns that carried tool results
///  "media"?: [{"mime_type", "bytes"} | {"mime_type", "file_uri"}]}  turns that carried media:
///                                                     inline data by its size (base64 bytes),
///                                                     not its content
/// ```
///
/// `id` is the id the caller saw (it carries the thought signature, see `wire::call_id`), or
/// null for a turn stored before ids were kept. Thought signatures themselves are not shown.
pub fn turn_view(raw: &str) -> Value {
    let t: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let parts: &[Value] = t["parts"].as_array().map(Vec::as_slice).unwrap_or_default();
    let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("");
    let role = if t["role"] == "model" { "assistant" } else { "user" };
    let mut v = json!({"role": role, "content": text, "created_at": t["at"]});
    if t.get("usage").is_some() {
        v["usage"] = t["usage"].clone();
    }
    let ids = t["tool_call_ids"].as_array();
    let calls: Vec<Value> = parts
        .iter()
        .filter_map(|p| p.get("functionCall"))
        .enumerate()
        .map(|(i, fc)| {
            let id = ids.and_then(|ids| ids.get(i)).cloned().unwrap_or(Value::Null);
            let args = fc.get("args").cloned().unwrap_or_else(|| json!({}));
            json!({"id": id, "name": fc["name"], "arguments": args.to_string()})
        })
        .collect();
    if !calls.is_empty() {
        v["tool_calls"] = Value::Array(calls);
    }
    let results: Vec<Value> = parts
        .iter()
        .filter_map(|p| p.get("functionResponse"))
        .map(|fr| json!({"name": fr["name"], "response": fr["response"]}))
        .collect();
    if !results.is_empty() {
        v["tool_results"] = Value::Array(results);
    }
    let field = |o: &Value, camel: &str, snake: &str| o.get(camel).or_else(|| o.get(snake)).cloned();
    let media: Vec<Value> = parts
        .iter()
        .filter_map(|p| {
            if let Some(d) = p.get("inlineData").or_else(|| p.get("inline_data")) {
                let bytes = d["data"].as_str().map_or(0, str::len);
                Some(json!({"mime_type": field(d, "mimeType", "mime_type"), "bytes": bytes}))
            } else {
                let f = p.get("fileData").or_else(|| p.get("file_data"))?;
                Some(json!({"mime_type": field(f, "mimeType", "mime_type"), "file_uri": field(f, "fileUri", "file_uri")}))
            }
        })
        .collect();
    if !media.is_empty() {
        v["media"] = Value::Array(media);
    }
    v
}

fn meta_view(id: &str, fields: &[Value]) -> Value {
    let mut m = Map::new();
    for pair in fields.chunks(2) {
        if let (Some(k), Some(v)) = (pair[0].as_str(), pair.get(1).and_then(|v| v.as_str())) {
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    let num = |k: &str| m.get(k).and_then(|v| v.as_str()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(|x| json!(x)).unwrap_or(Value::Null);
    json!({
        "id": id,
        "created_at": num("created_at"),
        "updated_at": num("updated_at"),
        "message_count": num("message_count"),
        "total_tokens": num("total_tokens"),
        "model": s("model"),
        "title": s("title"),
        "system": s("system"),
        "metadata": m.get("metadata").and_then(|v| v.as_str()).and_then(|x| serde_json::from_str::<Value>(x).ok()).unwrap_or(Value::Null),
    })
}

/// Page parameters from a query string: `offset` (default 0) and `limit` (default 20, max 100).
pub fn page(query: &str) -> Result<(u64, u64), RouterError> {
    let mut offset = 0u64;
    let mut limit = 20u64;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let n = || v.parse::<u64>().map_err(|_| bad("invalid_query", format!("{k}: must be a non-negative integer")));
        match k.as_ref() {
            "offset" => offset = n()?.min(1_000_000),
            "limit" => {
                limit = n()?;
                if !(1..=100).contains(&limit) {
                    return Err(bad("invalid_query", "limit: must be from 1 to 100"));
                }
            }
            _ => {}
        }
    }
    Ok((offset, limit))
}

pub struct Conversations<'a, T> {
    pub store: &'a Upstash<T>,
    pub ttl_s: u64,
}

fn owned(fields: &[Value], owner: &str) -> bool {
    fields.chunks(2).any(|p| p[0] == "owner" && p.get(1).and_then(|v| v.as_str()) == Some(owner))
}

impl<T: Transport> Conversations<'_, T> {
    /// Creates a conversation; one `/multi-exec` round trip.
    pub async fn create(&self, id: &str, owner: &str, req: &CreateRequest, now_ms: u64) -> Result<Value, RouterError> {
        let meta = keys::conv_meta(id);
        let est = req.system.as_ref().map(|s| s.len() as u64).unwrap_or(0);
        let mut hset = vec![
            "HSET".to_string(),
            meta.clone(),
            "owner".into(),
            owner.into(),
            "created_at".into(),
            now_ms.to_string(),
            "updated_at".into(),
            now_ms.to_string(),
            "message_count".into(),
            "0".into(),
            "total_tokens".into(),
            "0".into(),
            "hist_est".into(),
            est.to_string(),
        ];
        for (k, v) in [("model", &req.model), ("title", &req.title), ("system", &req.system)] {
            if let Some(v) = v {
                hset.push(k.into());
                hset.push(v.clone());
            }
        }
        if let Some(m) = &req.metadata {
            hset.push("metadata".into());
            hset.push(m.to_string());
        }
        let index = keys::client_convs(owner);
        let cmds = vec![
            hset,
            vec!["EXPIRE".into(), meta, self.ttl_s.to_string()],
            vec!["ZADD".into(), index.clone(), now_ms.to_string(), id.into()],
            vec!["EXPIRE".into(), index, self.ttl_s.to_string()],
        ];
        for r in self.store.multi_exec(&cmds).await? {
            r?;
        }
        // Built with `json::object`, not `json!`: this method is instantiated in the worker crate.
        Ok(object(vec![
            ("id", id.into()),
            ("created_at", now_ms.into()),
            ("updated_at", now_ms.into()),
            ("message_count", 0.into()),
            ("total_tokens", 0.into()),
            ("model", req.model.clone().into()),
            ("title", req.title.clone().into()),
            ("system", req.system.clone().into()),
            ("metadata", req.metadata.clone().unwrap_or(Value::Null)),
        ]))
    }

    /// Metadata, or 404 for a missing, expired or foreign conversation (indistinguishable).
    pub async fn get(&self, id: &str, owner: &str) -> Result<Value, RouterError> {
        let fields = self.store.command(&["HGETALL".into(), keys::conv_meta(id)]).await?;
        let fields = fields.as_array().cloned().unwrap_or_default();
        if !owned(&fields, owner) {
            return Err(RouterError::ConversationNotFound);
        }
        Ok(meta_view(id, &fields))
    }

    /// One page of turns, oldest first; one pipelined round trip.
    pub async fn messages(&self, id: &str, owner: &str, offset: u64, limit: u64) -> Result<Value, RouterError> {
        let cmds = vec![
            vec!["HGETALL".into(), keys::conv_meta(id)],
            vec!["LRANGE".into(), keys::conv_turns(id), offset.to_string(), (offset + limit - 1).to_string()],
            vec!["LLEN".into(), keys::conv_turns(id)],
        ];
        let mut r = self.store.pipeline(&cmds).await?.into_iter();
        let fields = r.next().unwrap_or(Ok(Value::Null))?.as_array().cloned().unwrap_or_default();
        if !owned(&fields, owner) {
            return Err(RouterError::ConversationNotFound);
        }
        let turns = r.next().unwrap_or(Ok(Value::Null))?;
        let total = r.next().unwrap_or(Ok(Value::Null))?.as_u64().unwrap_or(0);
        let data: Vec<Value> =
            turns.as_array().into_iter().flatten().filter_map(|t| t.as_str()).map(turn_view).collect();
        let next =
            if offset + (data.len() as u64) < total { Value::from(offset + data.len() as u64) } else { Value::Null };
        Ok(object(vec![
            ("object", "list".into()),
            ("data", Value::Array(data)),
            ("offset", offset.into()),
            ("limit", limit.into()),
            ("total", total.into()),
            ("next_offset", next),
        ]))
    }

    pub async fn delete(&self, id: &str, owner: &str) -> Result<Value, RouterError> {
        self.get(id, owner).await?;
        let cmds = vec![
            vec!["DEL".into(), keys::conv_meta(id), keys::conv_turns(id), keys::conv_lock(id)],
            vec!["ZREM".into(), keys::client_convs(owner), id.into()],
        ];
        for r in self.store.multi_exec(&cmds).await? {
            r?;
        }
        Ok(object(vec![("id", id.into()), ("deleted", true.into())]))
    }

    /// The caller's conversations, newest first. Expired ones are dropped from the index lazily.
    pub async fn list(&self, owner: &str, offset: u64, limit: u64) -> Result<Value, RouterError> {
        let index = keys::client_convs(owner);
        let cmds = vec![
            vec!["ZREVRANGE".into(), index.clone(), offset.to_string(), (offset + limit - 1).to_string()],
            vec!["ZCARD".into(), index.clone()],
        ];
        let mut r = self.store.pipeline(&cmds).await?.into_iter();
        let ids: Vec<String> = r
            .next()
            .unwrap_or(Ok(Value::Null))?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .filter(|id| crate::ids::valid_conversation_id(id))
            .collect();
        let total = r.next().unwrap_or(Ok(Value::Null))?.as_u64().unwrap_or(0);
        let mut data = Vec::new();
        if !ids.is_empty() {
            let cmds: Vec<Vec<String>> = ids.iter().map(|id| vec!["HGETALL".into(), keys::conv_meta(id)]).collect();
            let metas = self.store.pipeline(&cmds).await?;
            let mut gone = vec!["ZREM".to_string(), index];
            for (id, m) in ids.iter().zip(metas) {
                let fields = m?.as_array().cloned().unwrap_or_default();
                if owned(&fields, owner) {
                    data.push(meta_view(id, &fields));
                } else {
                    gone.push(id.clone());
                }
            }
            if gone.len() > 2 {
                self.store.command(&gone).await?;
            }
        }
        let next = if offset + limit < total { Value::from(offset + limit) } else { Value::Null };
        Ok(object(vec![
            ("object", "list".into()),
            ("data", Value::Array(data)),
            ("offset", offset.into()),
            ("limit", limit.into()),
            ("next_offset", next),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_view_shows_tool_calls_and_results() {
        use crate::engine::conversation_turns;
        use crate::wire::gemini::parse_reply;
        let reply = parse_reply(
            &json!({"candidates": [{"content": {"parts": [{"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"}]}}]}),
            "rid:0",
        );
        let asked = json!({"role": "user", "parts": [{"text": "weather?"}]});
        let turns = conversation_turns(
            &[asked],
            1,
            &reply.out,
            &Default::default(),
            2,
            crate::config::Settings::default().estimator,
        );
        let model = turn_view(&turns[1]);
        assert_eq!(model["role"], "assistant");
        assert_eq!(model["content"], "Checking.");
        let id = crate::wire::call_id::call_id("rid:0", 0, Some("U0lH"));
        assert_eq!(
            model["tool_calls"],
            json!([{"id": id, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}])
        );
        let stored: Value = serde_json::from_str(&turns[1]).unwrap();
        assert_eq!(stored["parts"][1]["thoughtSignature"], "U0lH", "the signature is stored with its call");
        assert_eq!(stored["tool_call_ids"], json!([id]));
        let result = turn_view(
            r#"{"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"temp":21}}}],"at":3}"#,
        );
        assert_eq!(result["role"], "user");
        assert_eq!(result["content"], "");
        assert_eq!(result["tool_results"], json!([{"name": "get_weather", "response": {"temp": 21}}]));
        assert!(result.get("tool_calls").is_none());
        // Media is listed by type and size, never echoed.
        let m = turn_view(
            r#"{"role":"user","parts":[{"text":"look"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}},
                {"file_data":{"mime_type":"image/jpeg","file_uri":"https://x.test/a.jpg"}}],"at":4}"#,
        );
        assert_eq!(m["content"], "look");
        assert_eq!(
            m["media"],
            json!([{"mime_type": "image/png", "bytes": 12},
                   {"mime_type": "image/jpeg", "file_uri": "https://x.test/a.jpg"}])
        );
        // A text-only turn keeps its old shape.
        let plain = turn_view(r#"{"role":"model","parts":[{"text":"4"}],"at":5}"#);
        assert!(plain.get("tool_calls").is_none() && plain.get("tool_results").is_none());
    }

    #[test]
    fn create_request_validation() {
        let r = CreateRequest::parse(&json!({"system": "be brief", "model": "m", "title": "t", "metadata": {"a": 1}}))
            .unwrap();
        assert_eq!(r.system.as_deref(), Some("be brief"));
        assert_eq!(CreateRequest::parse(&json!({"bogus": 1})).unwrap_err().code(), "unknown_field");
        assert_eq!(CreateRequest::parse(&json!({"metadata": 5})).unwrap_err().code(), "invalid_field");
        assert_eq!(CreateRequest::parse(&json!([])).unwrap_err().code(), "invalid_body");
    }

    #[test]
    fn message_uses_conversation_default_model() {
        let g = parse_message(&json!({"content": "hi"}), "conv_x", Some("m".into())).unwrap();
        assert_eq!(g.model, "m");
        assert_eq!(g.conversation_id.as_deref(), Some("conv_x"));
        assert_eq!(parse_message(&json!({"content": ""}), "c", Some("m".into())).unwrap_err().code(), "empty_message");
        assert_eq!(parse_message(&json!({}), "c", Some("m".into())).unwrap_err().code(), "missing_field");
    }

    #[test]
    fn turns_render_for_clients() {
        let v = turn_view(r#"{"role":"model","parts":[{"text":"4"}],"at":5,"usage":{"input":1}}"#);
        assert_eq!(v, json!({"role": "assistant", "content": "4", "created_at": 5, "usage": {"input": 1}}));
    }

    #[test]
    fn paging() {
        assert_eq!(page("").unwrap(), (0, 20));
        assert_eq!(page("offset=5&limit=2").unwrap(), (5, 2));
        assert_eq!(page("limit=0").unwrap_err().code(), "invalid_query");
        assert_eq!(page("limit=-1").unwrap_err().code(), "invalid_query");
        // Percent-encoded names and values decode as any client library encodes them.
        assert_eq!(page("%6Cimit=1%30&offset=%33").unwrap(), (3, 10));
    }
}
