# Sourced by the benchmark scripts that compare builds (bench-fresh-fs.sh,
# bench-side-by-side.sh).
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
