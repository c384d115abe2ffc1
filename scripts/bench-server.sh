#!/bin/sh
# Proposal submits per second against `gov serve` at 16 concurrent clients,
# every write durable, with p50/p99. Loopback only; bounded in count and time.
#
#   scripts/bench-server.sh [--clients N] [--requests TOTAL] [--seconds MAX] [--action-type T]
#
# PROFILE=dev runs an unoptimised build (faster to compile, slower to run).
set -eu
cd "$(dirname "$0")/.."
if [ "${PROFILE:-release}" = "dev" ]; then
    exec cargo run --quiet --example bench_server -- "$@"
fi
exec cargo run --quiet --release --example bench_server -- "$@"
