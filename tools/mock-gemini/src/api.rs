//! The Gemini API the mock serves: routing of `models/{model}:{method}` paths, auth, resource
//! checks, faults, quota admission and the answers (whole, SSE or a JSON array).

use super::*;

pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// Strips the optional version and `models/` prefixes: returns the rest of the path.
pub(crate) fn strip_api_prefix(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    let p = ["v1beta/", "v1/", "v1alpha/"].iter().find_map(|v| p.strip_prefix(v)).unwrap_or(p);
    config::strip_models_prefix(p)
}

/// `…/models/{model}:{method}` → (model, method).
pub(crate) fn parse_call(path: &str) -> Option<(String, String)> {
    let decoded = if path.contains('%') { percent_decode(path) } else { path.to_string() };
    let rest = strip_api_prefix(&decoded);
    let (model, method) = rest.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') || method.is_empty() {
        return None;
    }
    Some((model.to_string(), method.to_string()))
}

pub(crate) fn model_entry(name: &str) -> Value {
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": name,
        "description": format!("Mock of {name}"),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": if name.contains("embedding") {
            json!(["embedContent", "batchEmbedContents"])
        } else {
            json!(["generateContent", "countTokens", "streamGenerateContent"])
        },
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": true
    })
}

pub(crate) fn api_key(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(uri, "key"))
        .filter(|k| !k.is_empty())
}

/// Authenticates a request: Ok(key) or the error body (missing or unknown key).
/// A `permission_denied` or `service_blocked` key is returned as Ok; the caller refuses it.
pub(crate) fn authenticate(g: &Inner, key: Option<&str>) -> Result<KeyInfo, Value> {
    let Some(key) = key else {
        return Err(errors::missing_key());
    };
    g.resolve(key).ok_or_else(errors::invalid_key)
}

/// Like [`authenticate`], but a key refused for `method` (see [`access::key_refusal`]) too.
pub(crate) fn authorize(g: &Inner, key: Option<&str>, method: &str) -> Result<KeyInfo, Value> {
    let k = authenticate(g, key)?;
    access::key_refusal(&k, method).map_or(Ok(k), Err)
}

pub(crate) fn list_models(m: &Mock, headers: &HeaderMap, uri: &Uri) -> Response {
    let rest = strip_api_prefix(uri.path());
    let method = if rest.is_empty() || rest == "models" { "listModels" } else { "getModel" };
    let g = m.lock();
    if let Err(e) = authorize(&g, api_key(headers, uri).as_deref(), method) {
        return err_response(&e);
    }
    let mut names: Vec<String> = vec!["gemini-2.5-flash".into(), "gemini-2.5-pro".into()];
    for table in g.cfg.projects.values() {
        names.extend(table.keys().cloned());
    }
    drop(g);
    names.sort();
    names.dedup();
    if rest.is_empty() || rest == "models" {
        let models: Vec<Value> = names.iter().map(|n| model_entry(n)).collect();
        json_response(200, &json!({ "models": models }))
    } else if !rest.contains('/') && !rest.contains(':') {
        json_response(200, &model_entry(rest))
    } else {
        err_response(&errors::not_found("Method not found."))
    }
}

pub(crate) enum Outcome {
    Error(Value, Option<FaultKind>),
    Ok { extra_delay_ms: u64, cut: bool },
}

pub(crate) async fn api(State(m): St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    if let Some(r) = files::serve(&m, &method, &uri, &headers, &body).await {
        return r;
    }
    if method == Method::GET {
        let rest = strip_api_prefix(path);
        if path.starts_with("/v1") && (rest.is_empty() || rest == "models" || !rest.contains(':')) {
            return list_models(&m, &headers, &uri);
        }
    }
    if method != Method::POST {
        return err_response(&errors::not_found("Method not found."));
    }
    let Some((model, op_name)) = parse_call(path) else {
        return err_response(&errors::not_found("Method not found."));
    };
    let op = match op_name.as_str() {
        "generateContent" => Op::Generate,
        "streamGenerateContent" => Op::Stream,
        "countTokens" => Op::Count,
        "embedContent" => Op::Embed,
        "batchEmbedContents" => Op::BatchEmbed,
        _ => {
            return err_response(&errors::not_found(&format!(
                "models/{model} is not found for API version v1beta, or is not supported for {op_name}. Call ListModels to see the list of available models and their supported methods."
            )))
        }
    };
    let key = api_key(&headers, &uri);
    let parsed: Result<Value, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
    if op == Op::Count {
        return count_tokens(&m, &model, key.as_deref(), parsed, &body);
    }
    if matches!(op, Op::Embed | Op::BatchEmbed) {
        return embed::serve(&m, &model, op, key.as_deref(), parsed, &body).await;
    }
    let sse = query_param(&uri, "alt").as_deref() == Some("sse");

    // Everything that does not need the lock. Err is the body for an invalid request or
    // for one naming a resource no project can see (a resource-level 403).
    let plan: Result<gen::Plan, Value> = match &parsed {
        Ok(v) => gen::validate_generate(v)
            .map_err(|msg| errors::invalid_argument(&msg))
            .and_then(|_| media::items(v).map(|_| ()).map_err(|msg| errors::invalid_argument(&msg)))
            .and_then(|_| if signatures::required(&model) { m.sigs().check(v) } else { Ok(()) })
            .and_then(|_| {
                let g = m.lock();
                let project = key.as_deref().and_then(|k| g.resolve(k)).map(|i| i.project);
                access::resource_refusal(v, project.as_deref(), &g.resources).map_or(Ok(()), Err)
            })
            .map(|_| media::adjust(gen::plan(v), v)),
        Err(e) => Err(errors::invalid_argument(&format!("Invalid JSON payload received. {e}"))),
    };
    let log_body = parsed.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    let (cfg, seq, extra_delay_ms, cut) = match decide(&m, &model, op, key.as_deref(), &plan, log_body) {
        Ok(d) => d,
        Err(e) => return err_response(&e),
    };
    let mut plan = plan.expect("validated");
    if signatures::required(&model) && !plan.calls.is_empty() {
        let mut sigs = m.sigs();
        for c in &mut plan.calls {
            c.signature = Some(sigs.issue(&c.name));
        }
    }
    let delay = cfg.latency_ms + extra_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let id = m.response_id(seq);
    match op {
        Op::Generate => {
            let v = gen::full_response(&plan, &model, &id);
            if cut {
                truncated_json(serde_json::to_vec(&v).unwrap_or_default())
            } else {
                json_response(200, &v)
            }
        }
        Op::Stream => {
            let events = gen::stream_events(&plan, &model, &id);
            if sse {
                let chunks: Vec<Bytes> = events
                    .iter()
                    .map(|e| {
                        let mut s = b"data: ".to_vec();
                        s.extend(serde_json::to_vec(e).unwrap_or_default());
                        s.extend_from_slice(b"\r\n\r\n");
                        Bytes::from(s)
                    })
                    .collect();
                stream_response(chunks, cfg.stream_chunk_delay_ms, cut)
            } else {
                let body = serde_json::to_vec(&Value::Array(events)).unwrap_or_default();
                if cut {
                    truncated_json(body)
                } else {
                    let mut r = Response::new(Body::from(body));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
                    r
                }
            }
        }
        Op::Count | Op::Embed | Op::BatchEmbed => unreachable!("handled above"),
    }
}

/// The locked part of a generate/stream call: auth, key-level and resource-level refusals,
/// stats, faults, quota, log.
/// Ok((config, seq, extra_delay_ms, cut)) when the request is answered normally,
/// else the error body to send.
pub(crate) fn decide(
    m: &Mock,
    model: &str,
    op: Op,
    key: Option<&str>,
    plan: &Result<gen::Plan, Value>,
    log_body: Value,
) -> Result<(Arc<Config>, u64, u64, bool), Value> {
    let model = model.to_string();
    let prompt = plan.as_ref().map(|p| p.prompt).unwrap_or(0);
    let now = m.now_ms();
    let mut g = m.lock();
    g.total_requests += 1;
    let info = match authenticate(&g, key) {
        Ok(k) => k,
        Err(e) => {
            let status = e["error"]["code"].as_u64().unwrap_or(400) as u16;
            g.invalid_key_requests += 1;
            g.log(now, None, &model, op, status, None, log_body);
            drop(g);
            return Err(e);
        }
    };
    let group_id = format!("{}/{}", info.project, model);
    let cfg = g.cfg.clone();
    {
        let ks = g.key_stats.entry(info.label.clone()).or_default();
        ks.requests += 1;
        ks.arrivals.record(now);
        let gr = g.groups.entry(group_id.clone()).or_default();
        gr.requests += 1;
        gr.arrivals.record(now);
    }

    let limits = cfg.limits(&info.project, &model);
    let outcome = if let Some(e) = access::key_refusal(&info, op.as_str()) {
        Outcome::Error(e, None)
    } else if let Err(e) = plan {
        Outcome::Error(e.clone(), None)
    } else {
        let fault = g.take_fault(&info.label, &model);
        match fault.as_ref().map(|f| f.kind) {
            Some(k @ FaultKind::Internal) => Outcome::Error(errors::internal(), Some(k)),
            Some(k @ FaultKind::Unavailable) => Outcome::Error(errors::unavailable(), Some(k)),
            Some(k @ FaultKind::Exhausted) => Outcome::Error(errors::exhausted_no_details(), Some(k)),
            Some(k @ FaultKind::InvalidKey) => Outcome::Error(errors::invalid_key(), Some(k)),
            Some(k @ FaultKind::ServiceBlocked) => {
                Outcome::Error(errors::service_blocked(&access::rpc_name(op.as_str())), Some(k))
            }
            Some(k @ FaultKind::Resource) => Outcome::Error(errors::file_denied("fault"), Some(k)),
            Some(k @ FaultKind::Rpm) => {
                let lim = limits.and_then(|l| l.rpm).unwrap_or(10);
                Outcome::Error(errors::quota(QuotaKind::Rpm, &model, lim, 7_000), Some(k))
            }
            Some(k @ FaultKind::Rpd) => {
                let lim = limits.and_then(|l| l.rpd).unwrap_or(250);
                let retry = pacific::ms_to_next_midnight(now);
                Outcome::Error(errors::quota(QuotaKind::Rpd, &model, lim, retry), Some(k))
            }
            other => {
                let gr = g.groups.get_mut(&group_id).expect("group exists");
                match admit(gr, now, limits, cfg.enforce_quotas, prompt) {
                    Err((kind, limit, retry)) => Outcome::Error(errors::quota(kind, &model, limit, retry), other),
                    Ok(()) => {
                        let ks = g.key_stats.get_mut(&info.label).expect("key stats exist");
                        ks.admitted.record(now);
                        Outcome::Ok {
                            extra_delay_ms: fault
                                .as_ref()
                                .filter(|f| f.kind == FaultKind::Slow)
                                .map(|f| f.delay_ms)
                                .unwrap_or(0),
                            cut: other == Some(FaultKind::CutStream),
                        }
                    }
                }
            }
        }
    };

    let (status, fault_kind) = match &outcome {
        Outcome::Error(v, f) => (v["error"]["code"].as_u64().unwrap_or(500) as u16, *f),
        Outcome::Ok { cut, extra_delay_ms } => (
            200,
            if *cut {
                Some(FaultKind::CutStream)
            } else if *extra_delay_ms > 0 {
                Some(FaultKind::Slow)
            } else {
                None
            },
        ),
    };
    {
        let ks = g.key_stats.get_mut(&info.label).expect("key stats exist");
        match status {
            200 => ks.ok += 1,
            429 => ks.status_429 += 1,
            _ => ks.errors += 1,
        }
        let gr = g.groups.get_mut(&group_id).expect("group exists");
        match status {
            200 => gr.ok += 1,
            429 => gr.status_429 += 1,
            _ => gr.errors += 1,
        }
    }
    g.log(now, Some(info.label), &model, op, status, fault_kind, log_body);
    let seq = g.seq;
    drop(g);

    let (extra_delay_ms, cut) = match outcome {
        Outcome::Error(v, _) => return Err(v),
        Outcome::Ok { extra_delay_ms, cut } => (extra_delay_ms, cut),
    };
    Ok((cfg, seq, extra_delay_ms, cut))
}

/// Checks and records admission in a group. Err((kind, limit, retry_ms)).
pub(crate) fn admit(
    gr: &mut Group,
    now: u64,
    limits: Option<Limits>,
    enforce: bool,
    tokens: u64,
) -> Result<(), (QuotaKind, u64, u64)> {
    let today = pacific::pacific_day_ms(now);
    if gr.day != today {
        gr.day = today;
        gr.day_count = 0;
    }
    if enforce {
        if let Some(l) = limits {
            if let Some(rpd) = l.rpd {
                if gr.day_count + 1 > rpd {
                    return Err((QuotaKind::Rpd, rpd, pacific::ms_to_next_midnight(now)));
                }
            }
            if let Err((k, retry)) = gr.admitted.check(now, l.rpm, l.tpm, tokens) {
                let kind = QuotaKind::from(k);
                let limit = match kind {
                    QuotaKind::Rpm => l.rpm,
                    _ => l.tpm,
                }
                .unwrap_or(0);
                return Err((kind, limit, retry));
            }
        }
    }
    gr.admitted.push(now, tokens);
    gr.day_count += 1;
    gr.max_admitted = gr.max_admitted.max(gr.admitted.len() as u64);
    gr.max_tokens = gr.max_tokens.max(gr.admitted.tokens());
    Ok(())
}

pub(crate) fn count_tokens(
    m: &Mock,
    model: &str,
    key: Option<&str>,
    parsed: Result<Value, String>,
    raw: &Bytes,
) -> Response {
    let result: Result<u64, String> = match &parsed {
        Err(e) => Err(format!("Invalid JSON payload received. {e}")),
        Ok(v) => {
            let has_contents = v.get("contents").is_some_and(|c| !c.is_null());
            let gcr =
                v.get("generateContentRequest").or_else(|| v.get("generate_content_request")).filter(|c| !c.is_null());
            match (has_contents, gcr) {
                (true, Some(_)) => Err("Only one of contents or generate_content_request can be set.".into()),
                (false, None) => Err("* CountTokensRequest.contents: contents is not specified\n".into()),
                (true, None) => match v["contents"].as_array() {
                    Some(a) if !a.is_empty() => Ok(gen::prompt_tokens(v) + media::tokens(v)),
                    _ => Err("* CountTokensRequest.contents: contents is not specified\n".into()),
                },
                (false, Some(r)) => gen::validate_generate(r).map(|_| gen::prompt_tokens(r) + media::tokens(r)),
            }
        }
    };
    let log_body = parsed.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into()));
    let now = m.now_ms();
    let mut g = m.lock();
    g.total_count_tokens += 1;
    let info = match authenticate(&g, key) {
        Ok(k) => k,
        Err(e) => {
            let status = e["error"]["code"].as_u64().unwrap_or(400) as u16;
            g.invalid_key_requests += 1;
            g.log(now, None, model, Op::Count, status, None, log_body);
            return err_response(&e);
        }
    };
    g.key_stats.entry(info.label.clone()).or_default().count_tokens += 1;
    let (status, v) = match (access::key_refusal(&info, Op::Count.as_str()), result) {
        (Some(e), _) => (403, e),
        (None, Ok(n)) => {
            (200, json!({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]}))
        }
        (None, Err(msg)) => (400, errors::invalid_argument(&msg)),
    };
    g.log(now, Some(info.label), model, Op::Count, status, None, log_body);
    drop(g);
    json_response(status, &v)
}

pub(crate) fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock-gemini: cut_stream fault")
}

/// SSE response; with `cut`, the connection is aborted after the first event.
pub(crate) fn stream_response(chunks: Vec<Bytes>, delay_ms: u64, cut: bool) -> Response {
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let chunks = chunks.clone();
        async move {
            if i >= chunks.len() {
                return None;
            }
            if cut && i == 1 {
                // Let the first event reach the client before aborting.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some((Err(cut_error()), usize::MAX));
            }
            if i > 0 && delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Some((Ok(chunks[i].clone()), i + 1))
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A 200 whose body stops halfway and then the connection is aborted.
pub(crate) fn truncated_json(full: Vec<u8>) -> Response {
    let len = full.len();
    let half = Bytes::from(full[..len / 2].to_vec());
    let stream = futures_util::stream::unfold(0u8, move |i| {
        let half = half.clone();
        async move {
            match i {
                0 => Some((Ok(half), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Err(cut_error()), 2))
                }
                _ => None,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}
