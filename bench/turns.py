"""A conversation turn end to end as its history grows: the worker (wrangler dev, as the e2e
tests start it) with CONTEXT_BUDGET_TOKENS=4000, a conversation preloaded with 10, 100 and
1,000 stored turns (200 characters each, stored as `engine::conversation_turns` stores them,
`est` 50), then `--sends` sends each: p50 latency, and the reservation reply's size.

    .venv/bin/python bench/turns.py [--sends 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Env  # noqa: E402

MODEL = "gemini-2.5-flash"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sends", type=int, default=40)
    ap.add_argument("--budget", type=int, default=4000)
    args = ap.parse_args()
    env = Env()
    out = []
    try:
        keys = json.loads((ROOT / "keys.json").read_text())
        for k in keys["keys"]:
            k["rpm"], k["tpm"], k["rpd"] = 100000, 10**9, 10**6
        env.mock_reset(keys)
        w = env.start_worker(keys, vars={"CONTEXT_BUDGET_TOKENS": str(args.budget)})
        for n in (10, 100, 1000):
            r = w.post("/v1/conversations", {"model": MODEL})
            cid = r.json()["id"]
            turns = [json.dumps({"at": 1, "est": 50, "parts": [{"text": "x" * 200}],
                                 "role": "user" if i % 2 == 0 else "model"}, separators=(",", ":")) for i in range(n)]
            for i in range(0, n, 100):
                env.redis_cmd("RPUSH", f"{{llmr}}:conv:{cid}:turns", *turns[i:i + 100])
            env.redis_cmd("HSET", f"{{llmr}}:conv:{cid}:meta", "hist_est", 50 * n)
            lat = []
            for i in range(10 + args.sends):  # the first 10 warm up
                # Keep the history at n turns: the send appends 2, trim them back.
                t0 = time.perf_counter()
                r = w.post(f"/v1/conversations/{cid}/messages", {"content": "hi"})
                if i >= 10:
                    lat.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
                env.redis_cmd("LTRIM", f"{{llmr}}:conv:{cid}:turns", 0, n - 1)
            out.append({"turns": n, "p50_ms": round(statistics.median(lat), 2),
                        "omitted_turns": r.json().get("omitted_turns")})
    finally:
        env.close()
    res = {"budget": args.budget, "sends": args.sends, "turns": out,
           "p50_ratio_1000_vs_10": round(out[-1]["p50_ms"] / out[0]["p50_ms"], 2)}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
