//! Quota maths that does not need Redis: token estimation, the US-Pacific day, the sliding-log
//! model that the Lua scripts implement, and what an upstream 429 means for a key's cooldown.
//!
//! Algorithm choice (see `shared/notes/quota-windows.md`): a **sliding log** per (quota group,
//! model). Each admission is one sorted-set entry scored by its Redis `TIME` in ms, with a
//! running input-token total beside it. A request is admitted iff the live entries of the last
//! `window_ms` number fewer than `rpm` and their tokens plus the estimate fit in `tpm`. That is
//! exact in any rolling window (granularity: 1 ms), and refuses only when there is no room.
//! `window_ms` defaults to 61 s: 60 s plus 1 s of margin for the skew between Redis time and the
//! time Google sees the request.

pub mod media;
mod pacific;

pub use pacific::{civil_from_days, pacific_day, pacific_offset_ms};

use crate::config::Estimator;
use serde_json::Value;

pub const MINUTE_MS: u64 = 60_000;
/// The longest cooldown a single 429 can impose (per-day quotas use the Pacific midnight).
pub const MAX_COOLDOWN_MS: u64 = 86_400_000;

/// Estimated input tokens for the texts of a request (prompt, history and system instruction).
///
/// `Bytes` is a strict upper bound; `Chars4` is closer but not a bound. Both count at least 1.
pub fn estimate_tokens<'a>(texts: impl IntoIterator<Item = &'a str>, estimator: Estimator) -> u64 {
    let mut bytes = 0u64;
    let mut chars = 0u64;
    let mut parts = 0u64;
    for t in texts {
        bytes += t.len() as u64;
        chars += t.chars().count() as u64;
        parts += 1;
    }
    match estimator {
        Estimator::Bytes => bytes.max(1),
        Estimator::Chars4 => (chars.div_ceil(4) + 4 * parts).max(1),
    }
}

/// Every text part of a Gemini `GenerateContentRequest` (contents and system instruction).
pub fn request_texts(req: &Value) -> Vec<&str> {
    fn parts_of<'v>(content: &'v Value, out: &mut Vec<&'v str>) {
        if let Some(parts) = content.get("parts").and_then(Value::as_array) {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out.push(t);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(sys) = req.get("systemInstruction") {
        parts_of(sys, &mut out);
    }
    if let Some(contents) = req.get("contents").and_then(Value::as_array) {
        for c in contents {
            parts_of(c, &mut out);
        }
    }
    out
}

/// Longest function name Gemini accepts: what a tool result still to be named
/// (`functionResponse` without `name`, see `engine::plan::resolve_tool_names`) may add.
pub const FUNCTION_NAME_MAX: u64 = 64;

/// Bytes of everything in a Gemini request that is not a text part but costs input tokens, as
/// serialized JSON: non-text parts (`functionCall` args,
/// `functionResponse` results), any other field of a text part (a `thoughtSignature`), the
/// `tools` declarations with their schemas, `toolConfig`, and the structured-output schema
/// (`generationConfig.responseJsonSchema` / `responseSchema`). Counted in the reservation so
/// the byte estimate stays an upper bound: a token is at least one byte of its JSON. Media parts
/// (`inlineData`, `fileData`) are not counted here but by their token cost, [`media`].
pub fn non_text_bytes(req: &Value) -> u64 {
    let json_len = |v: &Value| v.to_string().len() as u64;
    let mut n = 0u64;
    let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten();
    for c in contents.chain(req.get("systemInstruction")) {
        n += c.get("parts").and_then(Value::as_array).into_iter().flatten().map(part_non_text_bytes).sum::<u64>();
    }
    for k in ["tools", "toolConfig"] {
        n += req.get(k).map_or(0, json_len);
    }
    let gen = req.get("generationConfig");
    for k in ["responseJsonSchema", "responseSchema"] {
        n += gen.and_then(|g| g.get(k)).map_or(0, json_len);
    }
    n
}

/// One part's share of [`non_text_bytes`].
fn part_non_text_bytes(p: &Value) -> u64 {
    let json_len = |v: &Value| v.to_string().len() as u64;
    let mut n = match p.as_object() {
        Some(o) if o.contains_key("text") && o.len() > 1 => {
            // An insert loop, not `collect()`: collecting into a map compiles its own sort code
            // into the wasm (docs/architecture.md, "Keeping the wasm small").
            let mut rest = serde_json::Map::new();
            for (k, v) in o.iter().filter(|(k, _)| *k != "text") {
                rest.insert(k.clone(), v.clone());
            }
            json_len(&Value::Object(rest))
        }
        Some(o) if o.contains_key("text") => 0,
        _ if media::is_media(p) => 0,
        _ => json_len(p),
    };
    if p.get("functionResponse").is_some_and(|f| f.get("name").is_none()) {
        n += FUNCTION_NAME_MAX;
    }
    n
}

/// [`request_estimate`] of one stored turn (`{role, parts}`), read in place (its media is not
/// copied): its texts, its other non-text parts by their bytes, its media by its token cost.
pub fn turn_estimate(turn: &Value, estimator: Estimator) -> u64 {
    let parts = turn.get("parts").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let texts = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str));
    estimate_tokens(texts, estimator)
        + parts.iter().map(part_non_text_bytes).sum::<u64>()
        + media::contents_tokens(std::iter::once(turn), None, media::Family::Tiles)
}

/// The upper-bound estimate of a whole Gemini request: its texts plus [`non_text_bytes`] plus
/// its media as Gemini 2.x counts it ([`media::non_text_tokens`]; the request path takes the
/// worst case over its model chain instead).
pub fn request_estimate(req: &Value, estimator: Estimator) -> u64 {
    estimate_tokens(request_texts(req), estimator)
        + non_text_bytes(req)
        + media::non_text_tokens(req, media::Family::Tiles)
}

// --- The sliding log, as a pure model ---------------------------------------------------------

/// Limits of one (quota group, model).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rpm: u64,
    pub tpm: u64,
    pub rpd: u64,
}

/// In-memory model of one group's state in `reserve_v1.lua`; the property tests check the
/// guarantee against it, and the Redis tests check the script against the same rules.
#[derive(Debug, Default, Clone)]
pub struct SlidingLog {
    entries: std::collections::VecDeque<(u64, u64)>,
    tokens: u64,
    day: i64,
    day_count: u64,
}

impl SlidingLog {
    fn trim(&mut self, now: u64, window: u64) {
        while let Some(&(t, tok)) = self.entries.front() {
            if t + window <= now {
                self.entries.pop_front();
                self.tokens -= tok;
            } else {
                break;
            }
        }
    }

    /// Admit a request of `est` tokens at `now` if it fits; returns whether it was admitted.
    pub fn try_admit(&mut self, now: u64, est: u64, lim: Limits, window: u64) -> bool {
        self.trim(now, window);
        let (day, _) = pacific_day(now as i64);
        if day != self.day {
            self.day = day;
            self.day_count = 0;
        }
        if self.entries.len() as u64 >= lim.rpm || self.tokens + est > lim.tpm || self.day_count >= lim.rpd {
            return false;
        }
        self.entries.push_back((now, est));
        self.tokens += est;
        self.day_count += 1;
        true
    }

    /// Replace the estimate of the entry admitted at `at` (settle). No-op if it left the window.
    pub fn settle(&mut self, at: u64, est: u64, actual: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == at && e.1 == est) {
            self.tokens = self.tokens - e.1 + actual;
            e.1 = actual;
        }
    }
}

// --- What an upstream 429 means ---------------------------------------------------------------

/// How long a quota group cools down after a 429, decided from the error body.
#[derive(Debug, Clone, PartialEq)]
pub enum Cooldown {
    /// A per-minute quota or an explicit `RetryInfo` / "retry in Ns": that long.
    Delay { ms: u64, reason: String },
    /// A per-day quota: until the next Pacific midnight.
    UntilPacificMidnight { reason: String },
    /// No details: a conservative default that grows on repeats (done in settle_v1.lua).
    Unknown,
}

/// Parses "17s", "1.68s" or "21926s" (protobuf Duration JSON) into ms.
fn parse_duration_ms(s: &str) -> Option<u64> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).ceil() as u64)
}

/// Reads a Gemini 429 body: `QuotaFailure.violations[].quotaId`, `RetryInfo.retryDelay`, or the
/// "Please retry in 1.68s" message text.
pub fn classify_429(body: &str) -> Cooldown {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Cooldown::Unknown;
    };
    let err = &v["error"];
    let details = err["details"].as_array().cloned().unwrap_or_default();
    let mut quota_ids = Vec::new();
    let mut retry_ms = None;
    for d in &details {
        let ty = d["@type"].as_str().unwrap_or("");
        if ty.ends_with("google.rpc.QuotaFailure") {
            for viol in d["violations"].as_array().into_iter().flatten() {
                if let Some(id) = viol["quotaId"].as_str() {
                    quota_ids.push(id.to_string());
                }
            }
        } else if ty.ends_with("google.rpc.RetryInfo") {
            retry_ms = d["retryDelay"].as_str().and_then(parse_duration_ms);
        }
    }
    if retry_ms.is_none() {
        if let Some(msg) = err["message"].as_str() {
            if let Some(i) = msg.find("retry in ") {
                let rest = &msg[i + 9..];
                let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
                retry_ms = parse_duration_ms(&format!("{}s", &rest[..end]));
            }
        }
    }
    if let Some(id) = quota_ids.iter().find(|id| id.contains("PerDay")) {
        return Cooldown::UntilPacificMidnight { reason: format!("429 {id}") };
    }
    let reason = quota_ids.first().map(|id| format!("429 {id}")).unwrap_or_else(|| "429 RESOURCE_EXHAUSTED".into());
    match retry_ms {
        // Capped at a day: a hostile or broken retryDelay must never cool a key for good.
        Some(ms) => Cooldown::Delay { ms: ms.clamp(1000, MAX_COOLDOWN_MS), reason },
        None if quota_ids.iter().any(|id| id.contains("PerMinute")) => Cooldown::Delay { ms: MINUTE_MS, reason },
        None => Cooldown::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_estimate_is_an_upper_bound_and_chars4_is_close() {
        let texts = ["What is 2+2?", "日本語のテキスト"];
        let b = estimate_tokens(texts, Estimator::Bytes);
        assert_eq!(b, 12 + 24);
        let c = estimate_tokens(texts, Estimator::Chars4);
        assert!(c < b);
        assert_eq!(estimate_tokens([], Estimator::Bytes), 1);
    }

    #[test]
    fn media_parts_are_counted_by_their_token_cost_not_their_bytes() {
        let req = serde_json::json!({"contents": [{"parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]});
        assert_eq!(non_text_bytes(&req), 0);
        // An image whose header does not read: the worst case of 16 tiles.
        assert_eq!(request_estimate(&req, Estimator::Bytes), 1 + media::UNREADABLE_IMAGE_TOKENS);
    }

    #[test]
    fn tools_schemas_calls_results_and_signatures_count() {
        use serde_json::json;
        let tools =
            json!([{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}]);
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let call = json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}});
        let result = json!({"functionResponse": {"name": "get_weather", "response": {"temp": 21}}});
        let req = json!({"contents": [
                {"role": "user", "parts": [{"text": "hi", "thoughtSignature": "SIG"}]},
                {"role": "model", "parts": [call]},
                {"role": "user", "parts": [result]}],
            "tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {"responseJsonSchema": schema}});
        let expected = [
            json!({"thoughtSignature": "SIG"}),
            call,
            result,
            tools,
            json!({"functionCallingConfig": {"mode": "ANY"}}),
            schema,
        ]
        .iter()
        .map(|v| v.to_string().len() as u64)
        .sum::<u64>();
        assert_eq!(non_text_bytes(&req), expected);
        // A tool result still to be named reserves room for the longest name.
        let unnamed = json!({"contents": [{"parts": [{"functionResponse": {"id": "call_1", "response": {}}}]}]});
        assert_eq!(
            non_text_bytes(&unnamed),
            unnamed["contents"][0]["parts"][0].to_string().len() as u64 + FUNCTION_NAME_MAX
        );
    }

    /// With the byte estimator, the estimate of any request with tools is at least the bytes of
    /// everything that can become input tokens (its whole JSON minus the syntax around texts),
    /// over random mixes of texts, calls, results, declarations and schemas.
    #[test]
    fn tool_requests_estimate_at_least_their_content_bytes() {
        use serde_json::json;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let word = |n: u64| "xé\"{}".repeat((n % 7) as usize);
            let mut contents = Vec::new();
            let mut content_bytes = 0u64;
            for t in 0..(next() % 6) {
                let part = match next() % 3 {
                    0 => json!({"text": word(next())}),
                    1 => {
                        json!({"functionCall": {"name": "f", "args": {"q": word(next())}}, "thoughtSignature": word(next())})
                    }
                    _ => json!({"functionResponse": {"name": "f", "response": {"result": word(next())}}}),
                };
                content_bytes += part.get("text").map_or(part.to_string().len(), |t| t.as_str().unwrap().len()) as u64;
                contents.push(json!({"role": if t % 2 == 0 { "user" } else { "model" }, "parts": [part]}));
            }
            let tools = json!([{"functionDeclarations": [{"name": "f", "description": word(next()),
                "parametersJsonSchema": {"type": "object", "description": word(next())}}]}]);
            let req = json!({"contents": contents, "tools": tools});
            let floor = content_bytes + tools.to_string().len() as u64;
            assert!(request_estimate(&req, Estimator::Bytes) >= floor, "{req}");
        }
    }

    #[test]
    fn request_texts_include_system_and_history() {
        let req = serde_json::json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]
        });
        assert_eq!(request_texts(&req), vec!["be brief", "a", "b"]);
    }

    #[test]
    fn classify_real_429_bodies() {
        let rpm = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"quota","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;
        assert_eq!(
            classify_429(rpm),
            Cooldown::Delay { ms: 17_000, reason: "429 GenerateRequestsPerMinutePerProjectPerModel-FreeTier".into() }
        );
        let rpd = r#"{"error":{"code":429,"details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21926s"}]}}"#;
        assert!(matches!(classify_429(rpd), Cooldown::UntilPacificMidnight { .. }));
        let msg = r#"{"error":{"code":429,"message":"Please retry in 1.68s.","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(classify_429(msg), Cooldown::Delay { ms: 1680, reason: "429 RESOURCE_EXHAUSTED".into() });
        assert_eq!(classify_429(r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#), Cooldown::Unknown);
        assert_eq!(classify_429("not json"), Cooldown::Unknown);
        let huge = r#"{"error":{"code":429,"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1e300s"}]}}"#;
        assert!(matches!(classify_429(huge), Cooldown::Delay { ms: MAX_COOLDOWN_MS, .. }));
    }

    /// Deterministic xorshift for the property test (no extra dependency).
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_schedules_never_exceed_and_refuse_only_when_full() {
        for seed in 1..200u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E3779B97F4A7C15));
            let lim = Limits { rpm: 1 + rng.next() % 20, tpm: 100 + rng.next() % 2000, rpd: 5 + rng.next() % 200 };
            let window = MINUTE_MS;
            let mut log = SlidingLog::default();
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            let mut now = 1_795_000_000_000u64 + rng.next() % 86_400_000;
            for _ in 0..400 {
                now += rng.next() % 9_000;
                let est = 1 + rng.next() % 300;
                // Independent oracle: what is live in (now - window, now]?
                let live: Vec<_> = admitted.iter().filter(|(t, _)| t + window > now).collect();
                let day = pacific_day(now as i64).0;
                let today = admitted.iter().filter(|(t, _)| pacific_day(*t as i64).0 == day).count() as u64;
                let fits = (live.len() as u64) < lim.rpm
                    && live.iter().map(|(_, k)| k).sum::<u64>() + est <= lim.tpm
                    && today < lim.rpd;
                let ok = log.try_admit(now, est, lim, window);
                assert_eq!(ok, fits, "seed {seed}: admitted={ok} but fits={fits}");
                if ok {
                    admitted.push((now, est));
                }
            }
            // No rolling window ending at any admission holds more than the limits.
            for (i, &(t, _)) in admitted.iter().enumerate() {
                let in_window: Vec<_> = admitted[..=i].iter().filter(|(s, _)| s + window > t).collect();
                assert!(in_window.len() as u64 <= lim.rpm);
                assert!(in_window.iter().map(|(_, k)| k).sum::<u64>() <= lim.tpm);
            }
        }
    }

    #[test]
    fn settle_corrects_the_reservation_window_only() {
        let lim = Limits { rpm: 10, tpm: 100, rpd: 100 };
        let mut log = SlidingLog::default();
        assert!(log.try_admit(1_000_000, 80, lim, MINUTE_MS));
        assert!(!log.try_admit(1_000_001, 30, lim, MINUTE_MS));
        log.settle(1_000_000, 80, 20);
        assert!(log.try_admit(1_000_002, 30, lim, MINUTE_MS));
        // A late settle after the entry left the window is harmless.
        log.settle(1_000_000, 80, 5);
        assert!(log.try_admit(1_000_000 + MINUTE_MS, 90, lim, MINUTE_MS) || log.tokens <= 100);
    }
}
