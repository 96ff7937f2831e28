#!/usr/bin/env bash
# multiplatform.sh - cost of a second platform when the platform-independent
# work is shared: a Dockerfile whose `FROM --platform=$BUILDPLATFORM` stage
# does the heavy work (a CPU-bound RUN) and whose per-platform part is
# COPY-only, built cold (empty state dir) for linux/amd64 alone and for
# linux/amd64,linux/arm64. Prints the medians and their ratio (target <= 1.2).
#
#   bench/multiplatform.sh [REPS]      (default 3)
#   env: KILN=path/to/kiln (default target/release/kiln, else target/debug/kiln)
#        WORK=/tmp/kiln-bench-mp  BASE=127.0.0.1:5000/library/busybox:latest  LOOPS=300000
# Needs the test registry: bash testdata/env/setup.sh start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${1:-3}
WORK=${WORK:-/tmp/kiln-bench-mp}
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}
LOOPS=${LOOPS:-300000}
if [ -z "${KILN:-}" ]; then
  if [ -x target/release/kiln ]; then KILN=target/release/kiln; else KILN=target/debug/kiln; fi
fi
[ -x "$KILN" ] || cargo build -p kiln >&2
rm -rf "$WORK"
mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM --platform=\$BUILDPLATFORM $BASE AS build
RUN i=0; while [ \$i -lt $LOOPS ]; do i=\$((i+1)); done; mkdir /out; for a in amd64 arm64; do echo "bin for \$a" > /out/\$a; done
FROM $BASE
ARG TARGETARCH
COPY --from=build /out/\$TARGETARCH /usr/local/bin/app
COPY config.txt /etc/app.conf
EOF
echo "setting = 1" >"$WORK/ctx/config.txt"

now() { date +%s.%N; }

# One cold build (fresh state dir) into the store; prints seconds and executed vertices.
cold() {
  local platforms=$1 root="$WORK/root"
  rm -rf "$root"
  local t0 t1
  t0=$(now)
  "$KILN" --root "$root" build --progress quiet --platform "$platforms" -t bench/mp:latest \
    --metadata-file "$WORK/meta.json" "$WORK/ctx" >/dev/null
  t1=$(now)
  printf '%s %s\n' "$(echo "$t1 - $t0" | bc -l)" "$(jq -r '."kiln.vertices.executed"' "$WORK/meta.json")"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A MED EXEC
for platforms in linux/amd64 linux/amd64,linux/arm64; do
  : >"$WORK/times"
  for _ in $(seq "$REPS"); do
    read -r secs executed < <(cold "$platforms")
    echo "$secs" >>"$WORK/times"
    EXEC[$platforms]=$executed
  done
  MED[$platforms]=$(median <"$WORK/times")
done

one=${MED[linux/amd64]}
two=${MED[linux/amd64,linux/arm64]}
printf '%-28s %10s %10s\n' "platforms" "cold (s)" "executed"
printf '%-28s %10.2f %10s\n' "linux/amd64" "$one" "${EXEC[linux/amd64]}"
printf '%-28s %10.2f %10s\n' "linux/amd64,linux/arm64" "$two" "${EXEC[linux/amd64,linux/arm64]}"
printf '%-28s %10.2f %10s\n' "ratio (target <= 1.20)" "$(echo "$two / $one" | bc -l)" ""
echo "($REPS reps, medians; $KILN)"
