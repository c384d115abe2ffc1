#!/bin/sh
# Audit chain benchmark: append rate as the chain grows (single appends,
# each durable), group-commit rate, and `gov audit verify` entries/s.
# Usage: scripts/bench-audit.sh [SINGLE] [BATCHES] [BATCH_SIZE]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --example bench_audit
exec cargo run --release --quiet --example bench_audit -- "$@"
