#!/bin/sh
# Policy CI for a pull request that touches governed paths: check and test
# the policy set of the checked-out head, show what changed by policy id,
# and write the impact report (Markdown) on every recorded decision.
#
# usage: gov-policy-ci.sh BASE_REV HEAD_REV REPORT_FILE
#
# Needs `gov` on PATH, the audit chain as the local branch `gov/audit`
# (`git fetch origin gov/audit:gov/audit`) and BASE_REV fetched.
# Exit 0: the set is valid and its tests pass (the report may show changes:
# read it); 1: the set is invalid, a test failed, or a revision is missing.
set -u
base=$1
head=$2
report=$3

gov policy check || exit 1
gov policy test || exit 1
gov policy diff "$base" "$head" || exit 1
gov policy impact "$head" --format markdown > "$report"
code=$?
case $code in
  0) echo "impact: no recorded decision changes" ;;
  3) echo "impact: some recorded decisions change; see $report" ;;
  *) exit 1 ;;
esac
exit 0
