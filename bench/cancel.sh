#!/usr/bin/env bash
# cancel.sh - how fast `kiln build` stops: SIGINT while a RUN sleeps (time from
# the signal to kiln's exit) and a failing step beside a sleeping parallel stage
# (time from the failing step's end to kiln's exit), per executor; prints the
# median and max of REPS runs and checks nothing was left running.
#
#   bench/cancel.sh [REPS]      (default 5; EXECUTORS="oci native" picks some)
#
# Needs root and the test registry: bash testdata/env/setup.sh start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${1:-5}
WORK=${WORK:-/tmp/kiln-bench-cancel}
KILN=${KILN:-target/release/kiln}
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}
EXECUTORS=${EXECUTORS:-oci native}
[ -x "$KILN" ] || cargo build --release --locked -p kiln >&2
rm -rf "$WORK"
mkdir -p "$WORK/ctx"
ROOT="$WORK/state"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

stats() { # prints "median max" of the numbers on stdin
  sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%d %d\n", m, v[NR]}'
}

left_running() { pgrep -fc "sleep $1" || true; }

sigint_ms() { # executor rep
  local m="300.$$$2$RANDOM"
  printf 'FROM %s\nRUN sleep %s\n' "$BASE" "$m" >"$WORK/ctx/Dockerfile"
  "$KILN" --root "$ROOT" build --executor "$1" --progress quiet "$WORK/ctx" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 400); do pgrep -f "sleep $m" >/dev/null && break; sleep 0.025; done
  local t0; t0=$(now_ms)
  kill -INT "$pid"
  local rc=0
  wait "$pid" || rc=$?
  local t1; t1=$(now_ms)
  [ "$rc" = 130 ] || { echo "exit $rc, expected 130" >&2; exit 1; }
  [ "$(left_running "$m")" = 0 ] || { echo "step left running" >&2; exit 1; }
  echo $((t1 - t0))
}

failure_ms() { # executor rep
  local m="300.$$$2$RANDOM"
  printf 'FROM %s AS base\nFROM base AS slow\nRUN sleep %s\nFROM base AS bad\nRUN sleep 0.5 && exit 3\nFROM base\nCOPY --from=slow / /s\nCOPY --from=bad / /b\n' \
    "$BASE" "$m" >"$WORK/ctx/Dockerfile"
  local t0 rc=0
  "$KILN" --root "$ROOT" build --executor "$1" --progress plain "$WORK/ctx" >"$WORK/out" 2>&1 &
  local pid=$!
  # The failing step's end is when kiln prints its ERROR line (polled every 5 ms).
  for _ in $(seq 4000); do grep -q 'ERROR: process' "$WORK/out" 2>/dev/null && break; sleep 0.005; done
  t0=$(now_ms)
  wait "$pid" || rc=$?
  local t1; t1=$(now_ms)
  [ "$rc" = 1 ] || { echo "exit $rc, expected 1" >&2; cat "$WORK/out" >&2; exit 1; }
  [ "$(left_running "$m")" = 0 ] || { echo "step left running" >&2; exit 1; }
  echo $((t1 - t0))
}

printf '%-8s %-26s %10s %10s\n' executor case "median ms" "max ms"
for ex in $EXECUTORS; do
  read -r med max < <(for r in $(seq "$REPS"); do sigint_ms "$ex" "$r"; done | stats)
  printf '%-8s %-26s %10s %10s\n' "$ex" "SIGINT -> exit" "$med" "$max"
  read -r med max < <(for r in $(seq "$REPS"); do failure_ms "$ex" "$r"; done | stats)
  printf '%-8s %-26s %10s %10s\n' "$ex" "failure printed -> exit" "$med" "$max"
done
