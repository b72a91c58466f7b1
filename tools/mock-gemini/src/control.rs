//! The control API (`/_mock/...`, no auth): health, faults, stats, the request log, reset,
//! config and the test clock. Tests drive the mock through it; the Gemini API is in `lib.rs`.

use super::*;

pub(crate) async fn health() -> Response {
    json_response(200, &json!({"ok": true}))
}

pub(crate) async fn stats(State(m): St) -> Response {
    let now = m.now_ms();
    let v = m.lock().stats_json(now);
    json_response(200, &v)
}

pub(crate) async fn faults_list(State(m): St) -> Response {
    let v = serde_json::to_value(&m.lock().faults).unwrap_or_default();
    json_response(200, &v)
}

pub(crate) async fn faults_clear(State(m): St) -> Response {
    m.lock().faults.clear();
    json_response(200, &json!({"ok": true}))
}

pub(crate) async fn faults_add(State(m): St, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_response(400, &json!({"ok": false, "error": e.to_string()})),
    };
    let kind_str = match &v["kind"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let Some(kind) = FaultKind::parse(&kind_str) else {
        return json_response(400, &json!({"ok": false, "error": format!("unknown fault kind {kind_str:?}")}));
    };
    let count = v["count"].as_u64().unwrap_or(1);
    if count == 0 {
        return json_response(400, &json!({"ok": false, "error": "count must be >= 1"}));
    }
    let fault = Fault {
        kind,
        remaining: count,
        label: v["label"].as_str().map(str::to_string),
        model: v["model"].as_str().map(|s| config::strip_models_prefix(s).to_string()),
        delay_ms: v["delay_ms"].as_u64().unwrap_or(1_000),
    };
    let mut g = m.lock();
    g.faults.push_back(fault);
    let pending = serde_json::to_value(&g.faults).unwrap_or_default();
    json_response(200, &json!({"ok": true, "pending": pending}))
}

pub(crate) async fn requests_list(State(m): St, Query(q): Query<HashMap<String, String>>) -> Response {
    let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let g = m.lock();
    let entries: Vec<&LogEntry> = g.log.iter().filter(|e| e.seq > since).collect();
    let body = serde_json::to_vec(&entries).unwrap_or_default();
    drop(g);
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

pub(crate) async fn requests_clear(State(m): St) -> Response {
    m.lock().log.clear();
    json_response(200, &json!({"ok": true}))
}

pub(crate) async fn reset(State(m): St) -> Response {
    m.lock().reset();
    json_response(200, &json!({"ok": true}))
}

pub(crate) async fn config_get(State(m): St) -> Response {
    let v = m.lock().cfg.redacted();
    json_response(200, &v)
}

pub(crate) async fn config_put(State(m): St, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Config::from_json(&text) {
        Ok(cfg) => {
            m.lock().set_config(cfg);
            json_response(200, &json!({"ok": true}))
        }
        Err(e) => json_response(400, &json!({"ok": false, "error": e})),
    }
}

pub(crate) async fn clock_get(State(m): St) -> Response {
    json_response(200, &json!({"now_ms": m.now_ms(), "offset_ms": m.clock_offset_ms.load(Ordering::Relaxed)}))
}

pub(crate) async fn clock_set(State(m): St, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(off) = v["offset_ms"].as_i64() {
        m.clock_offset_ms.store(off, Ordering::Relaxed);
    } else if let Some(adv) = v["advance_ms"].as_i64() {
        m.clock_offset_ms.fetch_add(adv, Ordering::Relaxed);
    } else {
        return json_response(400, &json!({"ok": false, "error": "expected offset_ms or advance_ms"}));
    }
    clock_get(State(m)).await
}
