#!/bin/sh
# Writes as history grows: one `gov serve` on a repository made by
# `gov init`, driven by bench_server (`--url`) for ROUNDS rounds (default
# 25) of 2,000 submissions and 1,000 decisions each (20% approvals), so
# that approvals and rejected branches spread through the history. Prints
# each round's submission and decision lines (rate, p50, p99, max) and the
# server's CPU seconds and resident memory (all, and its anonymous part:
# heap and stacks, without mapped files) at the end of the round, and its
# high-water mark since it started (a peak between two rounds, such as
# the largest background merge's, shows only there), and the packs in
# the repository then (background merges keep them few); the
# last rounds show what a grown history costs, the first what a fresh one
# does. A few seconds a round here. Then, on the grown repository: the server stopped and
# started three times (milliseconds to its "listening" line), one more
# round right after the last start (what the first writes after a start
# cost), `gov audit verify` (entries per second), and `gov maintain`:
# `.git`'s bytes (per entry too) and files before and after it.
#
#   [GOV_BENCH_FROM=DIR] [GOV_BENCH_KEEP=DIR] scripts/bench-history.sh [ROUNDS] [BUILD_DIR]
#
# BUILD_DIR holds `gov` and `bench_server` (default: the current tree's
# release build, built first). Loopback only (port 8236); the repository
# is made in a temporary folder and removed at the end, the server stopped.
# GOV_BENCH_KEEP=DIR keeps a copy of the grown repository in DIR (which
# must not exist yet); GOV_BENCH_FROM=DIR starts from a copy of such a
# repository instead of a new one, to measure a build on a grown history
# without growing it again.
set -eu
cd "$(dirname "$0")/.."
from=${GOV_BENCH_FROM:-}
keep=${GOV_BENCH_KEEP:-}
[ -z "$from" ] || [ -d "$from/.git" ] || {
    echo "GOV_BENCH_FROM=$from is not a repository a run kept" >&2
    exit 2
}
[ -z "$keep" ] || [ ! -e "$keep" ] || {
    echo "GOV_BENCH_KEEP=$keep exists already" >&2
    exit 2
}
[ -z "$from" ] || from=$(cd "$from" && pwd)
[ -z "$keep" ] || keep=$(mkdir -p "$(dirname "$keep")" && cd "$(dirname "$keep")" && pwd)/$(basename "$keep")
rounds=${1:-25}
build=${2:-}
if [ -z "$build" ]; then
    cargo build --quiet --release --bins --example bench_server
    build=target/release
fi
build=$(cd "$build" && pwd)
bench=$build/bench_server
[ -x "$bench" ] || bench=$build/examples/bench_server
dir=$(mktemp -d)
server=""
stop() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$dir"
}
trap stop EXIT INT TERM
cd "$dir"
if [ -n "$from" ]; then
    cp -a "$from" repo
    cd repo
else
    "$build/gov" init repo >/dev/null
    cd repo
    # Token-less agents, as bench_server sends them: an enforcement setting,
    # in force once approved on `main`.
    sed -i 's/^# port = 8005/port = 8236/; s/^# agent_auth = "required"/agent_auth = "optional"/' gov.toml
    id=$("$build/gov" policy propose -m "agents without tokens, for a benchmark" 2>/dev/null \
        | sed -n 's/^proposed policy change \([^ ]*\) .*/\1/p')
    "$build/gov" approve "$id" >/dev/null 2>"$dir/approve.log" || {
        cat "$dir/approve.log" >&2
        exit 1
    }
fi
# Starts the server; `started_ms`: the milliseconds until it listens.
start() {
    : >"$dir/serve.log"
    t0=$(date +%s%N)
    "$build/gov" serve >"$dir/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1 1000); do
        grep -q listening "$dir/serve.log" 2>/dev/null && break
        sleep 0.005
    done
    started_ms=$((($(date +%s%N) - t0) / 1000000))
    grep -q listening "$dir/serve.log" || {
        cat "$dir/serve.log" >&2
        exit 1
    }
}
halt() {
    kill "$server" 2>/dev/null && { wait "$server" 2>/dev/null || true; }
    server=""
}
# One round of load; LABEL names it in the table.
round() {
    "$bench" --url http://127.0.0.1:8236 --operator-token "$operator" --runner-token "$runner" \
        --submits 2000 --rounds 1 --decisions 1000 --approve-pct 20 --charges 0 --audits 0 --hooks 0 \
        2>/dev/null | grep -E '^\| (submit round 1|decisions) ' \
        | sed 's/^\(\(| [^|]* \)\{8\}\)| - |/\1|/' \
        | while read -r line; do
            cpu=$(awk '{printf "%.2f", ($14+$15)/100}' /proc/$server/stat)
            rss=$(awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^VmHWM/ {h=$2} END {printf "%.0f | %.0f | %.0f", r/1024, a/1024, h/1024}' /proc/$server/status)
            packs=$(find .git/objects/pack -name '*.pack' | wc -l)
            echo "| $1 $line $cpu | $rss | $packs |"
        done
}
start
operator=$(cat .gov/operator-token)
runner=$(cat .gov/runner-token)
echo "| round | phase | ok | failed | /s | p50 ms | p99 ms | max ms | client CPU s | batches | writers per batch | steal % | server CPU s after the round | server RSS MiB | of which anonymous | peak RSS MiB since the server's start | packs |"
for r in $(seq 1 "$rounds"); do
    round "$r"
done
halt
starts=""
for _ in 1 2 3; do
    start
    starts="$starts $started_ms"
    halt
done
start
round "after a restart"
halt
entries=$(git rev-list --count refs/heads/gov/audit)
t0=$(date +%s%N)
"$build/gov" audit verify >"$dir/verify.log" 2>&1 || {
    cat "$dir/verify.log" >&2
    exit 1
}
ms=$((($(date +%s%N) - t0) / 1000000))
echo
echo "start-up on the grown repository ($entries audit entries, $(git rev-list --first-parent --count main) commits on main's first parents): ms to listening:$starts"
echo "gov audit verify: $entries entries in $ms ms ($((entries * 1000 / (ms > 0 ? ms : 1)))/s)"
# What the repository holds before and after a pass by hand.
size() {
    bytes=$(du -sb .git | cut -f1)
    echo "$bytes bytes ($((bytes / entries)) per entry), $(find .git -type f | wc -l) files"
}
before=$(size)
t0=$(date +%s%N)
"$build/gov" maintain >"$dir/maintain.log" 2>&1 || {
    cat "$dir/maintain.log" >&2
    exit 1
}
ms=$((($(date +%s%N) - t0) / 1000000))
echo ".git before \`gov maintain\`: $before; after ($ms ms): $(size)"
if [ -n "$keep" ]; then
    cp -a "$dir/repo" "$keep"
    echo "the grown repository is kept in $keep"
fi
