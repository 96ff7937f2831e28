#!/usr/bin/env bash
# faults.sh - the long fault loops of testdata/faults in a release build: kill -9 loops
# (100 kills over pull/push/build/rmi), hostile layers (>= 300 inputs: the table plus
# random mixes, each through pull and ADD), the registry fault proxy over every mode,
# the sandbox probe and the secrets sweep; prints tried / survived / failed per class.
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

# run_class CLASS TEST CASES-PER-RUN RUNS: a run's cases all count as survived or failed.
run_class() {
    local class=$1 test=$2 cases=$3 runs=$4 ok=0 bad=0 i
    for i in $(seq 1 "$runs"); do
        if timeout 3600 cargo test --release -q --locked -p kiln --test "$test" >"$log/$test.$i" 2>&1; then
            ok=$((ok + 1))
        else
            bad=$((bad + 1))
            echo "--- $test run $i failed:" >&2
            grep -E "panicked at|hung for" "$log/$test.$i" | head -5 >&2 || true
        fi
        # A kiln panic surfaces as "panicked" in the stderr the tests assert on.
        if grep -q "hung for" "$log/$test.$i"; then hangs=$((hangs + 1)); fi
        if grep -q "thread 'main' panicked" "$log/$test.$i"; then aborts=$((aborts + 1)); fi
    done
    row "$class" $((runs * cases)) $((ok * cases)) $((bad * cases))
}

cargo build --release -q --locked -p kiln --tests
row class tried survived failed
run_class corruptions faults_kill $((KILN_FAULTS_KILLS * 4)) 1
run_class escapes faults_hostile $(((13 + KILN_FAULTS_HOSTILE) * 2 + 7)) 1
run_class registry faults_registry 22 "$rounds"
run_class sandbox faults_sandbox 6 1
run_class secrets faults_secrets 4 "$rounds"
row hangs - - "$hangs"
row aborts - - "$aborts"
