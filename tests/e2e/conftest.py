"""End-to-end fixtures: real redis-server, the local Upstash-REST server, the mock Gemini and
the worker in workerd (`wrangler dev`), all on free loopback ports, stopped after the session
even when a test fails."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import time
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stack  # noqa: E402

TOKEN = "local-rest-token-e2e"

# Router clients for the tests: token -> (id, scopes, rpm, burst). Only digests go to the worker.
CLIENT_TOKENS = {
    "tok-main-0123456789": ("main", ["admin"], 100000, 100000),
    "tok-other-0123456789": ("other", ["generate", "conversations"], 100000, 100000),
    "tok-gen-0123456789": ("gen-only", ["generate"], 100000, 100000),
    "tok-conv-0123456789": ("conv-only", ["conversations"], 100000, 100000),
    "tok-stats-0123456789": ("stats-only", ["stats"], 100000, 100000),
    "tok-limited-0123456789": ("limited", ["generate", "conversations"], 10, 20),
}
MAIN = "tok-main-0123456789"


def clients_json(tokens: dict = CLIENT_TOKENS) -> str:
    clients = []
    for tok, (cid, scopes, rpm, burst) in tokens.items():
        clients.append({"id": cid, "token_sha256": hashlib.sha256(tok.encode()).hexdigest(), "scopes": scopes,
                        "rpm": rpm, "burst": burst})
    return json.dumps({"clients": clients}, separators=(",", ":"))
SEED_KEYS = json.loads((stack.ROOT / "keys.json").read_text())


def fake_key(key_id: str) -> str:
    """A mock Gemini key shaped like a real one (AIzaSy + 33 characters)."""
    return "AIzaSy" + hashlib.sha256(key_id.encode()).hexdigest()[:33]


def mock_config(keys: dict, latency_ms: int = 0) -> dict:
    """Mirror of keys.json for the mock: each quota group is one Google project with the same limits."""
    projects: dict = {}
    mkeys = []
    for k in keys["keys"]:
        group = k.get("quota_group", k["key_id"])
        projects.setdefault(group, {})[k["model_name"]] = {"rpm": k["rpm"], "tpm": k["tpm"], "rpd": k["rpd"]}
        mkeys.append({"api_key": fake_key(k["key_id"]), "label": k["key_id"], "project": group})
    return {"latency_ms": latency_ms, "keys": mkeys, "projects": projects, "enforce_quotas": True}


# --- Secret scan support (tests/e2e/test_zz_secret_scan.py) -------------------------------------
# Every response any requests.Session receives during the session; the scan keeps those from
# workers. Streamed bodies that were never read into `.content` are scanned by headers only.
RESPONSES: list = []
_send = requests.Session.send


def _recording_send(self, request, **kw):
    r = _send(self, request, **kw)
    RESPONSES.append(r)
    return r


requests.Session.send = _recording_send

# One Lua call that dumps every key with its type and value (strings, hashes, lists, sets,
# zsets with scores, streams).
REDIS_DUMP_LUA = """
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', k).ok
  local v = {}
  if t == 'string' then v = {redis.call('GET', k)}
  elseif t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'stream' then v = {cjson.encode(redis.call('XRANGE', k, '-', '+'))}
  end
  out[#out + 1] = {k, t, v}
end
return out
"""


def secrets_of(keys_files) -> dict:
    """Every configured secret, by a label that does not reveal it."""
    out = {f"client token of {v[0]}": t for t, v in CLIENT_TOKENS.items()}
    out["UPSTASH_REDIS_REST_TOKEN"] = TOKEN
    for keys in keys_files:
        for k in keys["keys"]:
            out[f"API key of {k['key_id']}"] = fake_key(k["key_id"])
    return out


def find_secrets(text: str, secrets: dict) -> list[str]:
    return [label for label, s in secrets.items() if s in text]


class Worker:
    def __init__(self, svc, env: "Env", keys: dict):
        self.svc = svc
        self.url = svc.url
        self.env = env
        self.keys = keys
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {MAIN}"

    def as_client(self, token: str | None) -> requests.Session:
        """A session that authenticates with another token (None: no token at all)."""
        s = requests.Session()
        if token:
            s.headers["Authorization"] = f"Bearer {token}"
        return s

    def post(self, path, body=None, **kw):
        kw.setdefault("timeout", 60)
        return self.http.post(self.url + path, json=body, **kw)

    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.get(self.url + path, **kw)

    def generate(self, prompt, model="gemini-2.5-flash", **extra):
        return self.post("/v1/generate", {"prompt": prompt, "model": model, **extra})

    def logs(self) -> str:
        return self.svc.logs()


class Env:
    """The shared stack plus a factory for workers with their own settings."""

    def __init__(self):
        self.redis = stack.start_redis()
        self.rest = stack.start_upstash_local(self.redis.port, TOKEN)
        self.mock = stack.start_mock_gemini(mock_config(SEED_KEYS))
        self.workers: list[Worker] = []
        self.redis_leaks: list[str] = []  # secrets found in Redis just before a FLUSHALL
        self.rest_http = requests.Session()
        self.rest_http.headers["Authorization"] = f"Bearer {TOKEN}"

    def start_worker(self, keys: dict | None = None, vars: dict | None = None, secrets: bool = True) -> Worker:
        keys = keys or SEED_KEYS
        v = {
            "UPSTASH_REDIS_REST_URL": self.rest.url,
            "UPSTASH_REDIS_REST_TOKEN": TOKEN,
            "GEMINI_BASE_URL": self.mock.url,
            "KEYS_JSON": json.dumps(keys, separators=(",", ":")),
            "BACKOFF_BASE_MS": "10",
            "BACKOFF_CAP_MS": "50",
            "CLIENTS_JSON": clients_json(),
        }
        if secrets:
            for k in keys["keys"]:
                v["API_KEY_" + k["key_id"].upper().replace("-", "_")] = fake_key(k["key_id"])
        v.update(vars or {})
        w = Worker(stack.start_worker(v), self, keys)
        self.workers.append(w)
        return w

    # --- Redis (through the REST server) and mock helpers -------------------------------------
    def redis_cmd(self, *args):
        r = self.rest_http.post(self.rest.url + "/", json=[str(a) for a in args], timeout=10)
        body = r.json()
        if "error" in body:
            raise RuntimeError(body["error"])
        return body["result"]

    def redis_dump(self) -> list:
        """[[key, type, [values...]], ...] for every key in Redis."""
        return self.redis_cmd("EVAL", REDIS_DUMP_LUA, 0)

    def secrets(self) -> dict:
        return secrets_of([SEED_KEYS] + [w.keys for w in self.workers])

    def flush(self):
        # What a test left in Redis is scanned for secrets before it is wiped.
        try:
            dump = json.dumps(self.redis_dump())
            self.redis_leaks += [f"{label} (before a flush)" for label in find_secrets(dump, self.secrets())]
        except Exception:  # noqa: BLE001 - Redis may be down on purpose (outage tests)
            pass
        self.redis_cmd("FLUSHALL")

    def mock_reset(self, keys: dict | None = None, latency_ms: int = 0):
        requests.put(self.mock.url + "/_mock/config", json=mock_config(keys or SEED_KEYS, latency_ms), timeout=10).raise_for_status()
        requests.post(self.mock.url + "/_mock/reset", timeout=10).raise_for_status()

    def mock_stats(self) -> dict:
        return requests.get(self.mock.url + "/_mock/stats", timeout=10).json()

    def mock_requests(self) -> list:
        return requests.get(self.mock.url + "/_mock/requests", timeout=10).json()

    def fault(self, kind: str, count: int = 1, **kw):
        requests.post(self.mock.url + "/_mock/faults", json={"kind": kind, "count": count, **kw}, timeout=10).raise_for_status()

    def rest_stats(self) -> dict:
        return self.rest_http.get(self.rest.url + "/_local/stats", timeout=10).json()

    def wait_rest_requests(self, n: int, timeout: float = 5.0) -> dict:
        """Polls the REST server until it has answered `n` requests since the last reset: a
        one-shot success settles after its answer (`ctx.wait_until`), shortly after."""
        deadline = time.time() + timeout
        while True:
            stats = self.rest_stats()
            if stats["http_requests"] >= n or time.time() > deadline:
                return stats
            time.sleep(0.02)

    def rest_delay(self, ms: int):
        """Adds `ms` to every Redis answer of the REST server (0 to stop)."""
        self.rest_http.post(self.rest.url + "/_local/delay", json={"ms": ms}, timeout=10).raise_for_status()

    def rest_stats_reset(self):
        self.rest_http.post(self.rest.url + "/_local/stats/reset", timeout=10)

    def close(self):
        for w in self.workers:
            w.svc.stop()
        for s in (self.mock, self.rest, self.redis):
            s.stop()


@pytest.fixture(scope="session")
def env():
    e = Env()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(scope="session")
def worker(env):
    """The default worker: seed keys.json, mock upstream, default limits raised so the shared
    client bucket does not interfere with unrelated tests. Logs at DEBUG, so the secret scan
    (test_zz_secret_scan.py) sees every log line the worker can write."""
    return env.start_worker(vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000", "LOG_LEVEL": "DEBUG"})


@pytest.fixture()
def clean(env):
    """Fresh Redis state and a fresh mock (windows, faults, log) for one test."""
    env.flush()
    env.mock_reset()
    requests.delete(env.mock.url + "/_mock/faults", timeout=10)
    yield env
