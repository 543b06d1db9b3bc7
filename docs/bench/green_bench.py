#!/usr/bin/env python3
"""Green against tokio and Threading: interleaved rounds, medians.

Usage: python3 green_bench.py TARGET_DIR ROUNDS SECS
Starts the three echo servers (release builds), then for each round runs
every cell against every server in turn with loadgen, recording req/s and
server CPU per request (utime+stime of the server process over the run).
"""
import json, os, subprocess, sys, statistics, time

target, rounds, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TICK = os.sysconf("SC_CLK_TCK")
servers = {
    "green": [f"{target}/examples/echo_server", "127.0.0.1:0", "green"],
    "threading": [f"{target}/examples/echo_server", "127.0.0.1:0", "threading"],
    "tokio": [f"{target}/bench", "baseline", "tokio-tcp"],
}
cells = {
    "pp64-c50": ["--mode", "pingpong", "--conns", "50", "--size", "64"],
    "pp64-c500": ["--mode", "pingpong", "--conns", "500", "--size", "64", "--ramp", "0"],
    "pp16k-c50": ["--mode", "pingpong", "--conns", "50", "--size", "16384"],
    "connect-c8": ["--mode", "connect", "--conns", "8", "--size", "64"],
}

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

procs = {}
for name, cmd in servers.items():
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    addr = line.strip().split("://")[1]
    procs[name] = (p, addr)
    print(f"{name}: {addr}", file=sys.stderr)

results = {}
try:
    for r in range(rounds):
        for cell, args in cells.items():
            order = list(servers) if r % 2 == 0 else list(reversed(list(servers)))
            for name in order:
                p, addr = procs[name]
                c0 = cpu(p.pid)
                out = subprocess.run(
                    [f"{target}/loadgen", "--addr", addr, "--duration", secs, "--warmup", "1"] + args,
                    capture_output=True, text=True, timeout=120)
                c1 = cpu(p.pid)
                try:
                    rep = json.loads(out.stdout)
                except Exception:
                    print(f"{cell} {name}: no report: {out.stderr[-300:]}", file=sys.stderr)
                    continue
                reqs = max(rep["requests"], 1)
                # CPU over warmup+window; requests only in the window: scale.
                cpu_us = (c1 - c0) * 1e6 / (rep["req_per_s"] * (float(secs) + 1))
                results.setdefault((cell, name), []).append(
                    (rep["req_per_s"], cpu_us, rep["errors"], rep["active_conns"]))
                print(f"round {r} {cell:10} {name:9} {rep['req_per_s']:10.0f} req/s "
                      f"{cpu_us:6.1f} us/req errors {rep['errors']} active {rep['active_conns']}",
                      file=sys.stderr)
finally:
    for p, _ in procs.values():
        p.terminate()
        p.wait(timeout=10)

print("| cell | server | req/s (median) | x tokio | server CPU us/req | x tokio |")
print("|---|---|--:|--:|--:|--:|")
for cell in cells:
    tok = results.get((cell, "tokio"))
    tr = statistics.median(x[0] for x in tok) if tok else None
    tc = statistics.median(x[1] for x in tok) if tok else None
    for name in servers:
        v = results.get((cell, name))
        if not v:
            continue
        rate = statistics.median(x[0] for x in v)
        c = statistics.median(x[1] for x in v)
        print(f"| {cell} | {name} | {rate:,.0f} | {rate/tr:.2f}x | {c:.1f} | {c/tc:.2f}x |")
