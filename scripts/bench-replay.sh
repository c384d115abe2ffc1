#!/bin/sh
# Replay of recorded decisions (`gov audit verify --replay`): records N
# decisions (default 100000), packs the repository, then times replaying
# all of them RUNS times (default 5): median, minimum, maximum.
# usage: scripts/bench-replay.sh [N] [RUNS]
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --example bench_replay -- "$@"
