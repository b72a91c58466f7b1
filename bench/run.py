"""Router vs LiteLLM benchmark driver (issue 8). Run it through `bash bench/run.sh`.

One run starts redis-server, the local Upstash-REST server, the mock Gemini (fixed latency),
the worker twice from the same `build/` -- in `wrangler dev` and in plain `workerd serve`
(generated capnp config, no wrangler proxy), both from a private snapshot of `build/`
(bench/hosts.py) -- and the LiteLLM proxy, all on loopback, and measures with `tools/loadgen` (exact percentiles):

- latency at concurrency 1/50/200 for the mock directly, the router and LiteLLM; "added" is
  minus the direct-mock figure of the same run;
- throughput at concurrency 50 (mock at the fixed latency, and with an instant mock);
- the floor of each worker host (`GET /nonexistent`, a 404 without I/O) and LiteLLM's
  (`GET /health/liveliness`);
- conversation and streaming endpoints when the router answers them (not 404/405);
- Redis commands and round trips per request (`/_local/stats` for the router; redis-server
  `INFO commandstats` for LiteLLM, which talks to Redis directly);
- wasm size raw and gzipped;
- exactness under a 5x overload of a small pool, for both.

Writes bench/results/latest.json and bench/results/latest.md, and prints the table. Every
process it starts is stopped in `finally`, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import stack  # noqa: E402
from conftest import TOKEN as REST_TOKEN, Env, Worker, fake_key, mock_config  # noqa: E402
from hosts import snapshot_build, start_floor_worker, start_workerd, start_wrangler_dev  # noqa: E402

LOADGEN = ROOT / "target" / "release" / "loadgen"
RESULTS = BENCH / "results"
PROMPT = "What is 2+2?"
STREAM_PROMPT = "Tell me a short story about a lighthouse keeper and a cat who share a quiet night"
FAST_MODEL = "gemini-2.5-flash"  # latency/throughput pool: limits far above the load
TIGHT_MODEL = "gemini-2.5-flash-lite"  # overload pool: 3 keys x rpm 20


# --- configuration ------------------------------------------------------------------------

def bench_keys(tight_rpm: int) -> dict:
    keys = [
        {"key_id": f"bench-flash-0{i}", "model_name": FAST_MODEL, "provider": "gemini",
         "rpm": 1_000_000, "tpm": 1_000_000_000, "rpd": 1_000_000_000, "active": True}
        for i in (1, 2, 3)
    ]
    keys += [
        {"key_id": f"bench-lite-0{i}", "model_name": TIGHT_MODEL, "provider": "gemini",
         "rpm": tight_rpm, "tpm": 1_000_000, "rpd": 100_000, "active": True}
        for i in (1, 2, 3)
    ]
    return {"keys": keys}


def clients_json(token: str) -> str:
    return json.dumps({"clients": [{
        "id": "bench", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "scopes": ["generate", "conversations", "stats", "admin"], "rpm": 1_000_000, "burst": 1_000_000,
    }]}, separators=(",", ":"))


def litellm_config(keys: dict, mock_url: str, redis_port: int, master_key: str) -> str:
    """LiteLLM proxy config (YAML is a superset of JSON, so JSON is written)."""
    model_list = []
    for k in keys["keys"]:
        model_list.append({
            "model_name": k["model_name"],
            "litellm_params": {
                "model": f"gemini/{k['model_name']}",
                "api_key": fake_key(k["key_id"]),
                "api_base": f"{mock_url}/v1beta",
                "rpm": k["rpm"],
                "tpm": k["tpm"],
            },
            "model_info": {"id": k["key_id"]},
        })
    cfg = {
        "model_list": model_list,
        "router_settings": {
            "routing_strategy": "usage-based-routing-v2",
            "redis_host": "127.0.0.1",
            "redis_port": redis_port,
            "enable_pre_call_checks": True,
        },
        "litellm_settings": {"telemetry": False, "drop_params": True, "set_verbose": False},
        "general_settings": {"master_key": master_key, "disable_spend_logs": True},
    }
    return json.dumps(cfg, indent=1)


# --- helpers ------------------------------------------------------------------------------

def redis_cmd(port: int, *args: str):
    """Minimal RESP client for INFO / CONFIG RESETSTAT on the local redis-server."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload.encode())
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if buf.startswith(b"+") or buf.startswith(b"-"):
                if buf.endswith(b"\r\n"):
                    break
            elif buf.startswith(b"$"):
                head, _, rest = buf.partition(b"\r\n")
                if len(rest) >= int(head[1:]) + 2:
                    break
    if buf.startswith(b"$"):
        return buf.partition(b"\r\n")[2][:-2].decode()
    return buf.decode().strip()


def redis_commands_total(port: int) -> int:
    for line in redis_cmd(port, "INFO", "stats").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return 0


def redis_commandstats(port: int) -> dict:
    out = {}
    for line in redis_cmd(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            calls = int(rest.split(",")[0].split("=")[1])
            out[name[len("cmdstat_"):]] = calls
    return out


def loadgen(url, n, c, body=None, headers=(), warmup=0, rate=None, max_seconds=120, urls_file=None,
            method=None, timeout_ms=60_000) -> dict:
    args = [str(LOADGEN), "-n", str(n), "-c", str(c), "--max-seconds", str(max_seconds),
            "--timeout-ms", str(timeout_ms)]
    if urls_file:
        args += ["--urls-file", urls_file]
    else:
        args += ["--url", url]
    if body is not None:
        args += ["--body", body if isinstance(body, str) else json.dumps(body)]
    if method:
        args += ["-m", method]
    for h in headers:
        args += ["-H", h]
    if warmup:
        args += ["--warmup", str(warmup)]
    if rate:
        args += ["--rate", str(rate)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=max_seconds + 120)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen failed ({p.returncode}): {p.stderr}")
    return json.loads(p.stdout)


def brief(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {k: r.get(k) for k in ("sent", "ok", "status", "errors", "transport_errors", "elapsed_s", "throughput_rps",
                                  "latency_ms", "first_chunk_ms", "concurrency")}


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def available(status: int) -> bool:
    return status not in (404, 405)


# --- the run ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small counts and a 20 s overload (smoke test)")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--overload-seconds", type=int, default=58)
    ap.add_argument("--tight-rpm", type=int, default=20)
    ap.add_argument("--log-level", default="WARN",
                    help="the router's LOG_LEVEL (INFO logs one line per request; production logs go to "
                         "Cloudflare's pipeline, so WARN is the fair setting for a local benchmark)")
    ap.add_argument("--no-workerd-serve", action="store_true")
    opts = ap.parse_args()
    q = opts.quick
    counts = {1: 60 if q else 300, 50: 300 if q else 1500, 200: 400 if q else 2000}
    overload_s = 20 if q else opts.overload_seconds

    RESULTS.mkdir(exist_ok=True)
    token = "sk-bench-" + secrets.token_hex(16)
    auth = f"authorization: Bearer {token}"
    keys = bench_keys(opts.tight_rpm)
    res: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "mock_latency_ms": opts.latency_ms,
        "router_log_level": opts.log_level,
        "worker_build": {"state": os.environ.get("BENCH_WORKER_BUILD", "unknown"),
                         "build_mtime": dt.datetime.fromtimestamp((ROOT / "build" / "index_bg.wasm").stat().st_mtime,
                                                                  dt.timezone.utc).isoformat(timespec="seconds"),
                         "opt_level": str(__import__("tomllib").loads((ROOT / "Cargo.toml").read_text())["profile"]["release"].get("opt-level")),
                         "git_head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                    capture_output=True, text=True).stdout.strip()},
        "counts": counts,
        "litellm": {"available": False},
    }
    env = None
    wd_svc = None
    floor_svc = None
    litellm_proc = None
    litellm_log = None
    tmpdir = tempfile.mkdtemp(prefix="bench-")
    snap = snapshot_build()  # others may rebuild build/ during the run; measure one fixed copy
    res["worker_build"]["snapshot"] = str(snap.relative_to(ROOT))
    try:
        # wasm size
        wasm = (snap / "build" / "index_bg.wasm").read_bytes()
        res["wasm"] = {"raw_bytes": len(wasm), "gzip_bytes": len(gzip.compress(wasm, 9))}

        log("starting redis, upstash-local, mock-gemini")
        env = Env()
        env.mock_reset(keys, latency_ms=opts.latency_ms)
        mock_url = env.mock.url
        log(f"starting the worker (wrangler dev), LOG_LEVEL={opts.log_level}")
        bench_vars = {
            "CLIENTS_JSON": clients_json(token),
            "USER_RPM_DEFAULT": "1000000", "USER_BURST_DEFAULT": "1000000",
            "GLOBAL_RPM_MAX": "100000000", "GLOBAL_BURST_MAX": "100000000",
            "LOG_LEVEL": opts.log_level,
        }
        # The bindings conftest.Env.start_worker gives a worker, plus the bench's own.
        all_vars = {"UPSTASH_REDIS_REST_URL": env.rest.url, "UPSTASH_REDIS_REST_TOKEN": REST_TOKEN,
                    "GEMINI_BASE_URL": mock_url, "KEYS_JSON": json.dumps(keys, separators=(",", ":")),
                    "BACKOFF_BASE_MS": "10", "BACKOFF_CAP_MS": "50"}
        for k in keys["keys"]:
            all_vars["API_KEY_" + k["key_id"].upper().replace("-", "_")] = fake_key(k["key_id"])
        all_vars.update(bench_vars)
        worker = Worker(start_wrangler_dev(snap, all_vars), env, keys)
        env.workers.append(worker)  # stopped by env.close()
        wurl = worker.url
        wdurl = None
        if not opts.no_workerd_serve:
            log("starting the worker (plain workerd serve)")
            wd_svc = start_workerd(all_vars, build_dir=snap / "build")
            wdurl = wd_svc.url
            res["workerd_serve"] = {"config": str(wd_svc.config.relative_to(ROOT))}

        if not opts.no_litellm:
            lport = stack.free_port()
            cfg_path = Path(tmpdir) / "litellm.yaml"
            cfg_path.write_text(litellm_config(keys, mock_url, env.redis.port, token))
            litellm_log = stack.RUN_DIR / f"litellm-{lport}.log"
            lenv = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                    "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true", "NO_DOCS": "True",
                    "DATABASE_URL": "", "STORE_MODEL_IN_DB": "False"}
            lenv.pop("DATABASE_URL")
            log(f"starting litellm on {lport}")
            litellm_proc = stack.Service(
                "litellm", [str(BENCH / ".venv" / "bin" / "litellm"), "--config", str(cfg_path),
                            "--port", str(lport), "--host", "127.0.0.1"], lport, env=lenv).start()
            try:
                stack.wait_for(lambda: requests.get(f"http://127.0.0.1:{lport}/health/readiness", timeout=2).ok,
                               180, "litellm", litellm_proc.proc, litellm_proc.log)
                lurl = f"http://127.0.0.1:{lport}"
                ver = subprocess.run([str(BENCH / ".venv" / "bin" / "pip"), "show", "litellm"],
                                     capture_output=True, text=True).stdout
                res["litellm"] = {"available": True, "version": next(
                    (l.split(":")[1].strip() for l in ver.splitlines() if l.startswith("Version")), "?"),
                    "workers": 1, "num_retries": "default (2)"}
            except Exception as e:  # noqa: BLE001
                res["litellm"] = {"available": False, "reason": str(e)[-2000:]}
                log(f"LiteLLM did not start: {str(e)[-500:]}")
        have_llm = res["litellm"]["available"]

        gen_body = {"prompt": PROMPT, "model": FAST_MODEL}
        chat_body = {"model": FAST_MODEL, "messages": [{"role": "user", "content": PROMPT}]}
        gem_body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
        mock_gen = f"{mock_url}/v1beta/models/{FAST_MODEL}:generateContent"
        mock_hdr = [f"x-goog-api-key: {fake_key('bench-flash-01')}"]

        # sanity: each target answers 200 once
        r = worker.http.post(wurl + "/v1/generate", json=gen_body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"router sanity request failed: {r.status_code} {r.text[:500]}")
        if wdurl:
            r = requests.post(wdurl + "/v1/generate", json=gen_body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"workerd-serve sanity request failed: {r.status_code} {r.text[:500]}")
        if have_llm:
            r = requests.post(lurl + "/v1/chat/completions", json=chat_body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            if r.status_code != 200:
                raise RuntimeError(f"litellm sanity request failed: {r.status_code} {r.text[:500]}")

        targets = {
            "mock": (mock_gen, gem_body, mock_hdr),
            "router": (wurl + "/v1/generate", gen_body, [auth]),
        }
        if wdurl:
            targets["router_wd"] = (wdurl + "/v1/generate", gen_body, [auth])
            log("starting the JS floor worker (plain workerd serve: one EVALSHA, then the upstream call)")
            floor_svc = start_floor_worker(env.rest.url, REST_TOKEN, mock_url, FAST_MODEL, fake_key("bench-flash-01"))
            r = requests.post(floor_svc.url, json=gen_body, timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"floor worker sanity request failed: {r.status_code} {r.text[:500]}")
            targets["floor_js"] = (floor_svc.url + "/", gen_body, [])
        if have_llm:
            targets["litellm"] = (lurl + "/v1/chat/completions", chat_body, [auth])

        # 1. one-shot latency at c = 1, 50, 200
        res["oneshot"] = {}
        for c, n in counts.items():
            for name, (url, body, hdr) in targets.items():
                log(f"one-shot {name} c={c} n={n}")
                r = loadgen(url, n, c, body, hdr, warmup=min(n // 5, max(c, 20)), max_seconds=120)
                res["oneshot"].setdefault(str(c), {})[name] = brief(r)

        # 2. floors: wrangler dev answering a 404 without I/O; LiteLLM's liveliness probe
        res["floor"] = {}
        for c in (1, 50):
            n = counts[1] if c == 1 else counts[50]
            log(f"floor c={c}")
            res["floor"].setdefault(str(c), {})["router"] = brief(
                loadgen(wurl + "/nonexistent", n, c, headers=[auth], warmup=20))
            if wdurl:
                res["floor"][str(c)]["router_wd"] = brief(
                    loadgen(wdurl + "/nonexistent", n, c, headers=[auth], warmup=20))
            if have_llm:
                res["floor"][str(c)]["litellm"] = brief(
                    loadgen(lurl + "/health/liveliness", n, c, headers=[auth], warmup=20))

        # 3. Redis cost per request (router through /_local/stats; LiteLLM via INFO)
        log("redis cost per one-shot request")
        n_redis = 200
        env.rest_stats_reset()
        rr = loadgen(wurl + "/v1/generate", n_redis, 1, gen_body, [auth])
        st = env.rest_stats()
        res["redis"] = {"router_oneshot": {
            "requests": rr["ok"], "http_requests": st["http_requests"], "commands": st["commands"],
            "round_trips_per_request": round(st["http_requests"] / max(rr["ok"], 1), 3),
            "commands_per_request": round(st["commands"] / max(rr["ok"], 1), 3),
            "by_path": st.get("by_path")}}
        if have_llm:
            redis_cmd(env.redis.port, "CONFIG", "RESETSTAT")
            before = redis_commandstats(env.redis.port)
            lr = loadgen(lurl + "/v1/chat/completions", n_redis, 1, chat_body, [auth])
            after = redis_commandstats(env.redis.port)
            total = sum(after.values()) - sum(before.values())
            res["redis"]["litellm_oneshot"] = {
                "requests": lr["ok"], "commands": total,
                "commands_per_request": round(total / max(lr["ok"], 1), 3),
                "by_command": {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0},
                "note": "all redis-server commands during the run (includes LiteLLM's periodic syncs); "
                        "LiteLLM uses a redis-py connection pool, so round trips are not separable from commands"}

        # 4. server-side breakdown of the router: duration_ms inside the worker, upstream time per attempt,
        #    and the Redis REST round trip as /health measures it
        log("router breakdown sample")
        durs, ups, pings = [], [], []
        for _ in range(50):
            j = worker.http.post(wurl + "/v1/generate", json=gen_body, headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
            durs.append(j.get("duration_ms"))
            ups.append(sum(a.get("duration_ms") or 0 for a in j.get("attempts", [])))
        for _ in range(30):
            h = worker.http.get(wurl + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
            pings.append(((h.get("components") or {}).get("redis") or {}).get("latency_ms"))
        med = lambda xs: sorted(x for x in xs if x is not None)[len([x for x in xs if x is not None]) // 2] if any(x is not None for x in xs) else None  # noqa: E731
        res["router_breakdown"] = {"worker_duration_ms_p50": med(durs), "upstream_attempts_ms_p50": med(ups),
                                   "health_redis_ping_ms_p50": med(pings),
                                   "note": "server-reported (workerd Date.now, ms granularity)"}

        # 5. conversations (when the router answers them)
        conv = {}
        r = worker.http.post(wurl + "/v1/conversations", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        conv["probe_status"] = r.status_code
        if available(r.status_code) and r.status_code < 300:
            cid = r.json().get("id")
            msg_body = {"content": PROMPT}
            for c in (1, 50):
                ids = []
                for _ in range(c):
                    rr2 = worker.http.post(wurl + "/v1/conversations", json={"model": FAST_MODEL}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                    ids.append(rr2.json()["id"])
                uf = Path(tmpdir) / f"conv-{c}.txt"
                uf.write_text("".join(f"{wurl}/v1/conversations/{i}/messages\n" for i in ids))
                n = 100 if c == 1 else 500
                if c == 1:
                    env.rest_stats_reset()
                log(f"conversation messages c={c} n={n}")
                cr = loadgen(None, n, c, msg_body, [auth], urls_file=str(uf))
                conv[str(c)] = brief(cr)
                if c == 1:
                    st = env.rest_stats()
                    res["redis"]["router_conversation"] = {
                        "requests": cr["ok"], "http_requests": st["http_requests"], "commands": st["commands"],
                        "round_trips_per_request": round(st["http_requests"] / max(cr["ok"], 1), 3),
                        "commands_per_request": round(st["commands"] / max(cr["ok"], 1), 3),
                        "by_path": st.get("by_path"), "first_id": cid}
                if wdurl:
                    wids = []
                    for _ in range(c):
                        rr2 = requests.post(wdurl + "/v1/conversations", json={"model": FAST_MODEL}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                        wids.append(rr2.json()["id"])
                    wuf = Path(tmpdir) / f"conv-wd-{c}.txt"
                    wuf.write_text("".join(f"{wdurl}/v1/conversations/{i}/messages\n" for i in wids))
                    log(f"conversation messages (workerd serve) c={c} n={n}")
                    conv.setdefault("workerd_serve", {})[str(c)] = brief(loadgen(None, n, c, msg_body, [auth], urls_file=str(wuf)))
            conv["available"] = True
        else:
            conv["available"] = False
        res["conversation"] = conv

        # 6. streaming (when the router answers it)
        sse_body = {"contents": [{"role": "user", "parts": [{"text": STREAM_PROMPT}]}]}
        chat_stream = {"model": FAST_MODEL, "stream": True, "messages": [{"role": "user", "content": STREAM_PROMPT}]}
        stream = {"targets": {}}
        stream_targets = {"mock_sse": (f"{mock_url}/v1beta/models/{FAST_MODEL}:streamGenerateContent?alt=sse", sse_body, mock_hdr)}
        for name, path, body in (("router_sse", f"/v1beta/models/{FAST_MODEL}:streamGenerateContent?alt=sse", sse_body),
                                 ("router_openai_stream", "/v1/chat/completions", chat_stream)):
            r = worker.http.post(wurl + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            stream[name + "_probe_status"] = r.status_code
            if available(r.status_code):
                stream_targets[name] = (wurl + path, body, [auth])
                if wdurl:
                    stream_targets[name + "_wd"] = (wdurl + path, body, [auth])
        if have_llm:
            for name, path, body in (("litellm_sse", f"/v1beta/models/{FAST_MODEL}:streamGenerateContent?alt=sse", sse_body),
                                     ("litellm_openai_stream", "/v1/chat/completions", chat_stream)):
                r = requests.post(lurl + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
                stream[name + "_probe_status"] = r.status_code
                if r.status_code == 200:
                    stream_targets[name] = (lurl + path, body, [auth])
        for c in (1, 50):
            n = 200 if c == 1 else 1000
            if q:
                n //= 4
            for name, (url, body, hdr) in stream_targets.items():
                log(f"stream {name} c={c} n={n}")
                stream["targets"].setdefault(str(c), {})[name] = brief(loadgen(url, n, c, body, hdr, warmup=20))
        res["stream"] = stream

        # 7. throughput at c=50 against an instant upstream
        log("instant upstream (latency 0) throughput at c=50")
        env.mock_reset(keys, latency_ms=0)
        res["instant_c50"] = {}
        for name, (url, body, hdr) in targets.items():
            res["instant_c50"][name] = brief(loadgen(url, counts[50] + (500 if not q else 0), 50, body, hdr, warmup=100))

        # 8. exactness under 5x overload of the tight pool
        tight = [k for k in keys["keys"] if k["model_name"] == TIGHT_MODEL]
        capacity_per_min = sum(k["rpm"] for k in tight)
        rate = 5 * capacity_per_min / 60.0  # requests per second: 5x the pool's per-minute capacity
        n_over = int(rate * overload_s)
        # Capacity of the run: every arrival falls inside one 60 s window (overload_s < 60), so at most
        # sum(rpm) can be admitted, and that is the capacity the admitted count is compared with.
        capacity = capacity_per_min * max(1, -(-overload_s // 60))
        res["overload"] = {"pool": {"keys": len(tight), "rpm_each": opts.tight_rpm, "capacity_per_min": capacity_per_min},
                           "rate_rps": round(rate, 3), "seconds": overload_s, "requests": n_over, "clients": 100,
                           "capacity_in_run": capacity}
        over_targets = {"router": (wurl + "/v1/generate", {"prompt": PROMPT, "model": TIGHT_MODEL}, [auth])}
        if have_llm:
            over_targets["litellm"] = (lurl + "/v1/chat/completions",
                                       {"model": TIGHT_MODEL, "messages": [{"role": "user", "content": PROMPT}]}, [auth])
        for name, (url, body, hdr) in over_targets.items():
            env.mock_reset(keys, latency_ms=opts.latency_ms)
            log(f"overload {name}: {n_over} requests at {rate:.2f}/s from 100 clients over {overload_s}s")
            r = loadgen(url, n_over, 100, body, hdr, rate=rate, max_seconds=overload_s + 30)
            ms = env.mock_stats()
            groups = {g: v for g, v in ms.get("groups", {}).items() if TIGHT_MODEL in g}
            res["overload"][name] = {
                "client": brief(r),
                "admitted": r["ok"],
                "admitted_pct_of_capacity": round(100.0 * r["ok"] / capacity, 1),
                "upstream_requests": sum(v["requests"] for v in groups.values()),
                "upstream_429": sum(v["status_429"] for v in groups.values()),
                "max_requests_in_rolling_minute": {g: v["max_requests_in_rolling_minute"] for g, v in groups.items()},
                "max_admitted_in_rolling_minute": {g: v["max_admitted_in_rolling_minute"] for g, v in groups.items()},
                "rpm_each": opts.tight_rpm,
            }
    finally:
        log("stopping everything")
        if wd_svc is not None:
            wd_svc.stop()
        if litellm_proc is not None:
            litellm_proc.stop()
        if floor_svc is not None:
            floor_svc.stop()
        if env is not None:
            env.close()
        (RESULTS / "latest.json").write_text(json.dumps(res, indent=1))
    md = render(res)
    (RESULTS / "latest.md").write_text(md)
    print(md)


# --- report -------------------------------------------------------------------------------

def f(x, nd=1):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def render(res: dict) -> str:
    L = []
    llm = res["litellm"].get("available")
    L.append(f"Run {res['date']} · {res['machine']['cpus']} CPUs · {res['machine']['platform']} · "
             f"mock latency {res['mock_latency_ms']} ms · router LOG_LEVEL {res.get('router_log_level', 'ERROR')} · "
             f"LiteLLM {res['litellm'].get('version', 'n/a')}"
             + ("" if llm else f" (not available: {res['litellm'].get('reason', '')[:200]})")
             + (f" · worker build {res['worker_build']['state']} ({res['worker_build']['build_mtime']}, opt-level {res['worker_build'].get('opt_level', '?')}, HEAD {res['worker_build']['git_head']})"
                if res.get("worker_build") else ""))
    L.append("")
    L.append("| figure | mock direct | router (wrangler dev) | router (workerd serve) | LiteLLM "
             "| wrangler dev / LiteLLM | workerd serve / LiteLLM |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")

    def row(name, m, rw, rs, li, nd=2, rat=True):
        fm = lambda x: x if isinstance(x, str) else f(x, nd)  # noqa: E731
        r1 = ratio(rw, li) if rat and not isinstance(rw, str) else "—"
        r2 = ratio(rs, li) if rat and not isinstance(rs, str) else "—"
        L.append(f"| {name} | {fm(m)} | {fm(rw)} | {fm(rs)} | {fm(li)} | {r1} | {r2} |")

    one = res.get("oneshot", {})

    def lat(c, who, p):
        r = one.get(str(c), {}).get(who)
        return r["latency_ms"][p] if r and r.get("latency_ms") else None

    sub = lambda a, b: None if a is None or b is None else a - b  # noqa: E731
    for c in (1, 50, 200):
        for p in ("p50", "p99"):
            m, rw, rs, li = lat(c, "mock", p), lat(c, "router", p), lat(c, "router_wd", p), lat(c, "litellm", p)
            row(f"latency {p}, c={c} (ms)", m, rw, rs, li)
            row(f"**added** {p}, c={c} (ms)", "—", sub(rw, m), sub(rs, m), sub(li, m))
    for c in (1, 50):
        m, rs, fl = lat(c, "mock", "p50"), lat(c, "router_wd", "p50"), lat(c, "floor_js", "p50")
        if fl is not None:
            L.append(f"| JS floor (workerd serve: one EVALSHA, then the upstream call): latency p50 / **added** p50, c={c} (ms) "
                     f"| — | — | {f(fl, 2)} / {f(sub(fl, m), 2)} | — | — | — |")
            L.append(f"| router added p50 / JS floor added p50, c={c} (workerd serve) | — | — | {ratio(sub(rs, m), sub(fl, m))} | — | — | — |")
    fl50 = (one.get("50", {}).get("floor_js") or {}).get("throughput_rps")
    if fl50:
        L.append(f"| JS floor throughput c=50 (req/s) | — | — | {f(fl50, 1)} | — | — | — |")
    g = lambda who: (one.get("50", {}).get(who) or {}).get("throughput_rps")  # noqa: E731
    row(f"throughput c=50, mock {res['mock_latency_ms']} ms (req/s)", g("mock"), g("router"), g("router_wd"), g("litellm"), 1)
    ins = res.get("instant_c50", {})
    g = lambda who: (ins.get(who) or {}).get("throughput_rps")  # noqa: E731
    row("throughput c=50, instant mock (req/s)", g("mock"), g("router"), g("router_wd"), g("litellm"), 1)
    errs = []
    for label, d in [(f"one-shot c={c}", d) for c, d in one.items()] + [("instant c=50", ins)]:
        for who, r in d.items():
            bad = {k: v for k, v in r["status"].items() if not k.startswith("2")}
            if bad or r["transport_errors"]:
                codes = "; ".join(f"{k}: {v['count']} ({v['min_ms']}–{v['max_ms']} ms)" for k, v in (r.get("errors") or {}).items())
                errs.append(f"{who} {label}: {bad} {r['transport_errors'] or ''} {('[' + codes + ']') if codes else ''}".strip())
    fl = res.get("floor", {})
    for c in ("1", "50"):
        d = fl.get(c, {})
        p50 = lambda who: ((d.get(who) or {}).get("latency_ms") or {}).get("p50")  # noqa: E731
        row(f"floor p50, c={c}: `GET /nonexistent` (router, 404 without I/O) vs `GET /health/liveliness` (LiteLLM) (ms)",
            "—", p50("router"), p50("router_wd"), p50("litellm"))
        if c == "50":
            t = lambda who: (d.get(who) or {}).get("throughput_rps")  # noqa: E731
            row("floor throughput c=50 (req/s)", "—", t("router"), t("router_wd"), t("litellm"), 1)
    rd = res.get("redis", {})
    ro = rd.get("router_oneshot", {})
    li = rd.get("litellm_oneshot", {})
    L.append(f"| Redis round trips / one-shot request | — | {f(ro.get('round_trips_per_request'), 2)} | same code | — (pooled redis-py) | — | — |")
    L.append(f"| Redis commands / one-shot request | — | {f(ro.get('commands_per_request'), 2)} | same code | {f(li.get('commands_per_request'), 2)} | {ratio(ro.get('commands_per_request'), li.get('commands_per_request'))} | — |")
    rc = rd.get("router_conversation")
    if rc:
        L.append(f"| Redis round trips / conversation message | — | {f(rc['round_trips_per_request'], 2)} | same code | — | — | — |")
        L.append(f"| Redis commands / conversation message | — | {f(rc['commands_per_request'], 2)} | same code | — | — | — |")
    conv = res.get("conversation", {})
    if conv.get("available"):
        cw = conv.get("workerd_serve") or {}
        pp = lambda r: (f"{f(r['latency_ms']['p50'], 2)} / {f(r['latency_ms']['p99'], 2)}" if r and r.get("latency_ms") else "—")  # noqa: E731
        for c in ("1", "50"):
            L.append(f"| conversation message p50 / p99, c={c} (ms) | — | {pp(conv.get(c))} | {pp(cw.get(c))} | — | — | — |")
        L.append(f"| conversation throughput c=50 (req/s) | — | {f((conv.get('50') or {}).get('throughput_rps'))} | {f((cw.get('50') or {}).get('throughput_rps'))} | — | — | — |")
    else:
        L.append(f"| conversations | — | not available (HTTP {conv.get('probe_status')}) | — | — | — | — |")
    st = res.get("stream", {})
    tg = st.get("targets", {})
    for kind, rname, lname in (("Gemini SSE", "router_sse", "litellm_sse"), ("OpenAI stream", "router_openai_stream", "litellm_openai_stream")):
        if not any(rname in tg.get(c, {}) for c in ("1", "50")):
            L.append(f"| {kind} (router) | — | not available (HTTP {st.get(rname + '_probe_status')}) | — | — | — | — |")
            continue
        for c in ("1", "50"):
            d = tg.get(c, {})
            fc = lambda who: ((d.get(who) or {}).get("first_chunk_ms") or {}).get("p50")  # noqa: E731
            row(f"{kind} first chunk p50, c={c} (ms)", fc("mock_sse"), fc(rname), fc(rname + "_wd"), fc(lname))
            lm = lambda who: (d.get(who) or {}).get("latency_ms") or {}  # noqa: E731
            pp = lambda who: (f"{f(lm(who).get('p50'), 2)} / {f(lm(who).get('p99'), 2)}" if lm(who) else "—")  # noqa: E731
            L.append(f"| {kind} full stream p50 / p99, c={c} (ms) | {pp('mock_sse')} | {pp(rname)} | {pp(rname + '_wd')} | {pp(lname)} "
                     f"| {ratio(lm(rname).get('p50'), lm(lname).get('p50'))} | {ratio(lm(rname + '_wd').get('p50'), lm(lname).get('p50'))} |")
    w = res.get("wasm", {})
    L.append(f"| wasm raw / gzip -9 (KB) | — | {f(w.get('raw_bytes', 0) / 1000)} / {f(w.get('gzip_bytes', 0) / 1000)} | same build | — | — | — |")
    ov = res.get("overload", {})
    if ov:
        ro, li = ov.get("router") or {}, ov.get("litellm") or {}
        L.append(f"| overload: {ov['requests']} req at {ov['rate_rps']}/s over {ov['seconds']} s (5× of {ov['pool']['keys']}×{ov['pool']['rpm_each']} rpm) — upstream 429s | — | {f(ro.get('upstream_429'))} | not run | {f(li.get('upstream_429'))} | — | — |")
        L.append(f"| overload: admitted / capacity {ov['capacity_in_run']} | — | {f(ro.get('admitted'))} ({f(ro.get('admitted_pct_of_capacity'))}%) | not run | {f(li.get('admitted'))} ({f(li.get('admitted_pct_of_capacity'))}%) | {ratio(ro.get('admitted'), li.get('admitted'))} | — |")
        mx = lambda d: max((d.get("max_requests_in_rolling_minute") or {0: 0}).values())  # noqa: E731
        L.append(f"| overload: max requests a project saw in a rolling minute (rpm {ov['pool']['rpm_each']}) | — | {mx(ro) if ro else '—'} | not run | {mx(li) if li else '—'} | — | — |")
        L.append(f"| overload: upstream calls | — | {f(ro.get('upstream_requests'))} | not run | {f(li.get('upstream_requests'))} | — | — |")
    L.append("")
    if errs:
        L.append("Non-2xx answers / transport errors in latency and throughput runs (by status and error code): " + " · ".join(errs))
    else:
        L.append("No non-2xx answers or transport errors in the latency and throughput runs.")
    bd = res.get("router_breakdown")
    if bd:
        L.append("")
        L.append(f"Router breakdown (wrangler dev, server-reported p50): worker total {bd['worker_duration_ms_p50']} ms, "
                 f"upstream attempts {bd['upstream_attempts_ms_p50']} ms, one Redis REST round trip (health PING) "
                 f"{bd['health_redis_ping_ms_p50']} ms.")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--render":
        print(render(json.loads((RESULTS / "latest.json").read_text())))
    else:
        main()
