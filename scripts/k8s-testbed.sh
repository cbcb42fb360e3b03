#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the Kubernetes
# sandbox driver's tests and CI: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd and a kubelet, run as background processes.
# Needs root, Debian 12 (scripts/deps.sh --test installs what it needs) and
# no registry: the Kubernetes binaries are compiled from the Go module proxy
# and the pod sandbox ("pause") image is made here.
#
#   scripts/k8s-testbed.sh up        start it (builds what is missing first);
#                                    a no-op when it is up already
#   scripts/k8s-testbed.sh down      stop it and remove all it made
#   scripts/k8s-testbed.sh status    exit 0 when all its processes run, the API
#                                    answers and the node is Ready
#   scripts/k8s-testbed.sh env       print export lines: KUBECONFIG (admin),
#                                    CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE
#                                    (for ctr), PATH (for kubectl),
#                                    EXECLAW_K8S_SERVER_FROM (where the host's
#                                    connections to pods come from)
#   scripts/k8s-testbed.sh build [kube|kwok|all]
#                                    only compile (kube: the default)
#   scripts/k8s-testbed.sh bin NAME  print the path of a cached binary
#                                    (kubectl, kwok, ...), building it if missing
#   scripts/k8s-testbed.sh image REF BINARY OUT.tar
#                                    write an OCI archive of an image holding
#                                    the static BINARY as its entrypoint, for
#                                    `ctr -n k8s.io images import`
#
# Pods run images imported with ctr (imagePullPolicy: Never). There is no
# kube-proxy (Services get no traffic) and no cluster DNS; pods get an IP on
# a bridge (10.244.0.0/24), reachable from the host, and no default route.
# The API server listens on the bridge's address, for the host and pods alike
# (in-cluster clients: set KUBERNETES_SERVICE_HOST and _PORT to it).
#
# Fake nodes: kwok (`bin kwok`) runs against the cluster with its own
# kubeconfig and manages only the nodes annotated kwok.x-k8s.io/node=fake
# (give them a NoSchedule taint, and their pods a toleration):
#   "$(scripts/k8s-testbed.sh bin kwok)" \
#     --kubeconfig /var/tmp/execlaw-k8s/run/kwok.kubeconfig \
#     --manage-all-nodes=false --manage-nodes-with-label-selector= \
#     --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
#     --cidr=10.245.0.1/16 --node-ip=10.245.0.1
# (scripts/k8s/smoke.sh --kwok N does so).
#
# Binaries and the module source are cached under /var/tmp/execlaw-k8s/<version>
# ($EXECLAW_K8S_CACHE), so only the first run compiles (about 13 minutes on 2
# cores, kwok 2 more); everything a running cluster has (certificates, etcd's
# data, containerd's root and state, kubelet's dir, logs, pid files) is under
# /var/tmp/execlaw-k8s/run ($EXECLAW_K8S_RUN), which `down` removes. The API
# server listens on 10.244.0.1:16443, etcd on 127.0.0.1:23790.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

K8S_VERSION=${EXECLAW_K8S_VERSION:-v1.34.4}
KWOK_VERSION=${EXECLAW_KWOK_VERSION:-v0.7.0}
CACHE=${EXECLAW_K8S_CACHE:-/var/tmp/execlaw-k8s}
RUN=${EXECLAW_K8S_RUN:-$CACHE/run}
BIN=$CACHE/$K8S_VERSION/bin
SRC=$CACHE/$K8S_VERSION/src
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION/bin

KUBECONFIG_PATH=$RUN/admin.kubeconfig
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
NODE_NAME=k8s-testbed
APISERVER_PORT=16443
ETCD_PORT=23790
ETCD_PEER_PORT=23800
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
# ExeClaw's VMs use 10.201.0.0/16 (and its tests 10.200.0.0/16).
POD_SUBNET=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/24
SERVICE_IP=10.96.0.1
BRIDGE=k8stb0
CNI_NETWORK=k8s-testbed
# The v1 cgroup (in each hierarchy) that holds the kubelet's pods.
CGROUP_ROOT=k8s-testbed
# containerd 1.6's default sandbox image name; the image is made here.
PAUSE_IMAGE=registry.k8s.io/pause:3.6
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# Host settings the kubelet (kernel tunables) and the CNI bridge plugin
# (ip_forward) change; `up` records them and `down` puts them back.
SYSCTLS=(net/ipv4/ip_forward vm/overcommit_memory vm/panic_on_oom kernel/panic
	kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
# Directories outside $RUN that the kubelet, containerd's shims or CNI make
# (paths built into them); `up` records which were missing and `down` empties
# those of what the test bed put there and removes them when empty.
HOST_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd)

t0=$(date +%s%N)
log() { printf 'k8s-testbed: [%6.1fs] %s\n' "$(($(date +%s%N) - t0))e-9" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

as_root() { [ "$(id -u)" -eq 0 ] || die "needs root"; }

# lock holds $CACHE/.lock (fd 9) for the rest of the script: one up, down or
# build at a time. Daemons are started with fd 9 closed.
lock() {
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	if ! flock -n 9; then
		log "waiting for another k8s-testbed.sh (lock $CACHE/.lock)"
		flock 9
	fi
}

# ---------------------------------------------------------------------------
# Dependencies and builds

ensure_deps() {
	local missing=()
	for c in etcd containerd containerd-shim-runc-v2 runc ctr openssl gcc curl go; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || missing+=(cni-plugins)
	[ ${#missing[@]} -eq 0 ] && return 0
	log "missing ${missing[*]}: running scripts/deps.sh --test"
	local godir
	godir=$("$here/deps.sh" --test)
	PATH=$godir:$PATH
	export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
}

# go_build OUT PKG [LDFLAGS]: build PKG (in the current directory's module)
# static into OUT, logging progress every 200 packages compiled.
go_build() {
	local out=$1 pkg=$2 name total start n=0 line ldflags="-s -w${3:+ $3}"
	name=$(basename "$out")
	start=$(date +%s)
	total=$(GOFLAGS='' go list -mod=mod -deps "$pkg" 2>/dev/null | wc -l) || total='?'
	log "building $name ($pkg: $total packages)"
	rm -f "$out.tmp"
	# go build -v names each package it compiles; anything else is an error.
	GOFLAGS='' CGO_ENABLED=0 go build -mod=mod -trimpath -v -ldflags "$ldflags" -o "$out.tmp" "$pkg" 2>&1 |
		while IFS= read -r line; do
			case $line in
			'#'* | *' '* | *'	'*) echo "$line" >&2 ;;
			*)
				n=$((n + 1))
				[ $((n % 200)) -eq 0 ] && log "building $name: $n of at most $total packages compiled"
				;;
			esac
		done || true
	[ -s "$out.tmp" ] || die "building $name failed"
	mv -f "$out.tmp" "$out"
	log "built $name in $(($(date +%s) - start))s ($(du -h "$out" | cut -f1))"
}

# module_dir MODULE@VERSION: download it from the Go module proxy and print
# its directory in the module cache.
module_dir() {
	local out dir
	out=$(cd / && GOFLAGS=-mod=mod go mod download -json "$1" 2>&1) || true
	dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$out")
	if [ ! -d "${dir:-/nonexistent}" ]; then
		echo "$out" >&2
		die "go mod download $1 failed"
	fi
	echo "$dir"
}

# prepare_src copies k8s.io/kubernetes from the module proxy into $SRC, made
# buildable outside its repository: the staging modules (k8s.io/api,
# k8s.io/client-go, ...) are not in the module's zip, so each replace that
# points into ./staging becomes a require of the published version.
prepare_src() {
	[ -f "$SRC/.prepared" ] && return 0
	local dir minor
	log "fetching k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
	dir=$(module_dir "k8s.io/kubernetes@$K8S_VERSION")
	minor=${K8S_VERSION#v1.}
	rm -rf "$SRC.tmp"
	mkdir -p "$(dirname "$SRC")"
	cp -a "$dir" "$SRC.tmp"
	chmod -R u+w "$SRC.tmp"
	rm -f "$SRC.tmp/go.work" "$SRC.tmp/go.work.sum"
	local args=() m n=0
	while read -r m; do
		args+=("-dropreplace=$m")
		# Some staging modules (sample-cli-plugin, ...) are only replaced,
		# not required, and not all of those are published.
		if grep -q "^[[:space:]]$m v0.0.0" "$SRC.tmp/go.mod"; then
			args+=("-require=$m@v0.$minor")
			n=$((n + 1))
		fi
	done < <(sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$SRC.tmp/go.mod")
	[ ${#args[@]} -gt 0 ] || die "no staging replaces in k8s.io/kubernetes@$K8S_VERSION's go.mod"
	(cd "$SRC.tmp" && go mod edit "${args[@]}")
	rm -rf "$SRC"
	mv "$SRC.tmp" "$SRC"
	touch "$SRC/.prepared"
	log "prepared $SRC ($n staging modules from the proxy)"
}

build_kube() {
	local need=() b
	for b in "${KUBE_BINARIES[@]}"; do
		[ -x "$BIN/$b" ] || need+=("$b")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	ensure_deps
	prepare_src
	mkdir -p "$BIN"
	local major=${K8S_VERSION#v} minor
	minor=${major#*.}
	minor=${minor%%.*}
	major=${major%%.*}
	local vf=() key val
	for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" "gitTreeState=clean" \
		"buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
		key=${kv%%=*} val=${kv#*=}
		vf+=("-X k8s.io/component-base/version.$key=$val" "-X k8s.io/client-go/pkg/version.$key=$val")
	done
	log "compiling ${need[*]} $K8S_VERSION into $BIN (the first takes the longest; the rest reuse Go's build cache)"
	for b in "${need[@]}"; do
		(cd "$SRC" && go_build "$BIN/$b" "./cmd/$b" "${vf[*]}")
	done
}

build_kwok() {
	[ -x "$KWOK_BIN/kwok" ] && return 0
	ensure_deps
	local dir work=$CACHE/kwok-$KWOK_VERSION/src
	log "fetching sigs.k8s.io/kwok@$KWOK_VERSION from the Go module proxy"
	dir=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
	rm -rf "$work"
	mkdir -p "$(dirname "$work")" "$KWOK_BIN"
	cp -a "$dir" "$work"
	chmod -R u+w "$work"
	(cd "$work" && go_build "$KWOK_BIN/kwok" ./cmd/kwok)
}

# make_image REF BINARY OUT: an OCI archive of a one-layer image holding the
# static BINARY as /<its name>, its entrypoint, named REF for ctr import.
make_image() {
	local ref=$1 binary=$2 out=$3 d name arch
	[ -x "$binary" ] || die "image: $binary is not an executable"
	name=$(basename "$binary")
	arch=$(dpkg --print-architecture)
	d=$(mktemp -d)
	mkdir -p "$d/root" "$d/oci/blobs/sha256"
	install -m 0755 "$binary" "$d/root/$name"
	tar -C "$d/root" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$d/layer.tar" .
	local layer layer_size config config_size manifest manifest_size
	layer=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	layer_size=$(stat -c %s "$d/layer.tar")
	mv "$d/layer.tar" "$d/oci/blobs/sha256/$layer"
	printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/%s"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"scripts/k8s-testbed.sh image"}]}' \
		"$arch" "$name" "$layer" >"$d/config.json"
	config=$(sha256sum "$d/config.json" | cut -d' ' -f1)
	config_size=$(stat -c %s "$d/config.json")
	mv "$d/config.json" "$d/oci/blobs/sha256/$config"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$config" "$config_size" "$layer" "$layer_size" >"$d/manifest.json"
	manifest=$(sha256sum "$d/manifest.json" | cut -d' ' -f1)
	manifest_size=$(stat -c %s "$d/manifest.json")
	mv "$d/manifest.json" "$d/oci/blobs/sha256/$manifest"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$manifest" "$manifest_size" "$arch" "$ref" "${ref##*:}" >"$d/oci/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$d/oci/oci-layout"
	mkdir -p "$(dirname "$out")"
	tar -C "$d/oci" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out.tmp" .
	mv -f "$out.tmp" "$out"
	rm -rf "$d"
}

# pause_image prints the path of the sandbox image's archive, made from
# scripts/k8s/pause.c when missing or older than the source.
pause_image() {
	local dir=$CACHE/images out
	out=$dir/pause.tar
	if [ ! -s "$out" ] || [ "$here/k8s/pause.c" -nt "$out" ]; then
		mkdir -p "$dir"
		gcc -static -Os -s -o "$dir/pause" "$here/k8s/pause.c" || die "compiling pause"
		make_image "$PAUSE_IMAGE" "$dir/pause" "$out"
		log "made the sandbox image $PAUSE_IMAGE ($out)"
	fi
	echo "$out"
}

# ---------------------------------------------------------------------------
# Processes

pidfile() { echo "$RUN/pids/$1.pid"; }

# alive NAME: the process in NAME's pid file runs, and is that program.
alive() {
	local f pid
	f=$(pidfile "$1")
	[ -s "$f" ] || return 1
	pid=$(cat "$f")
	gone "$pid" && return 1
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# start NAME CMD...: run CMD in the background in a session of its own, its
# output in $RUN/logs/NAME.log, its pid in $RUN/pids/NAME.pid.
start() {
	local name=$1
	shift
	log "starting $name"
	setsid "$@" </dev/null >>"$RUN/logs/$name.log" 2>&1 9>&- &
	echo $! >"$(pidfile "$name")"
}

# gone PID: the process has exited (a zombie counts: whoever reaps it, the
# test bed's daemons are not children of this script).
gone() {
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
	[ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]
}

# stop NAME:MATCH...: SIGTERM to each, then SIGKILL to those still running
# after 5s (`down` removes all their state anyway: no need to wait for the
# API server's graceful shutdown).
stop() {
	local spec name pid i n pids=() names=()
	for spec in "$@"; do
		name=${spec%%:*}
		if alive "$name" "${spec#*:}"; then
			pid=$(cat "$(pidfile "$name")")
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			names+=("$name")
		fi
		rm -f "$(pidfile "$name")"
	done
	for i in "${!pids[@]}"; do
		pid=${pids[$i]}
		for ((n = 0; n < 50; n++)); do
			gone "$pid" && break
			sleep 0.1
		done
		if ! gone "$pid"; then
			log "${names[$i]} (pid $pid) still runs 5s after SIGTERM: killing it"
			kill -KILL "$pid" 2>/dev/null || true
			for ((n = 0; n < 50; n++)); do
				gone "$pid" && break
				sleep 0.1
			done
		fi
		log "stopped ${names[$i]}"
	done
}

# wait_for DESC SECONDS LOGNAME CMD...: poll CMD until it succeeds; on the
# deadline, show the end of $RUN/logs/LOGNAME.log and fail.
wait_for() {
	local desc=$1 secs=$2 logname=$3 deadline
	shift 3
	deadline=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			log "timed out after ${secs}s waiting for $desc; the end of $RUN/logs/$logname.log:"
			tail -n 40 "$RUN/logs/$logname.log" >&2 || true
			return 1
		fi
		if [ -n "$logname" ] && ! alive "$logname" "$logname"; then
			log "$logname exited while waiting for $desc; the end of $RUN/logs/$logname.log:"
			tail -n 40 "$RUN/logs/$logname.log" >&2 || true
			return 1
		fi
		sleep 0.25
	done
	log "$desc"
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

node_ready() {
	[ "$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
node_untainted() { [ -z "$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.spec.taints}')" ]; }
etcd_healthy() { curl -fsS "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
apiserver_ready() { curl -fsS --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $(cat "$RUN/pki/admin.token")" "https://$POD_GATEWAY:$APISERVER_PORT/readyz"; }

# ---------------------------------------------------------------------------
# Configuration

gen_pki() {
	local p=$RUN/pki
	mkdir -p "$p"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
		-subj "/CN=k8s-testbed-ca" -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
	# cert NAME SUBJECT EXTENSIONS
	cert() {
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
			-keyout "$p/$1.key" -out "$p/$1.csr" 2>/dev/null
		openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
			-days 3650 -out "$p/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
		rm -f "$p/$1.csr"
	}
	cert apiserver "/CN=kube-apiserver" \
		"subjectAltName=IP:127.0.0.1,IP:$POD_GATEWAY,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
		"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
	openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
	openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
	# Static bearer tokens (token,user,uid,"groups"), one file each.
	token() {
		local tok
		tok=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
		echo "$tok" >"$p/$1.token"
		echo "$tok,$2,$2${3:+,\"$3\"}" >>"$p/tokens.csv"
	}
	: >"$p/tokens.csv"
	token admin admin system:masters
	token kubelet "system:node:$NODE_NAME" system:nodes
	token controller-manager system:kube-controller-manager
	token scheduler system:kube-scheduler
	token kwok kwok system:masters
	chmod 600 "$p"/*.key "$p"/*.token "$p/tokens.csv"
}

# kubeconfig FILE TOKENFILE USER
kubeconfig() {
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: k8s-testbed
  cluster:
    server: https://$POD_GATEWAY:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$RUN/pki/ca.crt")
users:
- name: $3
  user:
    token: $(cat "$2")
contexts:
- name: k8s-testbed
  context:
    cluster: k8s-testbed
    user: $3
current-context: k8s-testbed
EOF
	chmod 600 "$1"
}

write_configs() {
	local c=$RUN/conf
	mkdir -p "$c" "$RUN/cni/net.d" "$RUN/containerd"
	kubeconfig "$c/controller-manager.kubeconfig" "$RUN/pki/controller-manager.token" system:kube-controller-manager
	kubeconfig "$c/scheduler.kubeconfig" "$RUN/pki/scheduler.token" system:kube-scheduler
	kubeconfig "$c/kubelet.kubeconfig" "$RUN/pki/kubelet.token" "system:node:$NODE_NAME"
	kubeconfig "$RUN/kwok.kubeconfig" "$RUN/pki/kwok.token" kwok

	# The bridge gets the gateway address (so the host reaches the pods);
	# no ipMasq, no portmap: nothing goes into the host's iptables. The
	# pods get no default route: they reach the host and each other only.
	cat >"$RUN/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "dataDir": "$RUN/cni/ipam"
      }
    }
  ]
}
EOF

	# This host refuses a negative oom_score_adj, which the kubelet asks
	# for the sandbox (-998) and Guaranteed pods (-997): containerd's
	# restrict_oom_score_adj raises those to its own score (0).
	cat >"$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$RUN/containerd/runc"
        SystemdCgroup = false
EOF

	cat >"$c/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip)
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $RUN/pki/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
protectKernelDefaults: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $RUN/pod-logs
maxPods: 200
serializeImagePulls: false
# Images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
shutdownGracePeriod: 0s
EOF
}

# ---------------------------------------------------------------------------
# up / down / status

components_alive() {
	alive etcd etcd && alive kube-apiserver kube-apiserver && alive kube-controller-manager kube-controller-manager &&
		alive kube-scheduler kube-scheduler && alive containerd containerd && alive kubelet kubelet
}

status_ok() {
	[ -s "$KUBECONFIG_PATH" ] && [ -x "$BIN/kubectl" ] && node_ready
}

record_host_state() {
	[ -f "$RUN/host-state" ] && return 0
	local k d
	{
		for k in "${SYSCTLS[@]}"; do
			[ -r "/proc/sys/$k" ] && echo "sysctl $k $(cat "/proc/sys/$k")"
		done
		for d in "${HOST_DIRS[@]}"; do
			[ -e "$d" ] || echo "dir $d"
		done
	} >"$RUN/host-state"
}

# cgroup_hierarchies prints the mount point of each cgroup v1 hierarchy;
# with "all", also of cgroup v2's (runc makes each container's cgroup in the
# unified hierarchy of a hybrid host too).
cgroup_hierarchies() {
	awk -v all="${1:-}" '$3 == "cgroup" || (all == "all" && $3 == "cgroup2") { print $2 }' /proc/mounts
}

# node_ip prints the host's address for the node (the kubelet refuses a
# loopback one): the default route's interface's, else any global IPv4
# address. Passing it spares the kubelet a DNS lookup of the node's name.
node_ip() {
	local dev ip
	dev=$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
	if [ -n "$dev" ]; then
		ip=$(ip -4 -o addr show dev "$dev" scope global | awk '{ sub("/.*", "", $4); print $4; exit }')
	fi
	if [ -z "${ip:-}" ]; then
		ip=$(ip -4 -o addr show scope global | awk '$2 != "'"$BRIDGE"'" { sub("/.*", "", $4); print $4; exit }')
	fi
	[ -n "${ip:-}" ] || die "no global IPv4 address on this host for the node"
	echo "$ip"
}

# make_bridge makes the pods' bridge with the gateway's address, as the CNI
# bridge plugin (isGateway) would; `down` removes it.
make_bridge() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
	fi
	if ! ip -4 -o addr show dev "$BRIDGE" | grep -q " $POD_GATEWAY/"; then
		ip addr add "$POD_GATEWAY/${POD_SUBNET#*/}" dev "$BRIDGE"
	fi
	ip link set "$BRIDGE" up
}

make_cgroups() {
	local h
	for h in $(cgroup_hierarchies); do
		mkdir -p "$h/$CGROUP_ROOT"
		if [ -f "$h/cpuset.cpus" ]; then
			[ -n "$(cat "$h/$CGROUP_ROOT/cpuset.cpus")" ] || cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"
			[ -n "$(cat "$h/$CGROUP_ROOT/cpuset.mems")" ] || cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
		fi
	done
	if [ -z "$(cgroup_hierarchies)" ]; then
		die "no cgroup v1 hierarchies: this test bed is written for a cgroup v1 (hybrid) host"
	fi
}

up() {
	as_root
	lock
	if components_alive && status_ok; then
		log "already up (node $NODE_NAME Ready); KUBECONFIG=$KUBECONFIG_PATH"
		return 0
	fi
	if [ -d "$RUN" ]; then
		log "cleaning up what a previous run left"
		down_locked
	fi
	ensure_deps
	build_kube
	local pause
	pause=$(pause_image)

	local tstart
	tstart=$(date +%s%N)
	mkdir -p "$RUN/logs" "$RUN/pids"
	record_host_state
	gen_pki
	write_configs
	kubeconfig "$KUBECONFIG_PATH" "$RUN/pki/admin.token" admin
	log "wrote certificates and configuration under $RUN"

	start etcd etcd --name "$NODE_NAME" --data-dir "$RUN/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new
	# containerd starts beside the control plane: it needs neither.
	start containerd containerd --config "$RUN/containerd/config.toml"
	wait_for "etcd is healthy" 60 etcd etcd_healthy

	make_bridge # before the CNI plugin would: the API server listens on it
	local p=$RUN/pki
	start kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address "$POD_GATEWAY" --secure-port "$APISERVER_PORT" --advertise-address "$POD_GATEWAY" \
		--endpoint-reconciler-type none \
		--tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--client-ca-file "$p/ca.crt" --token-auth-file "$p/tokens.csv" \
		--kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--kubelet-preferred-address-types InternalIP \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--allow-privileged=true --profiling=false
	wait_for "containerd is up" 60 containerd ctr_ version
	ctr_ images import "$pause" >/dev/null
	log "imported $PAUSE_IMAGE"
	wait_for "kube-apiserver is ready" 180 kube-apiserver apiserver_ready

	start kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$RUN/conf/controller-manager.kubeconfig" \
		--secure-port 0 --leader-elect=false \
		--use-service-account-credentials \
		--service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
		--service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false \
		--profiling=false
	start kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$RUN/conf/scheduler.kubeconfig" \
		--secure-port 0 --leader-elect=false --profiling=false

	make_cgroups
	start kubelet "$BIN/kubelet" \
		--config "$RUN/conf/kubelet.yaml" --kubeconfig "$RUN/conf/kubelet.kubeconfig" \
		--root-dir "$RUN/kubelet" --cert-dir "$RUN/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$(node_ip)" --v 1
	wait_for "node $NODE_NAME is Ready" 180 kubelet node_ready
	wait_for "node $NODE_NAME has no taints" 60 kube-controller-manager node_untainted
	wait_for "namespace default has its service account" 60 kube-controller-manager kubectl_ get serviceaccount default -n default
	log "up in $((($(date +%s%N) - tstart) / 1000000))ms after the build; KUBECONFIG=$KUBECONFIG_PATH"
}

# unmount_under DIR: unmount every mount at or below DIR, deepest first.
unmount_under() {
	local m
	awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
	done
}

# kill_cgroup_tree: SIGKILL every process left in the pods' cgroups, then
# remove the cgroups, deepest first.
kill_cgroup_tree() {
	local h pass pids
	for pass in 1 2 3 4 5 6 7 8 9 10; do
		pids=$(for h in $(cgroup_hierarchies all); do
			if [ -d "$h/$CGROUP_ROOT" ]; then
				find "$h/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null || true
			fi
		done | sort -u)
		[ -z "$pids" ] && break
		[ "$pass" = 1 ] && log "killing what is left in the pods' cgroups: $(echo "$pids" | wc -l) processes"
		# shellcheck disable=SC2086 # a list of pids
		kill -KILL $pids 2>/dev/null || true
		sleep 0.2
	done
	for h in $(cgroup_hierarchies all); do
		[ -d "$h/$CGROUP_ROOT" ] && find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
		[ -d "$h/$CGROUP_ROOT" ] && log "could not remove the cgroup $h/$CGROUP_ROOT"
	done
	return 0
}

# shims prints the pids of the containerd shims of this test bed's containerd.
shims() {
	local d
	for d in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q -- "containerd-shim.* -address $CONTAINERD_SOCK" && echo "${d#/proc/}"
	done
	return 0
}

down_locked() {
	stop kubelet:kubelet
	if alive containerd containerd; then
		# The pods' containers: kill their tasks, then remove them (and
		# with them their snapshots).
		local id
		for id in $(ctr_ tasks ls -q 2>/dev/null); do
			ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ tasks ls -q 2>/dev/null); do
			ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ containers ls -q 2>/dev/null); do
			ctr_ containers delete "$id" >/dev/null 2>&1 || true
			# What CNI cached for a pod sandbox (a CNI DEL would
			# have removed it): <network>-<sandbox id>-<interface>.
			rm -f /var/lib/cni/results/*-"$id"-*
		done
	fi
	stop containerd:containerd
	local pid
	for pid in $(shims); do
		log "killing containerd shim $pid"
		kill -KILL "$pid" 2>/dev/null || true
	done
	kill_cgroup_tree
	stop kube-scheduler:kube-scheduler kube-controller-manager:kube-controller-manager kube-apiserver:kube-apiserver
	stop etcd:etcd

	# Network: the pods' network namespaces (bind mounts under containerd's
	# state), the bridge and its veths, the CNI plugins' cache.
	unmount_under "$RUN"
	local l
	for l in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
		ip link delete "$l" 2>/dev/null || true
	done
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		if ip link delete "$BRIDGE"; then
			log "removed the bridge $BRIDGE"
		else
			log "could not remove the bridge $BRIDGE"
		fi
	fi
	rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
	# The kubelet's links to the containers' logs (in $RUN/pod-logs).
	if [ -d /var/log/containers ]; then
		find /var/log/containers -maxdepth 1 -type l -lname "$RUN/*" -delete 2>/dev/null || true
	fi

	# Host settings and directories as they were before `up`.
	if [ -f "$RUN/host-state" ]; then
		local kind a b
		while read -r kind a b; do
			case $kind in
			sysctl)
				if [ "$(cat "/proc/sys/$a")" != "$b" ]; then
					echo "$b" >"/proc/sys/$a" && log "restored $a to $b"
				fi
				;;
			dir)
				# It was missing before `up`: remove what the test bed's
				# programs put there (the kubelet's device plugin socket,
				# shims' sockets) and then the directories left empty.
				rm -f "$a/device-plugins/kubelet.sock"
				if [ -d "$a" ]; then
					find "$a" -depth -type d -empty -delete 2>/dev/null || true
				fi
				;;
			esac
		done <"$RUN/host-state"
	fi
	rm -rf "$RUN"
}

down() {
	as_root
	lock
	if [ ! -d "$RUN" ]; then
		log "not up (no $RUN)"
		return 0
	fi
	down_locked
	log "down: stopped and removed everything (run dir $RUN)"
}

status() {
	if [ ! -s "$KUBECONFIG_PATH" ]; then
		echo "k8s-testbed: down (no $KUBECONFIG_PATH)" >&2
		return 1
	fi
	local n ok=1
	for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet; do
		if alive "$n" "$n"; then
			echo "k8s-testbed: $n running (pid $(cat "$(pidfile "$n")"))" >&2
		else
			echo "k8s-testbed: $n NOT running (its log: $RUN/logs/$n.log)" >&2
			ok=0
		fi
	done
	if [ $ok -eq 1 ] && node_ready; then
		echo "k8s-testbed: node $NODE_NAME Ready; KUBECONFIG=$KUBECONFIG_PATH" >&2
		return 0
	fi
	echo "k8s-testbed: not up: a component is not running, the API does not answer or node $NODE_NAME is not Ready" >&2
	return 1
}

print_env() {
	printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
	printf 'export CONTAINERD_ADDRESS=%q\n' "$CONTAINERD_SOCK"
	printf 'export CONTAINERD_NAMESPACE=k8s.io\n'
	printf 'export EXECLAW_K8S_SERVER_FROM=%s/32\n' "$POD_GATEWAY"
	# shellcheck disable=SC2016 # $PATH is for the shell that evals this
	printf 'export PATH=%q:"$PATH"\n' "$BIN"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env) print_env ;;
build)
	as_root
	lock
	case "${2:-kube}" in
	kube) build_kube ;;
	kwok) build_kwok ;;
	all)
		build_kube
		build_kwok
		;;
	*) die "build: kube, kwok or all" ;;
	esac
	;;
bin)
	[ -n "${2:-}" ] || die "bin: which binary?"
	lock
	if [ "$2" = kwok ]; then
		build_kwok
		echo "$KWOK_BIN/kwok"
	else
		build_kube
		[ -x "$BIN/$2" ] || die "no $2 in $BIN"
		echo "$BIN/$2"
	fi
	;;
image)
	[ $# -eq 4 ] || die "usage: $0 image REF BINARY OUT.tar"
	make_image "$2" "$3" "$4"
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
