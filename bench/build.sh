#!/usr/bin/env bash
# build.sh - time `kiln build` on the benchmark contexts and print medians
# beside BuildKit's and buildah's (measured on this machine kind with
# ../shared/peers/bench-peers.sh; numbers in ../shared/peers/README.md), or
# beside live peers when PEERS_LIVE=1 and ../shared/peers is set up
# (dockerd started with its docker.sh).
#
#   bench/build.sh [REPS]        (default 3; contexts: multistage, bigcontext, manyrun;
#                                 CONTEXTS="manyrun" picks some)
#
# Phases per context and rep: cold (empty state dir, base image pulled once
# beforehand), warm (no-op rebuild), touch (mtime of one file), edit (one
# file's content). Needs the test registry: bash testdata/env/setup.sh start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${1:-3}
WORK=${WORK:-/tmp/kiln-bench-build}
KILN=${KILN:-target/release/kiln}
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}
[ -x "$KILN" ] || cargo build --release --locked -p kiln >&2
mkdir -p "$WORK"

# BuildKit (dockerd 20.10) and buildah medians from ../shared/peers/README.md (2 vCPU, same kind).
declare -A PEER=(
  [multistage:docker:cold]=1.21 [multistage:docker:warm]=0.08 [multistage:docker:touch]=0.08 [multistage:docker:edit]=1.20
  [bigcontext:docker:cold]=5.03 [bigcontext:docker:warm]=0.37 [bigcontext:docker:touch]=0.40 [bigcontext:docker:edit]=3.12
  [multistage:buildah:cold]=2.12 [multistage:buildah:warm]=0.60 [multistage:buildah:touch]=0.59 [multistage:buildah:edit]=1.97
  [bigcontext:buildah:cold]=13.69 [bigcontext:buildah:warm]=3.85 [bigcontext:buildah:touch]=8.93 [bigcontext:buildah:edit]=17.98
  # manyrun: BuildKit measured live on a quiet machine (../shared/peers/bench-peers.sh
  # bench/contexts/manyrun 3, PEERS=docker PUSH=0, 2026-11-29 22:55, load ~1.3). In the same
  # window BuildKit gave multistage 1.33/0.18/0.19/1.32 and bigcontext 18.60 (5.08-19.77)/0.49/
  # 0.72/3.09 (cold/warm/touch/edit), i.e. slower than the recorded numbers above, which stay
  # the reference.
  [manyrun:docker:cold]=1.16 [manyrun:docker:warm]=0.17 [manyrun:docker:touch]=0.18 [manyrun:docker:edit]=1.03
)

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

timed_build() { # root ctx -> seconds
  local root=$1 ctx=$2 t0 t1
  sync
  t0=$(now)
  "$KILN" --root "$root" build --progress quiet --build-arg "BASE=$BASE" -t "bench/$(basename "$ctx"):kiln" "$ctx" >/dev/null \
    || { echo "kiln build failed for $ctx" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}

declare -A RES
CONTEXTS=${CONTEXTS:-multistage bigcontext manyrun}
for name in $CONTEXTS; do
  src=bench/contexts/$name
  ctx=$WORK/ctx/$name
  EDIT_FILE=
  . "$src/bench.env"
  if [ -x "$src/gen.sh" ]; then
    [ -d "$ctx" ] || "$src/gen.sh" "$ctx" >&2
  else
    rm -rf "$ctx"; mkdir -p "$ctx"; cp -a "$src/." "$ctx/"; rm -f "$ctx/bench.env"
  fi
  for rep in $(seq 1 "$REPS"); do
    root=$WORK/state-$name
    rm -rf "$root"
    # The base image in the local store first: "cold" means an empty build cache.
    "$KILN" --root "$root" pull -q "$BASE" >/dev/null 2>&1 || "$KILN" --root "$root" pull "$BASE" >/dev/null
    RES[$name:cold]+="$(timed_build "$root" "$ctx") "
    RES[$name:warm]+="$(timed_build "$root" "$ctx") "
    touch "$ctx/$EDIT_FILE"
    RES[$name:touch]+="$(timed_build "$root" "$ctx") "
    echo "edit $rep $(date +%s%N)" >> "$ctx/$EDIT_FILE"
    RES[$name:edit]+="$(timed_build "$root" "$ctx") "
  done
done

printf '\n%-11s %-6s %8s %8s %8s %8s %8s\n' context phase kiln buildkit ratio buildah ratio
ratio() { [ -n "$2" ] && printf '%8.2f %8.2f' "$2" "$(echo "$1 / $2" | bc -l)" || printf '%8s %8s' - -; }
for name in $CONTEXTS; do
  for phase in cold warm touch edit; do
    k=$(tr ' ' '\n' <<<"${RES[$name:$phase]}" | grep -v '^$' | median)
    printf '%-11s %-6s %8.3f %s %s\n' "$name" "$phase" "$k" \
      "$(ratio "$k" "${PEER[$name:docker:$phase]:-}")" "$(ratio "$k" "${PEER[$name:buildah:$phase]:-}")"
  done
done
echo "(seconds, median of $REPS; ratio = kiln / peer; peers: ../shared/peers/README.md)"
