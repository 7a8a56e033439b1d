#!/usr/bin/env bash
# The soak: a release engine with persistence under a mixed open-loop load
# while faults are injected (trapping, looping and memory-grabbing agents,
# undeploy/redeploy under load, a full data directory, SIGKILL and restart),
# then the books checked: no acknowledged durable message lost, the counts
# add up, every shard serving, resident memory flat after warm-up. Writes
# summary.txt, resident.csv, the engine's HDR log and the soak's own
# (open-loop.hlog) into the output directory (default: a temporary one).
# The full data directory is a size-limited tmpfs: run as root, or pass
# --no-fill.
#
#   scripts/soak.sh 30m [--rate 400] [--kill-every 60s] [--redeploy-every 20s]
#                       [--fill-every 90s] [--fill-for 10s] [--no-fill] [--output DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:?usage: scripts/soak.sh DURATION [--rate 400] [--kill-every 60s] [--redeploy-every 20s] [--fill-every 90s] [--fill-for 10s] [--no-fill] [--output DIR]}
shift
cargo build --release --bin engine --bin soak >&2
exec target/release/soak "$duration" --engine target/release/engine "$@"
