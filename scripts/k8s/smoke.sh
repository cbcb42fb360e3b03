#!/usr/bin/env bash
# A smoke check of the Kubernetes test cluster, run by hand (not a Go test):
# brings it up, runs a pod of a locally made image (scripts/k8s/hello.c),
# checks it is Running and that its IP answers from the host, deletes it.
#
#   scripts/k8s/smoke.sh           the pod check (the cluster stays up)
#   scripts/k8s/smoke.sh --kwok N  also N fake nodes (kwok) with a pod each
#   scripts/k8s/smoke.sh --down    also `down` at the end, and a check that
#                                  nothing is left behind
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
testbed=$here/../k8s-testbed.sh
want_down=0 kwok_nodes=0
while [ $# -gt 0 ]; do
	case $1 in
	--down) want_down=1 ;;
	--kwok)
		kwok_nodes=$2
		shift
		;;
	*)
		echo "usage: $0 [--kwok N] [--down]" >&2
		exit 2
		;;
	esac
	shift
done

t0=$(date +%s%N)
say() { printf 'smoke: [%6.1fs] %s\n' "$(($(date +%s%N) - t0))e-9" "$*"; }
fail() {
	say "FAIL: $*"
	exit 1
}
# ms since t0 of the last call of mark
mark() { last=$(date +%s%N); }
since() { echo "$((($(date +%s%N) - last) / 1000000))ms"; }

# What the host had before, to compare with after `down`.
snapshot() {
	{
		# (Other tests on the machine make links and namespaces of their
		# own, named xl*, execlaw-* and xlv*: only the test bed's kinds.)
		echo "== links"
		ip -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep -E '^(k8stb|veth|cni)' | sort || true
		echo "== routes"
		ip route show | grep -E 'k8stb|10\.244\.' || true
		echo "== netns"
		find /run/netns /var/run/netns -maxdepth 1 -name 'cni-*' 2>/dev/null | sort
		echo "== mounts"
		awk '{ print $2 }' /proc/mounts | grep -E 'kubelet|containerd|k8s|netns' | sort || true
		echo "== iptables"
		iptables-save 2>/dev/null | grep -v '^#' || true
		ip6tables-save 2>/dev/null | grep -v '^#' || true
		echo "== sysctls"
		for k in net/ipv4/ip_forward vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
			kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
			echo "$k=$(cat "/proc/sys/$k")"
		done
		echo "== cgroups"
		for h in /sys/fs/cgroup/*/; do ls -d "$h"k8s-testbed "$h"kubepods 2>/dev/null || true; done
		echo "== files"
		find /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd/s 2>/dev/null || true
		echo "== dirs"
		ls -d /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /etc/cni 2>/dev/null || true
		echo "== processes"
		# (Not zombies: init reaps the daemons a moment after they exit.)
		ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 ~ /^(etcd|kube-|kubelet|containerd|kwok|hello|pause)/ { print $2 }' | sort
	} 2>&1
}
before=$(snapshot)
if [ $want_down -eq 1 ] && "$testbed" status 2>/dev/null; then
	fail "--down compares the host with how it was before up: run it with the cluster down"
fi

mark
"$testbed" up
say "up took $(since)"
eval "$("$testbed" env)"
"$testbed" status

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -static -Os -s -o "$work/hello" "$here/hello.c"
"$testbed" image example.test/k8s-testbed-hello:1 "$work/hello" "$work/hello.tar"
ctr images import "$work/hello.tar" >/dev/null
say "imported example.test/k8s-testbed-hello:1 ($(du -h "$work/hello.tar" | cut -f1))"

cat >"$work/pod.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: smoke-hello
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hello
    image: example.test/k8s-testbed-hello:1
    imagePullPolicy: Never
    ports:
    - containerPort: 8080
    resources:
      requests: {cpu: 500m, memory: 32Mi}
      limits: {cpu: 500m, memory: 32Mi}
EOF
mark
kubectl apply -f "$work/pod.yaml"
kubectl wait --for=condition=Ready pod/smoke-hello --timeout=120s
say "pod Running and Ready $(since) after create"
# A Guaranteed pod: the kubelet asks for oom_score_adj -997, which this host
# refuses; containerd's restrict_oom_score_adj makes it 0.
cid=$(kubectl get pod smoke-hello -o jsonpath='{.status.containerStatuses[0].containerID}')
pid=$(ctr tasks ls | awk -v id="${cid#containerd://}" '$1 == id { print $2 }')
say "the container's process $pid has oom_score_adj $(cat "/proc/$pid/oom_score_adj")"
ip=$(kubectl get pod smoke-hello -o jsonpath='{.status.podIP}')
say "pod IP $ip"
# Only ever to the pod's own address on the test bed's bridge.
route=$(ip route get "$ip")
case $route in
*" dev k8stb0 "*) ;;
*) fail "$ip is not routed to the bridge k8stb0: $route" ;;
esac
answer=$(curl -fsS --max-time 5 "http://$ip:8080/")
[ "$answer" = "hello from smoke-hello" ] || fail "the pod answered: $answer"
say "the pod answered from the host: $answer"
kubectl logs smoke-hello
kubectl get pod smoke-hello -o wide
mark
kubectl delete pod smoke-hello --wait --timeout=60s
say "deleted in $(since)"

if [ "$kwok_nodes" -gt 0 ]; then
	kwok=$("$testbed" bin kwok)
	kwok_log=$work/kwok.log
	kwok_args=(--kubeconfig "$(dirname "$KUBECONFIG")/kwok.kubeconfig"
		--manage-all-nodes=false
		--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
		--manage-nodes-with-label-selector=
		--cidr=10.245.0.1/16 --node-ip=10.245.0.1 --node-lease-duration-seconds=40)
	say "running: $kwok ${kwok_args[*]}"
	"$kwok" "${kwok_args[@]}" >"$kwok_log" 2>&1 &
	kwok_pid=$!
	mark
	for i in $(seq 1 "$kwok_nodes"); do
		cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
---
EOF
	done | kubectl apply -f - >/dev/null
	kubectl wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null
	say "$kwok_nodes fake nodes Ready in $(since)"
	mark
	for i in $(seq 1 "$kwok_nodes"); do
		cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: fake-pod-$i
  labels:
    app: kwok-smoke
spec:
  nodeName: kwok-node-$i
  tolerations:
  - key: kwok.x-k8s.io/node
    operator: Exists
  containers:
  - name: fake
    image: example.test/none:1
---
EOF
	done | kubectl apply -f - >/dev/null
	kubectl wait --for=condition=Ready pod -l app=kwok-smoke --timeout=120s >/dev/null
	say "$kwok_nodes fake pods Ready in $(since)"
	kubectl get nodes | head -5
	kubectl delete pod -l app=kwok-smoke --wait --timeout=120s >/dev/null
	kubectl delete node -l type=kwok --wait --timeout=120s >/dev/null
	kill "$kwok_pid"
	wait "$kwok_pid" || true
	say "removed the fake nodes and pods; kwok stopped"
fi

if [ $want_down -eq 1 ]; then
	mark
	"$testbed" down
	say "down took $(since)"
	after=$(snapshot)
	if [ "$before" != "$after" ]; then
		diff <(echo "$before") <(echo "$after") || true
		fail "the host differs from before up"
	fi
	say "nothing left behind (links, routes, netns, mounts, iptables, sysctls, cgroups, dirs, processes)"
fi
say "OK"
