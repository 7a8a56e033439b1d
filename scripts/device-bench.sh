#!/usr/bin/env bash
# Scaling and saturation figures for a many-core machine, in one run.
#
#   scripts/device-bench.sh ENGINE OUTDIR [STEP...]
#
# ENGINE is a release `engine` binary (stripped is fine); OUTDIR receives one
# directory per run (HDR logs, summary.json) and the printed tables in
# `*.txt`. Every run is bounded by `timeout`, so a slow step cannot swallow
# the ones after it; what finished is kept. With STEP names (see `step`
# below), only those run: all of them take about 9 minutes; name steps to
# split them across shorter runs.
set -u
usage="usage: device-bench.sh ENGINE OUTDIR [STEP...]"
engine=${1:?$usage}
out=${2:?$usage}
shift 2
wanted=" $* "
mkdir -p "$out"

step() { # NAME SECONDS ARGS...
    local name=$1 limit=$2; shift 2
    if [ "$wanted" != "  " ] && [[ "$wanted" != *" $name "* ]]; then
        return
    fi
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
# Remote routing between two nodes, each on half of the machine.
step cluster-low-latency 60 benchmark run --suite cluster --quick \
    --profile low-latency --output "$out/cluster-low-latency"
step cluster-high-throughput 60 benchmark run --suite cluster --quick \
    --profile high-throughput --output "$out/cluster-high-throughput"
