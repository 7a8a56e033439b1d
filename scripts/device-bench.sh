#!/usr/bin/env bash
# Scaling and saturation figures for a many-core machine, in one run.
#
#   scripts/device-bench.sh ENGINE OUTDIR
#
# ENGINE is a release `engine` binary (stripped is fine); OUTDIR receives one
# directory per run (HDR logs, summary.json) and the printed tables in
# `*.txt`. Every run is bounded by `timeout`, so a slow step cannot swallow
# the ones after it; what finished is kept.
set -u
engine=${1:?usage: device-bench.sh ENGINE OUTDIR}
out=${2:?usage: device-bench.sh ENGINE OUTDIR}
mkdir -p "$out"

step() { # NAME SECONDS ARGS...
    local name=$1 limit=$2; shift 2
    echo "== $name ($(date +%T)): engine $*" | tee -a "$out/log.txt"
    timeout "$limit" "$engine" "$@" >"$out/$name.txt" 2>"$out/$name.err"
    echo "   rc=$? ($(date +%T))" | tee -a "$out/log.txt"
    cat "$out/$name.txt"
}

"$engine" topology >"$out/topology.txt" 2>&1
step scaling-low-latency 150 benchmark run --suite scaling --compare baseline \
    --duration 2s --profile low-latency --output "$out/scaling-low-latency"
step scaling-high-throughput 150 benchmark run --suite scaling --compare baseline \
    --duration 2s --profile high-throughput --output "$out/scaling-high-throughput"
step stress-15 200 benchmark stress --find-breaking-point --compare baseline \
    --profile high-throughput --set runtime.worker_threads=15 --max-agents 1500 \
    --start-rate 1000000 --growth 1.3 --steps 12 --ramp-up-time 36s \
    --output "$out/stress-15"
