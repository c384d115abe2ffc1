#!/bin/sh
# Durable writes per second against `gov serve` (or any server that speaks
# the API: --url) at 16 keep-alive connections: submits in the issue's mix,
# decisions, charges, audit posts, a memory soak; p50/p99, server RSS and
# CPU, the client's own CPU, repository size, start-up and verify speed.
# Prints a table and one JSON line. Loopback only; bounded in count and time.
#
#   scripts/bench-server.sh [--url URL] [--clients N] [--submits N] [--rounds N]
#       [--decisions N] [--approve-pct P] [--charges N] [--audits N] [--soak N]
#       [--hooks N] [--reads R] [--preload N] [--seconds MAX] [--operator-token T]
#       [--runner-token T] [--gov-bin PATH] [--server-bin PATH]
#
# --hooks N times the hook `gov run` writes into an agent's settings N times
# (`gov-hook pre-tool-use` beside the `gov` binary built beside the
# benchmark, or --gov-bin's; else `gov hook pre-tool-use`); --server-bin
# starts the server from another build of bench_server (an older commit's,
# to compare with the same client); --reads R asks `GET /proposals?status=
# pending&limit=1` R times a second on one more connection while each
# submit round runs and prints those reads' latencies.
#
# PROFILE=dev runs an unoptimised build (faster to compile, slower to run).
set -eu
cd "$(dirname "$0")/.."
if [ "${PROFILE:-release}" = "dev" ]; then
    cargo build --quiet --bins
    exec cargo run --quiet --example bench_server -- "$@"
fi
cargo build --quiet --release --bins
exec cargo run --quiet --release --example bench_server -- "$@"
