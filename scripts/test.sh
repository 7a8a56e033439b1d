#!/usr/bin/env bash
# Run the whole test suite: install system dependencies if missing, then every
# test of every crate (nextest when available), then the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh --test

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast
else
  cargo test --workspace --all-targets --no-fail-fast
fi
cargo test --workspace --doc
