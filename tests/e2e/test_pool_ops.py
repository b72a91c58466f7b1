"""Pool operations, end to end (issue 14): the admin API changes the key pool at run time
(disable, enable, clear a cooldown), every change is audited in a log line and in /stats, the
manual state lives in Redis and is read inside reserve_v1 (so no extra round trip), and only an
admin may do any of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .conftest import MAIN

FLASH = "gemini-2.5-flash"
FLASH_KEYS = {"gemini-flash-01", "gemini-flash-02"}
OTHER = "tok-other-0123456789"
STATS_TOKEN = "tok-stats-0123456789"
ROOT = Path(__file__).resolve().parent.parent.parent


def admin(worker, path: str, body=None, token: str = MAIN):
    s = worker.as_client(token)
    return s.post(worker.url + path, json=body, timeout=30)


def key_state(worker, key_id: str) -> dict:
    r = worker.get("/v1/admin/keys")
    assert r.status_code == 200, r.text
    return next(k for k in r.json()["keys"] if k["key_id"] == key_id)


def served_by(worker, n: int) -> list[str]:
    used = []
    for i in range(n):
        r = worker.generate(f"What is 2+2? ({i})")
        assert r.status_code == 200, r.text
        used += [a["key_id"] for a in r.json()["attempts"]]
    return used


def test_admin_disables_a_key_no_request_uses_it_then_enables_it(worker, clean):
    r = admin(worker, "/v1/admin/keys/gemini-flash-01/disable", {"reason": "rotating the key"})
    assert r.status_code == 200, r.text
    change = r.json()["change"]
    assert (change["action"], change["target"], change["by"], change["changed"]) == ("disable", "gemini-flash-01", "main", 1)
    k = key_state(worker, "gemini-flash-01")
    assert k["status"] == "disabled"
    assert k["disabled"]["manual"] is True and k["disabled"]["reason"] == "rotating the key" and k["disabled"]["by"] == "main"
    # No request, not even a first attempt, uses it.
    assert set(served_by(worker, 8)) == {"gemini-flash-02"}
    assert clean.mock_stats()["keys"]["gemini-flash-01"]["requests"] == 0
    r = admin(worker, "/v1/admin/keys/gemini-flash-01/enable", {"reason": "new key in place"})
    assert r.status_code == 200 and r.json()["change"]["changed"] == 1
    assert key_state(worker, "gemini-flash-01")["status"] == "available"
    assert "gemini-flash-01" in served_by(worker, 4)


def test_an_automatically_disabled_key_is_re_enabled_without_a_redeploy(worker, clean):
    for fault in ("403_service_blocked", "invalid_key"):
        clean.flush()
        clean.fault(fault, 1)
        r = worker.generate("What is 2+2?")
        assert r.status_code == 200, r.text
        bad = r.json()["attempts"][0]["key_id"]
        assert r.json()["attempts"][0]["outcome"] == "key_rejected"
        k = key_state(worker, bad)
        assert k["status"] == "disabled" and k["disabled"]["manual"] is False
        assert set(served_by(worker, 3)) == FLASH_KEYS - {bad}
        r = admin(worker, f"/v1/admin/keys/{bad}/enable", {"reason": f"fixed after {fault}"})
        assert r.status_code == 200 and r.json()["change"]["changed"] == 1, r.text
        assert key_state(worker, bad)["status"] == "available"
        assert bad in served_by(worker, 4)


def test_clear_cooldown_puts_a_cooling_group_back_at_once(worker, clean):
    clean.fault("429_rpd", 1, label="gemini-flash-01")
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200
    assert key_state(worker, "gemini-flash-01")["status"] == "cooling"
    assert set(served_by(worker, 3)) == {"gemini-flash-02"}
    r = admin(worker, "/v1/admin/groups/gemini-flash-01/clear-cooldown", {"reason": "quota raised"})
    assert r.status_code == 200 and r.json()["change"]["changed"] == 1, r.text
    assert key_state(worker, "gemini-flash-01")["status"] == "available"
    assert "gemini-flash-01" in served_by(worker, 4)


def test_a_non_admin_gets_403_and_unknown_targets_404(worker, clean):
    for token in (OTHER, STATS_TOKEN):
        for path in ("/v1/admin/keys/gemini-flash-01/disable", "/v1/admin/keys/gemini-flash-01/enable",
                     "/v1/admin/groups/gemini-flash-01/clear-cooldown"):
            r = admin(worker, path, {"reason": "x"}, token=token)
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "forbidden"
        r = worker.as_client(token).get(worker.url + "/v1/admin/keys", timeout=30)
        assert r.status_code == 403
    assert admin(worker, "/v1/admin/keys/gemini-flash-01/disable", {"reason": "x"}, token=None).status_code == 401
    r = admin(worker, "/v1/admin/keys/no-such-key/disable", {"reason": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found", r.text
    r = admin(worker, "/v1/admin/groups/no-such-group/clear-cooldown")
    assert r.status_code == 404 and r.json()["error"]["code"] == "group_not_found"
    r = admin(worker, "/v1/admin/keys/gemini-flash-01/disable")
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_reason"
    # None of these changed anything or reached Redis.
    assert clean.redis_cmd("KEYS", "{llmr}:dis:*") == [] and clean.redis_cmd("KEYS", "{llmr}:audit") == []


def test_every_change_is_audited_in_a_log_line_and_in_stats(worker, clean):
    admin(worker, "/v1/admin/keys/gemini-pro-01/disable", {"reason": "audit probe 7f3a"}).raise_for_status()
    admin(worker, "/v1/admin/keys/gemini-pro-01/enable", {"reason": "audit probe 7f3b"}).raise_for_status()
    admin(worker, "/v1/admin/groups/gemini-pro-01/clear-cooldown").raise_for_status()
    s = worker.as_client(STATS_TOKEN).get(worker.url + "/stats", timeout=30).json()
    audit = s["audit"]
    assert [(a["action"], a["target"], a["by"]) for a in audit[:3]] == [
        ("clear_cooldown", "gemini-pro-01", "main"), ("enable", "gemini-pro-01", "main"),
        ("disable", "gemini-pro-01", "main")]
    assert audit[2]["reason"] == "audit probe 7f3a" and audit[2]["changed"] == 1
    assert audit[0]["changed"] == 0  # nothing was cooling
    assert all(a["at"] >= audit[2]["at"] for a in audit[:3])
    # The same record as a structured log line.
    deadline = time.time() + 10
    lines = []
    while time.time() < deadline:
        lines = [json.loads(ln[ln.index("{"):]) for ln in worker.logs().splitlines()
                 if '"admin_change"' in ln and "audit probe 7f3a" in ln]
        if lines:
            break
        time.sleep(0.2)
    assert lines, "no admin_change log line"
    line = lines[-1]
    assert (line["event"], line["action"], line["target"], line["by"], line["reason"]) == (
        "admin_change", "disable", "gemini-pro-01", "main", "audit probe 7f3a")
    assert line["at"] == audit[2]["at"]
    # /v1/admin/keys shows the same audit head.
    assert worker.get("/v1/admin/keys").json()["audit"][:3] == audit[:3]


def test_the_manual_state_adds_no_redis_round_trip_to_the_request_path(worker, clean):
    admin(worker, "/v1/admin/keys/gemini-flash-01/disable", {"reason": "round trips"}).raise_for_status()
    worker.generate("warm the script cache")
    clean.rest_stats_reset()
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200 and r.json()["key_id"] == "gemini-flash-02"
    stats = clean.rest_stats()
    assert stats["http_requests"] == 2, stats


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_dashboard_admin_buttons_disable_and_enable_a_key_in_chromium(worker, clean):
    exe = chromium_path()
    assert exe, "chromium is not installed (apt-get install -y chromium)"
    node = shutil.which("node", path=f"{ROOT / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [node, str(ROOT / "tests" / "dashboard" / "render.mjs"), "--url", worker.url, "--token", MAIN,
         "--chromium", exe, "--admin-disable", "gemini-flash-02", "--reason", "clicked in chromium"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = json.loads(proc.stdout.strip().splitlines()[-1])
    assert page["errors"] == [], page["errors"]
    a = page["admin"]
    assert a["after_disable"] == "disabled" and a["disabled_text"] == "clicked in chromium"
    assert a["after_enable"] == "available"
    assert a["audit"][0][1:5] == ["main", "disable", "gemini-flash-02", "clicked in chromium"], a["audit"]
    entries = worker.get("/v1/admin/keys").json()["audit"]
    assert [(e["action"], e["target"]) for e in entries[:2]] == [("enable", "gemini-flash-02"), ("disable", "gemini-flash-02")]
    # A stats-only token sees no admin buttons.
    proc = subprocess.run(
        [node, str(ROOT / "tests" / "dashboard" / "render.mjs"), "--url", worker.url, "--token", STATS_TOKEN,
         "--chromium", exe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --- Client budgets and model lists ------------------------------------------------------------

BUDGET_TOKEN = "tok-budget-0123456789"


def budget_clients() -> str:
    import hashlib

    from .conftest import CLIENT_TOKENS

    clients = [{"id": cid, "token_sha256": hashlib.sha256(tok.encode()).hexdigest(), "scopes": scopes,
                "rpm": rpm, "burst": burst} for tok, (cid, scopes, rpm, burst) in CLIENT_TOKENS.items()]
    clients.append({"id": "budgeted", "token_sha256": hashlib.sha256(BUDGET_TOKEN.encode()).hexdigest(),
                    "scopes": ["generate"], "daily_tokens": 300, "tpm": 100000, "models": [FLASH]})
    return json.dumps({"clients": clients}, separators=(",", ":"))


_budget_worker = None


def budget_worker(env):
    global _budget_worker
    if _budget_worker is None:
        _budget_worker = env.start_worker(vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000",
                                                "CLIENTS_JSON": budget_clients()})
    return _budget_worker


def test_a_client_over_its_daily_token_budget_gets_429_client_budget_while_others_are_served(env, clean):
    w = budget_worker(env)
    b = w.as_client(BUDGET_TOKEN)
    prompt = "Please answer briefly: what is the capital of France? " * 2
    refused = None
    used = 0
    for i in range(60):
        r = b.post(w.url + "/v1/generate", json={"prompt": f"{prompt} ({i})", "model": FLASH}, timeout=60)
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
        used += r.json()["usage"]["total"]
    assert refused is not None, "the budget never ran out"
    err = refused.json()["error"]
    assert (err["code"], err["limit"]) == ("client_budget", "client_budget"), err
    retry_after = int(refused.headers["retry-after"])
    assert 0 < retry_after <= 25 * 3600  # the next Pacific midnight
    # The refusal consumed no key quota: the mock saw no more requests, and the windows hold
    # only the admitted ones.
    before = clean.mock_stats()["total_requests"]
    r = b.post(w.url + "/v1/generate", json={"prompt": prompt, "model": FLASH}, timeout=60)
    assert r.status_code == 429 and clean.mock_stats()["total_requests"] == before
    live = sum(int(clean.redis_cmd("ZCARD", f"{{llmr}}:w:{k}:{FLASH}")) for k in FLASH_KEYS)
    assert live == i
    # Others are served.
    assert w.generate("What is 2+2?").status_code == 200
    # /stats and /metrics show the use against the budget.
    s = w.get("/stats").json()
    c = next(c for c in s["clients"] if c["client_id"] == "budgeted")
    assert c["budget"]["daily_tokens"] == {"used": used, "limit": 300}, c
    assert c["budget"]["tpm"]["limit"] == 100000
    assert next(c for c in s["clients"] if c["client_id"] == "main")["budget"] is None
    m = w.get("/metrics").text
    assert f'llmr_client_budget_used_tokens{{client="budgeted",window="day"}} {used}' in m
    assert 'llmr_client_budget_limit_tokens{client="budgeted",window="day"} 300' in m


def test_a_disallowed_model_is_403_before_any_redis_call(env, clean):
    w = budget_worker(env)
    b = w.as_client(BUDGET_TOKEN)
    b.post(w.url + "/v1/generate", json={"prompt": "warm", "model": FLASH}, timeout=60)
    clean.rest_stats_reset()
    r = b.post(w.url + "/v1/generate", json={"prompt": "hi", "model": "gemini-2.5-pro"}, timeout=60)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed", r.text
    r = b.post(w.url + "/v1/chat/completions", json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]},
               timeout=60)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed", r.text
    assert clean.rest_stats()["http_requests"] == 0
    # A budgeted request still costs exactly one round trip before and one after the call.
    r = b.post(w.url + "/v1/generate", json={"prompt": "What is 2+2?", "model": FLASH}, timeout=60)
    assert r.status_code == 200, r.text
    assert clean.rest_stats()["http_requests"] == 2
