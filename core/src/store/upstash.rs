//! Upstash Redis REST client: the protocol, without the HTTP stack.
//!
//! The HTTP request itself goes through a [`Transport`] (the worker's `Fetch` in production,
//! a fake or native client in tests), so encoding, decoding, typed errors and the
//! EVALSHA→EVAL fallback are all tested natively.

use serde_json::Value;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// The HTTP request failed (connection refused, DNS, reset).
    Transport(String),
    Timeout,
    /// 401: wrong or missing `UPSTASH_REDIS_REST_TOKEN`.
    Auth,
    /// Redis answered with an error (`{"error": ...}`).
    Redis(String),
    /// The answer was not the protocol's shape.
    Protocol(String),
}

impl StoreError {
    pub fn is_noscript(&self) -> bool {
        matches!(self, StoreError::Redis(m) if m.contains("NOSCRIPT"))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Transport(m) => write!(f, "transport error: {m}"),
            StoreError::Timeout => write!(f, "timed out"),
            StoreError::Auth => write!(f, "authentication failed (check UPSTASH_REDIS_REST_TOKEN)"),
            StoreError::Redis(m) => write!(f, "redis error: {m}"),
            StoreError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl From<StoreError> for crate::error::RouterError {
    fn from(e: StoreError) -> Self {
        crate::error::RouterError::StoreUnavailable { message: e.to_string() }
    }
}

/// One HTTP answer from the REST endpoint.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// Sends a POST with a JSON body to `{base}{path}` with the Bearer token.
#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn post(&self, path: &str, body: String) -> Result<HttpReply, StoreError>;
}

/// A Lua script loaded from a `.lua` file, with its SHA-1 for EVALSHA.
pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub const fn new(name: &'static str, source: &'static str) -> Script {
        Script { name, source, sha: OnceLock::new() }
    }

    pub fn sha(&self) -> &str {
        self.sha.get_or_init(|| sha1_smol::Sha1::from(self.source).digest().to_string())
    }
}

/// Decodes one `{"result"}` / `{"error"}` item.
fn decode_item(v: Value) -> Result<Value, StoreError> {
    match v {
        Value::Object(mut m) => {
            if let Some(e) = m.remove("error") {
                return Err(StoreError::Redis(e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string())));
            }
            m.remove("result").ok_or_else(|| StoreError::Protocol("no 'result' or 'error' field".into()))
        }
        other => Err(StoreError::Protocol(format!("expected an object, got {other}"))),
    }
}

/// Decodes the answer to a single command.
pub fn decode_single(reply: &HttpReply) -> Result<Value, StoreError> {
    if reply.status == 401 {
        return Err(StoreError::Auth);
    }
    let v: Value = serde_json::from_str(&reply.body)
        .map_err(|_| StoreError::Protocol(format!("HTTP {} with a non-JSON body", reply.status)))?;
    match decode_item(v) {
        Err(StoreError::Protocol(_)) if reply.status >= 500 => {
            Err(StoreError::Transport(format!("HTTP {}", reply.status)))
        }
        other => other,
    }
}

/// Decodes a `/pipeline` or `/multi-exec` answer into one result per command.
pub fn decode_batch(reply: &HttpReply, n: usize) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
    if reply.status == 401 {
        return Err(StoreError::Auth);
    }
    let v: Value = serde_json::from_str(&reply.body)
        .map_err(|_| StoreError::Protocol(format!("HTTP {} with a non-JSON body", reply.status)))?;
    match v {
        Value::Array(items) if items.len() == n => Ok(items.into_iter().map(decode_item).collect()),
        Value::Array(items) => Err(StoreError::Protocol(format!("expected {n} results, got {}", items.len()))),
        // A discarded transaction answers one error for the whole batch.
        other => {
            Err(decode_item(other).err().unwrap_or_else(|| StoreError::Protocol("unexpected batch answer".into())))
        }
    }
}

pub fn encode_command(args: &[String]) -> String {
    serde_json::to_string(args).expect("strings always serialize")
}

pub struct Upstash<T> {
    pub transport: T,
}

impl<T: Transport> Upstash<T> {
    pub fn new(transport: T) -> Self {
        Upstash { transport }
    }

    pub async fn command(&self, args: &[String]) -> Result<Value, StoreError> {
        let reply = self.transport.post("/", encode_command(args)).await?;
        decode_single(&reply)
    }

    pub async fn pipeline(&self, cmds: &[Vec<String>]) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let body = serde_json::to_string(cmds).expect("strings always serialize");
        let reply = self.transport.post("/pipeline", body).await?;
        decode_batch(&reply, cmds.len())
    }

    pub async fn multi_exec(&self, cmds: &[Vec<String>]) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let body = serde_json::to_string(cmds).expect("strings always serialize");
        let reply = self.transport.post("/multi-exec", body).await?;
        decode_batch(&reply, cmds.len())
    }

    /// EVALSHA, and on NOSCRIPT (script cache flushed, Redis restarted) EVAL once, which also
    /// loads the script for the next call. One round trip in the common case.
    pub async fn eval(&self, script: &Script, keys: &[String], args: &[String]) -> Result<Value, StoreError> {
        let mut cmd = Vec::with_capacity(3 + keys.len() + args.len());
        cmd.push("EVALSHA".to_string());
        cmd.push(script.sha().to_string());
        cmd.push(keys.len().to_string());
        cmd.extend(keys.iter().cloned());
        cmd.extend(args.iter().cloned());
        match self.command(&cmd).await {
            Err(e) if e.is_noscript() => {
                cmd[0] = "EVAL".into();
                cmd[1] = script.source.to_string();
                self.command(&cmd).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Answers from a queue and records what was sent.
    struct Fake {
        answers: RefCell<Vec<HttpReply>>,
        sent: RefCell<Vec<(String, String)>>,
    }

    impl Transport for Fake {
        async fn post(&self, path: &str, body: String) -> Result<HttpReply, StoreError> {
            self.sent.borrow_mut().push((path.to_string(), body));
            Ok(self.answers.borrow_mut().remove(0))
        }
    }

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply { status, body: body.into() }
    }

    fn fake(answers: Vec<HttpReply>) -> Upstash<Fake> {
        Upstash::new(Fake { answers: RefCell::new(answers), sent: RefCell::new(vec![]) })
    }

    use futures_executor::block_on;

    #[test]
    fn single_command_results_and_errors() {
        let c = fake(vec![reply(200, r#"{"result":"OK"}"#), reply(400, r#"{"error":"ERR wrong"}"#), reply(401, "")]);
        assert_eq!(block_on(c.command(&["SET".into(), "a".into(), "b".into()])).unwrap(), "OK");
        assert_eq!(block_on(c.command(&["X".into()])).unwrap_err(), StoreError::Redis("ERR wrong".into()));
        assert_eq!(block_on(c.command(&["X".into()])).unwrap_err(), StoreError::Auth);
        assert_eq!(c.transport.sent.borrow()[0], ("/".to_string(), r#"["SET","a","b"]"#.to_string()));
    }

    #[test]
    fn pipeline_keeps_per_command_errors_and_multi_exec_discard_is_one_error() {
        let c = fake(vec![
            reply(200, r#"[{"result":1},{"error":"WRONGTYPE"}]"#),
            reply(400, r#"{"error":"EXECABORT Transaction discarded"}"#),
        ]);
        let r = block_on(c.pipeline(&[vec!["INCR".into(), "a".into()], vec!["LPUSH".into(), "a".into()]])).unwrap();
        assert_eq!(r[0], Ok(serde_json::json!(1)));
        assert!(r[1].is_err());
        let e = block_on(c.multi_exec(&[vec!["BAD".into()]])).unwrap_err();
        assert!(matches!(e, StoreError::Redis(m) if m.starts_with("EXECABORT")));
    }

    #[test]
    fn evalsha_falls_back_to_eval_once_on_noscript() {
        static S: Script = Script::new("t", "return 1");
        let c = fake(vec![reply(400, r#"{"error":"NOSCRIPT No matching script."}"#), reply(200, r#"{"result":1}"#)]);
        assert_eq!(block_on(c.eval(&S, &["k".into()], &["a".into()])).unwrap(), 1);
        let sent = c.transport.sent.borrow();
        assert_eq!(sent.len(), 2);
        assert!(sent[0].1.starts_with(r#"["EVALSHA","e0e1f9fabfc9d4800c877a703b823ac0578ff8db","1","k","a"]"#));
        assert!(sent[1].1.starts_with(r#"["EVAL","return 1","1","k","a"]"#));
    }

    #[test]
    fn server_errors_without_json_are_transport_errors() {
        let c = fake(vec![reply(502, "bad gateway"), reply(503, r#"{"oops":1}"#)]);
        assert!(matches!(block_on(c.command(&["PING".into()])).unwrap_err(), StoreError::Protocol(_)));
        assert!(matches!(block_on(c.command(&["PING".into()])).unwrap_err(), StoreError::Transport(_)));
    }
}
