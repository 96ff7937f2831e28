#!/usr/bin/env bash
# faults.sh - the long fault loops of testdata/faults, in a release build: kill -9 loops
# (>= 100 kills over pull/push/build/rmi), the registry fault proxy over every mode
# (ROUNDS times), and the secrets sweep; prints tried / survived / failed per class.
# Needs the test env (bash testdata/env/setup.sh start). Usage: bash bench/faults.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-5}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
row() { printf '%-12s %8s %9s %7s\n' "$@"; }

# class test kills-per-run cases-per-run runs
run_class() {
    local class=$1 test=$2 cases=$3 runs=$4 ok=0 bad=0
    for i in $(seq 1 "$runs"); do
        if KILN_FAULTS_KILLS=25 timeout 3600 cargo test --release -q -p kiln --test "$test" \
            >"$log/$test.$i" 2>&1; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
        if grep -q "panicked at" "$log/$test.$i" && grep -q "kiln.*panicked\|RUST_BACKTRACE" "$log/$test.$i"; then
            aborts=$((aborts + 1))
        fi
        if grep -q "hung for" "$log/$test.$i"; then hangs=$((hangs + 1)); fi
    done
    row "$class" $((runs * cases)) $((ok * cases)) $((bad * cases))
}

cargo build --release -q -p kiln --tests
aborts=0 hangs=0
row class tried survived failed
# 25 rounds x 4 verbs = 100 kills per run.
run_class corruptions faults_kill 100 1
# 15 pull + 7 push fault cases per run.
run_class registry faults_registry 22 "$rounds"
run_class secrets faults_secrets 4 "$rounds"
row hangs "-" "-" "$hangs"
row aborts "-" "-" "$aborts"
row escapes "n/a" "n/a" "n/a"  # the hostile-input table is not written yet
