#!/usr/bin/env bash
# Print the preset table of docs/cluster.md: each cluster-size preset at its
# intended size, and each network preset (over cluster-medium) under its
# network's conditions, simulated with `engine cluster simulate` (crash
# scenario: arrivals and crashes). Seeded, so the table replays exactly.
#
#   scripts/gossip-presets.sh [DURATION]     # simulated time per row, default 300s
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-300s}"
cargo build --release --quiet --bin engine
engine=target/release/engine
[ -n "${CARGO_TARGET_DIR:-}" ] && engine="$CARGO_TARGET_DIR/release/engine"

row() { # profiles... -- simulate flags...
  local profiles=() flags=()
  while [ "$1" != "--" ]; do profiles+=(--profile "$1"); shift; done
  shift
  "$engine" "${profiles[@]}" cluster simulate --scenario crash --duration "$duration" --seed 1 --format row "$@"
}

echo "| profile | nodes | loss | latency | dissemination P99 | crash → down P99 | suspicion + 2 probes | false suspicions /node-h | false downs | packets/s/node | B/s/node |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
row cluster-small -- --nodes 8 --loss 0.01 --latency 250us
row cluster-small -- --nodes 16 --loss 0.01 --latency 250us
row cluster-medium -- --nodes 50 --loss 0.01 --latency 250us
row cluster-large -- --nodes 1000 --loss 0.01 --latency 250us
row cluster-medium network-lan -- --nodes 50 --loss 0.01 --latency 250us
row cluster-medium network-wan -- --nodes 50 --loss 0.01 --latency 40ms --jitter 0.3
row cluster-medium network-unreliable -- --nodes 50 --loss 0.05 --latency 20ms --jitter 0.8
