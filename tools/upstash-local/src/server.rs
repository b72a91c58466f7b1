//! HTTP layer: authentication, routing, Upstash REST semantics and the `/_local/` extras.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use redis::{Pipeline, Value};
use serde_json::{json, Value as Json};

use crate::pool::Pool;
use crate::proto::{self, Command};

/// Request counters exposed at `/_local/stats`.
#[derive(Default)]
pub struct Stats {
    http_requests: AtomicU64,
    commands: AtomicU64,
    single: AtomicU64,
    pipeline: AtomicU64,
    multi_exec: AtomicU64,
    path_form: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> Json {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "http_requests": g(&self.http_requests),
            "commands": g(&self.commands),
            "by_path": {
                "/": g(&self.single),
                "/pipeline": g(&self.pipeline),
                "/multi-exec": g(&self.multi_exec),
                "path_form": g(&self.path_form),
            }
        })
    }

    fn reset(&self) {
        for a in [&self.http_requests, &self.commands, &self.single, &self.pipeline, &self.multi_exec, &self.path_form]
        {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// Shared server state.
pub struct App {
    pub token: String,
    pub pool: Arc<Pool>,
    pub stats: Stats,
    pub fault_down: AtomicBool,
    /// Milliseconds added to every Redis answer (`POST /_local/delay {"ms": N}`), to model a
    /// remote Upstash from outside: a request's Redis round trips show in its latency.
    pub delay_ms: std::sync::atomic::AtomicU64,
    pub sync_token: AtomicU64,
    /// sha1(original script) → sha1(script sent to Redis), for scripts whose
    /// `allow-key-locking` shebang flag was stripped.
    pub script_shas: RwLock<HashMap<String, String>>,
}

impl App {
    pub fn new(token: String, pool: Arc<Pool>) -> Self {
        Self {
            token,
            pool,
            stats: Stats::default(),
            fault_down: AtomicBool::new(false),
            delay_ms: std::sync::atomic::AtomicU64::new(0),
            sync_token: AtomicU64::new(0),
            script_shas: RwLock::new(HashMap::new()),
        }
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("valid response")
}

fn error_response(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": msg.into() }))
}

fn unavailable(detail: &str) -> Response {
    error_response(StatusCode::SERVICE_UNAVAILABLE, format!("ERR redis unavailable: {detail}"))
}

/// Bearer token from the `Authorization` header, or `_token` from the query string.
fn authorized(app: &App, headers: &HeaderMap, uri: &Uri) -> bool {
    let provided = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, tok) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim().to_string())
        })
        .or_else(|| {
            uri.query()?.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == "_token").then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
            })
        });
    match provided {
        Some(t) => constant_time_eq(t.as_bytes(), app.token.as_bytes()),
        None => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Single,
    PathForm,
    Pipeline,
    MultiExec,
}

/// What to do with a command's reply after Redis answered.
enum Post {
    None,
    /// SCRIPT LOAD of a rewritten script: answer with the digest of the original text,
    /// which is what the client computed and what real Upstash returns.
    ScriptLoad(String),
    /// SCRIPT FLUSH: forget the digest map too.
    ScriptFlush,
}

/// Rewrites scripting commands (see the crate docs) and says how to post-process the reply.
fn prepare(app: &App, cmd: &mut Command) -> Post {
    let name = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
    let record = |orig: &[u8], stripped: &[u8]| {
        let (o, s) = (proto::sha1_hex(orig), proto::sha1_hex(stripped));
        app.script_shas.write().unwrap_or_else(|e| e.into_inner()).insert(o.clone(), s);
        o
    };
    let map_sha = |sha: &mut Vec<u8>| {
        let key = String::from_utf8_lossy(sha).to_ascii_lowercase();
        if let Some(s) = app.script_shas.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            *sha = s.as_bytes().to_vec();
        }
    };
    match name.as_str() {
        "EVAL" | "EVAL_RO" if cmd.len() >= 2 => {
            if let Some(stripped) = proto::strip_shebang_flag(&cmd[1]) {
                record(&cmd[1], &stripped);
                cmd[1] = stripped;
            }
            Post::None
        }
        "EVALSHA" | "EVALSHA_RO" if cmd.len() >= 2 => {
            map_sha(&mut cmd[1]);
            Post::None
        }
        "SCRIPT" if cmd.len() >= 2 => {
            let sub = String::from_utf8_lossy(&cmd[1]).to_ascii_uppercase();
            match sub.as_str() {
                "LOAD" if cmd.len() >= 3 => match proto::strip_shebang_flag(&cmd[2]) {
                    Some(stripped) => {
                        let orig = record(&cmd[2], &stripped);
                        cmd[2] = stripped;
                        Post::ScriptLoad(orig)
                    }
                    None => Post::None,
                },
                "EXISTS" => {
                    for sha in cmd.iter_mut().skip(2) {
                        map_sha(sha);
                    }
                    Post::None
                }
                "FLUSH" => Post::ScriptFlush,
                _ => Post::None,
            }
        }
        _ => Post::None,
    }
}

fn post_process(app: &App, post: &Post, v: Value) -> Value {
    if matches!(v, Value::ServerError(_)) {
        return v;
    }
    match post {
        Post::None => v,
        Post::ScriptLoad(orig) => Value::BulkString(orig.clone().into_bytes()),
        Post::ScriptFlush => {
            app.script_shas.write().unwrap_or_else(|e| e.into_inner()).clear();
            v
        }
    }
}

fn build_pipeline(cmds: &[&Command]) -> Pipeline {
    let mut pipe = redis::pipe();
    for c in cmds {
        pipe.cmd_raw(c);
    }
    pipe
}

/// Adds a raw command (byte arguments) to a pipeline.
trait CmdRaw {
    fn cmd_raw(&mut self, args: &Command) -> &mut Self;
}

impl CmdRaw for Pipeline {
    fn cmd_raw(&mut self, args: &Command) -> &mut Self {
        let mut c = redis::Cmd::new();
        for a in args {
            c.arg(a.as_slice());
        }
        self.add_command(c)
    }
}

/// The single fallback handler: everything is routed by hand so that any path can be a
/// path-form command.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path == "/_local/health" {
        return json_response(StatusCode::OK, &json!({ "ok": true }));
    }
    if !authorized(&app, &headers, &uri) {
        return error_response(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if let Some(local) = path.strip_prefix("/_local/") {
        return handle_local(&app, &method, local, &body);
    }
    if method != Method::GET && method != Method::POST {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "ERR method not allowed");
    }
    let delay = app.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }

    let kind = match path.as_str() {
        "/" => Kind::Single,
        "/pipeline" => Kind::Pipeline,
        "/multi-exec" => Kind::MultiExec,
        _ => Kind::PathForm,
    };
    let stats = &app.stats;
    stats.http_requests.fetch_add(1, Ordering::Relaxed);
    match kind {
        Kind::Single => &stats.single,
        Kind::PathForm => &stats.path_form,
        Kind::Pipeline => &stats.pipeline,
        Kind::MultiExec => &stats.multi_exec,
    }
    .fetch_add(1, Ordering::Relaxed);

    let b64 = headers
        .get("upstash-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"));

    let parsed = match kind {
        Kind::Single => proto::parse_single(&body).map(|c| vec![c]),
        Kind::PathForm => proto::parse_path_form(&path, &body).map(|c| vec![c]),
        Kind::Pipeline | Kind::MultiExec => proto::parse_command_list(&body),
    };
    let cmds = match parsed {
        Ok(c) => c,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    stats.commands.fetch_add(cmds.len() as u64, Ordering::Relaxed);

    if app.fault_down.load(Ordering::Relaxed) {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "ERR redis unavailable (fault injected)");
    }

    // Run in its own task so that a client hanging up mid-request cannot cancel a
    // transaction halfway or leak a connection in an unknown state.
    let app2 = Arc::clone(&app);
    let mut resp = match tokio::spawn(async move { execute(&app2, kind, cmds, b64).await }).await {
        Ok(r) => r,
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, format!("ERR {e}")),
    };
    let sync = app.sync_token.fetch_add(1, Ordering::Relaxed) + 1;
    if let Ok(v) = HeaderValue::from_str(&sync.to_string()) {
        resp.headers_mut().insert("upstash-sync-token", v);
    }
    resp
}

async fn execute(app: &App, kind: Kind, mut cmds: Vec<Command>, b64: bool) -> Response {
    match kind {
        Kind::Single | Kind::PathForm => {
            let mut cmd = cmds.pop().expect("one command");
            if let Some(reason) = proto::blocked_reason(&cmd) {
                return error_response(StatusCode::BAD_REQUEST, reason);
            }
            let post = prepare(app, &mut cmd);
            let values = match run(app, &[&cmd]).await {
                Ok(v) => v,
                Err(e) => return unavailable(&e),
            };
            let v = post_process(app, &post, values.into_iter().next().unwrap_or(Value::Nil));
            match &v {
                Value::ServerError(_) => json_response(StatusCode::BAD_REQUEST, &proto::reply_object(&v, b64)),
                _ => json_response(StatusCode::OK, &proto::reply_object(&v, b64)),
            }
        }
        Kind::Pipeline => {
            // Blocked commands get their error in place; the rest run in one round trip.
            let mut slots: Vec<Result<Post, String>> = Vec::with_capacity(cmds.len());
            for cmd in cmds.iter_mut() {
                slots.push(match proto::blocked_reason(cmd) {
                    Some(reason) => Err(reason),
                    None => Ok(prepare(app, cmd)),
                });
            }
            let runnable: Vec<&Command> = cmds.iter().zip(&slots).filter(|(_, s)| s.is_ok()).map(|(c, _)| c).collect();
            let values = if runnable.is_empty() {
                Vec::new()
            } else {
                match run(app, &runnable).await {
                    Ok(v) => v,
                    Err(e) => return unavailable(&e),
                }
            };
            let mut values = values.into_iter();
            let out: Vec<Json> = slots
                .iter()
                .map(|slot| match slot {
                    Err(reason) => json!({ "error": reason }),
                    Ok(post) => {
                        let v = post_process(app, post, values.next().unwrap_or(Value::Nil));
                        proto::reply_object(&v, b64)
                    }
                })
                .collect();
            json_response(StatusCode::OK, &Json::Array(out))
        }
        Kind::MultiExec => {
            if cmds.is_empty() {
                return json_response(StatusCode::OK, &json!([]));
            }
            if let Some(reason) = cmds.iter().find_map(proto::blocked_reason) {
                return error_response(StatusCode::BAD_REQUEST, reason);
            }
            let posts: Vec<Post> = cmds.iter_mut().map(|c| prepare(app, c)).collect();
            let multi: Command = vec![b"MULTI".to_vec()];
            let exec: Command = vec![b"EXEC".to_vec()];
            let mut all: Vec<&Command> = Vec::with_capacity(cmds.len() + 2);
            all.push(&multi);
            all.extend(cmds.iter());
            all.push(&exec);
            let values = match run(app, &all).await {
                Ok(v) => v,
                Err(e) => return unavailable(&e),
            };
            multi_exec_response(app, &posts, values, b64)
        }
    }
}

/// Interprets the replies of `MULTI, cmd…, EXEC`.
fn multi_exec_response(app: &App, posts: &[Post], values: Vec<Value>, b64: bool) -> Response {
    let n = posts.len();
    let exec_reply = values.last().cloned().unwrap_or(Value::Nil);
    match exec_reply {
        Value::Array(results) if results.len() == n => {
            let out: Vec<Json> = results
                .into_iter()
                .zip(posts)
                .map(|(v, post)| proto::reply_object(&post_process(app, post, v), b64))
                .collect();
            json_response(StatusCode::OK, &Json::Array(out))
        }
        Value::ServerError(e) => {
            // Typically EXECABORT because a command failed to queue: name the culprit.
            let mut msg = proto::server_error_message(&e);
            if let Some((i, Value::ServerError(qe))) =
                values.iter().enumerate().skip(1).take(n).find(|(_, v)| matches!(v, Value::ServerError(_)))
            {
                msg = format!("{msg} (command #{i}: {})", proto::server_error_message(qe));
            }
            error_response(StatusCode::BAD_REQUEST, msg)
        }
        Value::Nil => error_response(StatusCode::BAD_REQUEST, "EXECABORT Transaction aborted"),
        other => error_response(StatusCode::INTERNAL_SERVER_ERROR, format!("ERR unexpected EXEC reply: {other:?}")),
    }
}

/// Runs commands on one pooled connection in a single round trip.
async fn run(app: &App, cmds: &[&Command]) -> Result<Vec<Value>, String> {
    let mut conn = app.pool.get().await?;
    let pipe = build_pipeline(cmds);
    conn.run(&pipe, cmds.len()).await
}

fn handle_local(app: &App, method: &Method, local: &str, body: &[u8]) -> Response {
    match (method.as_str(), local) {
        ("GET", "stats") => json_response(StatusCode::OK, &app.stats.snapshot()),
        ("POST", "stats/reset") => {
            app.stats.reset();
            json_response(StatusCode::OK, &json!({ "ok": true }))
        }
        ("POST", "fault") => {
            let v: Json = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return error_response(StatusCode::BAD_REQUEST, format!("ERR {e}")),
            };
            let Some(down) = v.get("down").and_then(Json::as_bool) else {
                return error_response(StatusCode::BAD_REQUEST, "ERR expected {\"down\": true|false}");
            };
            app.fault_down.store(down, Ordering::Relaxed);
            json_response(StatusCode::OK, &json!({ "ok": true, "down": down }))
        }
        ("POST", "delay") => {
            let ms = serde_json::from_slice::<Json>(body).ok().and_then(|v| v.get("ms").and_then(Json::as_u64));
            let Some(ms) = ms else {
                return error_response(StatusCode::BAD_REQUEST, "ERR expected {\"ms\": N}");
            };
            app.delay_ms.store(ms, Ordering::Relaxed);
            json_response(StatusCode::OK, &json!({ "ok": true, "ms": ms }))
        }
        ("GET", "fault") => json_response(StatusCode::OK, &json!({ "down": app.fault_down.load(Ordering::Relaxed) })),
        ("GET", "pool") => json_response(StatusCode::OK, &json!({ "idle": app.pool.idle_count() })),
        _ => error_response(StatusCode::NOT_FOUND, "ERR unknown /_local/ endpoint"),
    }
}
