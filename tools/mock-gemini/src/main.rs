//! `mock-gemini --port P [--config path.json] [--latency-ms N] [--bind 127.0.0.1]`

use std::io::Write;
use std::process::ExitCode;

use mock_gemini::Config;

const USAGE: &str = "usage: mock-gemini --port P [--config path.json] [--latency-ms N] [--bind 127.0.0.1]";

struct Args {
    port: u16,
    config: Option<String>,
    latency_ms: Option<u64>,
    bind: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { port: 0, config: None, latency_ms: None, bind: "127.0.0.1".into() };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if name == "-h" || name == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value"));
        match name.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--config" => args.config = Some(value()?),
            "--latency-ms" => args.latency_ms = Some(value()?.parse().map_err(|e| format!("--latency-ms: {e}"))?),
            "--bind" => args.bind = value()?,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mock-gemini: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = match &args.config {
        None => Config::default(),
        Some(path) => {
            match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| Config::from_json(&t)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mock-gemini: cannot load config {path}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    if let Some(l) = args.latency_ms {
        cfg.latency_ms = l;
    }
    let listener = match tokio::net::TcpListener::bind((args.bind.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-gemini: cannot bind {}:{}: {e}", args.bind, args.port);
            return ExitCode::from(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
    let labels: Vec<String> = cfg.key_map().into_values().map(|k| k.label).collect();
    eprintln!(
        "mock-gemini: {} key(s) configured{}, {} project(s), latency {} ms, quotas {}",
        labels.len(),
        if labels.is_empty() { " (any key accepted)".to_string() } else { format!(" ({})", labels.join(", ")) },
        cfg.projects.len(),
        cfg.latency_ms,
        if cfg.enforce_quotas { "enforced" } else { "not enforced" }
    );
    println!("mock-gemini listening on http://{}:{port}", args.bind);
    let _ = std::io::stdout().flush();
    if let Err(e) = mock_gemini::serve(listener, cfg).await {
        eprintln!("mock-gemini: server error: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
