//! Pure protocol helpers: JSON arguments → Redis arguments, RESP values → Upstash JSON,
//! the `Upstash-Encoding: base64` rule, path-form parsing and the Lua shebang rewrite.
//!
//! Nothing in here does I/O, so all of it is unit-tested below.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use redis::Value;
use serde_json::{json, Value as Json};

/// One Redis command: its arguments as raw bytes (the first one is the command name).
pub type Command = Vec<Vec<u8>>;

/// Commands that Upstash does not serve over REST (connection state, transactions as raw
/// commands, blocking commands, pub/sub, replication). They are answered with a 400 error
/// without reaching Redis: on a pooled connection they would either block a pooled
/// connection indefinitely or leave state behind for the next request.
const BLOCKED: &[&str] = &[
    // transactions: use /multi-exec instead
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    // blocking commands
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "WAIT",
    "WAITAOF",
    // pub/sub and monitoring keep the connection in a special mode
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    // connection state that would leak into the pool
    "SELECT",
    "HELLO",
    "RESET",
    "QUIT",
    "AUTH",
    "CLIENT",
    // replication / shutdown
    "SYNC",
    "PSYNC",
    "REPLCONF",
    "SHUTDOWN",
];

/// Returns the Upstash-style error message if `cmd` may not be run over REST.
pub fn blocked_reason(cmd: &Command) -> Option<String> {
    let name = String::from_utf8_lossy(cmd.first()?).to_ascii_uppercase();
    let blocked = BLOCKED.contains(&name.as_str())
        // XREAD/XREADGROUP with BLOCK would hold the connection.
        || ((name == "XREAD" || name == "XREADGROUP")
            && cmd.iter().skip(1).any(|a| a.eq_ignore_ascii_case(b"BLOCK")));
    blocked.then(|| format!("ERR Command is not available: '{}'", name.to_ascii_lowercase()))
}

/// Converts one JSON array element to a Redis argument.
///
/// Strings are sent as their UTF-8 bytes, numbers as their decimal text (`100`, `1.5`),
/// booleans as `true`/`false` (their JSON text, as a generic JSON→string conversion would
/// do). Nested arrays/objects are sent as their compact JSON text (the official Python SDK
/// does the same client-side). `null` is rejected.
pub fn json_to_arg(v: &Json) -> Result<Vec<u8>, String> {
    match v {
        Json::String(s) => Ok(s.as_bytes().to_vec()),
        Json::Number(n) => Ok(n.to_string().into_bytes()),
        Json::Bool(b) => Ok(if *b { b"true".to_vec() } else { b"false".to_vec() }),
        Json::Null => Err("ERR null is not a valid command argument".into()),
        Json::Array(_) | Json::Object(_) => Ok(v.to_string().into_bytes()),
    }
}

/// Parses `["SET","foo","bar"]` into a command.
pub fn json_to_command(v: &Json) -> Result<Command, String> {
    let arr = v.as_array().ok_or_else(|| "ERR failed to parse command: expected a JSON array".to_string())?;
    if arr.is_empty() {
        return Err("ERR empty command".into());
    }
    arr.iter().map(json_to_arg).collect()
}

/// Parses the body of `/pipeline` or `/multi-exec`: an array of command arrays.
pub fn parse_command_list(body: &[u8]) -> Result<Vec<Command>, String> {
    let v: Json = serde_json::from_slice(body).map_err(|e| format!("ERR failed to parse pipeline request: {e}"))?;
    let arr = v
        .as_array()
        .ok_or_else(|| "ERR failed to parse pipeline request: expected an array of commands".to_string())?;
    arr.iter().map(json_to_command).collect()
}

/// Parses the body of `POST /`: one command array.
pub fn parse_single(body: &[u8]) -> Result<Command, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("ERR empty command".into());
    }
    let v: Json = serde_json::from_slice(body).map_err(|e| format!("ERR failed to parse command: {e}"))?;
    json_to_command(&v)
}

/// Parses the path form: `/set/foo/bar` → `["set","foo","bar"]`. Segments are
/// percent-decoded to raw bytes (binary-safe); a single trailing slash is ignored. A
/// non-empty request body (POST) is appended as the last argument, as Upstash does.
pub fn parse_path_form(path: &str, body: &[u8]) -> Result<Command, String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err("ERR empty command".into());
    }
    let mut cmd: Command =
        trimmed.split('/').map(|seg| percent_encoding::percent_decode_str(seg).collect::<Vec<u8>>()).collect();
    if !body.is_empty() {
        cmd.push(body.to_vec());
    }
    Ok(cmd)
}

/// Formats a Redis server error the way Redis printed it: `"NOSCRIPT No matching script..."`.
pub fn server_error_message(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) if !d.is_empty() => format!("{} {}", e.code(), d),
        _ => e.code().to_string(),
    }
}

fn string_json(bytes: &[u8], b64: bool) -> Json {
    if b64 {
        Json::String(B64.encode(bytes))
    } else {
        // Non-UTF-8 bytes are replaced with U+FFFD, like a JSON encoder that must emit valid
        // UTF-8 does. Clients that need binary values use `Upstash-Encoding: base64`.
        Json::String(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Converts a RESP value to the JSON `result`. With `b64`, every string is base64-encoded
/// except the status reply `OK`. Errors nested in arrays (e.g. inside a Lua table) become
/// their message text.
pub fn value_to_json(v: &Value, b64: bool) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Int(i) => json!(i),
        Value::Okay => Json::String("OK".into()),
        Value::BulkString(b) => string_json(b, b64),
        Value::SimpleString(s) => string_json(s.as_bytes(), b64),
        Value::Array(items) | Value::Set(items) => Json::Array(items.iter().map(|i| value_to_json(i, b64)).collect()),
        Value::Push { data, .. } => Json::Array(data.iter().map(|i| value_to_json(i, b64)).collect()),
        Value::Map(pairs) => {
            Json::Array(pairs.iter().flat_map(|(k, v)| [value_to_json(k, b64), value_to_json(v, b64)]).collect())
        }
        Value::Attribute { data, .. } => value_to_json(data, b64),
        Value::Double(d) => string_json(d.to_string().as_bytes(), b64),
        Value::Boolean(b) => json!(i64::from(*b)),
        Value::VerbatimString { text, .. } => string_json(text.as_bytes(), b64),
        Value::BigNumber(n) => string_json(n.as_slice(), b64),
        Value::ServerError(e) => string_json(server_error_message(e).as_bytes(), b64),
        other => string_json(format!("{other:?}").as_bytes(), b64),
    }
}

/// Converts one command's reply to `{"result": ...}` or `{"error": "..."}`.
pub fn reply_object(v: &Value, b64: bool) -> Json {
    match v {
        Value::ServerError(e) => json!({ "error": server_error_message(e) }),
        other => json!({ "result": value_to_json(other, b64) }),
    }
}

/// Lowercase hex SHA-1, as Redis computes script digests.
pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// The flag that Upstash recommends and open-source Redis 7.0 rejects.
pub const UPSTASH_ONLY_FLAG: &str = "allow-key-locking";

/// Removes the Upstash-only `allow-key-locking` flag from a `#!lua` shebang line.
///
/// Returns `None` when the script needs no change. Otherwise the rewritten script:
/// other flags are kept (`#!lua flags=no-writes,allow-key-locking` → `#!lua flags=no-writes`);
/// if the shebang carried nothing else, the line is blanked but its newline kept, so the
/// script runs as a plain (flag-less) script and Lua error line numbers still match the
/// original text.
pub fn strip_shebang_flag(script: &[u8]) -> Option<Vec<u8>> {
    if !script.starts_with(b"#!lua") {
        return None;
    }
    let mut line_end = script.iter().position(|&b| b == b'\n').unwrap_or(script.len());
    if line_end > 0 && script[line_end - 1] == b'\r' {
        line_end -= 1;
    }
    let line = std::str::from_utf8(&script[..line_end]).ok()?;
    let mut changed = false;
    let mut tokens: Vec<String> = Vec::new();
    for tok in line.split_whitespace() {
        if let Some(flags) = tok.strip_prefix("flags=") {
            let kept: Vec<&str> = flags
                .split(',')
                .filter(|f| {
                    let drop = f.trim() == UPSTASH_ONLY_FLAG;
                    changed |= drop;
                    !drop
                })
                .collect();
            if !kept.is_empty() {
                tokens.push(format!("flags={}", kept.join(",")));
            }
        } else {
            tokens.push(tok.to_string());
        }
    }
    if !changed {
        return None;
    }
    let mut out = Vec::with_capacity(script.len());
    if tokens.len() > 1 {
        out.extend_from_slice(tokens.join(" ").as_bytes());
    }
    out.extend_from_slice(&script[line_end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(resp: &[u8]) -> Value {
        redis::parse_redis_value(resp).unwrap()
    }

    #[test]
    fn args_from_json() {
        let cmd = json_to_command(&json!(["SET", "foo", "bär", "EX", 100])).unwrap();
        assert_eq!(
            cmd,
            vec![b"SET".to_vec(), b"foo".to_vec(), "bär".as_bytes().to_vec(), b"EX".to_vec(), b"100".to_vec()]
        );
        assert_eq!(json_to_arg(&json!(1.5)).unwrap(), b"1.5");
        assert_eq!(json_to_arg(&json!(-7)).unwrap(), b"-7");
        assert_eq!(json_to_arg(&json!(true)).unwrap(), b"true");
        assert_eq!(json_to_arg(&json!({"a":1})).unwrap(), br#"{"a":1}"#);
        assert!(json_to_arg(&Json::Null).is_err());
        assert!(json_to_command(&json!([])).is_err());
        assert!(json_to_command(&json!("GET")).is_err());
    }

    #[test]
    fn command_lists() {
        let cmds = parse_command_list(br#"[["SET","a",1],["GET","a"]]"#).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0][2], b"1");
        assert!(parse_command_list(br#"{"a":1}"#).is_err());
        assert!(parse_command_list(br#"[["GET"], "x"]"#).is_err());
        assert!(parse_command_list(b"[]").unwrap().is_empty());
        assert!(parse_single(b"").is_err());
        assert_eq!(parse_single(br#"["PING"]"#).unwrap(), vec![b"PING".to_vec()]);
    }

    #[test]
    fn path_form() {
        assert_eq!(
            parse_path_form("/set/foo/bar%20baz", b"").unwrap(),
            vec![b"set".to_vec(), b"foo".to_vec(), b"bar baz".to_vec()]
        );
        assert_eq!(parse_path_form("/get/k/", b"").unwrap(), vec![b"get".to_vec(), b"k".to_vec()]);
        assert_eq!(
            parse_path_form("/set/k", b"\xff\x00v").unwrap(),
            vec![b"set".to_vec(), b"k".to_vec(), b"\xff\x00v".to_vec()]
        );
        assert_eq!(parse_path_form("/x/%E2%9C%93", b"").unwrap()[1], "✓".as_bytes());
        assert!(parse_path_form("/", b"").is_err());
    }

    #[test]
    fn resp_to_json_plain() {
        assert_eq!(value_to_json(&parse(b"$-1\r\n"), false), Json::Null);
        assert_eq!(value_to_json(&parse(b":42\r\n"), false), json!(42));
        assert_eq!(value_to_json(&parse(b"+OK\r\n"), false), json!("OK"));
        assert_eq!(value_to_json(&parse(b"+PONG\r\n"), false), json!("PONG"));
        assert_eq!(value_to_json(&parse(b"$3\r\nbar\r\n"), false), json!("bar"));
        assert_eq!(
            value_to_json(&parse(b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n*0\r\n"), false),
            json!(["a", [1, null], []])
        );
        // Non-UTF-8 bytes are replaced (lossy) without base64.
        assert_eq!(value_to_json(&Value::BulkString(vec![b'a', 0xff]), false), json!("a\u{fffd}"));
    }

    #[test]
    fn base64_rule() {
        // Every string is encoded except the status reply OK.
        assert_eq!(value_to_json(&parse(b"+OK\r\n"), true), json!("OK"));
        assert_eq!(value_to_json(&parse(b"+PONG\r\n"), true), json!("UE9ORw=="));
        // A bulk string that happens to be "OK" is data, so it is encoded.
        assert_eq!(value_to_json(&parse(b"$2\r\nOK\r\n"), true), json!("T0s="));
        assert_eq!(value_to_json(&parse(b":5\r\n"), true), json!(5));
        assert_eq!(value_to_json(&parse(b"$-1\r\n"), true), Json::Null);
        assert_eq!(value_to_json(&parse(b"*2\r\n$3\r\nfoo\r\n:1\r\n"), true), json!(["Zm9v", 1]));
        let binary = vec![0u8, 0xff, 0xfe, b'x'];
        let Json::String(enc) = value_to_json(&Value::BulkString(binary.clone()), true) else { panic!() };
        assert_eq!(B64.decode(enc).unwrap(), binary);
    }

    #[test]
    fn errors() {
        let v = parse(b"-NOSCRIPT No matching script. Please use EVAL.\r\n");
        assert_eq!(reply_object(&v, true), json!({"error": "NOSCRIPT No matching script. Please use EVAL."}));
        let v = parse(b"-ERR unknown command 'foo'\r\n");
        assert_eq!(reply_object(&v, false), json!({"error": "ERR unknown command 'foo'"}));
        let v = parse(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
        assert_eq!(
            reply_object(&v, false)["error"],
            json!("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(reply_object(&parse(b":1\r\n"), false), json!({"result": 1}));
    }

    #[test]
    fn blocked_commands() {
        let c = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Command>();
        assert_eq!(blocked_reason(&c("blpop a 0")).unwrap(), "ERR Command is not available: 'blpop'");
        assert!(blocked_reason(&c("MULTI")).is_some());
        assert!(blocked_reason(&c("watch k")).is_some());
        assert!(blocked_reason(&c("XREAD BLOCK 0 STREAMS s $")).is_some());
        assert!(blocked_reason(&c("XREAD COUNT 1 STREAMS s 0")).is_none());
        assert!(blocked_reason(&c("GET k")).is_none());
    }

    #[test]
    fn shebang_stripping() {
        assert_eq!(strip_shebang_flag(b"return 1"), None);
        assert_eq!(strip_shebang_flag(b"#!lua\nreturn 1"), None);
        assert_eq!(strip_shebang_flag(b"#!lua flags=no-writes\nreturn 1"), None);
        assert_eq!(strip_shebang_flag(b"#!lua flags=allow-key-locking\nreturn 1").unwrap(), b"\nreturn 1");
        assert_eq!(strip_shebang_flag(b"#!lua flags=allow-key-locking\r\nreturn 1").unwrap(), b"\r\nreturn 1");
        assert_eq!(
            strip_shebang_flag(b"#!lua flags=no-writes,allow-key-locking\nreturn 1").unwrap(),
            b"#!lua flags=no-writes\nreturn 1"
        );
        assert_eq!(
            strip_shebang_flag(b"#!lua  flags=allow-key-locking,allow-stale\nreturn 1").unwrap(),
            b"#!lua flags=allow-stale\nreturn 1"
        );
        assert_eq!(strip_shebang_flag(b"#!lua flags=allow-key-locking").unwrap(), b"");
    }

    #[test]
    fn sha1_matches_redis() {
        // SCRIPT LOAD "return 1" in Redis returns this digest.
        assert_eq!(sha1_hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
