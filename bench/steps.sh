#!/usr/bin/env bash
# steps.sh - per-step cost of RUN steps as a build grows (issue 17): times cold
# builds of `FROM busybox` + N × `RUN echo $i > /f$i` and prints, per N, the
# median build time and the per-step overhead (T(N) − T(0)) / N, in wall time and
# in CPU time (user + system of kiln and the processes it waited for: crun, the
# step's shell), which a machine shared with other work disturbs less.
#
#   bench/steps.sh [REPS] [N...]     (default 3 reps; N = 20 100 500)
#
# "Cold" means an empty build cache with the base image already pulled into
# the state directory. Needs the test registry: bash testdata/env/setup.sh start.
# KILN_FLAGS adds build flags (e.g. "--executor native"); KILN_FLATTEN_STRIDE=100000
# turns chain flattening off (see solver/src/snapshot/flatten.rs).
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

cold_build() { # N -> "wall_seconds cpu_seconds"
  local ctx root=$WORK/state t0 t1 cpu
  ctx=$(context "$1")
  rm -rf "$root"
  "$KILN" --root "$root" pull -q "$BASE" >/dev/null
  sync
  t0=$(now)
  # shellcheck disable=SC2086
  /usr/bin/time -f '%U %S' -o "$WORK/cpu" \
    "$KILN" --root "$root" build $KILN_FLAGS --progress quiet -t "bench/steps-$1:kiln" "$ctx" >/dev/null \
    || { echo "kiln build of $1 steps failed" >&2; exit 1; }
  t1=$(now)
  cpu=$(awk '{print $1 + $2}' "$WORK/cpu")
  echo "$(echo "$t1 - $t0" | bc -l) $cpu"
}

KILN_FLAGS=${KILN_FLAGS:-}
declare -A T C
for n in 0 $SIZES; do
  walls="" cpus=""
  for _ in $(seq 1 "$REPS"); do
    read -r wall cpu <<<"$(cold_build "$n")"
    walls+="$wall " cpus+="$cpu "
  done
  T[$n]=$(tr ' ' '\n' <<<"$walls" | grep -v '^$' | median)
  C[$n]=$(tr ' ' '\n' <<<"$cpus" | grep -v '^$' | median)
  echo "N=$n wall: $walls cpu: $cpus" >&2
done
printf '%6s %10s %14s %10s %18s\n' steps 'build (s)' 'per step (ms)' 'CPU (s)' 'CPU per step (ms)'
printf '%6s %10.3f %14s %10.3f %18s\n' 0 "${T[0]}" - "${C[0]}" -
for n in $SIZES; do
  printf '%6s %10.3f %14.1f %10.3f %18.1f\n' "$n" "${T[$n]}" "$(echo "(${T[$n]} - ${T[0]}) * 1000 / $n" | bc -l)" \
    "${C[$n]}" "$(echo "(${C[$n]} - ${C[0]}) * 1000 / $n" | bc -l)"
done
