#!/usr/bin/env bash
# regen.sh - rebuild the references of the differential suite with docker
# 20.10's BuildKit (the oracle), one case at a time:
#   bash testdata/differential/regen.sh [CASE...]     (default: every case)
# Needs the test env (busybox on 127.0.0.1:5000: testdata/env/setup.sh start)
# and a running peer dockerd:
#   bash /work/shared/peers/install.sh && bash /work/shared/peers/docker.sh start
# (DOCKER_HOST defaults to that daemon's socket; its --insecure-registry covers :5000).
#
# Per case it writes, beside the Dockerfile:
#   expected.txt        what builder/tests/differential.rs compares kiln with:
#                       `difftool.py summarize` of `docker save`, passed through
#                       override.sed when the case has one
#   buildkit-20.10.txt  the unmodified 20.10 summary, only for cases with override.sed
#   expected-error.txt  for `expect: error` cases, BuildKit's error lines (kept for
#                       reading: the test only checks that kiln fails too)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DOCKER_HOST=${DOCKER_HOST:-unix:///tmp/peers/run/docker.sock}
DOCKER=${DOCKER:-/usr/bin/docker}
work=${WORK_DIR:-/tmp/kiln-differential-regen}
mkdir -p "$work"
"$DOCKER" version >/dev/null || { echo "no dockerd at $DOCKER_HOST (see the header of $0)" >&2; exit 1; }
# Cache mounts must start empty, as they do in a fresh kiln state dir.
"$DOCKER" builder prune -af >/dev/null

meta() { # case key -> values, one per line
  [ -f "$1/meta" ] || return 0
  sed -n "s/^$2:[[:space:]]*//p" "$1/meta"
}

regen_case() {
  local case=$1 name ctx out args=() kv
  name=$(basename "$case")
  ctx=$work/$name/ctx out=$work/$name
  python3 "$here/difftool.py" prepare "$case" "$ctx"
  while IFS= read -r kv; do [ -n "$kv" ] && args+=(--build-arg "$kv"); done < <(meta "$case" build-arg)
  kv=$(meta "$case" target); [ -n "$kv" ] && args+=(--target "$kv")
  # Cases of features 20.10 lacks build an equivalent Dockerfile.2010 instead.
  local df=$case/Dockerfile
  [ -f "$case/Dockerfile.2010" ] && df=$case/Dockerfile.2010
  local tag=kiln-differential/$name:latest
  rm -f "$case/expected.txt" "$case/buildkit-20.10.txt" "$case/expected-error.txt"
  if [ "$(meta "$case" expect)" = error ]; then
    if "$DOCKER" build --network none --no-cache --progress plain "${args[@]}" \
         -f "$df" -t "$tag" "$ctx" >"$out/log" 2>&1; then
      echo "$name: expected an error but docker built it" >&2; return 1
    fi
    # The error lines without the build's step numbers and timings.
    grep -E '^(error|ERROR|failed to)|^#[0-9]+ ERROR|executor failed|failed to solve' "$out/log" \
      | sed -E 's/^#[0-9]+ //; s/ [0-9]+\.[0-9]+s$//' | sort -u > "$case/expected-error.txt"
    echo "$name: error: $(head -1 "$case/expected-error.txt")"
    return 0
  fi
  "$DOCKER" build --network none --no-cache --progress plain "${args[@]}" \
    -f "$df" -t "$tag" "$ctx" >"$out/log" 2>&1 \
    || { tail -20 "$out/log" >&2; echo "$name: docker build failed" >&2; return 1; }
  "$DOCKER" save "$tag" -o "$out/image.tar"
  "$DOCKER" rmi "$tag" >/dev/null
  if [ -f "$case/override.sed" ]; then
    python3 "$here/difftool.py" summarize "$out/image.tar" > "$case/buildkit-20.10.txt"
    sed -f "$case/override.sed" "$case/buildkit-20.10.txt" > "$case/expected.txt"
  else
    python3 "$here/difftool.py" summarize "$out/image.tar" > "$case/expected.txt"
  fi
  echo "$name: ok"
}

cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=("$here"/cases/*/)
status=0
for c in "${cases[@]}"; do
  [ -d "$c" ] || c=$here/cases/$c
  regen_case "${c%/}" || status=1
done
exit "$status"
