#!/usr/bin/env bash
# Sets ExeClaw up on a fresh Debian 12 machine and starts it: installs what it
# needs, builds it, builds (or updates) the guest image the microVMs boot,
# then runs `execlaw serve` in the foreground. Arguments are passed to
# `execlaw serve` (see README.md for every flag). Safe to run again. Needs
# root (sudo) for packages, debootstrap and VM networking.
set -euo pipefail
cd "$(dirname "$0")"
godir=$(scripts/deps.sh)
export PATH="$godir:$PATH" GOTOOLCHAIN=auto
make build

# The image goes into the data directory serve will use.
data_dir=${EXECLAW_DATA_DIR:-./data}
image=${EXECLAW_IMAGE:-dev}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	--data-dir=*) data_dir=${args[i]#*=} ;;
	--data-dir) data_dir=${args[i + 1]:-$data_dir} ;;
	--image=*) image=${args[i]#*=} ;;
	--image) image=${args[i + 1]:-$image} ;;
	esac
done
profile=dev
[ "$image" = minimal ] && profile=minimal
# EXECLAW_AGENTS=claude-code also puts Claude Code into the image.
bin/execlaw image build --data-dir "$data_dir" --name "$image" --profile "$profile" --agents "${EXECLAW_AGENTS:-}"
exec bin/execlaw serve "$@"
