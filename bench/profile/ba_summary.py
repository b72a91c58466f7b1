"""Summarise bench/profile/before_after.sh: medians over repetitions of timing.py rounds and of
the cpuprofile.py category split (per request). Writes out/ba-summary.{json,md}.

    .venv/bin/python bench/profile/ba_summary.py
"""

from __future__ import annotations

import glob
import io
import json
import re
import statistics as st
import sys
from contextlib import redirect_stdout
from pathlib import Path

import analyze

OUT = Path(__file__).resolve().parent / "out"
N_PROFILE = 3000


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else float("nan")


def timing(build: str, lat: int) -> dict:
    rounds: dict[str, list] = {}
    for f in sorted(glob.glob(str(OUT / f"ba-timing-{build}-lat{lat}-r*.json"))):
        for route, rs in json.load(open(f)).items():
            rounds.setdefault(route, []).extend(rs)
    res = {}
    mock = med(x["p50"] for x in rounds.get("mock", []))
    for route, rs in rounds.items():
        if route == "mock":
            continue
        res[route] = {"rounds": len(rs), "p50_ms": med(x["p50"] for x in rs), "added_p50_ms": med(x["p50"] for x in rs) - mock,
                      "mean_ms": med(x["mean"] for x in rs), "p99_ms": med(x["p99"] for x in rs),
                      "workerd_cpu_ms": med(x["workerd_cpu_ms"] for x in rs),
                      "workerd_cpu_ms_all": [round(x["workerd_cpu_ms"], 3) for x in rs]}
    res["mock_p50_ms"] = mock
    return res


def profile(build: str) -> dict:
    reps = []
    for f in sorted(glob.glob(str(OUT / f"generate-prof-{build}-ba-r*.cpuprofile"))):
        prof = json.load(open(f))
        with redirect_stdout(io.StringIO()) as buf:
            r = analyze.report(prof, N_PROFILE, top=40)
        c = r["categories"]
        g = lambda k: c.get(k, 0) / N_PROFILE
        prog = "(program): V8/workerd native, no JS frame"
        busy = r["busy_us"] / N_PROFILE
        rep = {"file": Path(f).name, "busy_us": busy, "wasm_us": g("wasm"), "glue_us": g("JS glue (index.js)"),
               "builtins_us": g("builtins (V8 / workerd APIs)"), "gc_us": g("GC"), "program_us": g(prog)}
        # top wasm inclusive functions (section 4 of the report)
        txt = buf.getvalue()
        sec = txt.split("## top 40 wasm functions, inclusive")[1].split("##")[0]
        rep["top_wasm_incl"] = [(re.sub(r"::h[0-9a-f]{16}", "", f), p) for f, p in re.findall(r"\| `(.*?)` \| ([\d.]+)% \|", sec)
                                if "llm_key_router" in f.split("::")[0]][:10]
        sec = txt.split("## top 40 self-time functions")[1].split("##")[0] if "## top 40" in txt else ""
        rep["top_wasm_self"] = [(re.sub(r"::h[0-9a-f]{16}", "", f), p) for f, p in re.findall(r"\| wasm \| `(.*?)` \| ([\d.]+)% \|", sec)][:8]
        sec = txt.split("## wasm self time by path prefix")[1]
        rep["wasm_self_prefix"] = re.findall(r"\| `(.*?)` \| ([\d.]+)% \|", sec)[:12]
        (OUT / (Path(f).stem + ".analysis.md")).write_text(txt)
        reps.append(rep)
    keys = ["busy_us", "wasm_us", "glue_us", "builtins_us", "gc_us", "program_us"]
    return {"reps": reps, "median": {k: med(r[k] for r in reps) for k in keys}}


def main():
    s = {b: {"lat0": timing(b, 0), "lat20": timing(b, 20), "profile": profile(b)} for b in ("before", "after")}
    (OUT / "ba-summary.json").write_text(json.dumps(s, indent=1))
    L = ["| figure (median) | before (1d75e99) | after | after / before |", "|---|---:|---:|---:|"]

    def row(name, a, b, fmt="{:.3f}"):
        L.append(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}× |")
    for lat in ("lat0", "lat20"):
        for route in ("generate", "404"):
            if route not in s["before"][lat]:
                continue
            a, b = s["before"][lat][route], s["after"][lat][route]
            row(f"{route}, mock {lat[3:]} ms: p50 (ms)", a["p50_ms"], b["p50_ms"])
            row(f"{route}, mock {lat[3:]} ms: added p50 over mock (ms)", a["added_p50_ms"], b["added_p50_ms"])
            row(f"{route}, mock {lat[3:]} ms: workerd CPU / req (ms)", a["workerd_cpu_ms"], b["workerd_cpu_ms"])
    pa, pb = s["before"]["profile"]["median"], s["after"]["profile"]["median"]
    for k, name in (("busy_us", "profile: in-isolate total (µs/req)"), ("wasm_us", "profile: wasm self"),
                    ("glue_us", "profile: JS glue (index.js) self"), ("builtins_us", "profile: builtins (V8/workerd APIs)"),
                    ("gc_us", "profile: GC"), ("program_us", "profile: (program) native")):
        row(name, pa[k], pb[k], "{:.0f}")
    md = "\n".join(L)
    for b in ("before", "after"):
        md += f"\n\n{b}: top router (llm_key_router*) wasm frames, inclusive (rep 1): " + "; ".join(f"{f} {p}%" for f, p in s[b]["profile"]["reps"][0]["top_wasm_incl"][:10])
        md += f"\n\n{b}: top wasm self (rep 1): " + "; ".join(f"{f} {p}%" for f, p in s[b]["profile"]["reps"][0]["top_wasm_self"])
        md += f"\n\n{b}: wasm self by prefix (rep 1): " + "; ".join(f"{f} {p}%" for f, p in s[b]["profile"]["reps"][0]["wasm_self_prefix"][:10])
    (OUT / "ba-summary.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    sys.setrecursionlimit(100000)
    main()
