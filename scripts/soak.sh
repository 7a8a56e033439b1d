#!/usr/bin/env bash
# The soak: a release engine with persistence under a mixed load while
# faults are injected (trapping, looping and memory-grabbing agents,
# undeploy/redeploy under load, SIGKILL and restart), then the books checked:
# no acknowledged durable message lost, the counts add up, every shard
# serving, resident memory flat after warm-up. Writes summary.txt and the
# engine's HDR log into the output directory (default: a temporary one).
#
#   scripts/soak.sh 30m [--kill-every 60s] [--redeploy-every 20s] [--output DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:?usage: scripts/soak.sh DURATION [--kill-every 60s] [--redeploy-every 20s] [--output DIR]}
shift
cargo build --release --bin engine --bin soak >&2
exec target/release/soak "$duration" --engine target/release/engine "$@"
