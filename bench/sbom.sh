#!/usr/bin/env bash
# SBOM scan time of the built-in scanner (builder/src/attest/sbom) on three
# image roots: the test environment's busybox and Debian-packages roots, and a
# generated ~500 MB root (many files, a large dpkg status, Go binaries, Python
# and npm metadata). Targets: busybox <= 50 ms, 500 MB <= 1 s. Prints a table
# of the median of 5 scans (the page cache warm, as right after a build).
#
# Needs `testdata/env/setup.sh start` (for the two test roots). The generated
# root lives in $SBOM_BENCH_DIR (default: a temporary directory, removed after).
#
# bench/attest.sh sources this file for make_big_root and scan_median (its table
# puts them beside the provenance overhead); run directly, it prints its own table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KILN_TESTENV=${KILN_TESTENV:-/tmp/kiln-testenv}
RUNS=${RUNS:-5}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release -p kiln --example sbom_scan
  SCAN=target/release/examples/sbom_scan
else
  cargo build --quiet -p kiln --example sbom_scan
  SCAN=target/debug/examples/sbom_scan
fi

work=${SBOM_BENCH_DIR:-$(mktemp -d /tmp/kiln-sbom-bench.XXXXXX)}
[ -n "${SBOM_BENCH_DIR:-}" ] || trap 'rm -rf "$work"' EXIT

make_big_root() { # dir: ~500 MB of files plus package metadata
  local root=$1
  [ -f "$root/.done" ] && return 0
  rm -rf "$root"; mkdir -p "$root"
  python3 - "$root" <<'PY'
import os, sys, shutil
root = sys.argv[1]
# ~480 MB of plain data files: 40 directories of 500 files of 24 KiB.
block = os.urandom(24 * 1024)
for d in range(40):
    p = os.path.join(root, "srv", "data", f"d{d:02}")
    os.makedirs(p)
    for f in range(500):
        with open(os.path.join(p, f"f{f:04}.bin"), "wb") as fh:
            fh.write(block)
# A dpkg status of 3000 installed packages made from this machine's own stanzas.
stanzas = [s for s in open("/var/lib/dpkg/status", encoding="utf-8", errors="replace").read().split("\n\n") if s.startswith("Package: ")]
os.makedirs(os.path.join(root, "var/lib/dpkg"))
with open(os.path.join(root, "var/lib/dpkg/status"), "w") as out:
    for i in range(3000):
        s = stanzas[i % len(stanzas)]
        name = s.split("\n", 1)[0][len("Package: "):]
        out.write(s.replace(f"Package: {name}", f"Package: {name}-{i}", 1) + "\n\n")
# 2000 installed npm packages and 500 Python distributions.
for i in range(2000):
    p = os.path.join(root, "app/node_modules", f"pkg{i}")
    os.makedirs(p)
    open(os.path.join(p, "package.json"), "w").write(f'{{"name":"pkg{i}","version":"1.0.{i}","license":"MIT"}}')
for i in range(500):
    p = os.path.join(root, "usr/lib/python3/dist-packages", f"dist{i}-1.{i}.dist-info")
    os.makedirs(p)
    open(os.path.join(p, "METADATA"), "w").write(f"Metadata-Version: 2.1\nName: dist{i}\nVersion: 1.{i}\nLicense: MIT\n\n")
# Real Go and C executables (build info is read from their ELF sections).
os.makedirs(os.path.join(root, "usr/bin"))
for b in ["/usr/bin/skopeo", "/usr/bin/docker-registry", "/usr/bin/umoci", "/usr/bin/git", "/usr/bin/python3"]:
    if os.path.exists(b):
        shutil.copy(os.path.realpath(b), os.path.join(root, "usr/bin", os.path.basename(b)))
PY
  touch "$root/.done"
}

scan_median() { # dir -> "packages median-ms" over $RUNS scans
  local dir=$1 out times=() pkgs
  for _ in $(seq 1 "$RUNS"); do
    out=$("$SCAN" --time "$dir")
    pkgs=${out%% *}
    times+=("${out##* }")
  done
  echo "$pkgs $(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")"
}

row() { # label dir target-ms
  local label=$1 dir=$2 target=$3 size files pkgs median verdict
  size=$(du -sm "$dir" | cut -f1)
  files=$(find "$dir" -xdev | wc -l)
  read -r pkgs median < <(scan_median "$dir")
  verdict=$(awk -v m="$median" -v t="$target" 'BEGIN { print (m <= t) ? "ok" : "SLOW" }')
  printf '| %-16s | %7s | %7s | %8s | %9s | %9s | %-4s |\n' "$label" "$size" "$files" "$pkgs" "$median" "$target" "$verdict"
}

[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0
make_big_root "$work/big"
echo "| root             | size MB |   files | packages | median ms | target ms | ok   |"
echo "|------------------|---------|---------|----------|-----------|-----------|------|"
row busybox "$KILN_TESTENV/rootfs/busybox-amd64" 50
row debian-packages "$KILN_TESTENV/rootfs/debian-pkgs" 50
row "~500 MB" "$work/big" 1000
