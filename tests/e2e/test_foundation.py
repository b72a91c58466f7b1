"""Foundation and quota engine, end to end: the real worker in workerd, real Redis behind the
local Upstash-REST server, and the mock Gemini."""

import json
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import requests

FLASH = "gemini-2.5-flash"


def next_pacific_midnight_ms(now_ms: int) -> int:
    la = ZoneInfo("America/Los_Angeles")
    local = datetime.fromtimestamp(now_ms / 1000, la)
    nxt = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(nxt.timestamp() * 1000)


def test_health_reports_config_redis_and_keys(worker, clean):
    # Seed tests 2, 4 and 9: Redis reachable, 3 keys loaded, overall healthy.
    r = worker.get("/health")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["status"] == "healthy"
    assert h["components"]["redis"]["healthy"] is True
    assert isinstance(h["components"]["redis"]["latency_ms"], int)
    assert h["components"]["keys"]["total"] == 3
    assert h["components"]["keys"]["models"] == ["gemini-2.5-flash", "gemini-2.5-pro"]


def test_one_shot_seed_test_6(worker, clean):
    r = worker.generate("Say 'Hello from Multi-Key Router!' and nothing else.", temperature=0.1)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["content"] == "Hello from Multi-Key Router!"
    assert b["model_used"] == FLASH
    assert b["key_id"] in ("gemini-flash-01", "gemini-flash-02")
    u = b["usage"]
    assert u["input"] > 0 and u["output"] > 0 and u["total"] == u["input"] + u["output"] + u["thoughts"]
    assert [a["outcome"] for a in b["attempts"]] == ["success"]
    # The mock saw exactly what the router sent.
    log = clean.mock_requests()
    assert len(log) == 1
    sent = log[0]["body"]
    assert sent["contents"][0]["parts"][0]["text"].startswith("Say 'Hello")
    assert sent["generationConfig"]["temperature"] == 0.1


def test_five_rapid_requests_rotate_across_flash_keys_seed_test_8(worker, clean):
    used = []
    for _ in range(5):
        r = worker.generate("What is 2+2?")
        assert r.status_code == 200, r.text
        assert r.json()["content"] == "4"
        used.append(r.json()["key_id"])
        time.sleep(0.1)
    assert set(used) == {"gemini-flash-01", "gemini-flash-02"}
    # Most headroom first: the two keys alternate.
    assert all(a != b for a, b in zip(used, used[1:])), used


def test_exactly_one_redis_round_trip_before_the_answer_and_the_settle_after_it(worker, clean):
    worker.generate("warm the script cache")
    clean.wait_rest_requests(2)
    time.sleep(0.2)
    clean.rest_stats_reset()
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200
    # Only the reservation came before the answer...
    stats = clean.rest_stats()
    assert stats["http_requests"] <= 2, stats
    # ...and the settle follows it (ctx.wait_until): two REST calls in all.
    stats = clean.wait_rest_requests(2)
    assert stats["http_requests"] == 2, stats
    assert stats["by_path"]["/"] == 2, stats
    time.sleep(0.2)
    assert clean.rest_stats()["http_requests"] == 2


def test_the_answer_waits_for_one_redis_round_trip_not_two(worker, clean):
    """With every Redis answer 300 ms late, a one-shot answer takes one delay (the
    reservation), not two: the settle lands after the answer."""
    worker.generate("warm the script cache")
    clean.wait_rest_requests(2)
    time.sleep(0.2)
    clean.rest_delay(300)
    try:
        clean.rest_stats_reset()
        t0 = time.time()
        r = worker.generate("What is 2+2?")
        elapsed = time.time() - t0
        assert r.status_code == 200, r.text
        assert 0.3 <= elapsed < 0.55, elapsed
        assert clean.wait_rest_requests(2)["http_requests"] == 2
    finally:
        clean.rest_delay(0)


def test_settle_replaces_estimate_with_real_prompt_tokens(worker, clean):
    clean.rest_stats_reset()
    r = worker.generate("What is 2+2?")
    clean.wait_rest_requests(2)
    b = r.json()
    key = b["key_id"]
    toks = clean.redis_cmd("HGETALL", f"{{llmr}}:t:{key}:{FLASH}")
    fields = dict(zip(toks[::2], toks[1::2]))
    assert int(fields["_sum"]) == b["usage"]["input"]
    st = clean.redis_cmd("HGETALL", f"{{llmr}}:st:k:{key}")
    st = dict(zip(st[::2], st[1::2]))
    assert int(st["tokens_in"]) == b["usage"]["input"]
    assert int(st["tokens_out"]) == b["usage"]["output"]
    assert int(st["outcome:success"]) == 1


def test_rpm_exhaustion_answers_429_without_calling_upstream(worker, clean):
    ok = 0
    for _ in range(20):
        r = worker.generate("What is 2+2?")
        assert r.status_code == 200, r.text
        ok += 1
    r = worker.generate("What is 2+2?")
    assert r.status_code == 429
    e = r.json()["error"]
    assert e["code"] == "rate_limited" and e["limit"] == "rpm"
    assert 1 <= int(r.headers["retry-after"]) <= 62
    stats = clean.mock_stats()
    assert stats["total_requests"] == 20
    assert all(k["status_429"] == 0 for k in stats["keys"].values())


def test_429_with_retry_info_cools_key_and_fails_over(worker, clean):
    clean.fault("429_rpm", 1)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200, r.text
    b = r.json()
    assert [a["outcome"] for a in b["attempts"]] == ["rate_limited", "success"]
    first = b["attempts"][0]
    assert first["key_id"] != b["key_id"]
    assert clean.mock_stats()["total_requests"] == 2
    # The mock's RetryInfo said 7s: the cooldown ends about 7 s after the 429.
    cd = clean.redis_cmd("HGET", f"{{llmr}}:cd:{first['key_id']}:{FLASH}", "until")
    assert abs(int(cd) - first["cooldown_until"]) == 0
    assert 6_000 <= int(cd) - int(time.time() * 1000) <= 8_000
    # While it cools down, every request goes to the other key.
    for _ in range(3):
        assert worker.generate("What is 2+2?").json()["key_id"] == b["key_id"]


def test_per_day_429_cools_until_pacific_midnight(worker, clean):
    clean.fault("429_rpd", 1)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200
    first = r.json()["attempts"][0]
    assert first["outcome"] == "rate_limited"
    assert first["cooldown_until"] == next_pacific_midnight_ms(int(time.time() * 1000))


def test_every_key_429_answers_429_with_retry_after_then_recovers(worker, clean):
    clean.fault("429_rpm", 2)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 429, r.text
    e = r.json()["error"]
    assert e["limit"] == "cooldown"
    assert 6 <= int(r.headers["retry-after"]) <= 8
    # No further upstream call while both cool down.
    r2 = worker.generate("What is 2+2?")
    assert r2.status_code == 429 and r2.json()["error"]["limit"] == "cooldown"
    assert clean.mock_stats()["total_requests"] == 2


def test_503_and_500_retry_on_another_key_without_disabling(worker, clean):
    for kind in ("503", "500"):
        clean.flush()
        clean.mock_reset()
        clean.fault(kind, 1)
        r = worker.generate("What is 2+2?")
        assert r.status_code == 200, r.text
        outs = [a["outcome"] for a in r.json()["attempts"]]
        assert outs == ["transient", "success"], outs
        assert clean.mock_stats()["total_requests"] == 2
        assert clean.redis_cmd("KEYS", "{llmr}:dis:*") == []


def test_persistent_503_gives_up_after_max_attempts(worker, clean):
    clean.fault("503", 10)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert clean.mock_stats()["total_requests"] == 3  # MAX_ATTEMPTS default


def test_invalid_key_is_disabled_and_skipped(worker, clean):
    clean.fault("invalid_key", 1)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200, r.text
    b = r.json()
    assert [a["outcome"] for a in b["attempts"]] == ["key_rejected", "success"]
    bad = b["attempts"][0]["key_id"]
    reason = clean.redis_cmd("HGET", f"{{llmr}}:dis:{bad}", "reason")
    assert reason == "400 API_KEY_INVALID"
    before = clean.mock_stats()["total_requests"]
    for _ in range(3):
        r = worker.generate("What is 2+2?")
        assert r.json()["key_id"] != bad
        assert len(r.json()["attempts"]) == 1
    assert clean.mock_stats()["total_requests"] == before + 3


def test_slow_upstream_times_out_and_retries(env, clean):
    w = env.start_worker(vars={"UPSTREAM_TIMEOUT_MS": "500", "USER_RPM_DEFAULT": "1000", "USER_BURST_DEFAULT": "1000"})
    clean.fault("slow", 1, delay_ms=3000)
    t0 = time.monotonic()
    r = w.generate("What is 2+2?")
    assert r.status_code == 200, r.text
    assert [a["outcome"] for a in r.json()["attempts"]] == ["timeout", "success"]
    assert time.monotonic() - t0 < 2.5
    assert clean.mock_stats()["total_requests"] == 2


def test_client_errors(worker, clean):
    cases = [
        ({"prompt": "x", "model": "gpt-4"}, 400, "unknown_model"),
        ({"prompt": "", "model": FLASH}, 400, "empty_message"),
        ({"model": FLASH}, 400, "missing_field"),
        ({"prompt": "x", "model": FLASH, "temperature": 9}, 400, "invalid_field"),
    ]
    for body, status, code in cases:
        r = worker.post("/v1/generate", body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["code"] == code
    r = worker.http.post(worker.url + "/v1/generate", data="{not json", headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = worker.http.post(worker.url + "/v1/generate", data="{}", headers={"content-type": "text/plain"}, timeout=10)
    assert r.status_code == 415
    assert worker.get("/nope").status_code == 404
    assert worker.get("/v1/generate").status_code == 405
    assert clean.mock_stats()["total_requests"] == 0


def test_kill_switch(env, clean):
    w = env.start_worker(vars={"LLM_MULTI_KEY_ROUTER_ENABLED": "false"})
    r = w.generate("What is 2+2?")
    assert r.status_code == 503 and r.json()["error"]["code"] == "router_disabled"
    h = w.get("/health")
    assert h.status_code == 503 and h.json()["router_enabled"] is False


def test_logs_are_json_and_mask_keys(worker, clean):
    from .conftest import fake_key

    r = worker.generate("What is 2+2?")
    key_id = r.json()["key_id"]
    secret = fake_key(key_id)
    deadline = time.time() + 5
    while time.time() < deadline:
        lines = [json.loads(l) for l in worker.logs().splitlines() if l.startswith("{")]
        attempts = [l for l in lines if l.get("event") == "attempt" and l.get("key_id") == key_id]
        if attempts:
            break
        time.sleep(0.2)
    assert attempts, "no attempt log line"
    assert attempts[-1]["key"] == "AIzaSy…" + secret[-4:]
    assert all("level" in l and "event" in l for l in lines)
    assert secret not in worker.logs()
