#!/bin/sh
# Parse + resolve + check timings on a generated 10,000-instruction Dockerfile (target: parse +
# resolve < 20 ms). Prints a table.
set -e
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p kiln-frontend --example bench_resolve
