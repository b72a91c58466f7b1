"""Costs that must stay flat: `reserve_v1` inside Redis as the pool grows, and a conversation
turn as its history grows.

    .venv/bin/python bench/scale.py [--calls 2000] [--window 8]

1. Pool size. For pools of 3, 30, 300 and 1,000 keys of one model (free-tier limits, one quota
   group per key), sends `--calls` reservations (each followed by its settle, as the router
   does) and reads `cmdstat_evalsha` from `INFO commandstats` around the reservations only:
   usec per reservation inside Redis, plus the REST payload of one call. Limits are high
   enough that every reservation is admitted (the same path at every size). KEYS/ARGV are built
   as `core/src/store/reserve.rs` builds them (the mirror in tests/quota); the candidates
   offered are what the engine offers (`--window` keys, or the whole pool with --window 0).
2. Conversation length. For 10, 100 and 1,000 stored turns, the reservation of the next turn
   (the one that reads the history): usec inside Redis and the reply's bytes.

Talks RESP to a redis-server it starts on a free port, so it measures Redis, not HTTP.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "quota"))

import stack  # noqa: E402
import test_lua_scripts as q  # noqa: E402


class Resp:
    """The smallest RESP2 client: enough for EVALSHA, SCRIPT LOAD, INFO and a few writes."""

    def __init__(self, port: int):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.s.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")


def evalsha_usec(r: Resp) -> tuple[int, int]:
    for line in r("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            f = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            return int(f["calls"]), int(f["usec"])
    return 0, 0


def offer(keys: list, window: int, rng: random.Random) -> list:
    """What the engine offers: the whole pool up to `window` keys, else `window` keys drawn by
    weight (`engine::failover::sample_window`)."""
    if window <= 0 or len(keys) <= window:
        return keys
    return sorted(keys, key=lambda k: rng.random() ** (1.0 / k.weight), reverse=True)[:window]


def pool_cost(r: Resp, n: int, calls: int, window: int) -> dict:
    r("FLUSHALL")
    rng = random.Random(7)
    keys = [q.Key(f"k{i:04d}", rpm=calls, tpm=10**9, rpd=10**6) for i in range(n)]
    payload = 0
    spent = 0
    settle_spent = 0
    admitted = 0
    for i in range(calls):
        cands = offer(keys, window, rng)
        k, a = q.reserve_call(f"r{i}", 20, cands)
        payload = max(payload, len(json.dumps(["EVALSHA", q.RESERVE.sha, len(k), *k, *a])))
        c0, u0 = evalsha_usec(r)
        rep = json.loads(r("EVALSHA", q.RESERVE.sha, len(k), *k, *a))
        c1, u1 = evalsha_usec(r)
        spent += u1 - u0
        if rep.get("ok") == 1:
            admitted += 1
            key = next(x for x in cands if x.key_id == rep["key"])
            sk, sa = q.settle_call(key, f"r{i}", rep["day"], input=12, output=3)
            c2, u2 = evalsha_usec(r)
            r("EVALSHA", q.SETTLE.sha, len(sk), *sk, *sa)
            settle_spent += evalsha_usec(r)[1] - u2
    return {"keys": n, "offered": len(offer(keys, window, rng)), "calls": calls, "admitted": admitted,
            "usec_per_reserve": round(spent / calls, 1), "usec_per_settle": round(settle_spent / max(admitted, 1), 1),
            "rest_payload_bytes": payload,
            # Redis runs scripts one at a time: one shard admits at most this many requests/s.
            "shard_ceiling_rps": round(1e6 / (spent / calls + settle_spent / max(admitted, 1)))}


def conv_cost(r: Resp, turns: int, budget: int | None, reps: int = 50) -> dict:
    """Turns as `engine::conversation_turns` stores them: 200 characters each (50 tokens by the
    default estimator), keys sorted, `est` second; user and model alternate."""
    r("FLUSHALL")
    key = q.Key("k1")
    cid = "c_scale"
    r("HSET", q.k_conv_meta(cid), "owner", "alice", "model", q.MODEL, "hist_est", 50 * turns)
    def turn(i):
        role = "user" if i % 2 == 0 else "model"
        return json.dumps({"at": 1, "est": 50, "parts": [{"text": "x" * 200}], "role": role}, separators=(",", ":"))
    for i in range(0, turns, 100):
        r("RPUSH", q.k_conv_turns(cid), *[turn(j) for j in range(i, min(turns, i + 100))])
    spent, size = 0, 0
    for i in range(reps):
        lock = q.ConvLock(cid, "alice", f"l{i}")
        k, a = q.reserve_call(f"c{i}", 20, [key], conv=lock)
        if budget is not None:
            spec = json.loads(a[0])
            spec["conv"]["budget"] = budget
            a = [json.dumps(spec, separators=(",", ":"))]
        c0, u0 = evalsha_usec(r)
        t0 = time.perf_counter()
        out = r("EVALSHA", q.RESERVE.sha, len(k), *k, *a)
        spent += evalsha_usec(r)[1] - u0
        size = len(out)
        rep = json.loads(out)
        assert rep["ok"] == 1, rep
        sk, sa = q.settle_call(key, f"c{i}", rep["day"], conv=q.ConvSettle(cid, f"l{i}"))
        r("EVALSHA", q.SETTLE.sha, len(sk), *sk, *sa)
    return {"turns": turns, "budget": budget, "usec_per_reserve": round(spent / reps, 1), "reply_bytes": size}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--window", type=int, default=8, help="keys offered per reservation (0: all)")
    ap.add_argument("--budget", type=int, default=4000,
                    help="CONTEXT_BUDGET_TOKENS sent with the conversation (0: none, every turn read)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    redis = stack.start_redis()
    try:
        r = Resp(redis.port)
        for s in (q.RESERVE, q.SETTLE):
            r("SCRIPT", "LOAD", s.text)
        pools = [pool_cost(r, n, args.calls, args.window) for n in (3, 30, 300, 1000)]
        convs = [conv_cost(r, t, args.budget or None) for t in (10, 100, 1000)]
    finally:
        redis.stop()
    out = {"window": args.window, "pools": pools, "conversations": convs,
           "pool_ratio_1000_vs_3": round(pools[-1]["usec_per_reserve"] / pools[0]["usec_per_reserve"], 2),
           "turn_ratio_1000_vs_10": round(convs[-1]["usec_per_reserve"] / convs[0]["usec_per_reserve"], 2)}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
