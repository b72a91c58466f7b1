"""Observability, end to end: /health, /stats, /metrics and /dashboard of the real worker in
workerd, telling the truth through real faults (Redis stopped, upstream 429s, invalid keys)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import stack
from .conftest import CLIENT_TOKENS, MAIN, fake_key

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
STATS_TOKEN = "tok-stats-0123456789"
GEN_TOKEN = "tok-gen-0123456789"
ROOT = Path(__file__).resolve().parent.parent.parent


def stats(worker, token: str = STATS_TOKEN) -> dict:
    r = worker.as_client(token).get(worker.url + "/stats", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def key(s: dict, key_id: str) -> dict:
    return next(k for k in s["keys"] if k["key_id"] == key_id)


def health(worker, token: str | None = MAIN):
    return worker.as_client(token).get(worker.url + "/health", timeout=30)


def wait_for(check, timeout: float = 20.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    return last


# --- auth and shape ---------------------------------------------------------------------------

def test_stats_and_metrics_need_the_stats_scope(worker, clean):
    for path in ("/stats", "/metrics"):
        r = worker.as_client(None).get(worker.url + path, timeout=30)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
        r = worker.as_client(GEN_TOKEN).get(worker.url + path, timeout=30)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
        assert worker.as_client(STATS_TOKEN).get(worker.url + path, timeout=30).status_code == 200
        assert worker.get(path).status_code == 200  # admin implies stats


def test_stats_shape_and_no_secret(worker, clean):
    assert worker.generate("What is 2+2?").status_code == 200
    s = stats(worker)
    assert s["schema_version"] == 1
    assert s["window_ms"] == 61000
    assert abs(s["generated_at"] - time.time() * 1000) < 5000
    assert [k["key_id"] for k in s["keys"]] == [k["key_id"] for k in worker.keys["keys"]]
    k = s["keys"][0]
    assert set(k) >= {"key_id", "model", "quota_group", "status", "usage", "cooldown_until", "cooldown_reason",
                      "disabled", "totals", "last_used"}
    assert set(k["usage"]) == {"rpm", "tpm", "rpd"}
    assert set(k["totals"]) >= {"requests", "successes", "failures", "upstream_429s", "tokens_in", "tokens_out",
                                "tokens_thinking"}
    assert [m["model"] for m in s["models"]] == [FLASH, PRO]
    assert {c["client_id"] for c in s["clients"]} == {v[0] for v in CLIENT_TOKENS.values()}
    assert s["global"]["totals"]["requests"] == 1
    text = json.dumps(s)
    for k in worker.keys["keys"]:
        assert fake_key(k["key_id"]) not in text
    for tok in CLIENT_TOKENS:
        assert tok not in text
    assert "AIza" not in text and "token_sha256" not in text


def test_health_without_token_shows_only_the_status(worker, clean):
    r = health(worker, None)
    assert r.status_code == 200
    assert r.json() == {"status": "healthy"}
    r = health(worker, GEN_TOKEN)  # any valid token sees the details
    c = r.json()["components"]
    assert set(c) == {"config", "redis", "keys", "conversations", "kill_switch"}
    assert c["config"] == {"healthy": True}
    assert c["redis"]["healthy"] is True and isinstance(c["redis"]["latency_ms"], int)
    assert c["keys"]["total"] == 3
    assert (c["keys"]["active"], c["keys"]["cooling"], c["keys"]["disabled"]) == (3, 0, 0)
    assert c["conversations"]["healthy"] is True
    assert c["kill_switch"]["router_enabled"] is True


# --- faults -----------------------------------------------------------------------------------

def test_redis_stopped_then_started(env, worker, clean):
    port = env.redis.port
    env.redis.stop()
    try:
        r = health(worker)
        assert r.status_code == 503, r.text
        h = r.json()
        assert h["status"] == "unhealthy"
        assert h["components"]["redis"]["healthy"] is False
        assert h["components"]["redis"]["error"]
        assert h["components"]["conversations"]["healthy"] is False
        assert h["components"]["keys"]["cooling"] is None  # unknown without Redis, not a guess
        assert health(worker, None).json() == {"status": "unhealthy"}
        r = worker.as_client(STATS_TOKEN).get(worker.url + "/stats", timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    finally:
        env.redis = stack.start_redis(port)
    # The REST server reconnects by itself; /health says healthy as soon as a round trip works.
    r = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(health(worker)), 30)
    assert r is not None and r.status_code == 200
    assert r.json()["components"]["redis"]["healthy"] is True
    # /stats works again too (its script is reloaded after NOSCRIPT).
    assert stats(worker)["global"]["totals"]["requests"] == 0


def test_rest_server_down_is_unhealthy(worker, clean):
    clean.rest_http.post(clean.rest.url + "/_local/fault", json={"down": True}, timeout=10)
    try:
        r = health(worker)
        assert r.status_code == 503
        assert r.json()["components"]["redis"]["healthy"] is False
    finally:
        clean.rest_http.post(clean.rest.url + "/_local/fault", json={"down": False}, timeout=10)
    assert health(worker).status_code == 200


def test_429_shows_as_cooling_with_its_cooldown_until(worker, clean):
    clean.fault("429_rpm", 1)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200, r.text
    first = r.json()["attempts"][0]
    assert first["outcome"] == "rate_limited"
    s = stats(worker)
    k = key(s, first["key_id"])
    assert k["status"] == "cooling"
    assert k["cooldown_until"] == first["cooldown_until"]
    assert k["cooldown_until"] == int(clean.redis_cmd("HGET", f"{{llmr}}:cd:{first['key_id']}:{FLASH}", "until"))
    assert 6000 <= k["cooldown_until"] - s["generated_at"] <= 7000
    assert k["cooldown_reason"]
    assert k["totals"]["upstream_429s"] == 1 and k["totals"]["failures"]["rate_limited"] == 1
    other = key(s, r.json()["key_id"])
    assert other["status"] == "available" and other["cooldown_until"] is None
    assert s["global"]["totals"]["upstream_429s"] == 1
    assert s["global"]["keys"]["cooling"] == 1
    flash = next(m for m in s["models"] if m["model"] == FLASH)
    assert flash["keys"]["cooling"] == 1 and flash["totals"]["upstream_429s"] == 1
    h = health(worker).json()
    assert h["components"]["keys"]["cooling"] == 1 and h["components"]["keys"]["active"] == 2
    # Cooldowns expire: the same figures then say so.
    time.sleep(max(0, (k["cooldown_until"] - s["generated_at"]) / 1000) + 0.3)
    k2 = key(stats(worker), first["key_id"])
    assert k2["status"] == "available" and k2["cooldown_until"] is None


def test_invalid_key_shows_as_disabled(worker, clean):
    clean.fault("invalid_key", 1)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200, r.text
    bad = r.json()["attempts"][0]["key_id"]
    s = stats(worker)
    k = key(s, bad)
    assert k["status"] == "disabled"
    assert k["disabled"]["reason"] == "400 API_KEY_INVALID"
    assert abs(k["disabled"]["at"] - s["generated_at"]) < 10000
    assert k["totals"]["failures"]["key_rejected"] == 1 and k["totals"]["successes"] == 0
    # A released attempt does not count against the quota.
    assert k["usage"]["rpm"]["used"] == 0 and k["usage"]["rpd"]["used"] == 0
    assert s["global"]["keys"]["disabled"] == 1
    h = health(worker).json()
    assert h["status"] == "healthy"  # the other keys still serve
    assert h["components"]["keys"]["disabled"] == 1


def test_token_counts_match_the_mocks_usage_metadata(worker, clean):
    prompts = [("What is 2+2?", FLASH), ("Say 'Hello from Multi-Key Router!' and nothing else.", FLASH),
               ("Write one sentence about the sea and the wind, please.", FLASH), ("What is 2+2?", PRO)]
    bodies = []
    for p, m in prompts:
        r = worker.generate(p, model=m)
        assert r.status_code == 200, r.text
        bodies.append(r.json())
    s = stats(worker)
    log = clean.mock_requests()
    assert len(log) == len(prompts)
    # Replay each logged upstream request to the mock itself and read its usageMetadata.
    usage: dict[str, list[int]] = {}
    for entry in log:
        rr = requests.post(f"{clean.mock.url}/v1beta/models/{entry['model']}:generateContent",
                           headers={"x-goog-api-key": fake_key(entry["label"])}, json=entry["body"], timeout=10)
        assert rr.status_code == 200, rr.text
        u = rr.json()["usageMetadata"]
        agg = usage.setdefault(entry["label"], [0, 0, 0, 0])
        agg[0] += u["promptTokenCount"]
        agg[1] += u.get("candidatesTokenCount", 0)
        agg[2] += u.get("thoughtsTokenCount", 0)
        agg[3] += 1
    # The router's own answers carry the same usage.
    assert sum(b["usage"]["input"] for b in bodies) == sum(v[0] for v in usage.values())
    for key_id, (tin, tout, think, n) in usage.items():
        k = key(s, key_id)
        t = k["totals"]
        assert (t["tokens_in"], t["tokens_out"], t["tokens_thinking"]) == (tin, tout, think), (key_id, t)
        assert t["requests"] == n and t["successes"] == n
        # Window figures: settled input tokens replace the estimates.
        assert k["usage"]["rpm"]["used"] == n and k["usage"]["rpd"]["used"] == n
        assert k["usage"]["tpm"]["used"] == tin
        assert k["last_used"] is not None
    g = s["global"]["totals"]
    assert g["tokens_in"] == sum(v[0] for v in usage.values())
    assert g["tokens_out"] == sum(v[1] for v in usage.values())
    assert g["requests"] == len(prompts) and g["successes"] == len(prompts)
    main = next(c for c in s["clients"] if c["client_id"] == "main")
    assert (main["totals"]["tokens_in"], main["totals"]["tokens_out"]) == (g["tokens_in"], g["tokens_out"])
    assert next(c for c in s["clients"] if c["client_id"] == "other")["totals"]["requests"] == 0
    flash = next(m for m in s["models"] if m["model"] == FLASH)
    assert flash["totals"]["requests"] == 3 and flash["usage"]["rpm"]["used"] == 3
    assert flash["usage"]["rpm"]["limit"] == 20  # two flash projects of 10 rpm


def test_same_figures_from_another_isolate(env, worker, clean):
    for _ in range(3):
        assert worker.generate("What is 2+2?").status_code == 200
    other = env.start_worker(vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000"})
    try:
        a, b = stats(worker), stats(other)
        for d in (a, b):
            d.pop("generated_at")
        assert a == b
    finally:
        other.svc.stop()


def test_kill_switch_makes_health_503(env, clean):
    w = env.start_worker(vars={"LLM_MULTI_KEY_ROUTER_ENABLED": "false"})
    try:
        r = health(w)
        assert r.status_code == 503
        h = r.json()
        assert h["components"]["kill_switch"]["healthy"] is False
        assert h["components"]["redis"]["healthy"] is True
        assert health(w, None).json() == {"status": "unhealthy"}
    finally:
        w.svc.stop()


# --- /metrics ---------------------------------------------------------------------------------

def test_metrics_parse_and_match_stats(worker, clean):
    clean.fault("429_rpm", 1)
    assert worker.generate("What is 2+2?").status_code == 200
    assert worker.generate("What is 2+2?", model=PRO).status_code == 200
    r = worker.as_client(STATS_TOKEN).get(worker.url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = stats(worker)
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = {}
    for f in families.values():
        for smp in f.samples:
            samples[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    assert families["llmr_key_requests"].type == "counter"
    assert families["llmr_key_rpm_used"].type == "gauge"
    for k in s["keys"]:
        lab = (("key_id", k["key_id"]), ("model", k["model"]))
        assert samples[("llmr_key_requests_total", lab)] == k["totals"]["requests"]
        assert samples[("llmr_key_rpm_used", lab)] == k["usage"]["rpm"]["used"]
        assert samples[("llmr_key_rpm_limit", lab)] == k["usage"]["rpm"]["limit"]
        assert samples[("llmr_key_tpm_used", lab)] == k["usage"]["tpm"]["used"]
        assert samples[("llmr_key_cooling", lab)] == (1 if k["status"] == "cooling" else 0)
        assert samples[("llmr_key_disabled", lab)] == (1 if k["disabled"] else 0)
        out = tuple(sorted(lab + (("outcome", "rate_limited"),)))
        assert samples[("llmr_key_outcomes_total", out)] == k["totals"]["upstream_429s"]
        tin = tuple(sorted(lab + (("type", "in"),)))
        assert samples[("llmr_key_tokens_total", tin)] == k["totals"]["tokens_in"]
        if k["cooldown_until"]:
            assert samples[("llmr_key_cooldown_until_seconds", lab)] == pytest.approx(k["cooldown_until"] / 1000)
    assert samples[("llmr_requests_total", ())] == s["global"]["totals"]["requests"] == 3
    assert samples[("llmr_client_requests_total", (("client", "main"),))] == 3
    # Low cardinality: only these label names anywhere.
    names = {n for (_, labels) in samples for n, _ in labels}
    assert names <= {"key_id", "model", "client", "outcome", "type", "status"}
    # The Grafana dashboard only queries metrics that exist.
    grafana = (ROOT / "docs" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"\bllmr_[a-z_]+", grafana)) - {"llmr_key_router"}
    exposed = {name for name, _ in samples}
    assert used and used <= exposed, used - exposed


# --- /dashboard in headless Chromium ----------------------------------------------------------

def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_dashboard_page_is_served_without_auth(worker, clean):
    r = requests.get(worker.url + "/dashboard", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/stats" in r.text and "localStorage" in r.text


def test_dashboard_renders_what_stats_says_in_chromium(worker, clean):
    exe = chromium_path()
    assert exe, "chromium is not installed (apt-get install -y chromium)"
    node = shutil.which("node", path=f"{ROOT / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}")
    assert (ROOT / "node_modules" / "playwright-core").exists(), "run npm ci (playwright-core)"
    # Traffic through the running worker: successes on both models, a day-long cooldown (stable
    # while the page loads) and a rejected key.
    clean.fault("429_rpd", 1, label="gemini-flash-01")
    for i in range(3):
        assert worker.generate(f"What is 2+2? ({i})").status_code == 200
    assert worker.generate("What is 2+2?", model=PRO).status_code == 200
    shot = stack.RUN_DIR / "dashboard.png"
    done = stack.RUN_DIR / f"dashboard-traffic-done-{os.getpid()}"
    stack.RUN_DIR.mkdir(exist_ok=True)
    done.unlink(missing_ok=True)
    # Traffic keeps flowing while the page polls, so the rates have something to show.
    proc = subprocess.Popen(
        [node, str(ROOT / "tests" / "dashboard" / "render.mjs"), "--url", worker.url, "--token", STATS_TOKEN,
         "--polls", "3", "--screenshot", str(shot), "--chromium", exe, "--wait-file", str(done)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for i in range(5):
            time.sleep(1.0)
            assert worker.generate(f"Say something short ({i})").status_code == 200
    finally:
        done.touch()
    out, err = proc.communicate(timeout=120)
    done.unlink(missing_ok=True)
    assert proc.returncode == 0, err
    page = json.loads(out.strip().splitlines()[-1])
    s = stats(worker)
    assert page["errors"] == [], page["errors"]
    assert page["token_stored"] is True and page["asked_again"] is False
    assert page["schema_version"] == 1
    assert page["polls_seen"] >= 3
    # Rates come from deltas between polls: traffic flowed between some of them.
    assert page["chart_lines"] == 1 and page["chart_bars"] >= 2 and page["rate_rpm"] is not None
    assert page["rate_peak_rpm"] > 0 and page["rate_peak_tpm"] > 0
    assert [k["key_id"] for k in page["keys"]] == [k["key_id"] for k in s["keys"]]
    for shown in page["keys"]:
        k = key(s, shown["key_id"])
        assert shown["status"] == k["status"]
        for f in ("rpm", "tpm", "rpd"):
            assert shown["bars"][f]["used"] == k["usage"][f]["used"], (shown["key_id"], f)
            assert shown["bars"][f]["limit"] == k["usage"][f]["limit"]
            assert shown["bars"][f]["text"] == f"{k['usage'][f]['used']} / {k['usage'][f]['limit']}"
        assert shown["cooldown_until"] == (str(k["cooldown_until"]) if k["cooldown_until"] else None)
        assert shown["disabled"] == (k["disabled"]["reason"] if k["disabled"] else "—")
        t = k["totals"]
        assert (shown["requests"], shown["successes"], shown["upstream_429s"], shown["failures_total"]) == (
            t["requests"], t["successes"], t["upstream_429s"], t["failures_total"])
        assert shown["tokens"] == [t["tokens_in"], t["tokens_out"], t["tokens_thinking"]]
    assert key(s, "gemini-flash-01")["status"] == "cooling"
    for shown in page["models"]:
        m = next(x for x in s["models"] if x["model"] == shown["model"])
        assert shown["requests"] == m["totals"]["requests"]
        assert shown["bars"]["rpm"]["used"] == m["usage"]["rpm"]["used"]
        assert shown["keys"] == f"{m['keys']['available']} / {m['keys']['cooling']} / {m['keys']['disabled']}"
    for shown in page["clients"]:
        c = next(x for x in s["clients"] if x["client_id"] == shown["client_id"])
        assert shown["requests"] == c["totals"]["requests"]
    g = s["global"]["totals"]
    assert int(page["global"]["requests"]) == g["requests"]
    assert int(page["global"]["tokens_in"]) == g["tokens_in"]
    assert int(page["global"]["upstream_429s"]) == g["upstream_429s"] == 1
    assert shot.exists() and shot.stat().st_size > 10_000
