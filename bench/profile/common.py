"""Shared setup for the profiling scripts: the local stack (redis-server, Upstash-REST server,
mock Gemini at 0 ms latency) and `workerd serve` on a *copy* of the build, optionally with the
V8 inspector open. Uses the bench's key pool and client (bench/run.py) so the numbers match the
benchmark's `router_wd` column."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import stack  # noqa: E402
import run as B  # noqa: E402  (bench_keys, clients_json, loadgen)
from conftest import TOKEN as REST_TOKEN, Env, fake_key  # noqa: E402
from hosts import render_config, WORKERD, capnp_text  # noqa: E402

CLIENT_TOKEN = "sk-prof-0123456789abcdef"
AUTH = f"authorization: Bearer {CLIENT_TOKEN}"
GEN_BODY = json.dumps({"prompt": B.PROMPT, "model": B.FAST_MODEL})
GEM_BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": B.PROMPT}]}]})


def start_env(latency_ms: int = 0) -> tuple[Env, dict, dict]:
    env = Env()
    keys = B.bench_keys(20)
    env.mock_reset(keys, latency_ms=latency_ms)
    v = {"UPSTASH_REDIS_REST_URL": env.rest.url, "UPSTASH_REDIS_REST_TOKEN": REST_TOKEN,
         "GEMINI_BASE_URL": env.mock.url, "KEYS_JSON": json.dumps(keys, separators=(",", ":")),
         "BACKOFF_BASE_MS": "10", "BACKOFF_CAP_MS": "50",
         "CLIENTS_JSON": B.clients_json(CLIENT_TOKEN),
         "USER_RPM_DEFAULT": "1000000", "USER_BURST_DEFAULT": "1000000",
         "GLOBAL_RPM_MAX": "100000000", "GLOBAL_BURST_MAX": "100000000", "LOG_LEVEL": "WARN"}
    for k in keys["keys"]:
        v["API_KEY_" + k["key_id"].upper().replace("-", "_")] = fake_key(k["key_id"])
    return env, keys, v


def start_workerd(vars: dict, build_dir: Path, inspector_port: int | None = None) -> stack.Service:
    port = stack.free_port()
    cfg_dir = Path(tempfile.mkdtemp(prefix="prof-workerd-"))
    cfg = cfg_dir / "config.capnp"
    cfg.write_text(render_config(vars, port, Path(build_dir).resolve(), cfg_dir))
    args = [str(WORKERD), "serve", str(cfg)]
    if inspector_port:
        args.append(f"--inspector-addr=127.0.0.1:{inspector_port}")
    svc = stack.Service(f"prof-workerd", args, port).start()
    stack.wait_for(lambda: stack.http_ok(f"http://127.0.0.1:{port}/health", any_status=True), 60,
                   "workerd serve", svc.proc, svc.log)
    svc.url = f"http://127.0.0.1:{port}"
    svc.config = cfg
    return svc


def loadgen(url, n, body=None, headers=(), warmup=100, c=1, method=None):
    return B.loadgen(url, n, c, body, list(headers), warmup=warmup, max_seconds=300, method=method)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
