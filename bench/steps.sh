#!/usr/bin/env bash
# steps.sh - per-step cost of RUN steps as a build grows (issue 17): times cold
# builds of `FROM busybox` + N × `RUN echo $i > /f$i` and prints, per N, the
# median build time and the per-step overhead (T(N) − T(0)) / N.
#
#   bench/steps.sh [REPS] [N...]     (default 3 reps; N = 20 100 500)
#
# "Cold" means an empty build cache with the base image already pulled into
# the state directory. Needs the test registry: bash testdata/env/setup.sh start.
# KILN_FLAGS adds global flags (e.g. "--executor native").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${1:-3}
shift || true
SIZES=${*:-20 100 500}
WORK=${WORK:-/tmp/kiln-bench-steps}
KILN=${KILN:-target/release/kiln}
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}
[ -x "$KILN" ] || cargo build --release --locked -p kiln >&2
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }

context() { # N -> context dir
  local n=$1 dir=$WORK/ctx-$1 i
  mkdir -p "$dir"
  { echo "FROM $BASE"; for i in $(seq 1 "$n"); do echo "RUN echo $i > /f$i"; done; } > "$dir/Dockerfile"
  echo "$dir"
}

cold_build() { # N -> seconds
  local ctx root=$WORK/state t0 t1
  ctx=$(context "$1")
  rm -rf "$root"
  # shellcheck disable=SC2086
  "$KILN" $KILN_FLAGS --root "$root" pull -q "$BASE" >/dev/null
  sync
  t0=$(now)
  # shellcheck disable=SC2086
  "$KILN" $KILN_FLAGS --root "$root" build --progress quiet -t "bench/steps-$1:kiln" "$ctx" >/dev/null \
    || { echo "kiln build of $1 steps failed" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}

KILN_FLAGS=${KILN_FLAGS:-}
declare -A T
for n in 0 $SIZES; do
  runs=""
  for _ in $(seq 1 "$REPS"); do runs+="$(cold_build "$n") "; done
  T[$n]=$(tr ' ' '\n' <<<"$runs" | grep -v '^$' | median)
  echo "N=$n runs: $runs" >&2
done
printf '%6s %10s %14s\n' steps 'build (s)' 'per step (ms)'
printf '%6s %10.3f %14s\n' 0 "${T[0]}" -
for n in $SIZES; do
  printf '%6s %10.3f %14.1f\n' "$n" "${T[$n]}" "$(echo "(${T[$n]} - ${T[0]}) * 1000 / $n" | bc -l)"
done
