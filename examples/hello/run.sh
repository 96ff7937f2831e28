#!/usr/bin/env bash
# run.sh - the README's main job: build kiln, start the local registry with its
# busybox base image (testdata/env/setup.sh), and show kiln at work.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash testdata/env/setup.sh start
cargo build --release --locked -p kiln
KILN=target/release/kiln
$KILN version
