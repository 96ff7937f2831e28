#!/usr/bin/env bash
# test.sh - the whole test suite of kiln, from a fresh Debian 12 machine:
# sets up the test environment (packages, registries, base images), then runs
# the format and lint checks and every test of the workspace, and ends with
# one summary line of all the test counts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash testdata/env/setup.sh start
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# cargo's last line is the doc-tests of the last crate (often 0 tests); sum them all.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
