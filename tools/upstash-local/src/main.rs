//! `upstash-local`: the Upstash Redis REST protocol in front of a real `redis-server`.
//!
//! Upstash's own emulator ships only as a Docker image; this native binary lets tests,
//! benchmarks and local development use the official SDKs (and our worker) unchanged.
//!
//! ```text
//! upstash-local --port 8079 --redis-url redis://127.0.0.1:6379 --token secret
//! ```
//!
//! See `README.md` next to `Cargo.toml` for the protocol, the `/_local/` extras and the
//! decisions summarised here:
//!
//! * **Pooling** ([`pool`]): each HTTP request takes one exclusive connection from a pool
//!   (default 64), sends all of its commands in one pipelined write (MULTI/…/EXEC for
//!   `/multi-exec`) and returns it. Broken connections are discarded together with every
//!   idle one; connects are bounded (1.5 s) so a dead Redis gives a fast 503.
//! * **Encoding** ([`proto`]): with `Upstash-Encoding: base64` every string in a result is
//!   base64 (binary-exact) except the status reply `OK`. Without it, non-UTF-8 bytes are
//!   replaced with U+FFFD (lossy, as a JSON encoder must).
//! * **Lua shebang**: the Upstash-only flag `allow-key-locking` is stripped from a `#!lua`
//!   first line before EVAL / SCRIPT LOAD (Redis 7.0 rejects unknown flags); a map from
//!   sha1(original) to sha1(stripped) makes EVALSHA / SCRIPT EXISTS with the original
//!   digest work, and SCRIPT LOAD answers with the original digest.

mod pool;
mod proto;
mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;

const USAGE: &str = "\
usage: upstash-local --port P --redis-url redis://127.0.0.1:R --token T [options]

options (environment fallback in brackets):
  --port P                  HTTP port [UPSTASH_LOCAL_PORT] (default 8079)
  --bind ADDR               bind address (default 127.0.0.1)
  --redis-url URL           Redis to front [REDIS_URL] (default redis://127.0.0.1:6379)
  --token T                 bearer token clients must send [UPSTASH_LOCAL_TOKEN] (required)
  --pool-size N             max Redis connections (default 64)
  --connect-timeout-ms MS   Redis connect timeout (default 1500)
  --response-timeout-ms MS  Redis reply timeout (default 10000)
  --max-body-mb MB          max request body (default 64)
";

#[derive(Debug)]
struct Args {
    port: u16,
    bind: String,
    redis_url: String,
    token: String,
    pool_size: usize,
    connect_timeout_ms: u64,
    response_timeout_ms: u64,
    max_body_mb: usize,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut port: Option<String> = std::env::var("UPSTASH_LOCAL_PORT").ok();
    let mut bind = "127.0.0.1".to_string();
    let mut redis_url: Option<String> = std::env::var("REDIS_URL").ok();
    let mut token: Option<String> = std::env::var("UPSTASH_LOCAL_TOKEN").ok();
    let mut pool_size = "64".to_string();
    let mut connect_timeout_ms = "1500".to_string();
    let mut response_timeout_ms = "10000".to_string();
    let mut max_body_mb = "64".to_string();

    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = Some(value()?),
            "--bind" => bind = value()?,
            "--redis-url" => redis_url = Some(value()?),
            "--token" => token = Some(value()?),
            "--pool-size" => pool_size = value()?,
            "--connect-timeout-ms" => connect_timeout_ms = value()?,
            "--response-timeout-ms" => response_timeout_ms = value()?,
            "--max-body-mb" => max_body_mb = value()?,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    let num = |name: &str, v: &str| -> Result<u64, String> {
        v.parse::<u64>().map_err(|_| format!("{name}: not a number: {v}"))
    };
    let token = token.filter(|t| !t.is_empty()).ok_or("a token is required (--token or UPSTASH_LOCAL_TOKEN)")?;
    Ok(Args {
        port: num("--port", port.as_deref().unwrap_or("8079"))?
            .try_into()
            .map_err(|_| "--port out of range".to_string())?,
        bind,
        redis_url: redis_url.unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
        token,
        pool_size: num("--pool-size", &pool_size)?.max(1) as usize,
        connect_timeout_ms: num("--connect-timeout-ms", &connect_timeout_ms)?.max(1),
        response_timeout_ms: num("--response-timeout-ms", &response_timeout_ms)?.max(1),
        max_body_mb: num("--max-body-mb", &max_body_mb)?.max(1) as usize,
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("upstash-local: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };

    let pool = match pool::Pool::new(
        &args.redis_url,
        pool::PoolConfig {
            max_size: args.pool_size,
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
            response_timeout: Duration::from_millis(args.response_timeout_ms),
            wait_timeout: Duration::from_millis(args.response_timeout_ms),
        },
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("upstash-local: bad --redis-url {}: {e}", args.redis_url);
            std::process::exit(2);
        }
    };

    let app = Arc::new(server::App::new(args.token.clone(), pool));
    let router = Router::new()
        .fallback(server::handle)
        .layer(DefaultBodyLimit::max(args.max_body_mb * 1024 * 1024))
        .with_state(app);

    let addr = format!("{}:{}", args.bind, args.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upstash-local: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);

    // Nothing to flush on exit: stop at once on SIGTERM/SIGINT instead of waiting for
    // idle keep-alive connections to close.
    tokio::spawn(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        std::process::exit(0);
    });

    println!("upstash-local listening on http://{local}");
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("upstash-local: server error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn cli_contract() {
        let a = args("--port 9000 --redis-url redis://127.0.0.1:7000 --token t0k").unwrap();
        assert_eq!(a.port, 9000);
        assert_eq!(a.redis_url, "redis://127.0.0.1:7000");
        assert_eq!(a.token, "t0k");
        assert_eq!(a.bind, "127.0.0.1");
        let a = args("--port=9001 --token=x --bind 0.0.0.0 --pool-size 8").unwrap();
        assert_eq!((a.port, a.bind.as_str(), a.pool_size), (9001, "0.0.0.0", 8));
        assert!(args("--port 70000 --token x").is_err());
        assert!(args("--bogus 1 --token x").is_err());
        assert!(args("--port").is_err());
    }
}
