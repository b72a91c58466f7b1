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

import pytest

from .conftest import MAIN

FLASH = "gemini-2.5-flash"
FLASH_KEYS = {"gemini-flash-01", "gemini-flash-02"}
OTHER = "tok-other-0123456789"
STATS_TOKEN = "tok-stats-0123456789"
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(autouse=True)
def restore_mock(env):
    """The file tests reconfigure the shared mock for their 3-group pool: put the seed keys back."""
    yield
    env.mock_reset()


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


# --- Files and cached contents with project affinity -------------------------------------------

THREE_GROUPS = {"keys": [
    {"key_id": f"flash-g{i}", "model_name": FLASH, "provider": "gemini", "rpm": 4, "tpm": 1000000, "rpd": 1000,
     "active": True, "quota_group": f"proj-{i}"} for i in range(3)]}

_files_worker = None


def files_worker(env):
    global _files_worker
    if _files_worker is None:
        _files_worker = env.start_worker(keys=THREE_GROUPS, vars={"USER_RPM_DEFAULT": "100000",
                                                                  "USER_BURST_DEFAULT": "100000"})
    env.mock_reset(THREE_GROUPS)
    return _files_worker


def genai_client(w, token=MAIN):
    from google import genai
    from google.genai import types
    return genai.Client(api_key=token, http_options=types.HttpOptions(base_url=w.url))


def test_a_file_uploaded_with_google_genai_is_always_routed_to_its_owner_group_under_a_burst(env, clean):
    import io
    from concurrent.futures import ThreadPoolExecutor

    import requests

    w = files_worker(env)
    client = genai_client(w)
    f = client.files.upload(file=io.BytesIO(b"The meeting is on Tuesday at 10."),
                            config={"mime_type": "text/plain", "display_name": "notes"})
    assert f.name.startswith("files/") and f.display_name == "notes", f
    rec = clean.redis_cmd("HGETALL", "{llmr}:res:" + f.name)
    rec = dict(zip(rec[::2], rec[1::2]))
    owner_group, owner_key = rec["group"], rec["key"]
    assert rec["client"] == "main" and owner_key == "flash-g" + owner_group[-1]
    assert 0 < int(clean.redis_cmd("TTL", "{llmr}:res:" + f.name)) <= 48 * 3600
    # The SDK's own generate_content with the File object.
    r = client.models.generate_content(model=FLASH, contents=[f, "When is the meeting?"])
    assert r.text
    body = {"contents": [{"role": "user", "parts": [{"text": "When is the meeting?"},
                                                    {"fileData": {"mimeType": "text/plain", "fileUri": f.uri}}]}]}

    def one(i):
        return requests.post(f"{w.url}/v1beta/models/{FLASH}:generateContent", json=body,
                             headers={"x-goog-api-key": MAIN}, timeout=60)

    # A burst of 12 across a 3-group pool (4 rpm per group): the owner's group serves what it
    # can (3 more this minute), the rest wait for it: 429 with when it frees, never a 403.
    with ThreadPoolExecutor(12) as ex:
        answers = list(ex.map(one, range(12)))
    ok = [a for a in answers if a.status_code == 200]
    assert {a.headers["x-router-key-id"] for a in ok} == {owner_key}
    assert len(ok) == 3, [a.status_code for a in answers]
    for a in answers:
        if a.status_code != 200:
            assert a.status_code == 429, a.text
            assert int(a.headers["retry-after"]) >= 1
    st = clean.mock_stats()
    for label, k in st["keys"].items():
        if label != owner_key:
            assert k["requests"] == 0, (label, k)
    # No 403 (or any other error) anywhere: nothing went to another project.
    assert all(g["errors"] == 0 and g["status_429"] == 0 for g in st["groups"].values()), st["groups"]


def test_files_get_list_delete_belong_to_the_creating_client_and_multipart_uploads_work(env, clean):
    import requests

    w = files_worker(env)
    client = genai_client(w)
    import io
    f = client.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})
    assert client.files.get(name=f.name).name == f.name
    # Multipart, as the REST API documents it.
    boundary = "xyzzy"
    mp = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
          '{"file": {"displayName": "mp"}}\r\n'
          f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n").encode()
    r = requests.post(w.url + "/upload/v1beta/files", data=mp, timeout=30,
                      headers={"x-goog-api-key": MAIN, "X-Goog-Upload-Protocol": "multipart",
                               "Content-Type": f"multipart/related; boundary={boundary}"})
    assert r.status_code == 200, r.text
    mp_name = r.json()["file"]["name"]
    names = sorted(x.name for x in client.files.list())
    assert names == sorted([f.name, mp_name])
    # Another client sees none of them.
    other = genai_client(w, OTHER)
    assert list(other.files.list()) == []
    r = requests.get(f"{w.url}/v1beta/{f.name}", headers={"x-goog-api-key": OTHER}, timeout=30)
    assert r.status_code == 404, r.text
    client.files.delete(name=f.name)
    assert [x.name for x in client.files.list()] == [mp_name]
    assert clean.redis_cmd("EXISTS", "{llmr}:res:" + f.name) == 0


def test_a_cached_content_is_created_with_its_files_owner_and_routed_there(env, clean):
    import io

    import requests

    w = files_worker(env)
    client = genai_client(w)
    f = client.files.upload(file=io.BytesIO(b"long context"), config={"mime_type": "text/plain"})
    owner = clean.redis_cmd("HGET", "{llmr}:res:" + f.name, "group")
    r = requests.post(w.url + "/v1beta/cachedContents", timeout=30, headers={"x-goog-api-key": MAIN},
                      json={"model": f"models/{FLASH}", "ttl": "600s",
                            "contents": [{"role": "user", "parts": [{"fileData": {"fileUri": f.uri, "mimeType": "text/plain"}}]}]})
    assert r.status_code == 200, r.text
    name = r.json()["name"]
    assert clean.redis_cmd("HGET", "{llmr}:res:" + name, "group") == owner
    assert 0 < int(clean.redis_cmd("TTL", "{llmr}:res:" + name)) <= 600
    for i in range(3):
        g = requests.post(f"{w.url}/v1beta/models/{FLASH}:generateContent", timeout=60, headers={"x-goog-api-key": MAIN},
                          json={"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": f"q{i}"}]}]})
        assert g.status_code == 200, g.text
        assert g.headers["x-router-key-id"] == "flash-g" + owner[-1]
    # Naming a file adds no Redis round trip: reserve and settle only.
    clean.rest_stats_reset()
    g = requests.post(f"{w.url}/v1beta/models/{FLASH}:generateContent", timeout=60, headers={"x-goog-api-key": MAIN},
                      json={"contents": [{"role": "user", "parts": [{"text": "x"}, {"fileData": {"fileUri": f.uri}}]}]})
    assert g.status_code in (200, 429), g.text
    assert clean.rest_stats()["http_requests"] == (2 if g.status_code == 200 else 1)
