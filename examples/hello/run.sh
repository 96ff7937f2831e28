#!/usr/bin/env bash
# run.sh - the README's main job: start the local registry with its busybox
# base image (testdata/env/setup.sh), build kiln, build examples/hello with it,
# and show the result.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash testdata/env/setup.sh start
cargo build --release --locked -p kiln
KILN=target/release/kiln
export KILN_ROOT=${KILN_ROOT:-$PWD/.kiln-example}
$KILN version
$KILN build --progress plain -t kiln-example/hello:latest examples/hello
$KILN images
$KILN inspect kiln-example/hello:latest | head -40
# The image's filesystem, straight from kiln's store (an OCI layout), without kiln:
rm -rf "$KILN_ROOT/hello-bundle"
umoci unpack --image "$KILN_ROOT/content:docker.io/kiln-example/hello:latest" "$KILN_ROOT/hello-bundle" >/dev/null
echo "--- /srv/hello.txt in the image:"
cat "$KILN_ROOT/hello-bundle/rootfs/srv/hello.txt"
