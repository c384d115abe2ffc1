#!/usr/bin/env bash
# The test suite, as the README gives it: unit tests and the integration
# test binary (real Git repositories, real servers on 127.0.0.1:0, stock git
# verifying signatures, headless Chromium for the dashboard).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked "$@"
