"""Compatibility tests for `upstash-local` (tools/upstash-local).

The official Python SDK (`upstash-redis` from PyPI, unchanged) is pointed at the server and
drives a broad set of commands; raw HTTP tests pin down the protocol details that the SDK
hides (status codes, error format, base64 encoding, path form, /multi-exec atomicity,
the /_local/ extras). Every service runs on a free loopback port via tests/stack.py.

Run from the repository root:
    .venv/bin/pytest tests/compat/test_upstash_sdk.py -q
(the release binary target/release/upstash-local must be built first).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stack  # noqa: E402

TOKEN = "test-token-4f1c"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server():
    redis_svc = stack.start_redis()
    try:
        svc = stack.start_upstash_local(redis_svc.port, TOKEN)
    except Exception:
        redis_svc.stop()
        raise
    svc.redis = redis_svc
    try:
        yield svc
    finally:
        svc.stop()
        redis_svc.stop()


@pytest.fixture(scope="module")
def r(server) -> Redis:
    return Redis(url=server.url, token=TOKEN)


@pytest.fixture(autouse=True)
def _clean(server):
    status, body, _ = call(server, "/", ["FLUSHALL"])
    assert status == 200, body
    call(server, "/", ["SCRIPT", "FLUSH"])


def call(server, path: str, body=None, *, token: str | None = TOKEN, method: str | None = None,
         headers: dict | None = None, raw: bytes | None = None):
    """Raw HTTP request → (status, parsed JSON body, response headers)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=data, headers=hdrs,
                                 method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


# --------------------------------------------------------------------------- SDK: data types


def test_strings(r: Redis):
    assert r.set("s:a", "hello") is True
    assert r.get("s:a") == "hello"
    assert r.get("s:missing") is None
    assert r.append("s:a", " world") == 11
    assert r.getrange("s:a", 0, 4) == "hello"
    assert r.incr("s:n") == 1
    assert r.incrby("s:n", 41) == 42
    assert r.decr("s:n") == 41
    assert r.incrbyfloat("s:f", 1.5) == 1.5
    assert r.mset({"s:k1": "v1", "s:k2": "v2"}) is True
    assert r.mget("s:k1", "s:k2", "s:nope") == ["v1", "v2", None]
    assert r.strlen("s:k1") == 2
    # NX only sets a missing key; EX sets a TTL.
    assert r.set("s:nx", "first", nx=True) is True
    assert r.set("s:nx", "second", nx=True) is False
    assert r.get("s:nx") == "first"
    assert r.set("s:ex", "v", ex=100) is True
    assert 0 < r.ttl("s:ex") <= 100
    assert r.set("s:a", "new", get=True) == "hello world"
    assert r.exists("s:a", "s:k1", "s:zzz") == 2
    assert r.delete("s:a", "s:k1") == 2
    assert r.type("s:k2") == "string"  # a status reply other than OK, base64 round trip
    assert r.ping() == "PONG"


def test_hashes(r: Redis):
    assert r.hset("h", "f1", "v1") == 1
    assert r.hset("h", values={"f2": "v2", "f3": "3"}) == 2
    assert r.hget("h", "f1") == "v1"
    assert r.hgetall("h") == {"f1": "v1", "f2": "v2", "f3": "3"}
    assert r.hincrby("h", "f3", 4) == 7
    assert r.hexists("h", "f2") is True
    assert sorted(r.hkeys("h")) == ["f1", "f2", "f3"]
    assert r.hmget("h", "f1", "nope") == ["v1", None]
    assert r.hdel("h", "f1") == 1
    assert r.hlen("h") == 2


def test_lists(r: Redis):
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lpush("l", "z") == 4
    assert r.lrange("l", 0, -1) == ["z", "a", "b", "c"]
    assert r.llen("l") == 4
    assert r.lpop("l") == "z"
    assert r.rpop("l") == "c"
    assert r.lindex("l", 1) == "b"
    assert r.lrange("l", 0, -1) == ["a", "b"]


def test_sets(r: Redis):
    assert r.sadd("set", "a", "b", "c") == 3
    assert r.sadd("set", "a") == 0
    assert sorted(r.smembers("set")) == ["a", "b", "c"]
    assert r.sismember("set", "b") is True
    assert r.scard("set") == 3
    assert r.srem("set", "b") == 1
    r.sadd("set2", "c", "d")
    assert sorted(r.sinter("set", "set2")) == ["c"]


def test_sorted_sets(r: Redis):
    assert r.zadd("z", {"one": 1, "two": 2, "three": 3}) == 3
    assert r.zrange("z", 0, -1) == ["one", "two", "three"]
    assert r.zrange("z", 0, -1, withscores=True) == [("one", 1.0), ("two", 2.0), ("three", 3.0)]
    assert r.zrangebyscore("z", 2, 3) == ["two", "three"]
    assert r.zrange("z", "(1", "+inf", sortby="BYSCORE") == ["two", "three"]
    assert r.zincrby("z", 2.5, "one") == 3.5
    assert r.zscore("z", "one") == 3.5
    assert r.zrem("z", "two", "nope") == 1
    assert r.zcard("z") == 2
    assert r.zrank("z", "three") == 0


def test_expiry(r: Redis):
    r.set("e", "v")
    assert r.ttl("e") == -1
    assert r.expire("e", 100) is True
    assert 90 <= r.ttl("e") <= 100
    assert r.pexpire("e", 50_000) is True
    assert 40_000 <= r.pttl("e") <= 50_000
    assert r.persist("e") is True
    assert r.ttl("e") == -1
    assert r.ttl("e:missing") == -2
    r.set("e2", "v", px=150)
    time.sleep(0.3)
    assert r.get("e2") is None


# --------------------------------------------------------------------------- SDK: batches


def test_pipeline(r: Redis):
    p = r.pipeline()
    p.set("p:a", "1")
    p.incr("p:a")
    p.get("p:a")
    p.hset("p:h", "f", "v")
    p.hgetall("p:h")
    assert p.exec() == [True, 2, "2", 1, {"f": "v"}]


def test_pipeline_error_item_does_not_stop_others(server):
    status, body, _ = call(server, "/pipeline", [["SET", "pe", "x"], ["INCR", "pe"], ["GET", "pe"]])
    assert status == 200
    assert body[0] == {"result": "OK"}
    assert "error" in body[1] and "not an integer" in body[1]["error"]
    assert body[2] == {"result": "x"}


def test_multi(r: Redis):
    tx = r.multi()
    tx.set("t:a", "10")
    tx.incrby("t:a", 5)
    tx.get("t:a")
    tx.rpush("t:l", "x", "y")
    assert tx.exec() == [True, 15, "15", 2]
    assert r.get("t:a") == "15"


# --------------------------------------------------------------------------- SDK: scripting


def test_eval_and_evalsha(r: Redis):
    script = "return {KEYS[1], ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[1])}"
    assert r.eval(script, keys=["sc:k"], args=["5"]) == ["sc:k", "5", 5]
    sha = r.script_load(script)
    assert sha == hashlib.sha1(script.encode()).hexdigest()
    assert r.script_exists(sha, "0" * 40) == [True, False]
    assert r.evalsha(sha, keys=["sc:k"], args=["2"]) == ["sc:k", "2", 7]
    assert r.eval_ro("return redis.call('GET', KEYS[1])", keys=["sc:k"]) == "7"
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        r.evalsha("f" * 40, keys=["sc:k"])
    assert r.script_flush() is True
    assert r.script_exists(sha) == [False]


def test_allow_key_locking_shebang(r: Redis):
    script = "#!lua flags=allow-key-locking\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(script.encode()).hexdigest()
    # The usual client pattern: EVALSHA first, then EVAL on NOSCRIPT, then EVALSHA works.
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        r.evalsha(sha, keys=["lk:{a}"], args=["1"])
    assert r.eval(script, keys=["lk:{a}"], args=["1"]) == 1
    assert r.evalsha(sha, keys=["lk:{a}"], args=["2"]) == 3
    # SCRIPT LOAD answers with the digest of the text the client sent.
    assert r.script_load(script) == sha
    assert r.script_exists(sha) == [True]
    # Other flags survive the rewrite: no-writes still forbids writes.
    ro = "#!lua flags=no-writes,allow-key-locking\nreturn redis.call('SET', KEYS[1], 'x')"
    with pytest.raises(UpstashError, match="(?i)write"):
        r.eval(ro, keys=["lk:{a}"])
    ro_ok = "#!lua flags=allow-key-locking,no-writes\nreturn redis.call('GET', KEYS[1])"
    assert r.eval_ro(ro_ok, keys=["lk:{a}"]) == "3"
    # Lua errors keep the original line numbers (the shebang line is blanked, not removed).
    bad = "#!lua flags=allow-key-locking\nlocal x = 1\nreturn nosuchfunction()"
    with pytest.raises(UpstashError) as exc:
        r.eval(bad)
    assert "user_script:3:" in str(exc.value)


def test_scripts_in_pipeline_and_multi(r: Redis):
    script = "#!lua flags=allow-key-locking\nreturn redis.call('INCR', KEYS[1])"
    sha = hashlib.sha1(script.encode()).hexdigest()
    p = r.pipeline()
    p.script_load(script)
    p.evalsha(sha, keys=["sp:k"])
    assert p.exec() == [sha, 1]
    tx = r.multi()
    tx.evalsha(sha, keys=["sp:k"])
    tx.eval(script, keys=["sp:k"])
    assert tx.exec() == [2, 3]


# --------------------------------------------------------------------------- SDK: values


def test_unicode_values(r: Redis):
    values = {
        "u:emoji": "🔑🚀 key router ✅",
        "u:cjk": "键值存储 キー 열쇠",
        "u:mixed": "naïve café — Ω ≈ ∑ 😀",
    }
    for k, v in values.items():
        assert r.set(k, v) is True
        assert r.get(k) == v
    assert r.strlen("u:emoji") == len(values["u:emoji"].encode())
    assert r.hset("u:h", "🗝", "值") == 1
    assert r.hgetall("u:h") == {"🗝": "值"}
    assert r.mget(*values) == list(values.values())


def test_binary_ish_values(r: Redis):
    # Control characters, NUL, quotes, backslashes and "OK" itself survive JSON + base64.
    v = "\x00\x01\x02\x7f\"\\\n\r\t ÿþ OK"
    assert r.set("b:v", v) is True
    assert r.get("b:v") == v
    assert r.set("b:ok", "OK") is True
    assert r.get("b:ok") == "OK"
    assert r.set("b:empty", "") is True
    assert r.get("b:empty") == ""


def test_one_megabyte_value(r: Redis):
    big = ("0123456789abcdef" * 65536)  # 1 MiB
    assert r.set("big", big) is True
    assert r.strlen("big") == len(big)
    assert r.get("big") == big
    uni = "é" * (512 * 1024)  # 1 MiB of 2-byte characters
    assert r.set("big:u", uni) is True
    assert r.get("big:u") == uni


# --------------------------------------------------------------------------- raw HTTP


def test_auth(server):
    status, body, _ = call(server, "/", ["PING"], token="wrong")
    assert (status, body) == (401, {"error": "Unauthorized"})
    status, body, _ = call(server, "/", ["PING"], token=None)
    assert (status, body) == (401, {"error": "Unauthorized"})
    status, body, _ = call(server, "/_local/stats", token="wrong")
    assert status == 401
    status, body, _ = call(server, f"/ping?_token={TOKEN}", token=None)
    assert (status, body) == (200, {"result": "PONG"})
    status, body, _ = call(server, "/_local/health", token=None)
    assert (status, body) == (200, {"ok": True})


def test_single_command_and_sync_token(server):
    status, body, h1 = call(server, "/", ["SET", "raw:a", "bar", "EX", 100])
    assert (status, body) == (200, {"result": "OK"})
    status, body, h2 = call(server, "/", ["GET", "raw:a"], headers={"Upstash-Sync-Token": h1["Upstash-Sync-Token"]})
    assert (status, body) == (200, {"result": "bar"})
    assert int(h2["Upstash-Sync-Token"]) > int(h1["Upstash-Sync-Token"])
    # Numbers are sent as their decimal text.
    assert call(server, "/", ["SET", "raw:n", 12.5])[1] == {"result": "OK"}
    assert call(server, "/", ["INCRBYFLOAT", "raw:n", 1])[1] == {"result": "13.5"}
    assert call(server, "/", ["ZADD", "raw:z", 1.5, "m"])[1] == {"result": 1}
    assert call(server, "/", ["GET", "raw:none"])[1] == {"result": None}
    assert call(server, "/", ["LRANGE", "raw:none", 0, -1])[1] == {"result": []}


def test_error_format(server):
    call(server, "/", ["SET", "err:s", "text"])
    status, body, _ = call(server, "/", ["INCR", "err:s"])
    assert status == 400
    assert body == {"error": "ERR value is not an integer or out of range"}
    status, body, _ = call(server, "/", ["NOSUCHCOMMAND", "x"])
    assert status == 400 and body["error"].startswith("ERR unknown command")
    status, body, _ = call(server, "/", ["LPUSH", "err:s", "x"])
    assert status == 400 and body["error"].startswith("WRONGTYPE")
    status, body, _ = call(server, "/", ["EVALSHA", "a" * 40, 0])
    assert status == 400 and body["error"].startswith("NOSCRIPT")
    status, body, _ = call(server, "/", raw=b"not json")
    assert status == 400 and "error" in body
    status, body, _ = call(server, "/", [])
    assert status == 400 and "error" in body
    for cmd in (["BLPOP", "q", 0], ["MULTI"], ["WATCH", "k"], ["SUBSCRIBE", "ch"], ["BZPOPMIN", "z", 1]):
        status, body, _ = call(server, "/", cmd)
        assert status == 400, cmd
        assert "not available" in body["error"], body


def test_path_form(server):
    status, body, _ = call(server, "/set/path:k/hello%20world%2F%F0%9F%94%91", method="GET")
    assert (status, body) == (200, {"result": "OK"})
    assert call(server, "/get/path:k", method="GET")[1] == {"result": "hello world/🔑"}
    # POST body in path form is the last argument, sent as raw bytes.
    status, body, _ = call(server, "/set/path:body", raw=b'{"json": "as a value"}')
    assert (status, body) == (200, {"result": "OK"})
    assert call(server, "/get/path:body")[1] == {"result": '{"json": "as a value"}'}
    assert call(server, "/incrby/path:n/5", method="POST", raw=b"")[1] == {"result": 5}
    status, body, _ = call(server, "/incr/path:k", method="GET")
    assert status == 400 and "error" in body


def test_base64_encoding_and_binary(server):
    b64h = {"Upstash-Encoding": "base64"}
    blob = bytes(range(256)) + b"\xff\xfe\x00OK"
    assert call(server, "/set/bin:blob", raw=blob)[1] == {"result": "OK"}
    status, body, _ = call(server, "/", ["GET", "bin:blob"], headers=b64h)
    assert status == 200
    assert base64.b64decode(body["result"]) == blob  # byte-exact with base64
    # Without base64 invalid UTF-8 is replaced (lossy), like a JSON encoder must.
    status, body, _ = call(server, "/", ["GETRANGE", "bin:blob", 255, 257])
    assert body == {"result": "\ufffd\ufffd\ufffd"}
    # Every string is encoded except the status reply OK; numbers and nulls untouched.
    assert call(server, "/", ["SET", "bin:s", "hi"], headers=b64h)[1] == {"result": "OK"}
    assert call(server, "/", ["GET", "bin:s"], headers=b64h)[1] == {"result": base64.b64encode(b"hi").decode()}
    assert call(server, "/", ["PING"], headers=b64h)[1] == {"result": base64.b64encode(b"PONG").decode()}
    assert call(server, "/", ["INCR", "bin:i"], headers=b64h)[1] == {"result": 1}
    assert call(server, "/", ["GET", "bin:none"], headers=b64h)[1] == {"result": None}
    call(server, "/", ["RPUSH", "bin:l", "a", "OK"])
    assert call(server, "/", ["LRANGE", "bin:l", 0, -1], headers=b64h)[1] == {"result": ["YQ==", "T0s="]}
    status, body, _ = call(server, "/pipeline", [["SET", "bin:p", "v"], ["GET", "bin:p"], ["INCR", "bin:p"]], headers=b64h)
    assert body[0] == {"result": "OK"} and body[1] == {"result": "dg=="}
    assert body[2]["error"].startswith("ERR")  # errors are never encoded


def test_multi_exec_atomicity(server):
    call(server, "/", ["SET", "mx:a", "0"])
    status, body, _ = call(server, "/multi-exec", [["INCR", "mx:a"], ["INCR", "mx:a"], ["GET", "mx:a"]])
    assert (status, body) == (200, [{"result": 1}, {"result": 2}, {"result": "2"}])
    # A command that fails to queue discards the whole transaction: a single error,
    # and nothing before it was applied.
    status, body, _ = call(server, "/multi-exec", [["SET", "mx:a", "99"], ["NOSUCHCMD"], ["SET", "mx:b", "1"]])
    assert status == 400
    assert isinstance(body, dict) and "EXECABORT" in body["error"]
    assert call(server, "/", ["GET", "mx:a"])[1] == {"result": "2"}
    assert call(server, "/", ["EXISTS", "mx:b"])[1] == {"result": 0}
    # A runtime error inside EXEC is per item (Redis semantics); the others still apply.
    call(server, "/", ["SET", "mx:s", "text"])
    status, body, _ = call(server, "/multi-exec", [["SET", "mx:c", "1"], ["INCR", "mx:s"], ["INCR", "mx:c"]])
    assert status == 200
    assert body[0] == {"result": "OK"} and "error" in body[1] and body[2] == {"result": 2}
    # Blocked commands are rejected as a whole.
    status, body, _ = call(server, "/multi-exec", [["SET", "mx:d", "1"], ["WATCH", "mx:d"]])
    assert status == 400 and "not available" in body["error"]
    assert call(server, "/", ["EXISTS", "mx:d"])[1] == {"result": 0}


def test_local_stats(server, r: Redis):
    assert call(server, "/_local/stats/reset", method="POST", raw=b"")[0] == 200
    r.set("st:a", "1")
    r.get("st:a")
    p = r.pipeline()
    p.incr("st:a")
    p.incr("st:a")
    p.incr("st:a")
    p.exec()
    tx = r.multi()
    tx.get("st:a")
    tx.get("st:a")
    tx.exec()
    call(server, "/get/st:a")
    status, stats, _ = call(server, "/_local/stats")
    assert status == 200
    assert stats == {
        "http_requests": 5,
        "commands": 2 + 3 + 2 + 1,
        "by_path": {"/": 2, "/pipeline": 1, "/multi-exec": 1, "path_form": 1},
    }
    call(server, "/_local/stats/reset", method="POST", raw=b"")
    assert call(server, "/_local/stats")[1]["http_requests"] == 0


def test_fault_injection(server, r: Redis):
    r.set("fi:a", "1")
    assert call(server, "/_local/fault", {"down": True})[0] == 200
    try:
        status, body, _ = call(server, "/", ["GET", "fi:a"])
        assert (status, body) == (503, {"error": "ERR redis unavailable (fault injected)"})
        status, body, _ = call(server, "/pipeline", [["GET", "fi:a"]])
        assert status == 503
        with pytest.raises(UpstashError, match="unavailable"):
            r.get("fi:a")
        assert call(server, "/_local/health", token=None)[0] == 200
    finally:
        assert call(server, "/_local/fault", {"down": False})[0] == 200
    assert r.get("fi:a") == "1"


def test_redis_outage_gives_fast_503_and_recovers():
    redis_svc = stack.start_redis()
    svc = stack.start_upstash_local(redis_svc.port, TOKEN)
    try:
        assert call(svc, "/", ["SET", "o:a", "1"])[1] == {"result": "OK"}
        redis_svc.stop()
        for _ in range(3):
            t0 = time.monotonic()
            status, body, _ = call(svc, "/", ["GET", "o:a"])
            assert status == 503, body
            assert body["error"].startswith("ERR redis unavailable")
            assert time.monotonic() - t0 < 3
        redis_svc = stack.start_redis(redis_svc.port)
        status, body, _ = call(svc, "/", ["SET", "o:a", "2"])
        assert (status, body) == (200, {"result": "OK"})
        assert call(svc, "/", ["GET", "o:a"])[1] == {"result": "2"}
    finally:
        svc.stop()
        redis_svc.stop()


# --------------------------------------------------------------------------- load sanity


def test_200_concurrent_requests(server):
    """200 requests in flight at once (single commands, pipelines and transactions), in 3
    bounded rounds over keep-alive connections, all succeed; each transaction's two INCRs
    are adjacent, proving that concurrent transactions never share a Redis connection."""
    n, rounds = 200, 3
    port = int(server.url.rsplit(":", 1)[1])
    barrier = threading.Barrier(n, timeout=30)

    def worker(i: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if i % 3 == 0:
            path, body = "/", ["INCR", "load:single"]
        elif i % 3 == 1:
            path, body = "/pipeline", [["INCR", "load:pipe"], ["SET", f"load:k{i}", "v" * 100]]
        else:
            path, body = "/multi-exec", [["INCR", "load:tx"], ["INCR", "load:tx"]]
        out = []
        try:
            conn.connect()
            for _ in range(rounds):
                barrier.wait()  # release all 200 requests together
                conn.request("POST", path, body=json.dumps(body),
                              headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
                resp = conn.getresponse()
                out.append((i, resp.status, json.loads(resp.read())))
        finally:
            conn.close()
        return out

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = [item for chunk in pool.map(worker, range(n)) for item in chunk]
    elapsed = time.monotonic() - t0
    assert len(results) == n * rounds
    for i, status, body in results:
        assert status == 200, (i, body)
        if i % 3 == 2:
            a, b = body[0]["result"], body[1]["result"]
            assert b == a + 1, body
    assert call(server, "/", ["GET", "load:single"])[1] == {"result": str(rounds * 67)}
    assert call(server, "/", ["GET", "load:pipe"])[1] == {"result": str(rounds * 67)}
    assert call(server, "/", ["GET", "load:tx"])[1] == {"result": str(rounds * 66 * 2)}
    assert elapsed < 20, f"{n * rounds} requests took {elapsed:.1f}s"
