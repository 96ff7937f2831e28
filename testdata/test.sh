#!/usr/bin/env bash
# test.sh - the whole test suite of kiln, from a fresh Debian 12 machine:
# sets up the test environment (packages, registries, base images), then runs
# the format and lint checks and every test of the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash testdata/env/setup.sh start
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
