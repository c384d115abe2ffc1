#!/bin/sh
# Cedar decision latency for the default policy set and for 500 more:
# median and p99 of PolicySet::decide (two Cedar evaluations per decision).
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --example bench_policy
