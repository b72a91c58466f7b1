"""Aggregate a V8 .cpuprofile (from cpuprofile.py or DevTools) of the worker.

    bench/.venv/bin/python bench/profile/analyze.py out/generate-prof-build-names.cpuprofile --n 3000

Prints:
  1. self time by category: wasm / JS glue (index.js) / V8+workerd builtins / GC / (program) / idle;
  2. top self-time functions;
  3. JS glue imports called from wasm, inclusive (the import shim + the builtins it calls);
  4. top wasm functions, inclusive (each function counted once per sample);
  5. wasm self time grouped by crate/module path prefix.
Times are per request when --n is given (busy time / N).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict

_SEG = re.compile(r"(\d+)")


def demangle(name: str) -> str:
    """Legacy Rust mangling (_ZN...E) -> path without hash; other names unchanged."""
    s = name.strip("$")
    if not s.startswith("_ZN"):
        return s
    i, parts = 3, []
    while i < len(s) and s[i] != "E":
        m = _SEG.match(s, i)
        if not m:
            break
        n = int(m.group(1))
        i = m.end()
        parts.append(s[i:i + n])
        i += n
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    out = "::".join(parts)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$RF$", "&"), ("$BP$", "*"), ("$C$", ","), ("$u20$", " "),
                 ("$u27$", "'"), ("$u5b$", "["), ("$u5d$", "]"), ("$u7b$", "{"), ("$u7d$", "}"), ("$u3b$", ";"),
                 ("$u2b$", "+"), ("$u22$", '"'), ("..", "::")):
        out = out.replace(a, b)
    return out


def category(cf: dict) -> str:
    fn, url = cf.get("functionName", ""), cf.get("url", "")
    if fn in ("(idle)",):
        return "idle"
    if fn == "(garbage collector)":
        return "GC"
    if fn == "(program)":
        return "(program): V8/workerd native, no JS frame"
    if fn == "(root)":
        return "root"
    if url.startswith("wasm://") or fn.startswith("$") or fn.startswith("wasm-function"):
        return "wasm"
    if url.endswith("index.js"):
        return "JS glue (index.js)"
    return "builtins (V8 / workerd APIs)"


def fname(cf: dict) -> str:
    fn = cf.get("functionName") or "(anonymous)"
    if category(cf) == "wasm":
        return demangle(fn)
    if category(cf) == "JS glue (index.js)":
        return f"{fn} [glue:{cf.get('columnNumber')}]"
    return fn


def report(prof: dict, n: int | None = None, top: int = 40):
    nodes = {nd["id"]: nd for nd in prof["nodes"]}
    parent = {}
    for nd in prof["nodes"]:
        for c in nd.get("children", []):
            parent[c] = nd["id"]
    samples, deltas = prof["samples"], prof["timeDeltas"]
    # workerd's V8 sampler only samples while the isolate is entered: while the worker waits for
    # a subrequest there are no samples, and DevTools' convention (a sample lasts until the next)
    # would charge the whole wait to the last JS frame before it (usually `fetch`). So every
    # sample counts one effective interval: the median gap between consecutive samples.
    eff = sorted(deltas[1:])[len(deltas) // 2] if len(deltas) > 2 else 100
    dur = [eff] * len(samples)
    print(f"effective sampling interval (median gap): {eff} µs")
    total = sum(dur)
    cat = Counter()
    selfc = Counter()
    glue_incl = Counter()
    wasm_incl = Counter()
    wasm_prefix = Counter()
    wasm_caller = Counter()
    path_cache: dict[int, tuple] = {}

    def stack(nid):
        if nid in path_cache:
            return path_cache[nid]
        s = []
        x = nid
        while x is not None:
            s.append(nodes[x])
            x = parent.get(x)
        path_cache[nid] = tuple(s)
        return path_cache[nid]

    for sid, d in zip(samples, dur):
        leaf = nodes[sid]
        c = category(leaf["callFrame"])
        cat[c] += d
        selfc[(c, fname(leaf["callFrame"]))] += d
        st = stack(sid)  # leaf -> root
        cats = [category(f["callFrame"]) for f in st]
        # glue import = outermost-from-leaf index.js frame whose caller is wasm
        # glue import = index.js frame whose caller (skipping the `wasm-to-js` trampoline) is wasm;
        # also charge the sample to the nearest Rust frame that called into JS
        for k, f in enumerate(st):
            j = k + 1
            while j < len(st) and st[j]["callFrame"].get("functionName") == "wasm-to-js":
                j += 1
            if cats[k] != "wasm" and j < len(st) and cats[j] == "wasm" and c != "wasm":
                glue_incl[fname(f["callFrame"])] += d
                wasm_caller[fname(st[j]["callFrame"])] += d
                break
        seen = set()
        for k, f in enumerate(st):
            if cats[k] == "wasm":
                nm = fname(f["callFrame"])
                if nm not in seen:
                    seen.add(nm)
                    wasm_incl[nm] += d
        if c == "wasm":
            nm = fname(leaf["callFrame"])
            nm2 = re.sub(r"^<", "", nm)
            wasm_prefix["::".join(nm2.split("::")[:2])] += d

    busy = total - cat["idle"]
    per = (lambda us: f"{us / n:8.1f} µs/req") if n else (lambda us: "")
    print(f"\nprofile: {total / 1e6:.2f} s, {len(samples)} samples, in-isolate (non-idle) {busy / 1e6:.2f} s"
          + (f" = {busy / n / 1000:.3f} ms/request over {n} requests" if n else ""))
    print("\n## self time by category\n| category | ms | % of busy | per request |\n|---|---:|---:|---:|")
    for c, us in cat.most_common():
        if c == "idle":
            continue
        print(f"| {c} | {us / 1000:.1f} | {100 * us / busy:.1f}% | {per(us)} |")
    print(f"\n## top {top} self-time functions\n| category | function | % busy | per request |\n|---|---|---:|---:|")
    for (c, f), us in selfc.most_common(top + 1):
        if c == "idle":
            continue
        print(f"| {c} | `{f[:150]}` | {100 * us / busy:.1f}% | {per(us)} |")
    print("\n## JS glue imports called from wasm, inclusive (shim + builtins below it)\n| import | % busy | per request |\n|---|---:|---:|")
    for f, us in glue_incl.most_common(top):
        print(f"| `{f[:120]}` | {100 * us / busy:.1f}% | {per(us)} |")
    print("\n## JS/builtin time (non-wasm samples under a wasm frame) by the nearest Rust caller\n| Rust function that called into JS | % busy | per request |\n|---|---:|---:|")
    for f, us in wasm_caller.most_common(top):
        print(f"| `{f[:160]}` | {100 * us / busy:.1f}% | {per(us)} |")
    print(f"\n## top {top} wasm functions, inclusive\n| function | % busy | per request |\n|---|---:|---:|")
    for f, us in wasm_incl.most_common(top):
        print(f"| `{f[:160]}` | {100 * us / busy:.1f}% | {per(us)} |")
    print("\n## wasm self time by path prefix\n| prefix | % busy | per request |\n|---|---:|---:|")
    for f, us in wasm_prefix.most_common(25):
        print(f"| `{f[:100]}` | {100 * us / busy:.1f}% | {per(us)} |")
    return {"total_us": total, "busy_us": busy, "categories": dict(cat)}


def inclusive_of(prof: dict, pattern: str) -> float:
    """µs of samples whose stack has a frame whose (demangled) name matches `pattern`."""
    rx = re.compile(pattern)
    nodes = {nd["id"]: nd for nd in prof["nodes"]}
    parent = {c: nd["id"] for nd in prof["nodes"] for c in nd.get("children", [])}
    hit = {}

    def has(nid):
        if nid in hit:
            return hit[nid]
        r = bool(rx.search(fname(nodes[nid]["callFrame"]))) or (nid in parent and has(parent[nid]))
        hit[nid] = r
        return r

    deltas = prof["timeDeltas"]
    eff = sorted(deltas[1:])[len(deltas) // 2]
    return sum(eff for s in prof["samples"] if has(s))


if __name__ == "__main__":
    import sys
    sys.setrecursionlimit(100000)
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--incl", action="append", default=[], help="regex: also print inclusive time of frames matching it")
    o = ap.parse_args()
    prof = json.load(open(o.profile))
    report(prof, o.n, o.top)
    for pat in o.incl:
        us = inclusive_of(prof, pat)
        print(f"inclusive /{pat}/: {us / 1000:.1f} ms" + (f" = {us / o.n:.1f} µs/req" if o.n else ""))
