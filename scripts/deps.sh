#!/usr/bin/env bash
# Installs what ExeClaw needs on Debian 12 and prints the directory of a Go
# toolchain that can build it. Safe to run again: it only installs what is
# missing.
#
#   scripts/deps.sh          what the server needs to build and run
#   scripts/deps.sh --test   plus what the test suite needs
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { echo "deps: $*" >&2; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ $apt_updated -eq 0 ]; then
		log "apt-get update"
		as_root apt-get update -qq >&2
		apt_updated=1
	fi
	log "installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# QEMU runs the sandboxes; debootstrap and e2fsprogs build the guest image;
# dpkg-deb (in dpkg) unpacks Debian's kernel package. The guest image's
# kernel is compiled from Debian's kernel source (linux-source-6.1), with
# gcc, make, bc, bison, flex and libelf (objtool); xz unpacks the source.
packages=(ca-certificates git make qemu-system-x86 debootstrap e2fsprogs
	linux-source-6.1 gcc libc6-dev bc bison flex libelf-dev xz-utils)
# The race detector in `go test -race` needs cgo, so a C compiler; the
# browser tests drive Debian's Chromium; the packaging tests run
# systemd-analyze verify on the unit and shellcheck on install.sh; the guest
# image's byte-level tests compare with xz and GNU cpio; the live preview tests
# serve an app with python3. (gcc, libc6-dev and
# xz-utils are in the list above already, for the kernel.) The Kubernetes
# test cluster (scripts/k8s-testbed.sh) runs Debian's etcd, containerd, runc
# and CNI plugins beside the Kubernetes binaries it compiles; it makes its
# certificates with openssl and asks etcd and the API server with curl.
[ $want_test -eq 1 ] && packages+=(chromium systemd shellcheck cpio python3
	etcd-server containerd runc containernetworking-plugins openssl curl)
apt_install "${packages[@]}"

# npm puts Claude Code into a guest image (execlaw image build --agents
# claude-code), which the tests do and setup does when EXECLAW_AGENTS asks.
# A Node.js that brings its own npm (NodeSource) is fine as it is.
if { [ $want_test -eq 1 ] || [ -n "${EXECLAW_AGENTS:-}" ]; } && ! command -v npm >/dev/null 2>&1; then
	apt_install npm
fi

# Go: any toolchain from 1.21 on can build the project, because it fetches the
# exact version go.mod names from the Go module proxy (GOTOOLCHAIN=auto).
go_ok() {
	local v
	v=$("$1" env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	local major=${v%%.*} rest=${v#*.}
	local minor=${rest%%.*}
	[ "$major" -gt 1 ] || [ "$minor" -ge 21 ]
}
for cand in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go /usr/lib/go-1.2[3-9]/bin/go; do
	if [ -n "$cand" ] && [ -x "$cand" ] && go_ok "$cand"; then
		dirname "$cand"
		exit 0
	fi
done
log "no Go 1.21+ found: installing golang-1.23-go from bookworm-backports"
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
	echo "deb http://deb.debian.org/debian bookworm-backports main" | as_root tee /etc/apt/sources.list.d/execlaw-backports.list >/dev/null
	apt_updated=0
fi
apt_install golang-1.23-go
echo /usr/lib/go-1.23/bin
