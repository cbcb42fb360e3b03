#!/usr/bin/env bash
# Sets ExeClaw up on a fresh Debian 12 machine and starts it: installs what it
# needs, builds it, then runs `execlaw serve` in the foreground. Arguments are
# passed to `execlaw serve` (see README.md for every flag). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
godir=$(scripts/deps.sh)
export PATH="$godir:$PATH" GOTOOLCHAIN=auto
make build
exec bin/execlaw serve "$@"
