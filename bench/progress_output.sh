#!/usr/bin/env bash
# Cost of the progress displays on a chatty build: one RUN printing LINES lines (half on stderr)
# in the test registry's busybox, built with --no-cache under each --progress mode (tty on a
# pseudo-terminal from script(1)). Prints wall
# time, stderr bytes and lines per second as a table (quiet = the build without display work).
#   usage: bench/progress_output.sh      (needs `bash testdata/env/setup.sh start` and a kiln binary)
#   env:   KILN=path/to/kiln (default target/release/kiln, else target/debug/kiln)  LINES=200000  RUNS=3
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-$PWD/target/release/kiln}
[ -x "$KILN" ] || KILN=$PWD/target/debug/kiln
[ -x "$KILN" ] || { echo "no kiln binary (cargo build --release -p kiln)" >&2; exit 1; }
LINES=${LINES:-200000}
RUNS=${RUNS:-3}
ENVFILE=${KILN_TESTENV:-/tmp/kiln-testenv}/env
[ -r "$ENVFILE" ] || { echo "no test env at $ENVFILE: run bash testdata/env/setup.sh start" >&2; exit 1; }
REG=$(sed -n 's/^KILN_TEST_REGISTRY=//p' "$ENVFILE")
WORK=$(mktemp -d /var/tmp/kiln-progress-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/ctx"
HALF=$((LINES / 2))
cat > "$WORK/ctx/Dockerfile" <<DF
FROM $REG/library/busybox:latest
RUN seq $HALF | sed 's/^/stdout line /'; seq $HALF | sed 's/^/stderr line /' >&2
DF
# Warm the base image into the state dir once.
"$KILN" --root "$WORK/root" build --progress quiet "$WORK/ctx" >/dev/null 2>&1

echo "kiln: $KILN    lines: $LINES    runs: $RUNS (best of)"
printf '%-8s %10s %14s %14s\n' mode "wall s" "stderr bytes" "lines/s"
for mode in quiet plain rawjson tty; do
    best=
    for _ in $(seq "$RUNS"); do
        start=$(date +%s.%N)
        if [ "$mode" = tty ]; then
            # A real terminal through script(1); its output is the terminal's bytes.
            script -qfec "'$KILN' --root '$WORK/root' build --no-cache --progress tty '$WORK/ctx'" \
                /dev/null >"$WORK/stderr.$mode" 2>&1 </dev/null
        else
            "$KILN" --root "$WORK/root" build --no-cache --progress "$mode" "$WORK/ctx" \
                >/dev/null 2>"$WORK/stderr.$mode"
        fi
        end=$(date +%s.%N)
        t=$(echo "$end - $start" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
    done
    bytes=$(stat -c %s "$WORK/stderr.$mode")
    printf '%-8s %10.2f %14d %14.0f\n' "$mode" "$best" "$bytes" "$(echo "$LINES / $best" | bc -l)"
done
# Plain must have printed every line.
got=$(grep -c ' std\(out\|err\) line ' "$WORK/stderr.plain" || true)
[ "$got" -eq "$LINES" ] || { echo "plain printed $got of $LINES lines" >&2; exit 1; }
