#!/usr/bin/env bash
# attest.sh - the supply-chain speed targets of issue 15 in one table:
#   provenance adds <= 20 ms to a build: the same small build (busybox + COPY, written as
#     an OCI tarball, the cache warm) timed N times with --provenance=false and N times
#     with --provenance=mode=max, alternating; the difference of the medians;
#   the SBOM scan of the busybox image <= 50 ms and of a ~500 MB image <= 1 s (the
#     scanner of bench/sbom.sh, median of RUNS scans).
#
#   bench/attest.sh [N]     (default 9 builds per variant; RUNS=5 scans per root;
#                            PROFILE=dev measures the debug build, not for the record)
#
# Needs the test registry and roots: bash testdata/env/setup.sh start. Everything it
# makes lives under a temporary directory, removed at exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-9}
# The scanner, make_big_root and scan_median (and their temporary directory).
# shellcheck source=bench/sbom.sh
source bench/sbom.sh
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release --locked -p kiln
  KILN=target/release/kiln
else
  cargo build --quiet --locked -p kiln
  KILN=target/debug/kiln
fi
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}

root=$work/state ctx=$work/ctx
mkdir -p "$ctx"
printf 'FROM %s\nCOPY f /f\n' "$BASE" > "$ctx/Dockerfile"
echo x > "$ctx/f"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
build_ms() { # provenance-flag -> milliseconds of one build
  local t0 t1
  t0=$(ms)
  "$KILN" --root "$root" build --progress quiet --provenance="$1" \
    -o "type=oci,dest=$work/out.tar" "$ctx" >/dev/null 2>"$work/build.err" \
    || { cat "$work/build.err" >&2; echo "attest.sh: the build failed" >&2; exit 1; }
  t1=$(ms)
  echo $((t1 - t0))
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Warm the cache and the base image once; then alternate so load drifts hit both alike.
build_ms false >/dev/null
build_ms mode=max >/dev/null
off=() on=()
for _ in $(seq 1 "$N"); do
  off+=("$(build_ms false)")
  on+=("$(build_ms mode=max)")
done
off_median=$(printf '%s\n' "${off[@]}" | median)
on_median=$(printf '%s\n' "${on[@]}" | median)
added=$((on_median - off_median))

make_big_root "$work/big"
read -r _ busybox_ms < <(scan_median "$KILN_TESTENV/rootfs/busybox-amd64")
read -r _ debian_ms < <(scan_median "$KILN_TESTENV/rootfs/debian-pkgs")
read -r _ big_ms < <(scan_median "$work/big")
big_mb=$(du -sm "$work/big" | cut -f1)

verdict() { awk -v m="$1" -v t="$2" 'BEGIN { print (m <= t) ? "ok" : "SLOW" }'; }
line() { printf '| %-52s | %9s | %11s | %-4s |\n' "$1" "$2" "$3" "$4"; }
echo "kiln $PROFILE build, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
line "what" "target ms" "measured ms" "ok"
echo "|------------------------------------------------------|-----------|-------------|------|"
line "provenance mode=max added to a build (median of $N)" 20 "$added" "$(verdict "$added" 20)"
line "  build without provenance / with (medians)" "" "$off_median / $on_median" ""
line "SBOM of the busybox image (median of $RUNS)" 50 "$busybox_ms" "$(verdict "$busybox_ms" 50)"
line "SBOM of the Debian-packages image (median of $RUNS)" 50 "$debian_ms" "$(verdict "$debian_ms" 50)"
line "SBOM of a ${big_mb} MB image (median of $RUNS)" 1000 "$big_ms" "$(verdict "$big_ms" 1000)"
