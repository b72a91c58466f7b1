"""Tests of the quota engine's Redis Lua scripts (`core/src/store/lua/reserve_v1.lua`, `settle_v1.lua`,
`pacific.lua`) against a real redis-server, through the local Upstash REST server.

The scripts are sent exactly as `core/src/store/reserve.rs` and `settle.rs` build them: the text `pacific.lua + reserve_v1.lua`
(resp. `+ settle_v1.lua`), EVALSHA with the SHA-1 of that text, EVAL on NOSCRIPT. KEYS and ARGV are
built by `reserve_call` / `settle_call` below, which mirror the Rust functions of the same names
(and `store::keys`) line by line.

Run from the repository root:
    .venv/bin/pytest tests/quota -q
(the release binary target/release/upstash-local must be built first).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import stack  # noqa: E402

TOKEN = "quota-test-token-7d2e"
LUA = ROOT / "core" / "src" / "store" / "lua"
MODEL = "gemini-test"
BIG = 10**9
LA = ZoneInfo("America/Los_Angeles")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- scripts


def lua_text(name: str) -> str:
    # `include_str!` embeds the file byte for byte; read it the same way.
    return (LUA / name).read_bytes().decode("utf-8")


class Script:
    def __init__(self, name: str, text: str):
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()


RESERVE = Script("reserve_v1", lua_text("pacific.lua") + lua_text("reserve_v1.lua"))
SETTLE = Script("settle_v1", lua_text("pacific.lua") + lua_text("settle_v1.lua"))
# Test-only: reserve_v1 with the clock taken from ARGV[2] instead of Redis TIME (the later local
# shadows the prelude's `redis_now_ms`), to pin window boundaries to the millisecond.
RESERVE_FAKE_CLOCK = Script(
    "reserve_v1_fake_clock",
    lua_text("pacific.lua")
    + "local function redis_now_ms() return tonumber(ARGV[2]) end\n"
    + lua_text("reserve_v1.lua"),
)
# Test-only: pacific_day(ms) for every ARGV, flattened as day, next_midnight, day, next_midnight...
PACIFIC_PROBE = Script(
    "pacific_probe",
    lua_text("pacific.lua")
    + "\nlocal out = {}\n"
    + "for _, a in ipairs(ARGV) do\n"
    + "  local d, n = pacific_day(tonumber(a))\n"
    + "  out[#out + 1] = d\n"
    + "  out[#out + 1] = n\n"
    + "end\n"
    + "return out\n",
)


# --------------------------------------------------------------------------- REST client


class RestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Rest:
    """Raw Upstash REST client: one keep-alive session per thread."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token}"
            s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
            self._local.s = s
        return s

    def raw(self, cmd: list) -> tuple[int, dict]:
        r = self._session().post(self.url + "/", data=json.dumps([str(x) for x in cmd]), timeout=15)
        return r.status_code, r.json()

    def __call__(self, *cmd):
        status, body = self.raw(list(cmd))
        if "error" in body:
            raise RestError(status, body["error"])
        return body["result"]

    def eval(self, script: Script, keys: list[str], args: list[str]):
        """EVALSHA, then EVAL with the full text on NOSCRIPT (what the worker's client does)."""
        try:
            return self("EVALSHA", script.sha, len(keys), *keys, *args)
        except RestError as e:
            if "NOSCRIPT" not in e.message:
                raise
            return self("EVAL", script.text, len(keys), *keys, *args)

    def hgetall(self, key: str) -> dict:
        flat = self("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))


# --------------------------------------------------------------------------- mirror of src/store.rs

LAST_USED = "{llmr}:last"
GLOBAL_STATS = "{llmr}:st:global"
GLOBAL_BUCKET = "{llmr}:bucket:global"


def k_log(group, model):
    return f"{{llmr}}:w:{group}:{model}"


def k_tokens(group, model):
    return f"{{llmr}}:t:{group}:{model}"


def k_day(group, model):
    return f"{{llmr}}:d:{group}:{model}"


def k_cooldown(group, model):
    return f"{{llmr}}:cd:{group}:{model}"


def k_disabled(key_id):
    return f"{{llmr}}:dis:{key_id}"


def k_key_stats(key_id):
    return f"{{llmr}}:st:k:{key_id}"


def k_client_bucket(client):
    return f"{{llmr}}:bucket:c:{client}"


def k_conv_meta(cid):
    return f"{{llmr}}:conv:{cid}"


def k_conv_turns(cid):
    return f"{{llmr}}:conv:{cid}:turns"


def k_conv_lock(cid):
    return f"{{llmr}}:conv:{cid}:lock"


@dataclass
class Key:
    """`config::KeyConfig` (the fields the scripts see)."""

    key_id: str
    rpm: int = BIG
    tpm: int = BIG
    rpd: int = BIG
    model: str = MODEL
    quota_group: str | None = None  # defaults to key_id, as config.rs does
    weight: float = 1.0

    def __post_init__(self):
        if self.quota_group is None:
            self.quota_group = self.key_id


@dataclass
class Bucket:
    key: str
    name: str  # "client" | "global"
    rate_per_min: int
    burst: int


@dataclass
class ConvLock:
    id: str
    owner: str
    lock_id: str
    lock_ms: int = 30000


@dataclass
class ConvSettle:
    id: str
    lock_id: str
    turns: list[str] = field(default_factory=list)
    ttl_s: int = 3600
    tokens: int = 0
    est: int = 0  # estimated input tokens of the appended turns (grows meta.hist_est)


def dumps(v) -> str:
    return json.dumps(v, separators=(",", ":"))


def k_budget(client):
    """The client budget's day hash, minute log and minute tokens (`keys::client_budget_*`)."""
    return [f"{{llmr}}:cb:d:{client}", f"{{llmr}}:cb:w:{client}", f"{{llmr}}:cb:t:{client}"]


def reserve_call(rid, est, cands, window_ms=60000, cfg="cfg-1", buckets=(), conv: ConvLock | None = None,
                 budget=None, owned=()):
    """Mirror of `store::reserve_call`. budget: (client, daily | None, tpm | None)."""
    k = [LAST_USED]
    for b in buckets:
        k.append(b.key)
    if conv is not None:
        k += [k_conv_meta(conv.id), k_conv_turns(conv.id), k_conv_lock(conv.id)]
    if budget is not None:
        k += k_budget(budget[0])
    k += ["{llmr}:res:" + n for n in owned]
    for c in cands:
        k += [
            k_log(c.quota_group, c.model),
            k_tokens(c.quota_group, c.model),
            k_day(c.quota_group, c.model),
            k_cooldown(c.quota_group, c.model),
            k_disabled(c.key_id),
        ]
    arg = {
        "rid": rid,
        "est": est,
        "window_ms": window_ms,
        "cfg": cfg,
        "buckets": [{"rate": b.rate_per_min, "burst": b.burst, "name": b.name} for b in buckets],
        "conv": None if conv is None else {"owner": conv.owner, "lock_id": conv.lock_id, "lock_ms": conv.lock_ms},
        "budget": None if budget is None else {"daily": budget[1], "tpm": budget[2]},
        "owned": len(owned),
        "cands": [{"k": c.key_id, "rpm": c.rpm, "tpm": c.tpm, "rpd": c.rpd, "w": float(c.weight)} for c in cands],
    }
    return k, [dumps(arg)]


def settle_call(key: Key, rid, day, outcome="success", release=False, input=None, output=0, thoughts=0,
                cooldown=None, disable=None, conv: ConvSettle | None = None, client="c1", budget=None):
    """Mirror of `store::settle_call`. cooldown: ("delay", ms, reason) | ("day", reason) | ("unknown", reason);
    disable: (reason, cfg)."""
    keys = [
        k_log(key.quota_group, key.model),
        k_tokens(key.quota_group, key.model),
        k_day(key.quota_group, key.model),
        k_cooldown(key.quota_group, key.model),
        k_disabled(key.key_id),
        k_key_stats(key.key_id),
        GLOBAL_STATS,
        "{llmr}:st:c:" + client,
    ]
    if conv is not None:
        keys += [k_conv_meta(conv.id), k_conv_turns(conv.id), k_conv_lock(conv.id)]
    if budget is not None:  # (client, day, est)
        keys += k_budget(budget[0])
    cd = None
    if cooldown is not None:
        if cooldown[0] == "delay":
            cd = {"kind": "delay", "delay_ms": cooldown[1], "reason": cooldown[2]}
        elif cooldown[0] == "day":
            cd = {"kind": "day", "reason": cooldown[1]}
        else:
            cd = {"kind": "unknown", "reason": cooldown[1]}
    arg = {
        "rid": rid,
        "key": key.key_id,
        "day": day,
        "outcome": outcome,
        "release": release,
        "input": input,
        "output": output,
        "thoughts": thoughts,
        "cooldown": cd,
        "disable": None if disable is None else {"reason": disable[0], "cfg": disable[1]},
        "conv": None if conv is None or not conv.turns else {"turns": conv.turns, "ttl_s": conv.ttl_s, "tokens": conv.tokens, "est": conv.est},
        "lock_id": None if conv is None else conv.lock_id,
        "budget": None if budget is None else {"day": budget[1], "est": budget[2]},
    }
    return keys, [dumps(arg)]


def reserve(rest: Rest, rid, est, cands, **kw) -> dict:
    keys, args = reserve_call(rid, est, cands, **kw)
    return json.loads(rest.eval(RESERVE, keys, args))


def settle(rest: Rest, key: Key, rid, day, **kw) -> dict:
    keys, args = settle_call(key, rid, day, **kw)
    return json.loads(rest.eval(SETTLE, keys, args))


# --------------------------------------------------------------------------- Pacific reference


def py_pacific(ms: int) -> tuple[int, int]:
    """(Pacific day number, UTC ms of the next Pacific midnight) from zoneinfo."""
    local = (EPOCH + timedelta(milliseconds=ms)).astimezone(LA)
    d = local.date()
    nxt = datetime.combine(d + timedelta(days=1), dtime(0), tzinfo=LA)
    return (d - date(1970, 1, 1)).days, (nxt - EPOCH) // timedelta(milliseconds=1)


def utc_ms(*a) -> int:
    return (datetime(*a, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)


def pmap(fn, items, workers=64):
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items))


# --------------------------------------------------------------------------- fixtures


class Stack:
    redis: stack.Service
    rest_svc: stack.Service
    rest: Rest

    def restart_redis(self):
        port = self.redis.port
        self.redis.stop()
        self.redis = stack.start_redis(port)


@pytest.fixture(scope="module")
def env():
    st = Stack()
    st.redis = stack.start_redis()
    try:
        st.rest_svc = stack.start_upstash_local(st.redis.port, TOKEN)
    except Exception:
        st.redis.stop()
        raise
    st.rest = Rest(st.rest_svc.url, TOKEN)
    try:
        yield st
    finally:
        st.rest_svc.stop()
        st.redis.stop()


@pytest.fixture()
def rest(env) -> Rest:
    assert env.rest("FLUSHALL") == "OK"
    return env.rest


# --------------------------------------------------------------------------- 1. requests under concurrency


def test_rpm_exact_capacity_under_1000_concurrent_reservations(rest):
    keys = [Key(f"k{i}", rpm=10) for i in range(3)]
    res = pmap(lambda i: reserve(rest, f"r{i}", 7, keys), range(1000), workers=80)

    admitted = [r for r in res if r["ok"] == 1]
    refused = [r for r in res if r["ok"] == 0]
    assert len(admitted) == 30
    assert Counter(r["key"] for r in admitted) == {"k0": 10, "k1": 10, "k2": 10}
    assert len({r["rid"] for r in admitted}) == 30
    first = min(r["now"] for r in admitted)
    assert len(refused) == 970
    for r in refused:
        assert r["limit"] == "rpm", r
        # The soonest slot over the three keys: the oldest admission of any of them leaves the window.
        assert r["retry_at"] == first + 60000, r
        assert "bucket_limit" not in r
    for k in keys:
        assert rest("ZCARD", k_log(k.quota_group, MODEL)) == 10
        tok = rest.hgetall(k_tokens(k.quota_group, MODEL))
        assert tok.pop("_sum") == "70" and sorted(tok.values()) == ["7"] * 10
        assert rest("HGET", k_day(k.quota_group, MODEL), "count") == "10"
    last = rest.hgetall(LAST_USED)
    assert set(last) == {"k0", "k1", "k2"}


# --------------------------------------------------------------------------- 2. quota groups


def test_keys_of_one_quota_group_share_the_quota(rest):
    a, b = Key("a", rpm=10, quota_group="proj"), Key("b", rpm=10, quota_group="proj")
    res = pmap(lambda i: reserve(rest, f"g{i}", 1, [a, b]), range(40), workers=20)
    admitted = [r for r in res if r["ok"] == 1]
    assert len(admitted) == 10
    assert all(r["limit"] == "rpm" for r in res if r["ok"] == 0)
    assert rest("ZCARD", k_log("proj", MODEL)) == 10
    # Either key alone is just as full.
    assert reserve(rest, "x1", 1, [a])["limit"] == "rpm"
    assert reserve(rest, "x2", 1, [b])["limit"] == "rpm"


def test_same_keys_on_two_models_are_separate_quotas(rest):
    a1, b1 = Key("a", rpm=10, quota_group="proj", model="m1"), Key("b", rpm=10, quota_group="proj", model="m1")
    a2, b2 = Key("a", rpm=10, quota_group="proj", model="m2"), Key("b", rpm=10, quota_group="proj", model="m2")
    r1 = [reserve(rest, f"m1-{i}", 1, [a1, b1]) for i in range(12)]
    assert sum(r["ok"] for r in r1) == 10
    r2 = [reserve(rest, f"m2-{i}", 1, [a2, b2]) for i in range(12)]
    assert sum(r["ok"] for r in r2) == 10
    assert rest("ZCARD", k_log("proj", "m1")) == 10
    assert rest("ZCARD", k_log("proj", "m2")) == 10


# --------------------------------------------------------------------------- 3. tokens under concurrency


def test_tpm_never_exceeded_and_refused_only_when_it_does_not_fit(rest):
    tpm = 50000
    k = Key("t", rpm=100000, tpm=tpm)
    rng = random.Random(20240311)
    ests = [rng.randint(1, 5000) for _ in range(400)]
    res = pmap(lambda i: (ests[i], reserve(rest, f"t{i}", ests[i], [k])), range(len(ests)), workers=64)

    admitted = [(e, r) for e, r in res if r["ok"] == 1]
    refused = [(e, r) for e, r in res if r["ok"] == 0]
    total = sum(e for e, _ in admitted)
    assert total <= tpm
    assert refused, "the load must exceed tpm"
    first = min(r["now"] for _, r in admitted)
    last = max(r["now"] for _, r in admitted)
    for e, r in refused:
        assert r["limit"] == "tpm", r
        # Within one window admissions only accumulate, so when this request was refused the live
        # sum S was <= total, and S + e > tpm; hence e > tpm - total.
        assert e > tpm - total, (e, total)
        # At least the oldest entry must leave; at most all of them.
        assert first + 60000 <= r["retry_at"] <= last + 60000
    tok = rest.hgetall(k_tokens("t", MODEL))
    assert int(tok.pop("_sum")) == total
    assert sum(int(v) for v in tok.values()) == total
    assert rest("ZCARD", k_log("t", MODEL)) == len(admitted)


def test_too_large_for_every_candidate(rest):
    a, b = Key("a", tpm=50000), Key("b", tpm=40000)
    r = reserve(rest, "big", 60000, [a, b])
    assert r.keys() == {"ok", "limit", "now"} and r["ok"] == 0 and r["limit"] == "too_large"
    assert rest("EXISTS", k_log("a", MODEL), k_log("b", MODEL), LAST_USED) == 0
    # Fits one candidate: admitted by it.
    r = reserve(rest, "fits", 45000, [b, a])
    assert r["ok"] == 1 and r["key"] == "a"
    # Fits a candidate that is full for now: a tpm refusal, not too_large.
    r = reserve(rest, "later", 45000, [a, b])
    assert r["ok"] == 0 and r["limit"] == "tpm"


# --------------------------------------------------------------------------- 4. sliding window


def test_sliding_window_reopens_as_entries_age_out(rest):
    window, rpm = 2000, 5
    k = Key("s", rpm=rpm)
    adm = [reserve(rest, f"s{i}", 1, [k], window_ms=window) for i in range(rpm)]
    assert all(r["ok"] == 1 for r in adm)
    first = adm[0]["now"]
    r = reserve(rest, "s-over", 1, [k], window_ms=window)
    assert r["ok"] == 0 and r["limit"] == "rpm" and r["retry_at"] == first + window

    # Half a window later: still full (a fixed window aligned anywhere would not guarantee this).
    time.sleep(max(0.0, (first + window // 2) / 1000 - time.time()))
    r = reserve(rest, "s-half", 1, [k], window_ms=window)
    assert r["ok"] == 0 and r["limit"] == "rpm" and r["retry_at"] == first + window

    # Once the first entries have aged out: admitted again.
    time.sleep(max(0.0, (first + window + 30) / 1000 - time.time()))
    r = reserve(rest, "s-again", 1, [k], window_ms=window)
    assert r["ok"] == 1, r


def test_no_rolling_window_exceeds_rpm_under_steady_overload(rest):
    window, rpm, duration = 1500, 5, 4.0
    k = Key("o", rpm=rpm)
    log: list[tuple[int, int]] = []  # (now, ok)
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def hammer(t):
        i = 0
        while time.monotonic() < stop_at:
            r = reserve(rest, f"o{t}-{i}", 1, [k], window_ms=window)
            i += 1
            with lock:
                log.append((r["now"], r["ok"]))
            time.sleep(0.002)

    pmap(hammer, range(4), workers=4)
    adm = sorted(t for t, ok in log if ok)
    ref = [t for t, ok in log if not ok]
    assert len(log) > 200 and ref
    # Every rolling window [t, t + window) holds at most rpm admissions; windows starting at an
    # admission are the worst case.
    for i in range(len(adm) - rpm):
        assert adm[i + rpm] - adm[i] >= window, (adm[i : i + rpm + 1], window)
    # Refused only when full: at least rpm admissions live in (r - window, r].
    for r in ref:
        live = sum(1 for t in adm if r - window < t <= r)
        assert live >= rpm, (r, live)
    # And the quota is used: roughly rpm per window under overload.
    span = max(t for t, _ in log) - min(t for t, _ in log)
    assert len(adm) >= rpm * int(span // window)


def test_window_boundary_matches_retry_at_and_the_rust_model(rest):
    """Fake clock (ARGV[2]): an entry admitted at t is live while t + window > now (the model of
    `quota::SlidingLog`), so a request at exactly the announced retry_at is admitted."""
    window = 60000
    t0 = int(rest("TIME")[0]) * 1000
    k = Key("b", rpm=2, tpm=50000)

    def at(now, rid, est=1):
        keys, args = reserve_call(rid, est, [k], window_ms=window)
        return json.loads(rest.eval(RESERVE_FAKE_CLOCK, keys, [*args, str(now)]))

    assert at(t0, "b1")["ok"] == 1
    assert at(t0 + 10, "b2")["ok"] == 1
    r = at(t0 + window - 1, "b3")
    assert r["ok"] == 0 and r["limit"] == "rpm" and r["retry_at"] == t0 + window
    r = at(t0 + window, "b4")
    assert r["ok"] == 1, f"refused at its own retry_at: {r}"
    r = at(t0 + window + 9, "b5")
    assert r["ok"] == 0 and r["retry_at"] == t0 + window + 10

    # Same for tokens: free_at's answer is the first instant the estimate fits.
    rest("FLUSHALL")
    k = Key("b", rpm=100, tpm=50000)
    assert at(t0, "c1", 30000)["ok"] == 1
    assert at(t0 + 100, "c2", 15000)["ok"] == 1
    r = at(t0 + 200, "c3", 20000)
    assert r["ok"] == 0 and r["limit"] == "tpm" and r["retry_at"] == t0 + window
    assert at(t0 + window - 1, "c4", 20000)["ok"] == 0
    assert at(t0 + window, "c5", 20000)["ok"] == 1
    assert rest("HGET", k_tokens("b", MODEL), "_sum") == "35000"


# --------------------------------------------------------------------------- 5. settle


def test_settle_actual_below_estimate_refunds_tokens_in_the_window(rest):
    k = Key("f", rpm=100, tpm=10000)
    r1 = reserve(rest, "f1", 8000, [k])
    assert r1["ok"] == 1
    r = reserve(rest, "f2", 5000, [k])
    assert r["ok"] == 0 and r["limit"] == "tpm" and r["retry_at"] == r1["now"] + 60000
    s = settle(rest, k, "f1", r1["day"], input=3000, output=10)
    assert s["cooldown_until"] is None and s["message_count"] is None
    tok = rest.hgetall(k_tokens("f", MODEL))
    assert tok == {"f1": "3000", "_sum": "3000"}
    r2 = reserve(rest, "f2", 5000, [k])
    assert r2["ok"] == 1
    assert rest("HGET", k_tokens("f", MODEL), "_sum") == "8000"
    # Actual above the estimate is recorded too (the estimate was not a bound).
    settle(rest, k, "f2", r2["day"], input=6000)
    assert rest("HGET", k_tokens("f", MODEL), "_sum") == "9000"


def test_settle_after_the_entry_left_the_window_is_harmless(rest):
    window = 800
    k = Key("l", rpm=100, tpm=1000)
    r1 = reserve(rest, "l1", 700, [k], window_ms=window)
    assert r1["ok"] == 1
    time.sleep(max(0.0, (r1["now"] + window + 20) / 1000 - time.time()))
    # Not trimmed yet (trimming is lazy): the settle corrects the stale entry, and the next trim
    # removes exactly the corrected amount.
    s = settle(rest, k, "l1", r1["day"], input=200)
    assert "error" not in s
    r2 = reserve(rest, "l2", 900, [k], window_ms=window)
    assert r2["ok"] == 1
    assert rest.hgetall(k_tokens("l", MODEL)) == {"l2": "900", "_sum": "900"}

    time.sleep(max(0.0, (r2["now"] + window + 20) / 1000 - time.time()))
    r3 = reserve(rest, "l3", 10, [k], window_ms=window)  # trims l2
    assert r3["ok"] == 1
    # l2 already left: a late settle and a late release change nothing in the window.
    settle(rest, k, "l2", r2["day"], input=5)
    assert rest.hgetall(k_tokens("l", MODEL)) == {"l3": "10", "_sum": "10"}
    settle(rest, k, "l2", r2["day"], release=True, outcome="not_sent")
    assert rest.hgetall(k_tokens("l", MODEL)) == {"l3": "10", "_sum": "10"}
    assert rest("ZRANGE", k_log("l", MODEL), 0, -1) == ["l3"]
    # ...but the release still gives back its day count (the day is still current).
    assert rest("HGET", k_day("l", MODEL), "count") == "2"
    # A settle after the log and token keys expired entirely: still harmless.
    rest("DEL", k_log("l", MODEL), k_tokens("l", MODEL))
    settle(rest, k, "l3", r3["day"], input=1)
    assert rest("EXISTS", k_tokens("l", MODEL)) == 0


def test_release_removes_the_entry_and_gives_back_the_day(rest):
    k = Key("rel", rpm=2, tpm=1000, rpd=3)
    r1 = reserve(rest, "q1", 100, [k])
    r2 = reserve(rest, "q2", 200, [k])
    assert r1["ok"] == r2["ok"] == 1
    assert reserve(rest, "q3", 1, [k])["limit"] == "rpm"
    settle(rest, k, "q1", r1["day"], release=True, outcome="not_sent")
    assert rest("ZRANGE", k_log("rel", MODEL), 0, -1) == ["q2"]
    assert rest.hgetall(k_tokens("rel", MODEL)) == {"q2": "200", "_sum": "200"}
    assert rest("HGET", k_day("rel", MODEL), "count") == "1"
    r3 = reserve(rest, "q3", 1, [k])
    assert r3["ok"] == 1
    # A release for a previous Pacific day does not touch today's count.
    settle(rest, k, "q3", r3["day"] - 1, release=True, outcome="not_sent")
    assert rest("HGET", k_day("rel", MODEL), "count") == "2"
    assert rest("ZRANGE", k_log("rel", MODEL), 0, -1) == ["q2"]


def test_cooldown_delay_skips_the_group_until_it_ends(rest):
    a, b = Key("a", rpm=100), Key("b", rpm=100)
    r = reserve(rest, "d1", 1, [a])
    s = settle(rest, a, "d1", r["day"], outcome="rate_limited", cooldown=("delay", 1300, "rpm 429"))
    until = s["cooldown_until"]
    assert until == s["now"] + 1300
    assert rest.hgetall(k_cooldown("a", MODEL)) == {"until": str(until), "reason": "rpm 429"}
    pexp = rest("PEXPIRETIME", k_cooldown("a", MODEL))
    assert pexp == until + 900000
    r = reserve(rest, "d2", 1, [a])
    assert r == {"ok": 0, "limit": "cooldown", "retry_at": until, "now": r["now"]}
    r = reserve(rest, "d3", 1, [a, b])
    assert r["ok"] == 1 and r["key"] == "b"
    # A shorter cooldown never shortens the current one; delays are at least 1 s.
    s2 = settle(rest, a, "d1", 0, outcome="rate_limited", cooldown=("delay", 10, "short"))
    assert s2["cooldown_until"] == until
    s3 = settle(rest, b, "d3", 0, outcome="rate_limited", cooldown=("delay", 10, "short"))
    assert s3["cooldown_until"] == s3["now"] + 1000
    time.sleep(max(0.0, (until + 20) / 1000 - time.time()))
    r = reserve(rest, "d4", 1, [a])
    assert r["ok"] == 1 and r["key"] == "a"


def test_cooldown_day_lasts_until_pacific_midnight(rest):
    a = Key("a", rpm=100)
    r = reserve(rest, "y1", 1, [a])
    s = settle(rest, a, "y1", r["day"], outcome="rate_limited", cooldown=("day", "rpd 429"))
    assert s["cooldown_until"] == py_pacific(s["now"])[1]
    r = reserve(rest, "y2", 1, [a])
    assert r["ok"] == 0 and r["limit"] == "cooldown" and r["retry_at"] == s["cooldown_until"]


def test_cooldown_unknown_doubles_per_strike_capped_at_15_min(rest):
    a = Key("a", rpm=100)
    got = []
    for i in range(6):
        s = settle(rest, a, "u", 0, outcome="rate_limited", cooldown=("unknown", "429"))
        got.append(s["cooldown_until"] - s["now"])
    assert got == [60000, 120000, 240000, 480000, 900000, 900000]
    cd = rest.hgetall(k_cooldown("a", MODEL))
    assert cd["strikes"] == "6" and cd["reason"] == "429"
    assert rest("PEXPIRETIME", k_cooldown("a", MODEL)) == int(cd["until"]) + 900000
    r = reserve(rest, "u1", 1, [a])
    assert r["limit"] == "cooldown" and r["retry_at"] == int(cd["until"])


def test_disable_holds_while_the_config_fingerprint_matches(rest):
    a, b = Key("a"), Key("b")
    r = reserve(rest, "x1", 1, [a], cfg="cfg-1")
    settle(rest, a, "x1", r["day"], outcome="key_rejected", disable=("API key invalid", "cfg-1"))
    dis = rest.hgetall(k_disabled("a"))
    assert dis["reason"] == "API key invalid" and dis["cfg"] == "cfg-1" and int(dis["at"]) > 0
    r = reserve(rest, "x2", 1, [a], cfg="cfg-1")
    assert r == {"ok": 0, "limit": "disabled", "retry_at": None, "now": r["now"]}
    r = reserve(rest, "x3", 1, [a, b], cfg="cfg-1")
    assert r["ok"] == 1 and r["key"] == "b"
    # Disabled is per key, whatever the model.
    r = reserve(rest, "x4", 1, [Key("a", model="other")], cfg="cfg-1")
    assert r["limit"] == "disabled"
    r = reserve(rest, "x5", 1, [a], cfg="cfg-2")
    assert r["ok"] == 1 and r["key"] == "a"


# --------------------------------------------------------------------------- admin_v1 (issue 14)

ADMIN = Script("admin_v1", lua_text("pacific.lua") + lua_text("admin_v1.lua"))
AUDIT = "{llmr}:audit"


def admin(rest: Rest, action, target, targets, by="ops", reason=None, cap=200) -> dict:
    """Mirror of `admin::admin_call`: the audit list, then the target hashes."""
    arg = {"action": action, "target": target, "by": by, "reason": reason, "cap": cap}
    return json.loads(rest.eval(ADMIN, [AUDIT] + targets, [dumps(arg)]))


def test_manual_disable_holds_under_any_fingerprint_until_enabled(rest):
    a, b = Key("a"), Key("b")
    out = admin(rest, "disable", "a", [k_disabled("a")], reason="rotating")
    assert out["changed"] == 1 and out["now"] > 0
    dis = rest.hgetall(k_disabled("a"))
    assert dis["manual"] == "1" and dis["reason"] == "rotating" and dis["by"] == "ops"
    for cfg in ("cfg-1", "cfg-2"):
        r = reserve(rest, "m-" + cfg, 1, [a], cfg=cfg)
        assert r == {"ok": 0, "limit": "disabled", "retry_at": None, "now": r["now"]}
        assert reserve(rest, "n-" + cfg, 1, [a, b], cfg=cfg)["key"] == "b"
    # Nothing was reserved on the disabled key.
    assert rest("ZCARD", k_log("a", MODEL)) == 0
    assert admin(rest, "enable", "a", [k_disabled("a")])["changed"] == 1
    assert rest("EXISTS", k_disabled("a")) == 0
    assert reserve(rest, "back", 1, [a])["key"] == "a"
    # Enabling an enabled key changes nothing but is still audited.
    assert admin(rest, "enable", "a", [k_disabled("a")])["changed"] == 0
    entries = [json.loads(e) for e in rest("LRANGE", AUDIT, 0, -1)]
    assert [(e["action"], e["target"], e["changed"], e["by"]) for e in entries] == [
        ("enable", "a", 0, "ops"), ("enable", "a", 1, "ops"), ("disable", "a", 1, "ops")]
    assert entries[2]["reason"] == "rotating" and entries[0]["reason"] == ""


def test_enable_lifts_an_automatic_disable_without_a_config_change(rest):
    a = Key("a")
    r = reserve(rest, "x1", 1, [a], cfg="cfg-1")
    settle(rest, a, "x1", r["day"], outcome="key_rejected", disable=("403 API_KEY_SERVICE_BLOCKED", "cfg-1"))
    assert reserve(rest, "x2", 1, [a], cfg="cfg-1")["limit"] == "disabled"
    assert admin(rest, "enable", "a", [k_disabled("a")], reason="unblocked in the console")["changed"] == 1
    assert reserve(rest, "x3", 1, [a], cfg="cfg-1")["key"] == "a"


def test_clear_cooldown_removes_every_model_of_the_group_and_the_audit_is_capped(rest):
    a, a2 = Key("a", quota_group="g"), Key("a2", quota_group="g", model="other")
    for k in (a, a2):
        r = reserve(rest, "c-" + k.key_id, 1, [k])
        settle(rest, k, "c-" + k.key_id, r["day"], outcome="rate_limited", cooldown=("delay", 600000, "429"))
        assert reserve(rest, "d-" + k.key_id, 1, [k])["limit"] == "cooldown"
    out = admin(rest, "clear_cooldown", "g", [k_cooldown("g", MODEL), k_cooldown("g", "other")])
    assert out["changed"] == 2
    assert reserve(rest, "e1", 1, [a])["ok"] == 1 and reserve(rest, "e2", 1, [a2])["ok"] == 1
    for i in range(5):
        admin(rest, "enable", "a", [k_disabled("a")], cap=3, reason=str(i))
    assert [json.loads(e)["reason"] for e in rest("LRANGE", AUDIT, 0, -1)] == ["4", "3", "2"]


# --------------------------------------------------------------------------- client budgets (issue 14)


def test_a_named_file_restricts_the_choice_to_its_owner_group(rest):
    a, b, c = Key("a", rpm=2), Key("b", rpm=100), Key("c", rpm=100)
    rest("HSET", "{llmr}:res:files/f1", "group", "a", "key", "a", "client", "cl")
    for i in range(2):
        r = reserve(rest, f"f{i}", 1, [b, c, a], owned=["files/f1", "files/unknown"])
        assert r["ok"] == 1 and r["key"] == "a"
    # Its group is full: a 429 with the time it frees, never another project's key.
    r = reserve(rest, "f2", 1, [b, c, a], owned=["files/f1"])
    assert r["ok"] == 0 and r["limit"] == "rpm" and r["retry_at"] > r["now"]
    # A file the router never saw restricts nothing.
    assert reserve(rest, "f3", 1, [b, c, a], owned=["files/unknown"])["ok"] == 1


def test_daily_budget_refuses_until_pacific_midnight_and_consumes_no_key_quota(rest):
    a = Key("a")
    r = reserve(rest, "b1", 60, [a], budget=("cl", 100, None))
    assert r["ok"] == 1
    assert rest.hgetall(k_budget("cl")[0])["used"] == "60"
    # Real usage 20 in + 5 out replaces the 60 reserved.
    settle(rest, a, "b1", r["day"], input=20, output=5, budget=("cl", r["day"], 60))
    assert rest.hgetall(k_budget("cl")[0])["used"] == "25"
    r2 = reserve(rest, "b2", 76, [a], budget=("cl", 100, None))
    _, next_mid = py_pacific(r2["now"])
    assert r2 == {"ok": 0, "limit": "client_budget", "retry_at": next_mid, "now": r2["now"]}
    assert rest("ZCARD", k_log("a", MODEL)) == 1  # only b1
    # Another client, or the same one within budget, is served.
    assert reserve(rest, "b3", 76, [a], budget=("other", 100, None))["ok"] == 1
    assert reserve(rest, "b4", 75, [a], budget=("cl", 100, None))["ok"] == 1
    # A failed attempt gives its estimate back.
    r5 = reserve(rest, "b5", 1, [a], budget=("other", 100, None))
    settle(rest, a, "b5", r5["day"], outcome="rate_limited", budget=("other", r5["day"], 1))
    assert rest.hgetall(k_budget("other")[0])["used"] == "76"


def test_tpm_budget_frees_when_the_window_does(rest):
    a = Key("a")
    r1 = reserve(rest, "t1", 40, [a], budget=("cl", None, 50))
    assert r1["ok"] == 1
    r2 = reserve(rest, "t2", 20, [a], budget=("cl", None, 50))
    assert r2["limit"] == "client_budget" and r2["retry_at"] == r1["now"] + 60000
    # Settled lower (8 tokens in all), the minute has room again.
    settle(rest, a, "t1", r1["day"], input=5, output=3, budget=("cl", r1["day"], 40))
    assert rest.hgetall(k_budget("cl")[2])["_sum"] == "8"
    assert reserve(rest, "t3", 20, [a], budget=("cl", None, 50))["ok"] == 1


def test_settle_updates_stats_counters(rest):
    a, b = Key("a"), Key("b")
    r = reserve(rest, "st1", 100, [a])
    s1 = settle(rest, a, "st1", r["day"], input=90, output=40, thoughts=15)
    r = reserve(rest, "st2", 100, [a])
    s2 = settle(rest, a, "st2", r["day"], outcome="rate_limited")
    r = reserve(rest, "st3", 100, [b])
    settle(rest, b, "st3", r["day"], outcome="success", input=10, output=1)
    assert rest.hgetall(k_key_stats("a")) == {
        "requests": "2",
        "outcome:success": "1",
        "outcome:rate_limited": "1",
        "tokens_in": "90",
        "tokens_out": "40",
        "tokens_thinking": "15",
        "last_used": str(s2["now"]),
    }
    assert s2["now"] >= s1["now"]
    assert rest.hgetall(GLOBAL_STATS) == {
        "requests": "3",
        "outcome:success": "2",
        "outcome:rate_limited": "1",
        "tokens_in": "100",
        "tokens_out": "41",
        "tokens_thinking": "15",
    }


# --------------------------------------------------------------------------- 6. rpd


def test_rpd_refusal_retries_at_pacific_midnight(rest):
    k = Key("d", rpd=3)
    for i in range(3):
        assert reserve(rest, f"p{i}", 1, [k])["ok"] == 1
    r = reserve(rest, "p3", 1, [k])
    day, nxt = py_pacific(r["now"])
    assert r["ok"] == 0 and r["limit"] == "rpd" and r["retry_at"] == nxt
    assert rest.hgetall(k_day("d", MODEL)) == {"day": str(day), "count": "3"}
    assert rest("PEXPIRETIME", k_day("d", MODEL)) == nxt + 3600000
    # A stale day in the hash counts as zero today.
    rest("HSET", k_day("d", MODEL), "day", day - 1)
    r = reserve(rest, "p4", 1, [k])
    assert r["ok"] == 1 and r["day"] == day
    assert rest.hgetall(k_day("d", MODEL)) == {"day": str(day), "count": "1"}


# --------------------------------------------------------------------------- 7. buckets


def test_client_bucket_burst_then_client_rate(rest):
    k = Key("c", rpm=1000)
    bucket = Bucket(k_client_bucket("alice"), "client", 10, 20)
    res = [reserve(rest, f"b{i}", 1, [k], buckets=[bucket]) for i in range(30)]
    assert sum(r["ok"] for r in res) == 20
    assert [r["ok"] for r in res] == [1] * 20 + [0] * 10
    for r in res[20:]:
        assert r["limit"] == "client_rate" and r["bucket_limit"] == 20 and r["bucket_remaining"] == 0
        assert r["now"] < r["retry_at"] <= r["now"] + 6000
    assert rest("ZCARD", k_log("c", MODEL)) == 20
    # Another client has its own bucket.
    other = Bucket(k_client_bucket("bob"), "client", 10, 20)
    assert reserve(rest, "bob1", 1, [k], buckets=[other])["ok"] == 1


@pytest.mark.parametrize("name", ["client", "global"])
def test_refusal_without_key_capacity_does_not_consume_bucket_tokens(rest, name):
    full, spare = Key("full", rpm=2), Key("spare", rpm=100)
    bkey = k_client_bucket("carol") if name == "client" else GLOBAL_BUCKET
    bucket = Bucket(bkey, name, 10, 5)
    assert [reserve(rest, f"n{i}", 1, [full], buckets=[bucket])["ok"] for i in range(2)] == [1, 1]
    for i in range(6):
        r = reserve(rest, f"m{i}", 1, [full], buckets=[bucket])
        assert r["ok"] == 0 and r["limit"] == "rpm"
    assert 3 <= float(rest("HGET", bkey, "tokens")) < 3.5
    res = [reserve(rest, f"s{i}", 1, [spare], buckets=[bucket]) for i in range(4)]
    assert [r["ok"] for r in res] == [1, 1, 1, 0]
    assert res[3]["limit"] == f"{name}_rate" and res[3]["bucket_limit"] == 5


def test_client_bucket_empty_does_not_debit_the_global_bucket(rest):
    k = Key("g", rpm=1000)
    client = Bucket(k_client_bucket("dave"), "client", 10, 2)
    glob = Bucket(GLOBAL_BUCKET, "global", 10, 10)
    res = [reserve(rest, f"c{i}", 1, [k], buckets=[client, glob]) for i in range(5)]
    assert [r["ok"] for r in res] == [1, 1, 0, 0, 0]
    assert all(r["limit"] == "client_rate" for r in res[2:])
    assert 8 <= float(rest("HGET", GLOBAL_BUCKET, "tokens")) < 8.5


# --------------------------------------------------------------------------- 8. selection policy


def simulate_choice(cands, state, last, est):
    """The script's choice: most headroom x weight, ties to the least recently used, then order."""
    best, best_score, best_last = None, None, None
    for c in cands:
        g = state[c.quota_group]
        if g["count"] >= c.rpm or g["sum"] + est > c.tpm or g["day"] >= c.rpd:
            continue
        head = min((c.rpm - g["count"]) / c.rpm, (c.tpm - g["sum"] - est) / c.tpm, (c.rpd - g["day"]) / c.rpd) * c.weight
        lu = last.get(c.key_id, 0)
        if best is None or head > best_score or (head == best_score and lu < best_last):
            best, best_score, best_last = c, head, lu
    return best


def run_and_check_choices(rest, cands, n, est=10):
    state = {c.quota_group: {"count": 0, "sum": 0, "day": 0} for c in cands}
    last = {}
    chosen = []
    for i in range(n):
        want = simulate_choice(cands, state, last, est)
        r = reserve(rest, f"sel{i}", est, cands)
        assert r["ok"] == 1 and r["key"] == want.key_id, (i, r, want.key_id)
        g = state[want.quota_group]
        g["count"] += 1
        g["sum"] += est
        g["day"] += 1
        last[want.key_id] = r["now"]
        chosen.append(r["key"])
    return chosen


def test_selection_alternates_between_equal_idle_keys(rest):
    a, b = Key("a", rpm=10, tpm=10000, rpd=1000), Key("b", rpm=10, tpm=10000, rpd=1000)
    assert run_and_check_choices(rest, [a, b], 5) == ["a", "b", "a", "b", "a"]


def test_selection_prefers_least_recently_used_on_a_tie(rest):
    a, b = Key("a", rpm=10), Key("b", rpm=10)
    # Equal headroom (one entry each), but a was used last: b goes first.
    assert reserve(rest, "pre-b", 1, [b])["ok"] == 1
    time.sleep(0.005)
    assert reserve(rest, "pre-a", 1, [a])["ok"] == 1
    assert reserve(rest, "tie", 1, [a, b])["key"] == "b"


def test_weights_skew_the_choice(rest):
    a = Key("a", rpm=10, tpm=10000, rpd=1000, weight=3.0)
    b = Key("b", rpm=10, tpm=10000, rpd=1000, weight=1.0)
    chosen = run_and_check_choices(rest, [a, b], 12)
    assert chosen[:6] == ["a"] * 6
    assert Counter(chosen)["a"] > Counter(chosen)["b"]


# --------------------------------------------------------------------------- 9. conversations


def test_conversation_prefers_the_group_of_its_previous_turn_when_it_has_room(rest):
    a, b = Key("a", rpm=100), Key("b", rpm=2)
    cid = "affa"
    rest("HSET", k_conv_meta(cid), "owner", "alice")
    # Without history, the usual choice: "a" has the most headroom... make "b" the idle one.
    for i in range(3):
        reserve(rest, f"busy{i}", 1, [a])
    r = reserve(rest, "t1", 1, [a, b], conv=ConvLock(cid, "alice", "L1"))
    assert r["key"] == "b"
    settle(rest, b, "t1", r["day"], input=1, conv=ConvSettle(cid, "L1", ["u", "m"]))
    assert rest("HGET", k_conv_meta(cid), "aff") == k_log("b", MODEL)
    # "a" now has more headroom (97/100 vs 1/2), but the conversation stays on "b" while it has room.
    r = reserve(rest, "t2", 1, [a, b], conv=ConvLock(cid, "alice", "L2"))
    assert r["key"] == "b"
    settle(rest, b, "t2", r["day"], input=1, conv=ConvSettle(cid, "L2", ["u", "m"]))
    # "b" is full (rpm 2): the usual choice takes over, and the turn moves the affinity.
    r = reserve(rest, "t3", 1, [a, b], conv=ConvLock(cid, "alice", "L3"))
    assert r["key"] == "a"
    settle(rest, a, "t3", r["day"], input=1, conv=ConvSettle(cid, "L3", ["u", "m"]))
    assert rest("HGET", k_conv_meta(cid), "aff") == k_log("a", MODEL)
    # Requests without the conversation are unaffected.
    assert reserve(rest, "free", 1, [b, a])["key"] == "a"


def test_conversation_lock_history_and_settle(rest):
    k = Key("cv", rpm=100)
    cid = "c0ffee"
    t1, t2 = dumps({"role": "user", "parts": [{"text": "hi"}]}), dumps({"role": "model", "parts": [{"text": "hello"}]})
    rest("HSET", k_conv_meta(cid), "owner", "alice", "message_count", 2, "total_tokens", 5)
    rest("RPUSH", k_conv_turns(cid), t1, t2)

    r1 = reserve(rest, "cr1", 10, [k], conv=ConvLock(cid, "alice", "L1", 30000))
    assert r1["ok"] == 1 and r1["history"] == [t1, t2]
    assert rest("GET", k_conv_lock(cid)) == "L1"
    assert 0 < rest("PTTL", k_conv_lock(cid)) <= 30000

    r = reserve(rest, "x", 10, [k], conv=ConvLock(cid, "mallory", "L9"))
    assert r == {"ok": 0, "conv": "not_found", "now": r["now"]}
    r = reserve(rest, "x", 10, [k], conv=ConvLock("nope", "alice", "L9"))
    assert r["ok"] == 0 and r["conv"] == "not_found"
    r = reserve(rest, "cr2", 10, [k], conv=ConvLock(cid, "alice", "L2"))
    assert r == {"ok": 0, "conv": "busy", "now": r["now"]}
    assert rest("ZCARD", k_log("cv", MODEL)) == 1  # refusals reserve nothing
    # Re-entrant for the same request (a failover attempt).
    r1b = reserve(rest, "cr1b", 10, [k], conv=ConvLock(cid, "alice", "L1"))
    assert r1b["ok"] == 1 and r1b["history"] == [t1, t2]

    # Settling with someone else's lock id leaves the lock alone.
    settle(rest, k, "x", 0, conv=ConvSettle(cid, "L2"))
    assert rest("GET", k_conv_lock(cid)) == "L1"

    t3, t4 = dumps({"role": "user", "parts": [{"text": "q"}]}), dumps({"role": "model", "parts": [{"text": "a"}]})
    rest("EXPIRE", k_conv_meta(cid), 50)
    s = settle(rest, k, "cr1b", r1b["day"], input=8, conv=ConvSettle(cid, "L1", [t3, t4], ttl_s=3600, tokens=30))
    assert s["message_count"] == 4
    assert rest("LRANGE", k_conv_turns(cid), 0, -1) == [t1, t2, t3, t4]
    meta = rest.hgetall(k_conv_meta(cid))
    assert meta["message_count"] == "4" and meta["total_tokens"] == "35" and meta["updated_at"] == str(s["now"])
    assert 3590 <= rest("TTL", k_conv_meta(cid)) <= 3600
    assert 3590 <= rest("TTL", k_conv_turns(cid)) <= 3600
    assert rest("EXISTS", k_conv_lock(cid)) == 0

    # Unlocked: another request gets it; a settle without turns only unlocks.
    r2 = reserve(rest, "cr2", 10, [k], conv=ConvLock(cid, "alice", "L2"))
    assert r2["ok"] == 1 and r2["history"] == [t1, t2, t3, t4]
    s = settle(rest, k, "cr2", r2["day"], conv=ConvSettle(cid, "L2", []))
    assert s["message_count"] is None
    assert rest("EXISTS", k_conv_lock(cid)) == 0
    assert rest("LLEN", k_conv_turns(cid)) == 4


def test_conversation_edge_cases(rest):
    full = Key("cvf", rpm=1)
    cid = "e1"
    rest("HSET", k_conv_meta(cid), "owner", "alice")
    # Empty history: cjson encodes the empty table as an object (store.rs accepts both).
    r = reserve(rest, "e-1", 1, [full], conv=ConvLock(cid, "alice", "L1"))
    assert r["ok"] == 1 and r["history"] in ({}, [])
    settle(rest, full, "e-1", r["day"], conv=ConvSettle(cid, "L1"))
    # A refusal for capacity does not leave the lock behind.
    r = reserve(rest, "e-2", 1, [full], conv=ConvLock(cid, "alice", "L2"))
    assert r["ok"] == 0 and r["limit"] == "rpm"
    assert rest("EXISTS", k_conv_lock(cid)) == 0
    # A bucket refusal is answered before the conversation is locked.
    empty = Bucket(k_client_bucket("alice"), "client", 1, 1)
    rest("HSET", empty.key, "tokens", "0", "ts", int(rest("TIME")[0]) * 1000 + 5000)
    r = reserve(rest, "e-3", 1, [Key("other")], buckets=[empty], conv=ConvLock(cid, "alice", "L3"))
    assert r["limit"] == "client_rate"
    assert rest("EXISTS", k_conv_lock(cid)) == 0
    # Appending to a conversation that expired meanwhile does not resurrect its turns.
    rest("HSET", k_conv_meta("gone"), "owner", "alice")
    r = reserve(rest, "e-4", 1, [Key("other")], conv=ConvLock("gone", "alice", "L4"))
    assert r["ok"] == 1
    rest("DEL", k_conv_meta("gone"))
    s = settle(rest, Key("other"), "e-4", r["day"], conv=ConvSettle("gone", "L4", [dumps({"role": "user"})]))
    assert s["message_count"] is None
    assert rest("EXISTS", k_conv_turns("gone"), k_conv_lock("gone")) == 0


# --------------------------------------------------------------------------- 10. NOSCRIPT replay


def _wait_rest_ready(rest: Rest):
    deadline = time.monotonic() + 15
    while True:
        try:
            if rest("PING") == "PONG":
                return
        except (RestError, requests.RequestException):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _evalsha_raw(rest: Rest, script: Script, keys, args):
    return rest.raw(["EVALSHA", script.sha, len(keys), *keys, *args])


@pytest.mark.parametrize("how", ["script_flush", "redis_restart"])
def test_noscript_then_eval_then_evalsha(env, rest, how):
    k = Key("ns", rpm=100)
    keys, args = reserve_call("ns1", 1, [k])
    assert rest("SCRIPT", "LOAD", RESERVE.text) == RESERVE.sha
    status, body = _evalsha_raw(rest, RESERVE, keys, args)
    assert status == 200 and json.loads(body["result"])["ok"] == 1

    if how == "script_flush":
        assert rest("SCRIPT", "FLUSH") == "OK"
    else:
        env.restart_redis()
        _wait_rest_ready(rest)
    assert rest("SCRIPT", "EXISTS", RESERVE.sha) == [0]
    status, body = _evalsha_raw(rest, RESERVE, keys, args)
    assert status == 400 and "NOSCRIPT" in body["error"], body

    keys, args = reserve_call("ns2", 1, [k])
    r = json.loads(rest("EVAL", RESERVE.text, len(keys), *keys, *args))
    assert r["ok"] == 1
    keys, args = reserve_call("ns3", 1, [k])
    status, body = _evalsha_raw(rest, RESERVE, keys, args)
    assert status == 200 and json.loads(body["result"])["ok"] == 1
    # The settle script goes through the same replay via Rest.eval.
    s = settle(rest, k, "ns3", 0, input=1)
    assert s["now"] > 0


# --------------------------------------------------------------------------- 11. Pacific maths


def pacific_instants() -> list[int]:
    out = []
    for y in range(2024, 2031):
        # Second Sunday of March 10:00 UTC, first Sunday of November 09:00 UTC (from zoneinfo:
        # find the offset changes rather than trusting the rule being tested).
        for month in (3, 11):
            for d in range(1, 15):
                day = date(y, month, d)
                prev_off = datetime.combine(day - timedelta(days=1), dtime(12), tzinfo=LA).utcoffset()
                if datetime.combine(day, dtime(12), tzinfo=LA).utcoffset() == prev_off:
                    continue
                # The offset changes at 02:00 local (in the old offset) on this day.
                t = (datetime.combine(day, dtime(2), tzinfo=timezone(prev_off)) - EPOCH) // timedelta(milliseconds=1)
                for delta in (-86400000, -3600001, -3600000, -1, 0, 1, 3600000, 7200000, 79199999, 86400000):
                    out.append(t + delta)
                # Midnights around the transition day, and one ms either side.
                for dd in (-1, 0, 1, 2):
                    m = datetime.combine(day + timedelta(days=dd), dtime(0), tzinfo=LA)
                    mm = (m - EPOCH) // timedelta(milliseconds=1)
                    out += [mm - 1, mm, mm + 1]
                break
            else:
                raise AssertionError(f"no DST transition found in {y}-{month}")
        # New year in Pacific and in UTC.
        for t in (utc_ms(y, 1, 1, 0, 0), utc_ms(y, 1, 1, 8, 0), utc_ms(y, 12, 31, 23, 59)):
            out += [t - 1, t, t + 1]
    rng = random.Random(7)
    lo, hi = utc_ms(2024, 1, 1), utc_ms(2031, 1, 1)
    out += [rng.randrange(lo, hi) for _ in range(150)]
    return out


def test_pacific_day_in_lua_matches_zoneinfo(rest):
    instants = pacific_instants()
    assert len(instants) >= 300
    got = []
    for i in range(0, len(instants), 100):
        chunk = instants[i : i + 100]
        got += rest.eval(PACIFIC_PROBE, [], [str(t) for t in chunk])
    assert len(got) == 2 * len(instants)
    bad = []
    for j, t in enumerate(instants):
        want = py_pacific(t)
        if (got[2 * j], got[2 * j + 1]) != want:
            bad.append((t, (got[2 * j], got[2 * j + 1]), want))
    assert not bad, bad[:10]


def test_reserve_day_matches_zoneinfo_for_redis_now(rest):
    r = reserve(rest, "pd", 1, [Key("pd")])
    assert r["day"] == py_pacific(r["now"])[0]
    assert abs(r["now"] - time.time() * 1000) < 5000


def test_conversation_history_estimate_is_reserved_and_grown(rest):
    k = Key("he", rpm=100, tpm=5000)
    cid = "h1"
    rest("HSET", k_conv_meta(cid), "owner", "alice", "hist_est", 1200, "system", "be brief")
    r = reserve(rest, "h-1", 300, [k], conv=ConvLock(cid, "alice", "L1"))
    assert r["ok"] == 1 and r["est"] == 1500 and r["system"] == "be brief"
    assert rest.hgetall(k_tokens("he", MODEL)) == {"h-1": "1500", "_sum": "1500"}
    s = settle(rest, k, "h-1", r["day"], input=1400,
               conv=ConvSettle(cid, "L1", [dumps({"role": "user"}), dumps({"role": "model"})], est=250))
    assert s["message_count"] == 2
    assert rest("HGET", k_conv_meta(cid), "hist_est") == "1450"
    assert rest.hgetall(k_tokens("he", MODEL)) == {"h-1": "1400", "_sum": "1400"}
    # The history counts towards too_large as well.
    r = reserve(rest, "h-2", 3600, [k], conv=ConvLock(cid, "alice", "L2"))
    assert r["ok"] == 0 and r["limit"] == "too_large"
    assert rest("EXISTS", k_conv_lock(cid)) == 0
    # Without a conversation: est is the request's own estimate, no system field.
    r = reserve(rest, "h-3", 10, [k])
    assert r["ok"] == 1 and r["est"] == 10 and "system" not in r
