"""Access control, per-client and global limits, the kill switch and hostile input, end to end
against the real worker in workerd (issue 6). The secret scan is test_zz_secret_scan.py."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from .conftest import CLIENT_TOKENS, MAIN, SEED_KEYS, fake_key

FLASH = "gemini-2.5-flash"
TOK = {v[0]: t for t, v in CLIENT_TOKENS.items()}

# Keys with room for every test here, so key quota is never what limits a request.
BIG_KEYS = {
    "keys": [
        {"key_id": f"big-flash-0{i}", "model_name": FLASH, "provider": "gemini", "rpm": 1000, "tpm": 10_000_000,
         "rpd": 100_000, "active": True}
        for i in (1, 2)
    ]
}


@pytest.fixture(scope="module")
def big(env):
    """A worker whose key pool never runs out during these tests."""
    w = env.start_worker(keys=BIG_KEYS, vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000"})
    yield w
    w.svc.stop()


@pytest.fixture()
def bigclean(clean):
    clean.mock_reset(BIG_KEYS)
    yield clean


def error_of(r) -> dict:
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status_code, r.text[:300])
    return r.json()["error"]


# --- 1. Auth matrix ---------------------------------------------------------------------------

def conv_id_of(w, token=MAIN) -> str:
    r = w.as_client(token).post(w.url + "/v1/conversations", json={"model": FLASH}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def matrix_routes(cid: str):
    """(name, method, path, json body, scopes needed). Conversation routes use a conversation
    of the caller's own, created by `main` (admin) - other clients see it as not found, which
    is past the auth check and so good enough here."""
    gen = {"prompt": "What is 2+2?", "model": FLASH}
    return [
        ("stats", "GET", "/stats", None, {"stats"}),
        ("metrics", "GET", "/metrics", None, {"stats"}),
        ("generate", "POST", "/v1/generate", gen, {"generate"}),
        ("conv create", "POST", "/v1/conversations", {"model": FLASH}, {"conversations"}),
        ("conv list", "GET", "/v1/conversations", None, {"conversations"}),
        ("conv get", "GET", f"/v1/conversations/{cid}", None, {"conversations"}),
        ("conv messages", "GET", f"/v1/conversations/{cid}/messages", None, {"conversations"}),
        ("conv send", "POST", f"/v1/conversations/{cid}/messages", {"content": "What is 2+2?"},
         {"conversations", "generate"}),
        ("conv delete", "DELETE", f"/v1/conversations/{cid}", None, {"conversations"}),
    ]


def call(session, w, method, path, body, **kw):
    return session.request(method, w.url + path, json=body, timeout=60, **kw)


def test_no_token_and_bad_token_get_401_everywhere_but_health(big, bigclean):
    cid = conv_id_of(big)
    bad_sessions = {
        "no token": big.as_client(None),
        "unknown bearer": big.as_client("tok-nobody-0123456789"),
        "almost a token": big.as_client(MAIN + "x"),
        "prefix of a token": big.as_client(MAIN[:-1]),
    }
    basic = requests.Session()
    basic.headers["Authorization"] = f"Basic {MAIN}"  # right secret, wrong scheme
    bad_sessions["basic scheme"] = basic
    goog = requests.Session()
    goog.headers["x-goog-api-key"] = "AIzaSyNotAClientToken000000000000000000"
    bad_sessions["unknown x-goog-api-key"] = goog
    for label, s in bad_sessions.items():
        for name, method, path, body, _ in matrix_routes(cid):
            r = call(s, big, method, path, body)
            assert r.status_code == 401, (label, name, r.status_code, r.text)
            e = error_of(r)
            assert e["code"] == "unauthorized", (label, name, e)
        # /health answers without a token, but with the verdict only.
        h = s.get(big.url + "/health", timeout=30)
        assert h.status_code == 200 and h.json() == {"status": "healthy"}, (label, h.text)
    # Nothing reached Gemini, and the conversation is untouched.
    assert bigclean.mock_stats()["total_requests"] == 0
    assert big.get(f"/v1/conversations/{cid}").json()["message_count"] == 0


@pytest.mark.parametrize("client", ["main", "other", "gen-only", "conv-only", "stats-only", "limited"])
def test_each_scope_against_each_route(big, bigclean, client):
    token = TOK[client]
    scopes = set(CLIENT_TOKENS[token][1])
    if "admin" in scopes:
        scopes = {"generate", "conversations", "stats", "admin"}
    s = big.as_client(token)
    # A conversation of the caller's own where it may have one, so allowed calls really succeed.
    cid = conv_id_of(big, token if "conversations" in scopes else MAIN)
    for name, method, path, body, needed in matrix_routes(cid):
        r = call(s, big, method, path, body)
        if needed <= scopes:
            assert r.status_code not in (401, 403), (client, name, r.status_code, r.text)
            if name in ("stats", "metrics"):
                # Built by another engineer; until then a 404/501 "not implemented" is fine.
                assert r.status_code in (200, 404, 501), (client, name, r.status_code, r.text)
            else:
                assert r.status_code in (200, 201), (client, name, r.status_code, r.text)
        else:
            assert r.status_code == 403, (client, name, r.status_code, r.text)
            e = error_of(r)
            assert e["code"] == "forbidden" and e["status"] == 403, (client, name, e)
            assert any(sc in e["message"] for sc in needed), e
    # /health: with any valid token the details are shown.
    h = s.get(big.url + "/health", timeout=30)
    assert h.status_code == 200 and h.json()["router_enabled"] is True
    # Forbidden calls consumed no key quota: the mock saw only the allowed model calls.
    model_calls = sum(1 for n, *_, needed in matrix_routes(cid) if needed <= scopes and n in ("generate", "conv send"))
    assert bigclean.mock_stats()["total_requests"] == model_calls


def test_x_goog_api_key_is_accepted_as_the_token(big, bigclean):
    s = requests.Session()
    s.headers["x-goog-api-key"] = TOK["gen-only"]
    r = s.post(big.url + "/v1/generate", json={"prompt": "What is 2+2?", "model": FLASH}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == "4"
    # Scopes still apply to a token given this way.
    r = s.get(big.url + "/v1/conversations", timeout=30)
    assert r.status_code == 403 and error_of(r)["code"] == "forbidden"
    # A valid x-goog-api-key is not spoiled by an unrelated non-Bearer Authorization header.
    r = s.post(big.url + "/v1/generate", json={"prompt": "What is 2+2?", "model": FLASH},
               headers={"Authorization": "Basic Zm9vOmJhcg=="}, timeout=60)
    assert r.status_code == 200, r.text
    h = s.get(big.url + "/health", timeout=30)
    assert h.json()["router_enabled"] is True


def test_gemini_native_surface_accepts_x_goog_api_key(big, bigclean):
    """The google-genai SDK sends its key in x-goog-api-key. Skipped until that surface exists."""
    path = f"/v1beta/models/{FLASH}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}]}
    probe = big.http.post(big.url + path, json=body, timeout=60)
    if probe.status_code in (404, 405):
        pytest.skip("Gemini-native surface not built yet")
    s = requests.Session()
    s.headers["x-goog-api-key"] = TOK["gen-only"]
    r = s.post(big.url + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    s.headers["x-goog-api-key"] = TOK["conv-only"]
    assert s.post(big.url + path, json=body, timeout=60).status_code == 403
    s.headers["x-goog-api-key"] = "nope-0123456789"
    assert s.post(big.url + path, json=body, timeout=60).status_code == 401


# --- 2. Per-client and global limits ----------------------------------------------------------

def burst(session, url, n=30, parallel=10):
    def one(_):
        return session.post(url + "/v1/generate", json={"prompt": "What is 2+2?", "model": FLASH}, timeout=60)

    with ThreadPoolExecutor(parallel) as ex:
        return list(ex.map(one, range(n)))


def check_limited(rs, limit_kind: str, burst_size: int):
    ok = [r for r in rs if r.status_code == 200]
    refused = [r for r in rs if r.status_code != 200]
    assert len(ok) == burst_size, [(r.status_code, r.text[:200]) for r in refused]
    assert len(refused) == len(rs) - burst_size
    for r in refused:
        assert r.status_code == 429, r.text
        e = error_of(r)
        assert e["code"] == "rate_limited" and e["limit"] == limit_kind, e
        assert e["retryable"] is True
        assert 1 <= int(r.headers["retry-after"]) <= 61, r.headers
        assert int(r.headers["x-ratelimit-limit"]) == burst_size, r.headers
        assert int(r.headers["x-ratelimit-remaining"]) == 0, r.headers
        assert 1 <= int(r.headers["x-ratelimit-reset"]) <= 61, r.headers


def test_client_burst_of_30_lets_exactly_20_through(big, bigclean):
    rs = burst(big.as_client(TOK["limited"]), big.url)
    check_limited(rs, "client_rate", 20)
    # Refused requests consumed no key quota: the mock saw exactly the 20 admitted ones.
    assert bigclean.mock_stats()["total_requests"] == 20
    # The bucket is per client: another client is unaffected.
    r = big.as_client(TOK["other"]).post(big.url + "/v1/generate", json={"prompt": "hi", "model": FLASH}, timeout=60)
    assert r.status_code == 200, r.text
    # The refill is rpm 10 per minute: about one request every 6 s.
    r = big.as_client(TOK["limited"]).post(big.url + "/v1/generate", json={"prompt": "hi", "model": FLASH}, timeout=60)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) <= 6


def test_global_burst_of_30_lets_exactly_20_through(env, bigclean):
    w = env.start_worker(keys=BIG_KEYS, vars={"GLOBAL_RPM_MAX": "1", "GLOBAL_BURST_MAX": "20",
                                              "USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000"})
    try:
        # Three clients share the global bucket; each has a high per-client limit.
        sessions = [w.as_client(TOK[c]) for c in ("main", "other", "gen-only")]
        rs = []
        with ThreadPoolExecutor(10) as ex:
            rs = list(ex.map(lambda i: sessions[i % 3].post(
                w.url + "/v1/generate", json={"prompt": "What is 2+2?", "model": FLASH}, timeout=60), range(30)))
        check_limited(rs, "global_rate", 20)
        assert bigclean.mock_stats()["total_requests"] == 20
    finally:
        w.svc.stop()


# --- 3. Hostile input -------------------------------------------------------------------------

CONV = "conv_" + "0123456789abcdef" * 2  # well-formed, never created
JSON = {"content-type": "application/json"}
G = "/v1/generate"


def J(v) -> bytes:
    return json.dumps(v).encode()


# (name, method, path, headers, raw body, expected status, expected code)
HOSTILE = [
    # malformed / truncated JSON
    ("truncated json", "POST", G, JSON, b'{"prompt": "x", "model"', 400, "invalid_json"),
    ("unquoted keys", "POST", G, JSON, b"{prompt: x}", 400, "invalid_json"),
    ("trailing garbage", "POST", G, JSON, b'{"prompt":"x","model":"m"} xx', 400, "invalid_json"),
    ("empty body", "POST", G, JSON, b"", 400, "invalid_json"),
    ("NaN literal", "POST", G, JSON, b'{"prompt":"x","model":"gemini-2.5-flash","temperature":NaN}', 400, "invalid_json"),
    ("Infinity literal", "POST", G, JSON, b'{"prompt":"x","model":"gemini-2.5-flash","temperature":Infinity}', 400, "invalid_json"),
    ("number out of f64 range", "POST", G, JSON, b'{"prompt":"x","model":"gemini-2.5-flash","temperature":1e400}', 400, "invalid_json"),
    ("deeply nested arrays", "POST", G, JSON, b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    ("deeply nested field", "POST", G, JSON, b'{"prompt":' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json"),
    # wrong shapes and types
    ("null body", "POST", G, JSON, b"null", 400, "invalid_body"),
    ("array body", "POST", G, JSON, b"[]", 400, "invalid_body"),
    ("string body", "POST", G, JSON, b'"hostile"', 400, "invalid_body"),
    ("number body", "POST", G, JSON, b"42", 400, "invalid_body"),
    ("prompt is a number", "POST", G, JSON, J({"prompt": 5, "model": FLASH}), 400, "invalid_field"),
    ("prompt is an object", "POST", G, JSON, J({"prompt": {"text": "x"}, "model": FLASH}), 400, "invalid_field"),
    ("model is a number", "POST", G, JSON, J({"prompt": "x", "model": 7}), 400, "invalid_field"),
    ("contents is an object", "POST", G, JSON, J({"contents": {"parts": [{"text": "x"}]}, "model": FLASH}), 400, "invalid_field"),
    ("role system", "POST", G, JSON, J({"contents": [{"role": "system", "parts": [{"text": "x"}]}], "model": FLASH}), 400, "invalid_field"),
    ("role not a string", "POST", G, JSON, J({"contents": [{"role": False, "parts": [{"text": "x"}]}], "model": FLASH}), 400, "invalid_field"),
    ("part text not a string", "POST", G, JSON, J({"contents": [{"parts": [{"text": 5}]}], "model": FLASH}), 400, "invalid_field"),
    ("parts not an array", "POST", G, JSON, J({"contents": [{"parts": "x"}], "model": FLASH}), 400, "invalid_field"),
    ("allow_fallback string", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "allow_fallback": "yes"}), 400, "invalid_field"),
    ("system not a string", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "system": ["x"]}), 400, "invalid_field"),
    ("unknown field", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "hostile_field": 1}), 400, "unknown_field"),
    ("prompt and contents", "POST", G, JSON, J({"prompt": "x", "contents": [{"parts": [{"text": "x"}]}], "model": FLASH}), 400, "invalid_body"),
    ("stream true", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "stream": True}), 400, "unsupported_field"),
    # missing fields / empty messages
    ("no prompt", "POST", G, JSON, J({"model": FLASH}), 400, "missing_field"),
    ("no model", "POST", G, JSON, J({"prompt": "x"}), 400, "missing_field"),
    ("empty prompt", "POST", G, JSON, J({"prompt": "", "model": FLASH}), 400, "empty_message"),
    ("blank prompt", "POST", G, JSON, J({"prompt": " \n\t ", "model": FLASH}), 400, "empty_message"),
    ("empty contents", "POST", G, JSON, J({"contents": [], "model": FLASH}), 400, "empty_message"),
    ("empty parts", "POST", G, JSON, J({"contents": [{"role": "user", "parts": []}], "model": FLASH}), 400, "empty_message"),
    # encoding and media type
    ("invalid utf-8", "POST", G, JSON, b'{"prompt":"\xff\xfe\xc3","model":"gemini-2.5-flash"}', 400, "invalid_utf8"),
    ("text/plain", "POST", G, {"content-type": "text/plain"}, J({"prompt": "x", "model": FLASH}), 415, "unsupported_media_type"),
    ("no content-type", "POST", G, {}, J({"prompt": "x", "model": FLASH}), 415, "unsupported_media_type"),
    ("form content-type", "POST", G, {"content-type": "application/x-www-form-urlencoded"}, b"prompt=x&model=m", 415, "unsupported_media_type"),
    ("json-ish content-type", "POST", G, {"content-type": "application/jsonx"}, J({"prompt": "x", "model": FLASH}), 415, "unsupported_media_type"),
    ("body over 20 MiB", "POST", G, JSON, J({"prompt": "x" * (20 << 20), "model": FLASH}), 413, "payload_too_large"),
    # bad values
    ("unknown model", "POST", G, JSON, J({"prompt": "x", "model": "gemini-9000-hostile"}), 400, "unknown_model"),
    ("model with redis syntax", "POST", G, JSON, J({"prompt": "x", "model": "hostile*{llmr}:x\n"}), 400, "unknown_model"),
    ("negative temperature", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "temperature": -1}), 400, "invalid_field"),
    ("huge temperature", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "temperature": 1e308}), 400, "invalid_field"),
    ("temperature just over 2", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "temperature": 2.0000001}), 400, "invalid_field"),
    ("temperature as string", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "temperature": "NaN"}), 400, "invalid_field"),
    ("negative max tokens", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "max_output_tokens": -3}), 400, "invalid_field"),
    ("zero max tokens", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "max_output_tokens": 0}), 400, "invalid_field"),
    ("huge max tokens", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "max_output_tokens": 10**30}), 400, "invalid_field"),
    ("u64 overflow max tokens", "POST", G, JSON, b'{"prompt":"x","model":"gemini-2.5-flash","max_output_tokens":18446744073709551616}', 400, "invalid_field"),
    ("fractional max tokens", "POST", G, JSON, J({"prompt": "x", "model": FLASH, "max_output_tokens": 1.5}), 400, "invalid_field"),
    ("conversation_id with *", "POST", G, JSON, J({"prompt": "x", "conversation_id": "conv_*"}), 400, "invalid_conversation_id"),
    ("conversation_id with newline", "POST", G, JSON, J({"prompt": "x", "conversation_id": CONV + "\nFLUSHALL"}), 400, "invalid_conversation_id"),
    ("conversation_id with redis tag", "POST", G, JSON, J({"prompt": "x", "conversation_id": "{llmr}:hostile"}), 400, "invalid_conversation_id"),
    # invalid conversation ids in paths
    ("path id *", "GET", "/v1/conversations/*", {}, None, 400, "invalid_conversation_id"),
    ("path id :", "GET", "/v1/conversations/conv_a:b", {}, None, 400, "invalid_conversation_id"),
    ("path id {", "GET", "/v1/conversations/%7Bllmr%7Dhostile", {}, None, 400, "invalid_conversation_id"),
    ("path id newline", "DELETE", f"/v1/conversations/{CONV}%0A", {}, None, 400, "invalid_conversation_id"),
    ("path id too long", "GET", f"/v1/conversations/{CONV}0", {}, None, 400, "invalid_conversation_id"),
    ("path id too short", "GET", f"/v1/conversations/{CONV[:-1]}", {}, None, 400, "invalid_conversation_id"),
    ("path id uppercase", "GET", f"/v1/conversations/{CONV.upper()}", {}, None, 400, "invalid_conversation_id"),
    ("path id space", "POST", "/v1/conversations/conv%20hostile/messages", JSON, J({"content": "x"}), 400, "invalid_conversation_id"),
    ("path id wildcard on send", "POST", "/v1/conversations/conv_*/messages", JSON, J({"content": "x"}), 400, "invalid_conversation_id"),
    # conversations bodies and queries
    ("create unknown field", "POST", "/v1/conversations", JSON, J({"hostile": 1}), 400, "unknown_field"),
    ("create title too long", "POST", "/v1/conversations", JSON, J({"title": "x" * 501}), 400, "invalid_field"),
    ("create metadata array", "POST", "/v1/conversations", JSON, J({"metadata": [1]}), 400, "invalid_field"),
    ("create metadata too big", "POST", "/v1/conversations", JSON, J({"metadata": {"k": "x" * 20_000}}), 400, "invalid_field"),
    ("create unknown model", "POST", "/v1/conversations", JSON, J({"model": "gemini-9000-hostile"}), 400, "unknown_model"),
    ("create body is array", "POST", "/v1/conversations", JSON, b"[1,2]", 400, "invalid_body"),
    ("send without content", "POST", f"/v1/conversations/{CONV}/messages", JSON, J({"model": FLASH}), 400, "missing_field"),
    ("send content number", "POST", f"/v1/conversations/{CONV}/messages", JSON, J({"content": 5, "model": FLASH}), 400, "invalid_field"),
    ("send empty content", "POST", f"/v1/conversations/{CONV}/messages", JSON, J({"content": "", "model": FLASH}), 400, "empty_message"),
    ("list limit 0", "GET", "/v1/conversations?limit=0", {}, None, 400, "invalid_query"),
    ("list limit huge", "GET", "/v1/conversations?limit=99999999999999999999999", {}, None, 400, "invalid_query"),
    ("list offset negative", "GET", "/v1/conversations?offset=-1", {}, None, 400, "invalid_query"),
    # unknown routes and wrong methods
    ("unknown route", "GET", "/nope", {}, None, 404, "not_found"),
    ("dotfile", "GET", "/.env", {}, None, 404, "not_found"),
    ("v1 root", "GET", "/v1", {}, None, 404, "not_found"),
    ("below generate", "POST", "/v1/generate/x", JSON, J({}), 404, "not_found"),
    ("below a conversation", "GET", f"/v1/conversations/{CONV}/hostile", {}, None, 404, "not_found"),
    ("GET generate", "GET", G, {}, None, 405, "method_not_allowed"),
    ("PUT conversations", "PUT", "/v1/conversations", JSON, J({}), 405, "method_not_allowed"),
    ("PATCH a conversation", "PATCH", f"/v1/conversations/{CONV}", JSON, J({}), 405, "method_not_allowed"),
    ("DELETE messages", "DELETE", f"/v1/conversations/{CONV}/messages", {}, None, 405, "method_not_allowed"),
    ("POST health", "POST", "/health", JSON, J({}), 405, "method_not_allowed"),
]

# Path traversal: the URL parser (workerd) may resolve dot segments before the router sees the
# path, so either answer is fine as long as it is a 4xx with one of these codes.
TRAVERSAL = [
    "/../../etc/passwd",
    "/v1/conversations/../../etc/passwd",
    "/v1/conversations/%2e%2e/%2e%2e/etc/passwd",
    "/v1/conversations/..%2f..%2fetc%2fpasswd",
    "/v1/conversations/conv_..%2F..%2Fhostile/messages",
    "/v1/generate/../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]

MARKERS = ["hostile", "passwd", "gemini-9000", "FLUSHALL", "\n", "*", "..", " "]


def raw_request(url: str, head: bytes, body: bytes = b"", timeout: float = 15) -> tuple[int, bytes]:
    """Sends bytes as they are (no client-side normalisation); returns (status, whole answer)."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(head + body)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    hdr, _, rest = data.partition(b"\r\n\r\n")
                    cl = [ln for ln in hdr.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if cl and len(rest) >= int(cl[0].split(b":")[1]):
                        break
        except socket.timeout:
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def test_hostile_input_table(worker, clean):
    assert len(HOSTILE) + len(TRAVERSAL) >= 30
    failures = []
    for name, method, path, headers, body, status, code in HOSTILE:
        r = worker.http.request(method, worker.url + path, data=body, headers=headers, timeout=60)
        try:
            assert r.status_code == status, f"status {r.status_code}, want {status}: {r.text[:300]}"
            e = error_of(r)
            assert e["code"] == code, f"code {e['code']}, want {code}"
            assert e["status"] == status and isinstance(e["message"], str) and e["message"]
            if status == 405:
                assert r.headers.get("allow") or "use" in e["message"]
        except AssertionError as ex:
            failures.append(f"{name}: {ex}")
    for path in TRAVERSAL:
        head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MAIN}\r\n"
                "Connection: close\r\n\r\n").encode()
        st, data = raw_request(worker.url, head)
        if not (400 <= st < 500):
            failures.append(f"traversal {path}: status {st}: {data[:300]!r}")
            continue
        _, _, b = data.partition(b"\r\n\r\n")
        try:
            code = json.loads(b)["error"]["code"]
        except Exception:  # noqa: BLE001
            code = None
        if code not in ("not_found", "invalid_conversation_id"):
            failures.append(f"traversal {path}: {st} {b[:200]!r}")
    assert not failures, "\n".join(failures)
    # Nothing reached Gemini and nothing hostile reached Redis.
    assert clean.mock_stats()["total_requests"] == 0
    keys = clean.redis_cmd("KEYS", "*")
    assert all(k.startswith("{llmr}:") for k in keys), keys
    for k in keys:
        assert not any(m in k for m in MARKERS), k
    assert "panicked" not in worker.logs()


def test_lying_content_length_is_refused_before_the_body_is_read(worker, clean):
    """Content-Length says 2 MB; only a few bytes follow. The worker refuses on the declared
    length (413), or the HTTP layer refuses the mismatch (4xx): never a 500 or a hang."""
    body = b'{"prompt":"x","model":"gemini-2.5-flash"}'
    head = (f"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MAIN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {2 * 1024 * 1024}\r\nConnection: close\r\n\r\n").encode()
    t0 = time.monotonic()
    st, data = raw_request(worker.url, head, body, timeout=8)
    if st == 0 and time.monotonic() - t0 >= 7.5:
        pytest.skip("the wrangler dev proxy waits for the declared body before forwarding; not testable locally")
    assert st == 413, data[:300]
    _, _, b = data.partition(b"\r\n\r\n")
    assert json.loads(b)["error"]["code"] == "payload_too_large"
    assert clean.mock_stats()["total_requests"] == 0


def test_oversized_and_non_ascii_headers_are_4xx_not_500(worker, clean):
    url = worker.url + "/v1/generate"
    gen = {"prompt": "x", "model": FLASH}
    # A long but bogus token reaches the worker: plain 401.
    r = requests.post(url, json=gen, headers={"Authorization": "Bearer " + "A" * 8000}, timeout=30)
    assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"
    # Large headers: up to the HTTP layer's limit they are simply served (workerd/wrangler
    # accept 64 KiB); beyond it they are refused there (431/400) or the connection is closed.
    # Never a 500.
    for size, must_refuse in ((64 * 1024, False), (1024 * 1024, True)):
        try:
            r = requests.post(url, json=gen, headers={"Authorization": f"Bearer {MAIN}", "x-hostile": "h" * size},
                              timeout=30)
            assert r.status_code < 500, (size, r.status_code, r.text[:200])
            if must_refuse:
                assert 400 <= r.status_code < 500, (size, r.status_code, r.text[:200])
        except requests.ConnectionError:
            assert must_refuse, size  # the connection was closed on the oversized request
    # Many headers.
    many = {f"x-h{i}": "v" * 100 for i in range(300)}
    r = requests.post(url, json=gen, headers={"Authorization": f"Bearer {MAIN}", **many}, timeout=30)
    assert r.status_code < 500, r.status_code
    # Non-ASCII (Latin-1) bytes in Authorization: a multi-byte character across byte 7 used to
    # panic the token parser (found by fuzzing). Must be a plain 401.
    for value in ("abcdef\xe9tok", "Bearer\xe9" + MAIN, "\xe9" * 20):
        r = requests.post(url, json=gen, headers={"Authorization": value}, timeout=30)
        assert r.status_code == 401, (value, r.status_code, r.text[:200])
    r = requests.post(url, json=gen, headers={"x-goog-api-key": "\xff\xfe" * 10}, timeout=30)
    assert r.status_code == 401, r.text[:200]
    # The worker still serves after all that.
    assert worker.generate("What is 2+2?").status_code == 200
    assert "panicked" not in worker.logs()


# --- 4. Kill switch ---------------------------------------------------------------------------

def test_kill_switch_disables_model_routes_only(env, clean):
    w = env.start_worker(vars={"LLM_MULTI_KEY_ROUTER_ENABLED": "false"})
    try:
        r = w.generate("What is 2+2?")
        assert r.status_code == 503
        e = error_of(r)
        assert e["code"] == "router_disabled" and e["status"] == 503
        # Through x-goog-api-key too.
        s = requests.Session()
        s.headers["x-goog-api-key"] = TOK["gen-only"]
        r = s.post(w.url + "/v1/generate", json={"prompt": "x", "model": FLASH}, timeout=30)
        assert r.status_code == 503 and error_of(r)["code"] == "router_disabled"
        # Conversation bookkeeping still works; sending a message is a model call: 503.
        cid = conv_id_of(w)
        r = w.post(f"/v1/conversations/{cid}/messages", {"content": "What is 2+2?"})
        assert r.status_code == 503 and error_of(r)["code"] == "router_disabled"
        assert w.get(f"/v1/conversations/{cid}").json()["message_count"] == 0
        # Auth is still checked first: no token is 401, not 503.
        r = w.as_client(None).post(w.url + "/v1/generate", json={"prompt": "x", "model": FLASH}, timeout=30)
        assert r.status_code == 401
        r = w.as_client(TOK["conv-only"]).post(w.url + "/v1/generate", json={"prompt": "x", "model": FLASH}, timeout=30)
        assert r.status_code == 403
        # /health reports it: details with a token, the verdict only without.
        h = w.get("/health")
        assert h.status_code == 503 and h.json()["router_enabled"] is False
        h = w.as_client(None).get(w.url + "/health", timeout=30)
        assert h.status_code == 503 and h.json() == {"status": "unhealthy"}
        assert clean.mock_stats()["total_requests"] == 0
    finally:
        w.svc.stop()
