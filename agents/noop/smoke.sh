#!/bin/sh
# The "action" noop executes once its proposal is approved.
echo "noop smoke: hello from $(basename "$(pwd)") at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
