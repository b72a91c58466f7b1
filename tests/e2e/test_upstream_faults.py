"""Whose fault an upstream error is, end to end (issue 11): a 403 about the request goes back to
the caller and changes no shared state; a 403 about the key disables exactly that key; and the
walk over keys never exceeds MAX_ATTEMPTS."""

import json

import requests
from google import genai
from google.genai import types

from .conftest import MAIN, fake_key, mock_config

FLASH = "gemini-2.5-flash"
FLASH_KEYS = {"gemini-flash-01", "gemini-flash-02"}
FOREIGN_FILE = "https://generativelanguage.googleapis.com/v1beta/files/abc123"


def with_file(uri=FOREIGN_FILE):
    return [{"role": "user", "parts": [{"text": "Describe this file."}, {"fileData": {"mimeType": "image/png", "fileUri": uri}}]}]


def assert_pool_untouched(env, worker):
    """No key disabled, no group cooling, and /health agrees."""
    assert env.redis_cmd("KEYS", "{llmr}:dis:*") == []
    assert env.redis_cmd("KEYS", "{llmr}:cd:*") == []
    keys = worker.get("/health").json()["components"]["keys"]
    assert keys["disabled"] == 0 and keys["cooling"] == 0 and keys["active"] == 3, keys


def test_resource_403_goes_to_the_caller_and_every_key_stays_active(worker, clean):
    r = worker.post("/v1/generate", {"contents": with_file(), "model": FLASH})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "upstream_rejected"
    assert err["upstream_status"] == "PERMISSION_DENIED"
    assert "You do not have permission to access the File abc123" in err["message"]
    assert err["retryable"] is False
    # No failover: Google would answer the same on every key.
    assert clean.mock_stats()["total_requests"] == 1
    assert_pool_untouched(clean, worker)

    # The same on the native surface (unary and stream), with a cachedContent of another
    # project, and through the google-genai SDK: Gemini's own status and message.
    r = worker.post(f"/v1beta/models/{FLASH}:generateContent", {"contents": with_file()})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED", r.text
    r = worker.post(f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", {"contents": with_file()})
    assert r.status_code == 403 and "File abc123" in r.json()["error"]["message"], r.text
    r = worker.post(f"/v1beta/models/{FLASH}:generateContent",
                    {"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": "cachedContents/of-another-project"})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED", r.text
    c = genai.Client(api_key=MAIN, http_options=types.HttpOptions(base_url=worker.url))
    try:
        c.models.generate_content(model=FLASH, contents=[
            "Describe this file.", types.Part.from_uri(file_uri=FOREIGN_FILE, mime_type="image/png")])
        raise AssertionError("expected a 403")
    except genai.errors.ClientError as e:
        assert e.code == 403 and "File abc123" in str(e)
    assert clean.mock_stats()["total_requests"] == 5
    assert_pool_untouched(clean, worker)

    # Every following request succeeds, on every key of the model.
    used = set()
    for _ in range(4):
        r = worker.generate("What is 2+2?")
        assert r.status_code == 200, r.text
        assert [a["outcome"] for a in r.json()["attempts"]] == ["success"]
        used.add(r.json()["key_id"])
    assert used == FLASH_KEYS
    # The reservations of the refused requests were released (a 4xx the request caused):
    # only the 4 successes count in the rolling window.
    st = worker.get("/stats").json()
    assert sum(k["usage"]["rpm"]["used"] for k in st["keys"] if k["key_id"] in FLASH_KEYS) == 4, st["keys"]


def test_key_level_403_disables_exactly_one_key(worker, clean):
    clean.fault("403_service_blocked", 1)
    r = worker.generate("What is 2+2?")
    assert r.status_code == 200, r.text
    attempts = r.json()["attempts"]
    assert [a["outcome"] for a in attempts] == ["key_rejected", "success"]
    bad = attempts[0]["key_id"]
    assert clean.redis_cmd("KEYS", "{llmr}:dis:*") == [f"{{llmr}}:dis:{bad}"]
    assert clean.redis_cmd("HGET", f"{{llmr}}:dis:{bad}", "reason") == "403 API_KEY_SERVICE_BLOCKED"
    assert clean.redis_cmd("KEYS", "{llmr}:cd:*") == []
    h = worker.get("/health").json()["components"]["keys"]
    assert h["disabled"] == 1 and h["active"] == 2, h
    for _ in range(3):
        r = worker.generate("What is 2+2?")
        assert r.status_code == 200 and r.json()["key_id"] == (FLASH_KEYS - {bad}).pop()


def test_failover_walk_stops_at_max_attempts(env, clean):
    """Five keys of one model, every one blocked at Google: the request reaches exactly
    MAX_ATTEMPTS of them, and the keys it never reached stay active."""
    keys = {"keys": [{"key_id": f"blocked-{i}", "model_name": FLASH, "provider": "gemini", "rpm": 10,
                      "tpm": 250000, "rpd": 1500, "active": True} for i in range(5)]}
    cfg = mock_config(keys)
    for k in cfg["keys"]:
        k["service_blocked"] = True
    requests.put(env.mock.url + "/_mock/config", json=cfg, timeout=10).raise_for_status()
    w = env.start_worker(keys=keys, vars={"MAX_ATTEMPTS": "3"})
    r = w.generate("What is 2+2?")
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert env.mock_stats()["total_requests"] == 3
    assert len(env.redis_cmd("KEYS", "{llmr}:dis:*")) == 3
    # A request-caused 403 stops the walk at the first key, even with room for more attempts.
    env.flush()
    requests.put(env.mock.url + "/_mock/config", json=mock_config(keys), timeout=10).raise_for_status()
    requests.post(env.mock.url + "/_mock/reset", timeout=10).raise_for_status()
    r = w.post("/v1/generate", {"contents": with_file(), "model": FLASH})
    assert r.status_code == 403, r.text
    assert env.mock_stats()["total_requests"] == 1
    assert env.redis_cmd("KEYS", "{llmr}:dis:*") == []


def test_resource_403_never_leaks_the_key(worker, clean):
    """The message passed back is Google's, with any key in it masked."""
    r = worker.post("/v1/generate", {"contents": with_file(), "model": FLASH})
    text = json.dumps(r.json())
    for k in FLASH_KEYS:
        assert fake_key(k) not in text
