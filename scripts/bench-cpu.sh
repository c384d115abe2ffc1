#!/bin/sh
# The instructions `gov serve` executes per write, counted by valgrind's
# callgrind: unlike a rate or a CPU time, the count does not move with
# what else the machine is doing. Two runs of one build came within 3-7%
# of each other: the server's background work (maintenance passes, above
# all the merges of packs: with one client every write is a pack of its
# own; checkpoints; the spare files) is counted too, and falls in bursts.
# Large memsets weigh more in the count than in time (each byte of a
# `rep stosb` is counted): until the thirty-fourth round, zlib cleared a
# 64 KiB table for every pack entry it deflated, about a tenth of the
# count. It counts CPU work, not waiting: what an fsync costs, or how
# long a writer waits for the writer lock, does not show.
#
#   scripts/bench-cpu.sh [--build DIR]... [--count N]
#
# --build DIR  a build to measure: a folder holding `gov` and `bench_server`
#              (or `examples/bench_server`), as for `bench-fresh-fs.sh`;
#              given none, the current tree's release build.
# --count N    writes of each kind counted (default 100).
#
# bench_server drives the server over HTTP with one client, so that each
# write is a batch of its own and the runs are alike; its server runs
# under callgrind (`--server-bin`, through a small wrapper). Each figure is
# the difference between a run with 2N writes of a kind and one with N,
# divided by N: the start-up and the writes before cancel out. Submissions
# are the benchmark's mix; decisions decide proposals that 4N submissions
# left pending (the benchmark's 20% approved); charges and audit posts
# follow 16 submissions (which make the 16 agents they are charged to).
# Each run takes a minute or so (the server runs some fifty times slower
# under callgrind).
#
# Needs valgrind (Debian's package) and python3.
set -eu
cd "$(dirname "$0")/.."
count=100
builds=""
while [ $# -gt 0 ]; do
    case "$1" in
        --build) builds="$builds $2"; shift ;;
        --count) count=$2; shift ;;
        *) echo "error: unknown option \`$1\` (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
if ! command -v valgrind >/dev/null 2>&1; then
    echo "error: valgrind is not installed (apt-get install valgrind)" >&2
    exit 2
fi
if [ -z "$builds" ]; then
    cargo build --quiet --release --bins --example bench_server
    builds=target/release
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The instructions the server process that ran the phases executed: the
# largest count among the run's callgrind files (the benchmark starts the
# server a second time, briefly, to time a start-up).
instructions() {
    build=$1; shift
    bs=$(bench_server_of "$build")
    rm -f "$work"/cg.*
    "$bs" --clients 1 --rounds 1 --hooks 0 --soak 0 --seconds 3000 \
        --server-bin "$work/server" --gov-bin "$build/gov" "$@" >"$work/out" 2>&1
    # Every write must have succeeded, or the count is not the writes'.
    if ! tail -1 "$work/out" | python3 -c '
import json, sys
phases = json.load(sys.stdin)["phases"]
bad = [p for p in phases if p["failed"] or p["ok"] == 0]
for p in bad:
    print("error: {}: {} failed: {}".format(p["phase"], p["failed"], p["first_error"]), file=sys.stderr)
sys.exit(1 if bad else 0)'; then
        return 1
    fi
    for f in "$work"/cg.*; do
        sed -n 's/^summary: *//p' "$f"
    done | sort -n | tail -1
}
bench_server_of() {
    if [ -x "$1/bench_server" ]; then echo "$1/bench_server"; else echo "$1/examples/bench_server"; fi
}
n=$count
n2=$((2 * count))
n4=$((4 * count))
for build in $builds; do
    # The server of this build, under callgrind (one file per process).
    cat >"$work/server" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$(bench_server_of "$build")" "\$@"
WRAP
    chmod +x "$work/server"
    for phase in submit decide charge audit; do
        case $phase in
            submit) one="--submits $n"; two="--submits $n2"; rest="--decisions 0 --charges 0 --audits 0" ;;
            decide) one="--decisions $n"; two="--decisions $n2"; rest="--submits $n4 --charges 0 --audits 0" ;;
            charge) one="--charges $n"; two="--charges $n2"; rest="--submits 16 --decisions 0 --audits 0" ;;
            audit) one="--audits $n"; two="--audits $n2"; rest="--submits 16 --decisions 0 --charges 0" ;;
        esac
        # shellcheck disable=SC2086
        a=$(instructions "$build" $rest $one) || exit 1
        # shellcheck disable=SC2086
        b=$(instructions "$build" $rest $two) || exit 1
        if [ -z "$a" ] || [ -z "$b" ]; then
            echo "error: no callgrind count for $build ($phase)" >&2
            exit 1
        fi
        echo "$build $phase: $(( (b - a) / n )) instructions per write ($a and $b in all)"
    done
done
