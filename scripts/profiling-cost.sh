#!/usr/bin/env bash
# What profiling costs on this machine: the same open-loop load (3,000
# request-replies a second for 20 s through the admin API) against a release
# engine on the default profile, with nothing running, then a CPU profile at
# 99 Hz, a heap profile, and a trace of 1,000 messages; and nothing again.
# Latency percentiles from the load generator, engine CPU from /proc.
#
#   cargo build --release --bin engine && scripts/profiling-cost.sh
#   ENGINE=path/to/engine ADMIN=127.0.0.1:17480 scripts/profiling-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
E=$(realpath "${ENGINE:-target/release/engine}")
A=${ADMIN:-127.0.0.1:17480}
work=$(mktemp -d)
cd "$work"
$E --profile default --set observability.admin.listen=$A > engine.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q "engine running" engine.log && break; sleep 0.2; done
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
hz=$(getconf CLK_TCK)
run() {
  local label=$1; shift
  local before; before=$(cpu)
  "$@" &
  local side=$!
  $E benchmark custom --target $A --agents 10 --messages-per-second 3000 --duration 20s > "bench-$label.txt" 2>&1
  wait $side || true
  local after; after=$(cpu)
  echo "== $label: engine CPU $(( (after - before) * 100 / hz / 20 ))% of a core over 20 s"
  grep -A1 '^design' "bench-$label.txt" | tail -1
}
idle() { sleep 21; }
run baseline idle
run cpu-profile-99Hz $E profile cpu --duration 21s --output "$work/cpu.prof" --admin $A
run heap-profile $E profile memory --interval 5s --duration 20s --output "$work/mem.prof" --admin $A
run trace-1000 $E profile trace --messages 1000 --output "$work/trace.json" --timeout 20s --admin $A
run baseline-again idle
