#!/bin/sh
# The same load, from this tree's `bench_server`, aimed at `gov serve` of
# several builds as a user runs it: a repository made by that build's
# `gov init`, token-less agents allowed, `gov serve` started by hand and
# driven through `--url`. The way to put an old build (the write path
# before issue 10, say) beside a new one with one client.
#
#   sudo scripts/bench-side-by-side.sh [--runs N] [--port P] --build DIR
#       [--build DIR]... [-- BENCH_SERVER_ARGS...]
#
# --build DIR   a folder holding that build's `gov` (an older commit's
#               target/release, or a copy of its `gov`); give two or more.
#               Builds take turns, run by run, in the order given on odd
#               runs and the other way round on even ones.
# --runs N      runs of each build (default 3); the medians are printed.
# --port P      the loopback port the servers listen on (default 8237).
# The client's arguments default to the issue's measurement: 16
# connections, --submits 5400 --rounds 6 --decisions 1000 --charges 1000
# --audits 1000 --hooks 0.
#
# Each run gets a new ext4 without a journal (like the machine's root file
# system) in an image file on a loop device, so that no run pays for the
# files an earlier one deleted (see bench-fresh-fs.sh). After the load it
# prints, per run, the client's rows, the server's CPU seconds, resident
# memory and peak, the audit entries, and `.git`'s bytes, files and loose
# objects (then again after `gov maintain`, for builds that have it).
#
# Needs root (mkfs, mount), a free loop device, 3 GiB of disk and the
# port free.
set -eu
cd "$(dirname "$0")/.."
runs=3
port=8237
builds=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift ;;
        --port) port=$2; shift ;;
        --build) builds="$builds $(cd "$2" && pwd)"; shift ;;
        --) shift; break ;;
        *) echo "error: unknown option \`$1\` (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
if [ $# -eq 0 ]; then
    set -- --submits 5400 --rounds 6 --decisions 1000 --charges 1000 --audits 1000 --hooks 0
fi
if [ -z "$builds" ]; then
    echo "error: give the builds to compare with --build DIR" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: making and mounting a file system needs root" >&2
    exit 2
fi
for b in $builds; do
    [ -x "$b/gov" ] || { echo "error: \`$b\` holds no gov" >&2; exit 2; }
done
cargo build --quiet --release --example bench_server
client=$(pwd)/target/release/examples/bench_server
. scripts/compare-builds.sh
server=""
scratch_fs "$(mktemp /tmp/gov-side-by-side.XXXXXX.img)"
# The server of a run cut short is stopped first.
cleanup() {
    [ -z "$server" ] || { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
    scratch_cleanup
}
trap cleanup EXIT INT TERM
# One run of build `$2` (run number `$1`); the client's arguments follow.
one_run() {
    i=$1
    b=$2
    shift 2
    new_fs -O ^has_journal
    (
        cd "$mnt"
        "$b/gov" init repo >/dev/null
        cd repo
        sed -i 's/^# agent_auth = "required"/agent_auth = "optional"/' gov.toml
        if "$b/gov" policy --help 2>/dev/null | grep -q propose; then
            # In force once approved on `main`.
            id=$("$b/gov" policy propose -m "agents without tokens, for a benchmark" 2>/dev/null |
                sed -n 's/^proposed policy change \([^ ]*\) .*/\1/p')
            "$b/gov" approve "$id" >/dev/null
        else
            # Builds from before reviewed policy changes read gov.toml
            # from `main`.
            git -c user.name=bench -c user.email=bench@localhost commit -qam "agents without tokens"
        fi
    )
    cd "$mnt/repo"
    "$b/gov" serve --port "$port" >"$mnt/serve.log" 2>&1 &
    server=$!
    n=0
    until grep -q listening "$mnt/serve.log" 2>/dev/null; do
        n=$((n + 1))
        if [ $n -gt 2000 ] || ! kill -0 "$server" 2>/dev/null; then
            echo "error: $b/gov serve did not start:" >&2
            cat "$mnt/serve.log" >&2
            exit 1
        fi
        sleep 0.005
    done
    "$client" --url "http://127.0.0.1:$port" --operator-token "$(cat .gov/operator-token)" \
        --runner-token "$(cat .gov/runner-token)" "$@" 2>/dev/null >"$mnt/run.log"
    cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$server/stat")
    rss=$(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { printf "%.0f\t%.0f", r / 1024, h / 1024 }' "/proc/$server/status")
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
    entries=$(git rev-list --count "$(git for-each-ref --format='%(refname)' | grep '/gov/audit$' | head -1)")
    size() {
        bytes=$(du -sb .git | cut -f1)
        printf "%s\t%s\t%s\t%s" "$bytes" $((bytes / entries)) "$(find .git -type f | wc -l)" \
            "$(find .git/objects -type f -path '*/objects/??/*' | wc -l)"
    }
    git_size=$(size)
    maintained="-	-	-	-"
    if "$b/gov" maintain --help >/dev/null 2>&1 && "$b/gov" maintain >/dev/null 2>&1; then
        maintained=$(size)
    fi
    {
        # `| phase | ok | failed | /s | p50 ms | p99 ms | ...`
        awk -F'|' -v b="$b" '/^\| (submit round [0-9]+|decisions|charges|audit posts) \|/ {
            gsub(/^ +| +$/, "", $2); gsub(/ /, "", $5); gsub(/ /, "", $7)
            printf "%s\t%s /s\t%s\n%s\t%s p99 ms\t%s\n", b, $2, $5, b, $2, $7
        }' "$mnt/run.log"
        printf "%s\tserver CPU s\t%s\n%s\tserver RSS MiB\t%s\n%s\tserver peak RSS MiB\t%s\n" \
            "$b" "$cpu" "$b" "$(echo "$rss" | cut -f1)" "$b" "$(echo "$rss" | cut -f2)"
        printf "%s\taudit entries\t%s\n" "$b" "$entries"
        echo "$git_size" | awk -F'\t' -v b="$b" -v w=".git" '{ printf "%s\t%s bytes\t%s\n%s\t%s bytes per entry\t%s\n%s\t%s files\t%s\n%s\t%s loose objects\t%s\n", b, w, $1, b, w, $2, b, w, $3, b, w, $4 }'
        echo "$maintained" | awk -F'\t' -v b="$b" -v w=".git after gov maintain" '$1 != "-" { printf "%s\t%s bytes\t%s\n%s\t%s bytes per entry\t%s\n%s\t%s files\t%s\n", b, w, $1, b, w, $2, b, w, $3 }'
    } | tee -a "$results" | awk -F'\t' -v i=$i '{ printf "run %s  %s  %s: %s\n", i, $1, $2, $3 }'
    cd /
    umount "$mnt"
}
in_turns "$runs" "$builds" one_run "$@"
echo
echo "medians of $runs runs:"
medians "$results" "$builds"
