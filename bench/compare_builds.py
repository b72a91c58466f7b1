"""Compare two worker builds (e.g. `opt-level = "z"` vs `3`) in one sitting, interleaved.

    bench/.venv/bin/python bench/compare_builds.py A_DIR B_DIR [--labels z,3] [--rounds 3]
    bench/.venv/bin/python bench/compare_builds.py build build --labels WARN,INFO --b-var LOG_LEVEL=INFO

Each directory is a copy of `build/` (index.js + index_bg.wasm). One stack (redis-server,
upstash-local, mock Gemini) serves both; each build runs in plain `workerd serve` and in
`wrangler dev` (bench/hosts.py) with the benchmark's bindings and LOG_LEVEL=WARN. Every round
measures, for each build and host: added p50/p99 at c=1 (n=300, mock at 20 ms, minus the
direct-mock figure of the same round) and throughput at c=50 against an instant mock (n=2000,
warm-up 100). The order of the builds alternates between rounds. Prints a Markdown table of
the medians over the rounds and writes bench/results/compare-builds.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import secrets
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as B  # noqa: E402
from conftest import TOKEN as REST_TOKEN, Env, fake_key  # noqa: E402
from hosts import snapshot_build, start_workerd, start_wrangler_dev  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--labels", default="A,B")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-wrangler", action="store_true")
    ap.add_argument("--b-var", action="append", default=[],
                    help="KEY=VALUE binding for the second build only (e.g. LOG_LEVEL=INFO with A_DIR = B_DIR)")
    ap.add_argument("--out", default="compare-builds.json", help="file name under bench/results/")
    o = ap.parse_args()
    labels = o.labels.split(",")
    dirs = dict(zip(labels, (Path(o.a), Path(o.b))))
    token = "sk-bench-" + secrets.token_hex(8)
    auth = f"authorization: Bearer {token}"
    keys = B.bench_keys(20)
    env = Env()
    svcs = []
    out = {"labels": labels, "wasm": {}, "rounds": []}
    try:
        env.mock_reset(keys, latency_ms=20)
        v = {"UPSTASH_REDIS_REST_URL": env.rest.url, "UPSTASH_REDIS_REST_TOKEN": REST_TOKEN,
             "GEMINI_BASE_URL": env.mock.url, "KEYS_JSON": json.dumps(keys, separators=(",", ":")),
             "BACKOFF_BASE_MS": "10", "BACKOFF_CAP_MS": "50", "CLIENTS_JSON": B.clients_json(token),
             "USER_RPM_DEFAULT": "1000000", "USER_BURST_DEFAULT": "1000000",
             "GLOBAL_RPM_MAX": "100000000", "GLOBAL_BURST_MAX": "100000000", "LOG_LEVEL": "WARN"}
        for k in keys["keys"]:
            v["API_KEY_" + k["key_id"].upper().replace("-", "_")] = fake_key(k["key_id"])
        urls = {}
        b_vars = dict(x.split("=", 1) for x in o.b_var)
        for lab, d in dirs.items():
            wv = {**v, **b_vars} if lab == labels[1] else v
            snap = snapshot_build(d, tag=lab)
            w = (snap / "build" / "index_bg.wasm").read_bytes()
            out["wasm"][lab] = {"raw": len(w), "gzip": len(gzip.compress(w, 9))}
            s = start_workerd(wv, build_dir=snap / "build")
            svcs.append(s)
            urls[(lab, "workerd serve")] = s.url
            if not o.no_wrangler:
                s = start_wrangler_dev(snap, wv)
                svcs.append(s)
                urls[(lab, "wrangler dev")] = s.url
        body = {"prompt": B.PROMPT, "model": B.FAST_MODEL}
        gem = {"contents": [{"role": "user", "parts": [{"text": B.PROMPT}]}]}
        mock = f"{env.mock.url}/v1beta/models/{B.FAST_MODEL}:generateContent"
        mock_hdr = [f"x-goog-api-key: {fake_key('bench-flash-01')}"]
        for rnd in range(o.rounds):
            order = list(urls) if rnd % 2 == 0 else list(reversed(list(urls)))
            r = {"order": [f"{a}/{h}" for a, h in order]}
            env.mock_reset(keys, latency_ms=20)
            m = B.loadgen(mock, 300, 1, gem, mock_hdr, warmup=20)["latency_ms"]
            r["mock_c1"] = m
            for key in order:
                x = B.loadgen(urls[key] + "/v1/generate", 300, 1, body, [auth], warmup=20)
                r[f"{key[0]}/{key[1]}/added_p50_c1"] = round(x["latency_ms"]["p50"] - m["p50"], 2)
                r[f"{key[0]}/{key[1]}/added_p99_c1"] = round(x["latency_ms"]["p99"] - m["p99"], 2)
                B.log(f"round {rnd} {key} c=1 added p50 {r[f'{key[0]}/{key[1]}/added_p50_c1']}")
            env.mock_reset(keys, latency_ms=0)
            for key in order:
                x = B.loadgen(urls[key] + "/v1/generate", 2000, 50, body, [auth], warmup=100)
                r[f"{key[0]}/{key[1]}/instant_c50_rps"] = x["throughput_rps"]
                r[f"{key[0]}/{key[1]}/non_2xx"] = x["responses"] - x["ok"] if "responses" in x else None
                B.log(f"round {rnd} {key} instant c=50 {x['throughput_rps']} req/s")
            out["rounds"].append(r)
    finally:
        for s in svcs:
            s.stop()
        env.close()
        (B.RESULTS / o.out).write_text(json.dumps(out, indent=1))
    hosts = sorted({h for _, h in urls}, reverse=True)
    print(f"| host | figure (median of {o.rounds} rounds) | " + " | ".join(labels) + f" | {labels[1]} / {labels[0]} |")
    print("|---|---|" + "---:|" * (len(labels) + 1))
    for h in hosts:
        for fig, name in (("added_p50_c1", "added p50, c=1 (ms)"), ("added_p99_c1", "added p99, c=1 (ms)"),
                          ("instant_c50_rps", "throughput c=50, instant mock (req/s)")):
            med = [statistics.median(r[f"{lab}/{h}/{fig}"] for r in out["rounds"]) for lab in labels]
            print(f"| {h} | {name} | " + " | ".join(f"{x:.2f}" for x in med) + f" | {med[1] / med[0]:.2f}× |")
    for h in hosts:
        per = [r[f"{labels[1]}/{h}/instant_c50_rps"] / r[f"{labels[0]}/{h}/instant_c50_rps"] for r in out["rounds"]]
        print(f"| {h} | per-round throughput ratio {labels[1]} / {labels[0]} | " + ", ".join(f"{x:.2f}" for x in per)
              + " | " * len(labels) + f"median {statistics.median(per):.2f}× |")
    print("| — | wasm raw / gzip -9 (KB) | " + " | ".join(
        f"{out['wasm'][lab]['raw'] / 1000:.1f} / {out['wasm'][lab]['gzip'] / 1000:.1f}" for lab in labels) + " | — |")


if __name__ == "__main__":
    main()
