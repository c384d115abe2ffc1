#!/usr/bin/env bash
# The test suite, as the README gives it: unit tests and the integration
# test binary (real Git repositories, real servers on 127.0.0.1:0, stock git
# verifying signatures, headless Chromium for the dashboard).
#
# On a fresh Debian machine it first installs the few programs the tests use
# (when run as root; otherwise it says what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Stock git and ssh-keygen verify the signed commits, python3 runs the
# bundled noop agent, Chromium and its driver run the dashboard tests, and
# OpenSSH's server (started by the tests on a loopback port) carries
# `gov sync` over ssh://, and strace shows the order in which files reach
# the disk.
need=()
command -v git >/dev/null || need+=(git)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(gcc)
command -v strace >/dev/null || need+=(strace)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
  else
    echo "test.sh: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

cargo test --locked "$@"
