"""What N sequential loopback subrequests cost a worker in plain `workerd serve`, without the
router: a 10-line JS worker that POSTs `["PING"]` to the local Upstash-REST server N times
(N = 0..3, the router's one-shot path makes 3: reserve, upstream, settle) and answers "ok".

    bench/.venv/bin/python bench/subreq_floor.py

Prints p50/p99 at c=1 and throughput at c=50 for each N (2 rounds). Compare with the router's
added latency and throughput under `workerd serve` in the main table: the difference is the
router's own work (wasm + JS glue + JSON), not the hops.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as B  # noqa: E402
import stack  # noqa: E402
from conftest import TOKEN, Env  # noqa: E402

WORKER = """export default {
  async fetch(req, env) {
    const n = parseInt(new URL(req.url).pathname.slice(1) || "0");
    for (let i = 0; i < n; i++) {
      const r = await fetch(env.URL, {method: "POST", body: '["PING"]',
        headers: {authorization: "Bearer " + env.TOKEN, "content-type": "application/json"}});
      await r.text();
    }
    return new Response("ok");
  }
};
"""


def main():
    env = Env()
    port = stack.free_port()
    d = stack.RUN_DIR / f"subreq-floor-{port}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "w.js").write_text(WORKER)
    (d / "config.capnp").write_text(f'''using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .w), (name = "internet", network = (allow = ["public", "private", "local"]))],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")]);
const w :Workerd.Worker = (modules = [(name = "w.js", esModule = embed "w.js")], compatibilityDate = "2026-11-01",
  bindings = [(name = "URL", text = "{env.rest.url}/"), (name = "TOKEN", text = "{TOKEN}")], globalOutbound = "internet");
''')
    svc = stack.Service("workerd-subreq", [str(stack.ROOT / "node_modules/.bin/workerd"), "serve", str(d / "config.capnp")], port).start()
    try:
        stack.wait_for(lambda: stack.http_ok(f"http://127.0.0.1:{port}/0"), 30, "workerd", svc.proc, svc.log)
        print("| sequential subrequests | c=1 p50 / p99 (ms) | c=50 throughput (req/s) |\n|---:|---:|---:|")
        for _ in range(2):
            for n in (0, 1, 2, 3):
                r = B.loadgen(f"http://127.0.0.1:{port}/{n}", 500, 1, warmup=50)
                t = B.loadgen(f"http://127.0.0.1:{port}/{n}", 2000, 50, warmup=100)
                print(f"| {n} | {r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} | {t['throughput_rps']:.0f} |")
    finally:
        svc.stop()
        env.close()


if __name__ == "__main__":
    main()
