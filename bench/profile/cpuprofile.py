"""CPU-profile the worker in `workerd serve` through the V8 inspector (Chrome DevTools Protocol).

    bench/.venv/bin/python bench/profile/cpuprofile.py --build /tmp/prof-build-names \
        [--route generate|404|health|gen-badmodel] [--n 3000] [--interval-us 100]

Starts the stack + workerd with `--inspector-addr`, warms up, then Profiler.enable /
setSamplingInterval / start, drives N sequential requests with target/release/loadgen (c=1),
Profiler.stop, and writes `out/<route>-<build>.cpuprofile` (loadable in Chrome DevTools) and
prints the aggregation of `analyze.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path

import websockets

import common as C
import analyze


async def cdp_session(ws_url: str):
    ws = await websockets.connect(ws_url, max_size=1 << 30, ping_interval=None)
    ids = iter(range(1, 1 << 30))

    async def call(method, params=None):
        i = next(ids)
        await ws.send(json.dumps({"id": i, "method": method, "params": params or {}}))
        while True:
            m = json.loads(await ws.recv())
            if m.get("id") == i:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
    return ws, call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="/tmp/prof-build-names")
    ap.add_argument("--route", default="generate")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--interval-us", type=int, default=100)
    ap.add_argument("--tag", default="")
    o = ap.parse_args()
    env, keys, vars = C.start_env()
    ins = C.stack.free_port()
    wd = None
    try:
        wd = C.start_workerd(vars, Path(o.build), inspector_port=ins)
        u = wd.url
        routes = {
            "404": (u + "/nonexistent", None, []),
            "gen-badmodel": (u + "/v1/generate", json.dumps({"prompt": C.B.PROMPT, "model": "nope"}), [C.AUTH]),
            "health": (u + "/health", None, []),
            "generate": (u + "/v1/generate", C.GEN_BODY, [C.AUTH]),
        }
        url, body, hdr = routes[o.route]
        C.loadgen(url, 500, body, hdr, warmup=0)  # warm up (JIT tiers, state parse)
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ins}/json/list", timeout=5).read())
        ws_url = targets[0]["webSocketDebuggerUrl"]
        print("inspector target:", targets[0].get("title"), ws_url, flush=True)

        async def go():
            ws, call = await cdp_session(ws_url)
            await call("Profiler.enable")
            await call("Profiler.setSamplingInterval", {"interval": o.interval_us})
            await call("Profiler.start")
            t0 = time.monotonic()
            r = await asyncio.to_thread(C.loadgen, url, o.n, body, hdr, 0)
            wall = time.monotonic() - t0
            prof = (await call("Profiler.stop"))["profile"]
            await ws.close()
            return r, wall, prof

        r, wall, prof = asyncio.run(go())
        print(f"loadgen: status {r['status']} p50 {r['latency_ms']['p50']:.3f} ms (with profiler on), wall {wall:.1f}s")
        out = C.HERE / "out"
        out.mkdir(exist_ok=True)
        name = f"{o.route}-{Path(o.build).name}{'-' + o.tag if o.tag else ''}"
        p = out / f"{name}.cpuprofile"
        p.write_text(json.dumps(prof))
        print("wrote", p)
        analyze.report(prof, o.n)
    finally:
        if wd:
            wd.stop()
        env.close()


if __name__ == "__main__":
    main()
