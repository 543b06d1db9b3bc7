#!/bin/sh
# The figures of docs/prefork.md: connect rate (a new connection per request)
# of prefork against forking, and ping-pong over 50 kept connections of
# prefork against threading, with the echo_server example and loadgen, both
# release builds, on 127.0.0.1. Runs alternate between strategies, REPEAT
# times (default 3); each line is one run's JSON summary.
#
#   cargo build --release -p socketserver --example echo_server
#   cargo build --release -p loadgen
#   sh docs/bench/prefork.sh [REPEAT]
set -eu
repeat=${1:-3}
bin=target/release
run() { # STRATEGY MODE CONNS
    out=$(mktemp)
    "$bin/examples/echo_server" 127.0.0.1:0 "$1" >"$out" 2>/dev/null &
    pid=$!
    i=0
    until grep -q "listening on" "$out"; do
        i=$((i + 1)); [ $i -lt 500 ] || { echo "no server" >&2; kill $pid; exit 1; }
        sleep 0.01
    done
    addr=$(sed -n 's|listening on tcp://||p' "$out")
    printf '%s %s %s ' "$1" "$2" "$3"
    "$bin/loadgen" --addr "$addr" --mode "$2" --conns "$3" --ramp 0 \
        --warmup 2 --duration 5 |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("req/s %.0f p50 %.0f us p99 %.0f us errors %d" % (r["req_per_s"], r["p50_us"], r["p99_us"], r["errors"]))'
    kill -TERM $pid
    wait $pid || true
    rm -f "$out"
}
n=0
while [ $n -lt "$repeat" ]; do
    n=$((n + 1))
    run forking connect 8
    run prefork connect 8
    run threading pingpong 50
    run prefork pingpong 50
done
