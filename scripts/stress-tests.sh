#!/usr/bin/env bash
# Runs the test suite several times in a row on a saturated machine, to find
# flaky tests: tests that wait for a condition without a deadline, sleep and
# hope, or bound a time too tightly for a busy machine.
#
#   scripts/stress-tests.sh [RUNS] [CARGO TEST ARGS...]
#
# RUNS (default 3) runs of `cargo test --workspace` (or of `cargo test
# ARGS...`, e.g. `scripts/stress-tests.sh 10 -p socketserver-tests --test
# threading`, or one module of a shared test binary:
# `scripts/stress-tests.sh 10 -p socketserver-tests --test all -- framing::`),
# one after another, each while STRESS_BUSY (default 4) busy loops keep
# every core busy. Stops at the first failing run and prints
# which tests failed and their output; the logs are in target/stress/.
# The busy loops are killed on exit, however the script ends.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
[ $# -gt 0 ] && shift
if [ $# -eq 0 ]; then set -- --workspace; fi
busy=${STRESS_BUSY:-4}
logs=target/stress
mkdir -p "$logs"

hogs=()
stop_hogs() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${hogs[@]}"; do wait "$pid" 2>/dev/null; done
  hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT TERM

# Build first, without the load: the runs then measure the tests, not the
# compiler. `--no-run` goes before a `--` (what follows it is the test
# binaries' own arguments, e.g. `--test all -- framing::`).
build=()
for arg in "$@"; do
  [ "$arg" = "--" ] && break
  build+=("$arg")
done
echo "== building the tests (cargo test ${build[*]} --no-run)"
if ! cargo test "${build[@]}" --no-run >"$logs/build.log" 2>&1; then
  tail -40 "$logs/build.log"
  echo "stress: the build failed (full log: $logs/build.log)"
  exit 1
fi

for _ in $(seq "$busy"); do
  ( while :; do :; done ) &
  hogs+=($!)
done
echo "== $busy busy loops running (pids ${hogs[*]}) on $(nproc) cores"

for run in $(seq "$runs"); do
  log="$logs/run-$run.log"
  start=$(date +%s)
  echo "== run $run of $runs: cargo test $* (load $(cut -d' ' -f1-3 /proc/loadavg))"
  cargo test "$@" >"$log" 2>&1
  status=$?
  took=$(( $(date +%s) - start ))
  passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
  if [ "$status" -ne 0 ]; then
    echo "== run $run FAILED after ${took}s ($passed tests passed before); failing tests:"
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^/   /'
    grep -E '^error: test failed, to rerun pass' "$log" | sed 's/^/   /'
    echo "== their output:"
    awk '/^---- .* stdout ----$/ {show = 1} /^failures:$/ && show {n++} show && n < 2 {print}' "$log" | head -150
    echo "(full log: $log)"
    exit 1
  fi
  echo "== run $run passed in ${took}s: $passed tests (TIME_WAIT sockets now: $(ss -tanH state time-wait 2>/dev/null | wc -l))"
done
echo "== stress: $runs of $runs runs passed with $busy busy loops"
