"""What a media request costs the router: a text request, a 1.5 MB PNG and a ~20 MB PNG (just
under the default 20 MiB `MAX_BODY_BYTES`), in one run, each sent c=1 to the router's native
`generateContent` route and straight to the mock Gemini with the same body.

    cp -r build /tmp/media-build     # others rebuild build/
    .venv/bin/python bench/media.py --build /tmp/media-build [--rounds 3]

For each size and round: the p50 latency through the router and direct to the mock (their
difference is the added latency, as in `bench/run.py`), and the **workerd process CPU per
request** (utime + stime over the round, as `bench/profile/timing.py` measures it). The
process CPU is an upper bound of the isolate's CPU time that Cloudflare bills and limits: it
also holds workerd's own HTTP parsing of the 20 MB request and the 20 MB subrequest it writes
to the mock, which on Cloudflare are the runtime's I/O, not the Worker's CPU time. The
figures are medians over the rounds.

Then (`--profile`, on by default) the **isolate CPU per request**: the V8 CPU profile over the
inspector (as `bench/profile/cpuprofile.py`), whose sampler only runs while the isolate is
entered: samples (not idle) × the effective interval / requests. It excludes workerd's I/O and
is inflated a little by the profiler itself. Uses bench/profile/common.py's stack (mock at 0 ms,
`workerd serve` on a copy of the build, the bench key pool of 1e9 TPM so nothing is refused).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent / "profile"))
import common as C  # noqa: E402


def png(w: int, h: int) -> bytes:
    """A real, incompressible PNG (random RGB pixels)."""
    raw = b"".join(b"\0" + os.urandom(w * 3) for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


def body(img: bytes | None) -> bytes:
    parts = [{"text": "Describe this"}]
    if img is not None:
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(img).decode()}})
    return json.dumps({"contents": [{"role": "user", "parts": parts}]}).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="/tmp/media-build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--interval-us", type=int, default=200)
    o = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-media-"))
    # name -> (body, requests per round, batch size: the mock's request log is cleared between
    # batches so it does not hold hundreds of MB of bodies)
    cases = {
        "text": (body(None), 300, 300),
        "1.5MB": (body(png(1000, 500)), 60, 30),
        "20MB": (body(png(2800, 1770)), 10, 5),
    }
    files = {}
    for name, (b, _, _) in cases.items():
        files[name] = tmp / f"{name}.json"
        files[name].write_bytes(b)
        print(f"{name}: body {len(b):,} bytes", flush=True)
    env, keys, vars = C.start_env(0)
    wd = None
    res: dict = {}
    try:
        ins = C.stack.free_port()
        wd = C.start_workerd(vars, Path(o.build), inspector_port=ins)
        model = C.B.FAST_MODEL
        router = f"{wd.url}/v1beta/models/{model}:generateContent"
        mock = f"{env.mock.url}/v1beta/models/{model}:generateContent"
        mock_hdr = [f"x-goog-api-key: {C.fake_key('bench-flash-01')}", "content-type: application/json"]
        hdr = [C.AUTH, "content-type: application/json"]

        def run(url, headers, n, batch, f):
            lat, cpu, status = [], 0.0, {}
            for _ in range(0, n, batch):
                requests.delete(env.mock.url + "/_mock/requests", timeout=30)
                cpu0 = C.proc_cpu_s(wd.proc.pid)
                r = loadgen_file(url, batch, headers, f)
                cpu += C.proc_cpu_s(wd.proc.pid) - cpu0
                lat.append(r["latency_ms"]["p50"])
                for k, v in r["status"].items():
                    status[k] = status.get(k, 0) + v
            return statistics.median(lat), cpu / n * 1000, status

        for name, (_, n, batch) in cases.items():  # warm-up
            run(router, hdr, min(n, 10), min(batch, 10), files[name])
        for rnd in range(o.rounds):
            for name, (_, n, batch) in cases.items():
                m50, _, ms = run(mock, mock_hdr, n, batch, files[name])
                r50, cpu, rs = run(router, hdr, n, batch, files[name])
                res.setdefault(name, []).append({"router_p50": r50, "mock_p50": m50, "added_p50": r50 - m50,
                                                 "workerd_cpu_ms": cpu, "router_status": rs, "mock_status": ms})
                print(f"round {rnd} {name:6s} router p50 {r50:8.3f} ms  mock p50 {m50:8.3f} ms  added {r50 - m50:+8.3f} ms"
                      f"  workerd CPU {cpu:8.3f} ms/req  status {rs}", flush=True)
        print("\n| request | body bytes | router p50 ms | direct-to-mock p50 ms | added p50 ms | workerd CPU ms/req |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, rs in res.items():
            med = {k: statistics.median(x[k] for x in rs) for k in ("router_p50", "mock_p50", "added_p50", "workerd_cpu_ms")}
            print(f"| {name} | {files[name].stat().st_size:,} | {med['router_p50']:.2f} | {med['mock_p50']:.2f} | "
                  f"{med['added_p50']:+.2f} | {med['workerd_cpu_ms']:.2f} |")
        if o.profile:
            print("\n| request | isolate CPU ms/req (V8 profile) | top self time |\n|---|---:|---|")
            for name, (_, n, batch) in cases.items():
                ms, top = isolate_cpu(ins, lambda: run(router, hdr, n, batch, files[name]), n, o.interval_us)
                for x in res[name]:
                    x["isolate_cpu_ms"] = ms
                print(f"| {name} | {ms:.2f} | {top} |", flush=True)
        out = Path(o.out or C.BENCH / "results" / "media.json")
        out.write_text(json.dumps(res, indent=1))
    finally:
        if wd:
            wd.stop()
        env.close()


def isolate_cpu(inspector_port: int, drive, n: int, interval_us: int) -> tuple[float, str]:
    """Profiles `drive()` (n requests) over the inspector: isolate CPU ms per request, and the
    three largest self-time functions."""
    import asyncio
    import urllib.request
    from collections import Counter

    from cpuprofile import cdp_session

    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{inspector_port}/json/list", timeout=5).read())

    async def go():
        ws, call = await cdp_session(targets[0]["webSocketDebuggerUrl"])
        await call("Profiler.enable")
        await call("Profiler.setSamplingInterval", {"interval": interval_us})
        await call("Profiler.start")
        await asyncio.to_thread(drive)
        prof = (await call("Profiler.stop"))["profile"]
        await ws.close()
        return prof

    prof = asyncio.run(go())
    nodes = {nd["id"]: nd for nd in prof["nodes"]}
    deltas = prof["timeDeltas"]
    eff = sorted(deltas[1:])[len(deltas) // 2] if len(deltas) > 2 else interval_us
    busy = [s for s in prof["samples"] if nodes[s]["callFrame"]["functionName"] != "(idle)"]
    self_time = Counter(nodes[s]["callFrame"]["functionName"] or "(anonymous)" for s in busy)
    top = ", ".join(f"{f} {c / len(busy):.0%}" for f, c in self_time.most_common(3)) if busy else ""
    return len(busy) * eff / 1000 / n, top


def loadgen_file(url, n, headers, f):
    import subprocess
    args = [str(C.B.LOADGEN), "-n", str(n), "-c", "1", "--max-seconds", "600", "--timeout-ms", "60000",
            "--url", url, "--body-file", str(f), "-m", "POST"]
    for h in headers:
        args += ["-H", h]
    p = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen failed ({p.returncode}): {p.stderr}")
    return json.loads(p.stdout)


if __name__ == "__main__":
    main()
