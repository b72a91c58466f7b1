"""Does a 20 ms upstream wait make *any* worker slower, or only the router? A 10-line JS worker
doing the router's shape (Upstash PING -> mock generateContent -> Upstash PING) with the mock at
0 and 20 ms: latency minus the direct mock, and workerd CPU per request.

    bench/.venv/bin/python bench/profile/floor_latency.py [--n 400]
"""
from __future__ import annotations

import argparse
import common as C
from conftest import TOKEN

WORKER = """export default {
  async fetch(req, env) {
    const h = {authorization: "Bearer " + env.TOKEN, "content-type": "application/json"};
    let r = await fetch(env.URL, {method: "POST", body: '["PING"]', headers: h}); await r.text();
    r = await fetch(env.GEN, {method: "POST", body: env.BODY, headers: {"x-goog-api-key": env.KEY, "content-type": "application/json"}});
    await r.text();
    r = await fetch(env.URL, {method: "POST", body: '["PING"]', headers: h}); await r.text();
    return new Response("ok");
  }
};
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    o = ap.parse_args()
    env, keys, _ = C.start_env()
    port = C.stack.free_port()
    d = C.stack.RUN_DIR / f"prof-floorlat-{port}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "w.js").write_text(WORKER)
    gen = f"{env.mock.url}/v1beta/models/{C.B.FAST_MODEL}:generateContent"
    key = C.fake_key("bench-flash-01")
    (d / "config.capnp").write_text(f'''using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .w), (name = "internet", network = (allow = ["public", "private", "local"]))],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")]);
const w :Workerd.Worker = (modules = [(name = "w.js", esModule = embed "w.js")], compatibilityDate = "2026-11-01",
  bindings = [(name = "URL", text = "{env.rest.url}/"), (name = "TOKEN", text = "{TOKEN}"), (name = "GEN", text = "{gen}"),
              (name = "KEY", text = "{key}"), (name = "BODY", text = {C.capnp_text(C.GEM_BODY)})],
  globalOutbound = "internet");
''')
    svc = C.stack.Service("prof-floorlat", [str(C.WORKERD), "serve", str(d / "config.capnp")], port).start()
    try:
        C.stack.wait_for(lambda: C.stack.http_ok(f"http://127.0.0.1:{port}/"), 30, "workerd", svc.proc, svc.log)
        print("| mock latency | mock direct p50 | JS worker p50 | added | workerd CPU ms/req |\n|---:|---:|---:|---:|---:|")
        for lat in (0, 20, 0, 20):
            env.mock_reset(keys, latency_ms=lat)
            m = C.loadgen(gen, o.n, C.GEM_BODY, [f"x-goog-api-key: {key}"], warmup=50)["latency_ms"]["p50"]
            C.loadgen(f"http://127.0.0.1:{port}/", 50, warmup=0)
            c0 = C.proc_cpu_s(svc.proc.pid)
            w = C.loadgen(f"http://127.0.0.1:{port}/", o.n, warmup=0)["latency_ms"]["p50"]
            cpu = (C.proc_cpu_s(svc.proc.pid) - c0) / o.n * 1000
            print(f"| {lat} | {m:.3f} | {w:.3f} | {w - m:+.3f} | {cpu:.3f} |", flush=True)
    finally:
        svc.stop()
        env.close()


if __name__ == "__main__":
    main()
