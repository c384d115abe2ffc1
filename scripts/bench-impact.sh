#!/bin/sh
# `gov policy impact` speed: records N decisions (default 100000) in a fresh
# audit chain, then replays them all against a changed policy set.
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --example bench_impact -- "$@"
