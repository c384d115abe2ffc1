# Sourced by the benchmark scripts that compare builds (bench-fresh-fs.sh,
# bench-side-by-side.sh).
#
#   scratch_fs IMAGE
#
# sets `image` to IMAGE, made a 3 GiB file, `mnt` to a new folder and
# `results` to a new file, and removes all three at exit
# (`scratch_cleanup`, which a script with more to stop calls from a trap
# of its own).
scratch_fs() {
    image=$1
    mnt=$(mktemp -d)
    results=$(mktemp)
    trap scratch_cleanup EXIT INT TERM
    fallocate -l 3G "$image"
}

scratch_cleanup() {
    cd /
    umount "$mnt" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
    rm -f "$image" "$results"
}

#   new_fs [MKFS_OPTION...]
#
# makes a new ext4 in `image` (with `mkfs.ext4`'s options given) and
# mounts it on `mnt`: each run starts on a file system nothing has used.
new_fs() {
    mkfs.ext4 -q -F "$@" "$image"
    mount -o loop "$image" "$mnt"
}
#
#   in_turns RUNS "BUILD..." FUNCTION [ARGS...]
#
# calls `FUNCTION RUN BUILD ARGS...` once per build in each of RUNS runs,
# the builds taking turns: in the order given on odd runs, the other way
# round on even ones (a run that follows another was measured slower, so
# no build always goes first).
in_turns() {
    _turns_runs=$1
    _turns_builds=$2
    _turns_fn=$3
    shift 3
    _turns_reversed=""
    for _turns_b in $_turns_builds; do
        _turns_reversed="$_turns_b $_turns_reversed"
    done
    _turns_i=1
    while [ "$_turns_i" -le "$_turns_runs" ]; do
        _turns_order=$_turns_builds
        [ $((_turns_i % 2)) -eq 1 ] || _turns_order=$_turns_reversed
        for _turns_b in $_turns_order; do
            "$_turns_fn" "$_turns_i" "$_turns_b" "$@"
        done
        _turns_i=$((_turns_i + 1))
    done
}

#   medians RESULTS "BUILD..." [LABEL...]
#
# prints, for each build, the median of each label's values in RESULTS
# (lines `build<TAB>label<TAB>value`, one per run): the labels given, in
# that order and only those the build has, or else every label of the
# build in the order first seen.
medians() {
    _medians_results=$1
    _medians_builds=$2
    shift 2
    for _medians_b in $_medians_builds; do
        if [ $# -eq 0 ]; then
            awk -F'\t' -v b="$_medians_b" '$1 == b && !seen[$2]++ { print $2 }' "$_medians_results"
        else
            printf '%s\n' "$@"
        fi | while read -r _medians_label; do
            awk -F'\t' -v b="$_medians_b" -v w="$_medians_label" '$1 == b && $2 == w { print $3 }' "$_medians_results" |
                sort -g | awk -v b="$_medians_b" -v w="$_medians_label" '
                    { v[NR] = $1 }
                    END { if (NR) printf "  %s  %s: %s\n", b, w, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
        done
    done
}
