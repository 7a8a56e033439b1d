#!/usr/bin/env bash
# Run one fuzz target under AFL++ (cargo-afl: stable toolchain) for a while,
# then report executions, coverage and findings.
#
#   scripts/fuzz.sh TARGET DURATION       e.g. scripts/fuzz.sh envelope 10m
#   scripts/fuzz.sh list                  the targets
#
# Findings stay in target/fuzz/out/TARGET/default/{crashes,hangs}; copy one
# into fuzz/corpus/TARGET/ once fixed, and CI replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

targets="envelope cluster_frame directory_message remote_batch profile module hdr_log storage_row admin_request"
if [ "${1:-}" = "list" ]; then
  tr ' ' '\n' <<<"$targets"
  exit 0
fi
target=${1:?usage: scripts/fuzz.sh TARGET DURATION (scripts/fuzz.sh list)}
duration=${2:?usage: scripts/fuzz.sh TARGET DURATION, e.g. 90s, 10m, 1h}
if ! grep -qw -- "$target" <<<"$targets"; then
  echo "fuzz: unknown target \`$target\`; the targets are: $targets" >&2
  exit 2
fi
case "$duration" in
  *h) seconds=$(( ${duration%h} * 3600 )) ;;
  *m) seconds=$(( ${duration%m} * 60 )) ;;
  *s) seconds=${duration%s} ;;
  *[0-9]) seconds=$duration ;;
  *) echo "fuzz: duration \`$duration\`: use 90s, 10m or 1h" >&2; exit 2 ;;
esac

if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-afl (once)" >&2
  cargo install cargo-afl --locked >&2
fi
# AFL++ itself, built once by cargo-afl into its data directory.
afl_help=$(cargo afl fuzz -h 2>&1 || true)
if ! grep -q "Required parameters" <<<"$afl_help"; then
  cargo afl config --build >&2
fi

export CARGO_TARGET_DIR=target/fuzz
cargo afl build --release -p caxton-fuzz --features afl >&2
out=target/fuzz/out/$target
# A dictionary of the format's tokens, where one helps (fuzz/dictionaries/).
dictionary=()
if [ -f "fuzz/dictionaries/$target.dict" ]; then
  dictionary=(-x "fuzz/dictionaries/$target.dict")
fi
mkdir -p "$out"
# A run past this is a hang (docs/fuzzing.md: AFL++'s own pick is too tight
# for a shared machine).
timeout_ms=${FUZZ_TIMEOUT_MS:-200}
echo "fuzz: $target for ${seconds}s (a hang: over ${timeout_ms} ms); findings in $out/default" >&2
AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  AFL_AUTORESUME=1 CAXTON_FUZZ_TARGET=$target \
  cargo afl fuzz -t "$timeout_ms" -V "$seconds" -i "fuzz/corpus/$target" -o "$out" "${dictionary[@]}" \
  target/fuzz/release/caxton-fuzz >"$out/afl.log" 2>&1 || {
    echo "fuzz: afl-fuzz failed; its log:" >&2
    tail -20 "$out/afl.log" >&2
    exit 1
  }
stats=$out/default/fuzzer_stats
printf 'target %s\n' "$target"
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs) ' "$stats"
