//! loadgen: send N HTTP requests at concurrency C (optionally paced to a fixed rate), read
//! every response body to the end, and print one JSON object with the status counts,
//! throughput and exact latency percentiles (all samples kept and sorted; no bucketing).
//!
//! ```sh
//! loadgen --url http://127.0.0.1:8787/v1/generate -n 1000 -c 50 \
//!   --body '{"prompt":"hi","model":"gemini-2.5-flash"}' -H 'authorization: Bearer t'
//! ```
//!
//! Flags:
//! - `--url U` (repeatable) or `--urls-file F` (one URL a line): worker `w` (0-based) always
//!   uses URL `w % len`, so per-worker resources (e.g. one conversation per client) never see
//!   two requests at once.
//! - `-n N` requests in total (required); `-c C` concurrent workers (default 1).
//! - `--rate R` paces the run: request `i` is not sent before `start + i/R` seconds (open-loop
//!   schedule shared by all workers; latency is measured from the actual send).
//! - `--max-seconds S` stops starting new requests after S seconds (default 600); the
//!   output says how many were sent.
//! - `-m METHOD` (default POST when a body is given, else GET); `--body B` or `--body-file F`;
//!   `-H 'name: value'` (repeatable). A body gets `content-type: application/json` unless a
//!   content-type header is given.
//! - `--timeout-ms T` per request (default 60000); a timeout counts as a transport error.
//! - `--warmup K`: K untimed requests (at concurrency C) before the measured run.
//! - `--threads T`: tokio worker threads (default 1: the load generator should take as
//!   little CPU from the system under test as it can).
//!
//! Non-2xx answers are grouped by status and the JSON error `code` of their body
//! (`error.code`, or `error.status` for Gemini-shaped errors) under `errors`, with the count,
//! the latency range and one body sample (first 300 bytes) per group.
//!
//! Latency = from just before the request is sent to the last body byte. `ttfb` = to the
//! response headers. `first_chunk` = to the first body chunk (useful for SSE streams).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

struct Args {
    urls: Vec<String>,
    n: usize,
    c: usize,
    rate: Option<f64>,
    max_seconds: f64,
    method: Option<String>,
    body: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    timeout_ms: u64,
    warmup: usize,
    threads: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}\nsee the top of tools/loadgen/src/main.rs for the flags");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        urls: vec![],
        n: 0,
        c: 1,
        rate: None,
        max_seconds: 600.0,
        method: None,
        body: None,
        headers: vec![],
        timeout_ms: 60_000,
        warmup: 0,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--url" => a.urls.push(val()),
            "--urls-file" => {
                let p = val();
                let text = std::fs::read_to_string(&p).unwrap_or_else(|e| usage(&format!("{p}: {e}")));
                a.urls.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
            "-n" => a.n = val().parse().unwrap_or_else(|_| usage("-n: not a number")),
            "-c" => a.c = val().parse().unwrap_or_else(|_| usage("-c: not a number")),
            "--rate" => a.rate = Some(val().parse().unwrap_or_else(|_| usage("--rate: not a number"))),
            "--max-seconds" => a.max_seconds = val().parse().unwrap_or_else(|_| usage("--max-seconds: not a number")),
            "-m" | "--method" => a.method = Some(val().to_uppercase()),
            "--body" => a.body = Some(val().into_bytes()),
            "--body-file" => {
                let p = val();
                a.body = Some(std::fs::read(&p).unwrap_or_else(|e| usage(&format!("{p}: {e}"))));
            }
            "-H" | "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').unwrap_or_else(|| usage(&format!("bad header {h:?}")));
                a.headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            "--timeout-ms" => a.timeout_ms = val().parse().unwrap_or_else(|_| usage("--timeout-ms: not a number")),
            "--warmup" => a.warmup = val().parse().unwrap_or_else(|_| usage("--warmup: not a number")),
            "--threads" => a.threads = val().parse().unwrap_or_else(|_| usage("--threads: not a number")),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if a.urls.is_empty() {
        usage("--url or --urls-file is required");
    }
    if a.n == 0 || a.c == 0 || a.threads == 0 {
        usage("-n, -c and --threads must be > 0");
    }
    if a.body.is_some() && !a.headers.iter().any(|(k, _)| k == "content-type") {
        a.headers.push(("content-type".into(), "application/json".into()));
    }
    a
}

#[derive(Default)]
struct Samples {
    total_us: Vec<u64>,
    ttfb_us: Vec<u64>,
    first_chunk_us: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, usize>,
    transport_errors: std::collections::BTreeMap<String, usize>,
    bytes: u64,
    /// "status code" -> (count, min ms, max ms, one body sample)
    errors: std::collections::BTreeMap<String, (usize, f64, f64, String)>,
}

enum Outcome {
    Done {
        status: u16,
        ttfb: Duration,
        first_chunk: Option<Duration>,
        total: Duration,
        bytes: u64,
        err_body: Option<Vec<u8>>,
    },
    Failed(String),
}

async fn one(client: &reqwest::Client, a: &Args, url: &str) -> Outcome {
    let method = a.method.clone().unwrap_or_else(|| if a.body.is_some() { "POST".into() } else { "GET".into() });
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut rb = client.request(method, url);
    for (k, v) in &a.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if let Some(b) = &a.body {
        rb = rb.body(b.clone());
    }
    let t0 = Instant::now();
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(classify(&e)),
    };
    let ttfb = t0.elapsed();
    let status = resp.status().as_u16();
    let mut first_chunk = None;
    let mut bytes = 0u64;
    let mut resp = resp;
    let mut err_body = (!(200..300).contains(&status)).then(Vec::new);
    loop {
        match resp.chunk().await {
            Ok(None) => break,
            Ok(Some(c)) => {
                if first_chunk.is_none() && !c.is_empty() {
                    first_chunk = Some(t0.elapsed());
                }
                bytes += c.len() as u64;
                if let Some(b) = err_body.as_mut() {
                    if b.len() < 4096 {
                        b.extend_from_slice(&c[..c.len().min(4096 - b.len())]);
                    }
                }
            }
            Err(e) => return Outcome::Failed(format!("body: {}", classify(&e))),
        }
    }
    Outcome::Done { status, ttfb, first_chunk, total: t0.elapsed(), bytes, err_body }
}

/// Group key of a non-2xx answer: its status and the JSON error code of the body, if any.
fn error_key(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        e.get("code").filter(|c| c.is_string()).or_else(|| e.get("status")).map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    format!("{status} {}", code.unwrap_or_else(|| "(no JSON error code)".into()))
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "request".into()
    }
}

/// Runs `n` requests with `a.c` workers; returns the samples and the wall time.
async fn run(
    client: &reqwest::Client,
    a: &Arc<Args>,
    n: usize,
    paced: bool,
    limit: Option<Duration>,
) -> (Samples, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let start = Instant::now();
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut tasks = Vec::with_capacity(a.c);
    for w in 0..a.c {
        let (client, a, next, samples) = (client.clone(), a.clone(), next.clone(), samples.clone());
        let url = a.urls[w % a.urls.len()].clone();
        let t_start = tokio::time::Instant::from_std(start);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let (true, Some(rate)) = (paced, a.rate) {
                    let at = t_start + Duration::from_secs_f64(i as f64 / rate);
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                let out = tokio::time::timeout(Duration::from_millis(a.timeout_ms), one(&client, &a, &url))
                    .await
                    .unwrap_or_else(|_| Outcome::Failed("timeout".into()));
                let mut s = samples.lock().unwrap();
                match out {
                    Outcome::Done { status, ttfb, first_chunk, total, bytes, err_body } => {
                        *s.statuses.entry(status).or_default() += 1;
                        if let Some(body) = err_body {
                            let ms = total.as_secs_f64() * 1000.0;
                            let e = s.errors.entry(error_key(status, &body)).or_insert_with(|| {
                                (0, f64::MAX, 0.0, String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
                            });
                            e.0 += 1;
                            e.1 = e.1.min(ms);
                            e.2 = e.2.max(ms);
                        }
                        s.total_us.push(total.as_micros() as u64);
                        s.ttfb_us.push(ttfb.as_micros() as u64);
                        if let Some(fc) = first_chunk {
                            s.first_chunk_us.push(fc.as_micros() as u64);
                        }
                        s.bytes += bytes;
                    }
                    Outcome::Failed(kind) => *s.transport_errors.entry(kind).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let s = std::mem::take(&mut *samples.lock().unwrap());
    (s, elapsed)
}

/// Exact percentiles over sorted samples (nearest-rank), in milliseconds.
fn pct(mut v: Vec<u64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let rank = |p: f64| {
        let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[k.clamp(1, v.len()) - 1] as f64 / 1000.0
    };
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
    json!({
        "min": v[0] as f64 / 1000.0, "p50": rank(50.0), "p90": rank(90.0), "p99": rank(99.0),
        "max": *v.last().unwrap() as f64 / 1000.0, "mean": (mean * 1000.0).round() / 1000.0,
    })
}

fn main() {
    let a = Arc::new(parse_args());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(a.c.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .expect("http client");
        if a.warmup > 0 {
            let _ = run(&client, &a, a.warmup, false, Some(Duration::from_secs(60))).await;
        }
        let (s, elapsed) = run(&client, &a, a.n, true, Some(Duration::from_secs_f64(a.max_seconds))).await;
        let done: usize = s.statuses.values().sum();
        let failed: usize = s.transport_errors.values().sum();
        let ok: usize = s.statuses.iter().filter(|(k, _)| (200..300).contains(*k)).map(|(_, v)| v).sum();
        let mut by_status = Map::new();
        for (k, v) in &s.statuses {
            by_status.insert(k.to_string(), json!(v));
        }
        let mut errors = Map::new();
        for (k, (count, lo, hi, sample)) in &s.errors {
            let r = |x: f64| (x * 10.0).round() / 10.0;
            errors.insert(k.clone(), json!({"count": count, "min_ms": r(*lo), "max_ms": r(*hi), "sample": sample}));
        }
        let secs = elapsed.as_secs_f64();
        json!({
            "url": a.urls[0], "urls": a.urls.len(), "requested": a.n, "concurrency": a.c, "rate": a.rate,
            "sent": done + failed, "responses": done, "ok": ok, "non_2xx": done - ok,
            "status": by_status, "errors": errors, "transport_errors": s.transport_errors,
            "elapsed_s": (secs * 1000.0).round() / 1000.0,
            "throughput_rps": ((done as f64 / secs) * 10.0).round() / 10.0,
            "ok_rps": ((ok as f64 / secs) * 10.0).round() / 10.0,
            "bytes": s.bytes,
            "latency_ms": pct(s.total_us), "ttfb_ms": pct(s.ttfb_us), "first_chunk_ms": pct(s.first_chunk_us),
        })
    });
    println!("{out}");
}
