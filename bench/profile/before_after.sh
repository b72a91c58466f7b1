#!/usr/bin/env bash
# Issue 15: timing.py + cpuprofile.py on two build snapshots, interleaved (order alternates per
# repetition), outputs in bench/profile/out/ba-*. Usage:
#   bash bench/profile/before_after.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR [REPS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$HERE/../../.venv/bin/python}
[ -x "$HERE/../.venv/bin/python" ] && PY=$HERE/../.venv/bin/python
BEFORE=$1 AFTER=$2 REPS=${3:-2}
rm -rf /tmp/prof-before /tmp/prof-after
cp -r "$BEFORE" /tmp/prof-before; cp -r "$AFTER" /tmp/prof-after   # snapshots (others rebuild build/)
OUT=$HERE/out; mkdir -p "$OUT"
for r in $(seq 1 "$REPS"); do
  if [ $((r % 2)) = 1 ]; then order="before after"; else order="after before"; fi
  for b in $order; do
    "$PY" "$HERE/timing.py" --build /tmp/prof-$b --latency-ms 0  --n 2000 --rounds 3 --routes mock,404,generate \
      --out "$OUT/ba-timing-$b-lat0-r$r.json"  > "$OUT/ba-timing-$b-lat0-r$r.txt" 2>&1
  done
  for b in $order; do
    "$PY" "$HERE/timing.py" --build /tmp/prof-$b --latency-ms 20 --n 500  --rounds 3 --routes mock,generate \
      --out "$OUT/ba-timing-$b-lat20-r$r.json" > "$OUT/ba-timing-$b-lat20-r$r.txt" 2>&1
  done
  for b in $order; do
    "$PY" "$HERE/cpuprofile.py" --build /tmp/prof-$b --route generate --n 3000 --interval-us 100 --tag "ba-r$r" \
      > "$OUT/ba-profile-$b-r$r.txt" 2>&1
  done
done
echo done
