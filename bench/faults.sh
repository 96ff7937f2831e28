#!/usr/bin/env bash
# faults.sh - the long fault loops of testdata/faults in a release build: kill -9 loops
# (100 kills over pull/push/build/rmi), hostile layers (>= 300 inputs: the table plus
# random mixes, each through pull and ADD), the registry fault proxy over every mode,
# the sandbox probe and the secrets sweep; prints tried / survived / failed per class.
# Cases are counted one by one: each test appends `plan CLASS N` and `done CLASS TRIED
# SURVIVED FAILED HANGS ABORTS` to $KILN_FAULTS_REPORT (builder/tests/support/report.rs);
# the planned cases a run did not report (it died, hung or never started) count as failed.
# Needs the test env (bash testdata/env/setup.sh start). Usage: bash bench/faults.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-3}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
export KILN_FAULTS_KILLS=${KILN_FAULTS_KILLS:-25}       # rounds of 4 verbs: 100 kills
export KILN_FAULTS_HOSTILE=${KILN_FAULTS_HOSTILE:-150} # (13 + N) layers x 2 paths
row() { printf '%-12s %8s %9s %7s\n' "$@"; }
hangs=0 aborts=0

# run_class CLASS TEST CASES-PER-RUN RUNS: sums the per-case report of each run; a run
# planning fewer cases than CASES-PER-RUN (a test that died before it said) counts the
# difference as failed too.
run_class() {
    local class=$1 test=$2 cases=$3 runs=$4 tried=0 ok=0 bad=0 i rc counts
    for i in $(seq 1 "$runs"); do
        local report="$log/$test.$i.report"
        rc=0
        KILN_FAULTS_REPORT=$report timeout 3600 \
            cargo test --release -q --locked -p kiln --test "$test" >"$log/$test.$i" 2>&1 || rc=$?
        touch "$report"
        # planned, tried, survived, failed, hangs, aborts of this run
        counts=$(awk -v c="$class" -v min="$cases" '
            $1 == "plan" && $2 == c { p += $3 }
            $1 == "done" && $2 == c { t += $3; s += $4; f += $5; h += $6; a += $7 }
            END { if (p < min) p = min; if (t > p) p = t; print p, t + 0, s + 0, f + (p - t), h + 0, a + 0 }' "$report")
        read -r p t s f h a <<<"$counts"
        tried=$((tried + p)) ok=$((ok + s)) bad=$((bad + f))
        hangs=$((hangs + h)) aborts=$((aborts + a))
        # The run itself hung (timeout) or died of a signal (an abort of the test binary).
        if [ "$rc" = 124 ]; then hangs=$((hangs + 1)); fi
        if [ "$rc" -gt 128 ] && [ "$rc" != 124 ]; then aborts=$((aborts + 1)); fi
        if [ "$rc" != 0 ]; then
            echo "--- $test run $i (exit $rc): $f of $p cases failed" >&2
            grep -E "^[^ ]+: .*(panicked|hung for)|cases failed|assert" "$log/$test.$i" | head -8 >&2 || true
            cp "$log/$test.$i" "/tmp/faults-$test.$i.log" && echo "    full log: /tmp/faults-$test.$i.log" >&2
        fi
    done
    row "$class" "$tried" "$ok" "$bad"
}

cargo build --release -q --locked -p kiln --test faults_kill --test faults_hostile --test faults_registry \
    --test faults_sandbox --test faults_secrets
row class tried survived failed
run_class corruptions faults_kill $((KILN_FAULTS_KILLS * 4 + 1)) 1
run_class escapes faults_hostile $(((13 + KILN_FAULTS_HOSTILE) * 2 + 7 + 9 + 2)) 1
run_class registry faults_registry 22 "$rounds"
run_class sandbox faults_sandbox 6 1
run_class secrets faults_secrets 6 "$rounds"
row hangs - - "$hangs"
row aborts - - "$aborts"
