"""workerd CPU and latency per request of the 10-line JS worker from bench/subreq_floor.py
(N sequential loopback POSTs to the Upstash-REST server, N = 0..3), same method as timing.py:
utime+stime of the workerd process over N requests at c=1.

    bench/.venv/bin/python bench/profile/floor_cpu.py [--n 3000]
"""

from __future__ import annotations

import argparse
import statistics

import common as C
from subreq_floor import WORKER  # noqa: E402  (bench/ is on sys.path via common)
from conftest import TOKEN


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    o = ap.parse_args()
    env = C.Env()
    port = C.stack.free_port()
    d = C.stack.RUN_DIR / f"prof-floor-{port}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "w.js").write_text(WORKER)
    (d / "config.capnp").write_text(f'''using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .w), (name = "internet", network = (allow = ["public", "private", "local"]))],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")]);
const w :Workerd.Worker = (modules = [(name = "w.js", esModule = embed "w.js")], compatibilityDate = "2026-11-01",
  bindings = [(name = "URL", text = "{env.rest.url}/"), (name = "TOKEN", text = "{TOKEN}")], globalOutbound = "internet");
''')
    svc = C.stack.Service("prof-floor", [str(C.WORKERD), "serve", str(d / "config.capnp")], port).start()
    res = {}
    try:
        C.stack.wait_for(lambda: C.stack.http_ok(f"http://127.0.0.1:{port}/0"), 30, "workerd", svc.proc, svc.log)
        for _ in range(o.rounds):
            for n in (0, 1, 2, 3):
                url = f"http://127.0.0.1:{port}/{n}"
                C.loadgen(url, 200, warmup=0)
                c0 = C.proc_cpu_s(svc.proc.pid)
                r = C.loadgen(url, o.n, warmup=0)
                cpu = (C.proc_cpu_s(svc.proc.pid) - c0) / o.n * 1000
                res.setdefault(n, []).append((r["latency_ms"]["p50"], cpu))
                print(f"{n} subrequests: p50 {r['latency_ms']['p50']:.3f} ms, workerd CPU {cpu:.3f} ms/req", flush=True)
        print("\n| sequential subrequests (JS worker) | p50 ms | workerd CPU ms/req |\n|---:|---:|---:|")
        for n, xs in res.items():
            print(f"| {n} | {statistics.median(x[0] for x in xs):.3f} | {statistics.median(x[1] for x in xs):.3f} |")
    finally:
        svc.stop()
        env.close()


if __name__ == "__main__":
    main()
