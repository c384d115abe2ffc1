#!/bin/sh
# bench-server's program on a file system made afresh for every run, builds
# alternated: the way to compare two builds on a shared machine.
#
# On ext4 without a journal (this project's machine) the kernel will not
# reuse an inode freed in the last 1-6 minutes and walks past every such
# inode when it makes a file; a benchmark run frees tens of thousands (its
# repository is deleted at the end), so each run slows the next ones, and
# the same build measured twice in a row differed by 40% in CPU per submit.
# Here each run gets a new ext4 in an image file, mounted on a loop device:
# every run starts from the same state.
#
#   sudo scripts/bench-fresh-fs.sh [--journal] [--runs N] [--warmup N]
#       [--image PATH] [--build DIR]... [-- BENCH_SERVER_ARGS...]
#
# --build DIR   a build to compare: a folder holding `gov` (and `gov-hook`
#               if it has one) and `bench_server` (or `examples/bench_server`),
#               such as an older commit's target/release or a copy of it;
#               given none, the current tree's release build alone. Builds
#               take turns, run by run: in the order given on odd runs,
#               the other way round on even ones (a run that follows
#               another was measured slower, so no build always goes
#               first).
# --runs N      runs of each build (default 3); the medians are printed:
#               the rate of each phase, its p99 (`... p99 ms`), the hook's
#               median, the server's CPU per write of each phase
#               (`... CPU ms`), and how many writes shared a flush
#               (`... writers per batch`, from builds whose /status says).
# --warmup N    runs of the first build before the set, printed as
#               `run warmupN` and left out of the medians (default 0).
#               The first run of a set was the slowest in 4 of 7 sets
#               measured (2026-12-03/04), whichever build took it; one
#               warm-up run takes that out of the comparison.
# --journal     an ext4 with a journal (default: without, like the
#               machine's root file system).
# --image PATH  the image file (default /tmp/gov-bench-fs.img, 3 GiB,
#               removed at the end).
# The benchmark's arguments default to the usual run: --submits 6000
# --rounds 1 --decisions 2000 --charges 2000 --audits 3000 --hooks 100.
#
# Needs root (mkfs, mount), a free loop device, and 3 GiB of disk.
set -eu
cd "$(dirname "$0")/.."
journal=no
runs=3
warmup=0
image=/tmp/gov-bench-fs.img
builds=""
while [ $# -gt 0 ]; do
    case "$1" in
        --journal) journal=yes ;;
        --runs) runs=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --image) image=$2; shift ;;
        --build) builds="$builds $2"; shift ;;
        --) shift; break ;;
        *) echo "error: unknown option \`$1\` (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
if [ $# -eq 0 ]; then
    set -- --submits 6000 --rounds 1 --decisions 2000 --charges 2000 --audits 3000 --hooks 100
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: making and mounting a file system needs root" >&2
    exit 2
fi
if [ -z "$builds" ]; then
    cargo build --quiet --release --bins --example bench_server
    builds=target/release
fi
# A build's benchmark: beside its `gov`, or in `examples/` (as cargo puts it).
bench_of() {
    if [ -x "$1/bench_server" ]; then echo "$1/bench_server"; else echo "$1/examples/bench_server"; fi
}
for b in $builds; do
    if [ ! -x "$(bench_of "$b")" ] || [ ! -x "$b/gov" ]; then
        echo "error: \`$b\` holds no bench_server and gov" >&2
        exit 2
    fi
done
. scripts/compare-builds.sh
scratch_fs "$image"
# One run of build `$2` (run number `$1`); the benchmark's arguments follow.
one_run() {
    i=$1
    b=$2
    shift 2
    if [ $journal = yes ]; then
        new_fs
    else
        new_fs -O ^has_journal
    fi
    mkdir "$mnt/tmp"
    log="$mnt/run.log"
    # The machine's steal and total CPU ticks (`/proc/stat`) around
    # the run, for builds whose benchmark does not report steal too.
    ticks() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
    before=$(ticks)
    TMPDIR="$mnt/tmp" "$(bench_of "$b")" "$@" --gov-bin "$b/gov" >"$log" 2>/dev/null
    echo "$before $(ticks)" | awk -v b="$b" '$4 > $2 { printf "%s\trun steal %%\t%.0f\n", b, 100 * ($3 - $1) / ($4 - $2) }' |
        tee -a "$results" | awk -F'\t' -v i=$i '{ printf "run %s  %s  %s: %s\n", i, $1, $2, $3 }'
    # `| submit round 1 | ok | failed | /s | ...` and the hook's JSON.
    awk -F'|' -v b="$b" -v i=$i '
        /^\| (submit round 1|decisions|charges|audit posts) \|/ {
            gsub(/^ +| +$/, "", $2); gsub(/ /, "", $5); gsub(/ /, "", $7)
            printf "%s\t%s\t%s\n", b, $2, $5
            printf "%s\t%s p99 ms\t%s\n", b, $2, $7
            # The server'"'"'s CPU per write (its CPU seconds over the
            # writes of the phase).
            if ($3 + 0 > 0) printf "%s\t%s CPU ms\t%.3f\n", b, $2, 1000 * $10 / $3
            # How many writes shared a flush (the server'"'"'s /status).
            gsub(/ /, "", $12)
            if ($12 != "" && $12 != "-") printf "%s\t%s writers per batch\t%s\n", b, $2, $12
            # The machine'"'"'s CPU time its hypervisor gave elsewhere
            # (builds from before the column print none).
            gsub(/ /, "", $13)
            if ($13 != "" && $13 != "-") printf "%s\t%s steal %%\t%s\n", b, $2, $13
        }
        /^hook round trip/ {
            match($0, /"median_ms":[0-9.]+/)
            printf "%s\thook median ms\t%s\n", b, substr($0, RSTART + 12, RLENGTH - 12)
        }' "$log" | tee -a "$results" | awk -F'\t' -v i=$i '{ printf "run %s  %s  %s: %s\n", i, $1, $2, $3 }'
    umount "$mnt"
}
# Warm-up runs: printed, their rows kept out of the results.
if [ "$warmup" -gt 0 ]; then
    counted=$results
    results=/dev/null
    for w in $(seq 1 "$warmup"); do
        one_run "warmup$w" $(echo $builds | cut -d' ' -f1) "$@"
    done
    results=$counted
fi
in_turns "$runs" "$builds" one_run "$@"
echo
echo "medians of $runs runs:"
medians "$results" "$builds" "submit round 1" "decisions" "charges" "audit posts" "hook median ms" \
    "submit round 1 p99 ms" "decisions p99 ms" "charges p99 ms" "audit posts p99 ms" \
    "submit round 1 CPU ms" "decisions CPU ms" "charges CPU ms" "audit posts CPU ms" \
    "submit round 1 writers per batch" "decisions writers per batch" \
    "submit round 1 steal %" "decisions steal %" "run steal %"
