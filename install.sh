#!/usr/bin/env bash
# Installs ExeClaw as a system service on Debian 12: the packages it needs,
# the binaries in /usr/local/bin, a system user "execlaw" with its data in
# /var/lib/execlaw, the guest image, the host networking it relies on, and
# the systemd unit packaging/execlaw.service. Safe to run again: every step
# checks or rewrites its own files, and the image build reuses what is
# unchanged. It does not start the service unless asked:
#
#   sudo ./install.sh               install or update
#   sudo ./install.sh --enable      ... and enable and (re)start the service
#   sudo ./install.sh --key-store   ... and keep provider API keys across
#                                   restarts: an operator key encrypted with
#                                   systemd-creds, and a drop-in that hands
#                                   it to the service (README.md, Key store)
#
# Environment: EXECLAW_IMAGE_PROFILE (dev or minimal, default dev) picks the
# guest image; EXECLAW_SKIP_IMAGE=1 skips building it.
set -euo pipefail
cd "$(dirname "$0")"

log() { echo "install: $*"; }
warn() { echo "install: warning: $*" >&2; }

enable=0
key_store=0
for arg in "$@"; do
	case "$arg" in
	--enable) enable=1 ;;
	--key-store) key_store=1 ;;
	-h | --help)
		sed -n '2,17p' "$0"
		exit 0
		;;
	*)
		echo "install: unknown argument $arg (try --help)" >&2
		exit 2
		;;
	esac
done

if [ "$(id -u)" -ne 0 ]; then
	echo "install: run me as root (sudo ./install.sh): I create a system user and install a service" >&2
	exit 1
fi

user=execlaw
data_dir=/var/lib/execlaw
conf_dir=/etc/execlaw
unit=/etc/systemd/system/execlaw.service
systemd_running=0
[ -d /run/systemd/system ] && systemd_running=1

# 1. Packages (QEMU, debootstrap, ...) and a Go toolchain, then the binaries.
log "packages"
godir=$(scripts/deps.sh)
export PATH="$godir:$PATH" GOTOOLCHAIN=auto
log "building"
make build
install -m 0755 bin/execlaw /usr/local/bin/execlaw
install -m 0755 bin/execlaw-guest /usr/local/bin/execlaw-guest
log "installed $(/usr/local/bin/execlaw version)"

# 2. The service's user, in group kvm for /dev/kvm.
getent group kvm >/dev/null || groupadd --system kvm
if ! id "$user" >/dev/null 2>&1; then
	useradd --system --user-group --home-dir "$data_dir" --no-create-home \
		--shell /usr/sbin/nologin --comment "ExeClaw service" "$user"
	log "created system user $user"
fi
usermod --append --groups kvm "$user"
install -d -o "$user" -g "$user" -m 0750 "$data_dir"

# 3. Configuration: secrets live in an environment file only root can read
# (systemd reads it before dropping privileges). Never overwritten.
install -d -o root -g root -m 0755 "$conf_dir"
if [ ! -e "$conf_dir/env" ]; then
	cat >"$conf_dir/env" <<'EOF'
# Environment for execlaw serve (see README.md, Configuration). Readable by
# root only: put secrets here, not on the command line.
#EXECLAW_LISTEN=127.0.0.1:8000
#EXECLAW_AUTH=token
#EXECLAW_TOKEN=
#EXECLAW_SMTP_ADDR=smtp.example.com:587
#EXECLAW_SMTP_TLS=starttls
#EXECLAW_SMTP_USER=
#EXECLAW_SMTP_PASSWORD=
#EXECLAW_SMTP_FROM=execlaw@example.com
#EXECLAW_EMAIL_ALLOW=you@example.com
#EXECLAW_METRICS_LISTEN=127.0.0.1:9464
EOF
	log "wrote $conf_dir/env (commented template)"
fi
chown root:root "$conf_dir/env"
chmod 0600 "$conf_dir/env"

# 4. Host networking. Forwarding is on for the VMs' NAT (the server also sets
# it, but this keeps it across reboots); /run/netns, where the sessions'
# network namespaces are pinned, exists at boot and the service may add to
# it (sticky: it can remove only its own entries); the modules are loaded at
# boot, since the service may not load modules itself.
cat >/etc/sysctl.d/60-execlaw.conf <<'EOF'
# ExeClaw: VMs reach the network through NAT from their namespaces.
net.ipv4.ip_forward = 1
EOF
if ! sysctl -q -p /etc/sysctl.d/60-execlaw.conf 2>/dev/null; then
	warn "could not apply net.ipv4.ip_forward=1 now (a container?); it applies at boot"
fi
cat >/etc/tmpfiles.d/execlaw.conf <<EOF
# ExeClaw pins its sessions' network namespaces here, as \`ip netns\` does.
d /run/netns 1775 root $user -
EOF
if ! systemd-tmpfiles --create /etc/tmpfiles.d/execlaw.conf 2>/dev/null; then
	mkdir -p /run/netns
	chown "root:$user" /run/netns
	chmod 1775 /run/netns
fi
cat >/etc/modules-load.d/execlaw.conf <<'EOF'
# ExeClaw: TAP devices, the nftables isolation rules, vhost-vsock for QEMU.
tun
nf_tables
vhost_vsock
EOF
for m in tun nf_tables vhost_vsock; do
	modprobe -q "$m" 2>/dev/null || warn "could not load kernel module $m now"
done
if [ -e /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
	warn "/dev/net/tun is mode $(stat -c %a /dev/net/tun), not 0666: the service cannot create TAP devices for VM networking"
fi
[ -e /dev/kvm ] || warn "no /dev/kvm: VMs will run under QEMU's TCG software emulation (slow)"

# 5. The guest image the VMs boot, built as root (debootstrap) into the data
# directory, which then belongs to the service's user.
if [ "${EXECLAW_SKIP_IMAGE:-0}" != 1 ]; then
	log "guest image (about ten minutes the first time on two cores, compiling its kernel; seconds afterwards)"
	/usr/local/bin/execlaw image build --data-dir "$data_dir" --profile "${EXECLAW_IMAGE_PROFILE:-dev}"
fi
chown -R "$user:$user" "$data_dir"
chmod 0750 "$data_dir"

# 6. The systemd unit, and with --key-store the operator key that seals
# provider API keys at rest (see README.md): 32 random bytes as hex, piped
# straight into systemd-creds (host key, and the TPM2 chip if there is one),
# so they are never on disk in the clear, and a drop-in that passes them to
# the service as a credential. An existing key is kept: a new one could not
# open the keys sealed with the old. The drop-in stays until removed.
install -m 0644 packaging/execlaw.service "$unit"
if [ $key_store -eq 1 ]; then
	cred=/etc/credstore.encrypted/execlaw-keystore
	dropin=/etc/systemd/system/execlaw.service.d/keystore.conf
	if ! command -v systemd-creds >/dev/null; then
		echo "install: --key-store needs systemd-creds (systemd 250 or later)" >&2
		exit 1
	fi
	install -d -o root -g root -m 0700 "$(dirname "$cred")"
	if [ ! -e "$cred" ]; then
		od -An -N32 -tx1 /dev/urandom | tr -d ' \n' |
			systemd-creds encrypt --name=execlaw-keystore - "$cred"
		chmod 0600 "$cred"
		log "wrote the key store's operator key, encrypted: $cred"
	else
		log "keeping the key store's operator key $cred"
	fi
	install -d -o root -g root -m 0755 "$(dirname "$dropin")"
	cat >"$dropin" <<EOF
# Written by install.sh --key-store: provider API keys are sealed at rest
# with the operator key in $cred.
# Remove this file to keep keys in memory only.
[Service]
LoadCredentialEncrypted=execlaw-keystore:$cred
Environment=EXECLAW_KEY_STORE=credential:execlaw-keystore
EOF
	chmod 0644 "$dropin"
	log "wrote $dropin"
fi
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify "$unit"
fi
if [ $systemd_running -eq 1 ]; then
	systemctl daemon-reload
	if [ $enable -eq 1 ]; then
		systemctl enable execlaw.service
		systemctl restart execlaw.service
		log "execlaw.service enabled and (re)started"
	fi
elif [ $enable -eq 1 ]; then
	warn "systemd is not running here: cannot enable the service"
fi

cat <<EOF

ExeClaw is installed.
  binaries:  /usr/local/bin/execlaw, /usr/local/bin/execlaw-guest
  data:      $data_dir (owned by $user)
  settings:  $conf_dir/env (root, 0600), then: systemctl restart execlaw
  service:   $unit
Start it:    systemctl enable --now execlaw    (or: sudo ./install.sh --enable)
The access token is written to $data_dir/token on the first start.
EOF
