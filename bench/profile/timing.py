"""Per-route latency of the worker in plain `workerd serve`, c=1, to split the fixed per-request
cost from the per-subrequest cost.

    bench/.venv/bin/python bench/profile/timing.py --build /tmp/prof-build [--n 2000] [--rounds 2]

Routes (all on one workerd, mock Gemini at 0 ms):
  mock          POST the mock's generateContent directly (the floor the 'added' figure subtracts)
  404           GET /nonexistent            -- routing + error JSON, no I/O
  gen-badmodel  POST /v1/generate, unknown model  -- + auth (SHA-256 of the token), body read +
                parse, GenerateRequest::parse, error JSON; still no I/O
  health        GET /health without token   -- + one Upstash pipeline subrequest
  generate      POST /v1/generate           -- reserve + upstream + settle (3 subrequests)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common as C


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="/tmp/prof-build")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency-ms", type=int, default=0, help="mock Gemini latency (the bench uses 20)")
    ap.add_argument("--routes", default="mock,404,gen-badmodel,health,generate")
    ap.add_argument("--out", default=None)
    o = ap.parse_args()
    env, keys, vars = C.start_env(o.latency_ms)
    wd = None
    res: dict = {}
    try:
        wd = C.start_workerd(vars, Path(o.build))
        u = wd.url
        mock_gen = f"{env.mock.url}/v1beta/models/{C.B.FAST_MODEL}:generateContent"
        routes = {
            "mock": (mock_gen, C.GEM_BODY, [f"x-goog-api-key: {C.fake_key('bench-flash-01')}"], None),
            "404": (u + "/nonexistent", None, [], None),
            "gen-badmodel": (u + "/v1/generate", json.dumps({"prompt": C.B.PROMPT, "model": "nope"}), [C.AUTH], None),
            "health": (u + "/health", None, [], None),
            "generate": (u + "/v1/generate", C.GEN_BODY, [C.AUTH], None),
        }
        routes = {k: routes[k] for k in o.routes.split(",")}
        for rnd in range(o.rounds):
            for name, (url, body, hdr, m) in routes.items():
                C.loadgen(url, 200, body, hdr, warmup=0, method=m)
                cpu0 = C.proc_cpu_s(wd.proc.pid)
                r = C.loadgen(url, o.n, body, hdr, warmup=0, method=m)
                cpu = (C.proc_cpu_s(wd.proc.pid) - cpu0) / o.n * 1000 if name != "mock" else 0.0
                lat = r["latency_ms"]
                res.setdefault(name, []).append({"p50": lat["p50"], "p90": lat.get("p90"), "p99": lat["p99"],
                                                 "mean": lat.get("mean"), "status": r["status"], "workerd_cpu_ms": cpu})
                print(f"round {rnd} {name:13s} p50 {lat['p50']:.3f} p99 {lat['p99']:.3f} mean {lat.get('mean', 0):.3f} "
                      f"workerd CPU {cpu:.3f} ms/req status {r['status']}", flush=True)
        print("\n| route | p50 ms (median of rounds) | mean ms | minus mock p50 | workerd CPU ms/req |\n|---|---:|---:|---:|---:|")
        mock = statistics.median(x["p50"] for x in res["mock"])
        for name, rs in res.items():
            p50 = statistics.median(x["p50"] for x in rs)
            mean = statistics.median(x["mean"] for x in rs if x["mean"] is not None) if rs[0]["mean"] is not None else float("nan")
            cpu = statistics.median(x["workerd_cpu_ms"] for x in rs)
            print(f"| {name} | {p50:.3f} | {mean:.3f} | {p50 - mock:+.3f} | {cpu:.3f} |")
        out = Path(o.out or C.HERE / "out" / f"timing-{Path(o.build).name}-lat{o.latency_ms}.json")
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
    finally:
        if wd:
            wd.stop()
        env.close()


if __name__ == "__main__":
    main()
