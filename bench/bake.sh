#!/usr/bin/env bash
# bake.sh - `kiln bake` of 4 targets that share the bigcontext context and a common stage
# (one build graph: the context and the common stage are one vertex each), against 4
# separate `kiln build` runs of the same targets and against one build alone (issue 16's
# target: the bake's total <= 1.3x one build, the context hashed and sent once).
# With PEERS_LIVE=1 (dockerd 20.10 of ../shared/peers started), docker's BuildKit building
# the 4 targets one after another is measured too.
#
#   bench/bake.sh [REPS]     (default 3; env: NFILES, BIG_MB for the context's size,
#                             KILN for the binary, WORK for the scratch directory)
#
# Every measurement starts from an empty state directory (cold: the context is hashed and
# every stage built). Needs the test registry: bash testdata/env/setup.sh start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${1:-3}
WORK=${WORK:-/tmp/kiln-bench-bake}
KILN=${KILN:-target/release/kiln}
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}
[ -x "$KILN" ] || cargo build --release --locked -p kiln >&2
KILN=$(realpath "$KILN")
mkdir -p "$WORK"

ctx=$WORK/ctx
[ -d "$ctx/files" ] || bench/contexts/bigcontext/gen.sh "$ctx" >&2
# A common stage (the context copied once) and four targets on top of it.
cat > "$ctx/Dockerfile" <<DOCKERFILE
ARG BASE=$BASE
FROM \${BASE} AS common
COPY . /app
RUN find /app -type f | wc -l > /count
FROM common AS api
RUN echo api > /role
FROM common AS web
RUN echo web > /role
FROM common AS worker
RUN echo worker > /role
FROM common AS cli
RUN echo cli > /role
DOCKERFILE
cat > "$ctx/docker-bake.hcl" <<HCL
group "default" {
  targets = ["api", "web", "worker", "cli"]
}
target "_common" {
  args = { BASE = "$BASE" }
}
target "api" {
  inherits = ["_common"]
  target   = "api"
  tags     = ["bench/api:kiln"]
}
target "web" {
  inherits = ["_common"]
  target   = "web"
  tags     = ["bench/web:kiln"]
}
target "worker" {
  inherits = ["_common"]
  target   = "worker"
  tags     = ["bench/worker:kiln"]
}
target "cli" {
  inherits = ["_common"]
  target   = "cli"
  tags     = ["bench/cli:kiln"]
}
HCL
# The bench's own files stay out of the context each build sends.
printf 'docker-bake.hcl\n' > "$ctx/.dockerignore"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
fresh_root() { rm -rf "$WORK/root"; mkdir -p "$WORK/root"; }

one_build() {
  fresh_root
  local t0; t0=$(now)
  "$KILN" --root "$WORK/root" build --progress quiet --target api -t bench/api:kiln "$ctx" >/dev/null
  echo "$(now) - $t0" | bc -l
}

four_builds() {
  fresh_root
  local t0; t0=$(now)
  for t in api web worker cli; do
    "$KILN" --root "$WORK/root" build --progress quiet --target "$t" -t "bench/$t:kiln" "$ctx" >/dev/null
  done
  echo "$(now) - $t0" | bc -l
}

bake() {
  fresh_root
  local t0; t0=$(now)
  (cd "$ctx" && "$KILN" --root "$WORK/root" bake --progress quiet >/dev/null)
  echo "$(now) - $t0" | bc -l
}

docker_builds() {
  local docker="env DOCKER_HOST=unix:///tmp/peers/run/docker.sock /usr/bin/docker"
  $docker builder prune -af >/dev/null
  local t0; t0=$(now)
  for t in api web worker cli; do
    $docker build --network none -q --target "$t" -t "bench/$t:docker" "$ctx" >/dev/null
  done
  echo "$(now) - $t0" | bc -l
}

declare -A RES
# Warm-up (discarded): the first read of the context comes from disk, not the page cache.
one_build >/dev/null
for what in one_build four_builds bake; do
  RES[$what]=$(for ((r = 0; r < REPS; r++)); do $what; done | median)
done
if [ "${PEERS_LIVE:-0}" = 1 ]; then
  RES[docker_builds]=$(for ((r = 0; r < REPS; r++)); do docker_builds; done | median)
fi

printf '\n%-44s %9s %9s\n' "bigcontext, cold, median of $REPS" "seconds" "x 1 build"
row() { printf '%-44s %9.2f %9.2f\n' "$1" "$2" "$(echo "$2 / ${RES[one_build]}" | bc -l)"; }
row "kiln build, 1 target" "${RES[one_build]}"
row "kiln build x 4, one after another" "${RES[four_builds]}"
row "kiln bake, 4 targets" "${RES[bake]}"
[ -n "${RES[docker_builds]:-}" ] && row "docker 20.10 BuildKit build x 4" "${RES[docker_builds]}"
ratio=$(echo "${RES[bake]} / ${RES[one_build]}" | bc -l)
if (( $(echo "$ratio <= 1.3" | bc -l) )); then verdict=met; else verdict=missed; fi
printf 'target: bake <= 1.3 x one build: %s (%.2f)\n' "$verdict" "$ratio"
rm -rf "$WORK/root"
