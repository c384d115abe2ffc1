#!/bin/sh
# Replay of recorded decisions (`gov audit verify --replay`): records N
# decisions (default 100000), then times replaying all of them.
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --example bench_replay -- "$@"
