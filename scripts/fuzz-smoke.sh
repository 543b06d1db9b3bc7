#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/, cargo-fuzz and libFuzzer): built
# once, then each target runs FUZZ_SECONDS (default 20) from its seed corpus
# (fuzz/seeds/TARGET) plus what earlier runs found (fuzz/corpus/TARGET, not
# committed). Fails on the first crash, leak or timeout, naming the input
# that caused it (fuzz/artifacts/TARGET/). Skipped, saying why, where there
# is no nightly toolchain or no cargo-fuzz.
#
#   scripts/fuzz-smoke.sh [TARGET...]      (default: every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${FUZZ_SECONDS:-20}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz smoke skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building the fuzz targets (cargo +nightly fuzz build)"
cargo +nightly fuzz build

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  echo "== fuzz $t for ${secs}s"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz smoke: target $t FAILED (the input is in fuzz/artifacts/$t/)"
    rm -f "$log"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  echo "   $t: ${runs:-?} executions, ${rate:-?}/s, no crash"
  rm -f "$log"
done
