#!/usr/bin/env bash
# The Kubernetes runtime against a real cluster (kind, k3d or any other),
# the one KUBECONFIG (or ~/.kube/config) points at: a run's output, exit
# code and cleanup, and a strict run's NetworkPolicy holding its egress.
# Skipped, with a message, when no cluster is configured. Not part of
# scripts/test.sh (no cluster on moat's CI machine). docs/kubernetes.md.
#
#   MOAT_K8S_NAMESPACE  namespace to create and delete (default moat-e2e)
#   MOAT_K8S_IMAGE      an image the nodes can pull (default busybox:1.36)
set -euo pipefail
cd "$(dirname "$0")/.."

kubeconfig="${KUBECONFIG:-$HOME/.kube/config}"
if [[ ! -f "$kubeconfig" ]]; then
  echo "k8s-e2e: skipped: no kubeconfig (set KUBECONFIG to a cluster's, e.g. from \`kind create cluster\`)"
  exit 0
fi
if ! command -v kubectl >/dev/null; then
  echo "k8s-e2e: skipped: kubectl is needed to prepare the namespace and check the objects"
  exit 0
fi
if ! kubectl version --request-timeout=10s >/dev/null 2>&1; then
  echo "k8s-e2e: skipped: the cluster of $kubeconfig does not answer"
  exit 0
fi

namespace="${MOAT_K8S_NAMESPACE:-moat-e2e}"
image="${MOAT_K8S_IMAGE:-busybox:1.36}"
scratch="$(mktemp -d)"
export MOAT_HOME="$scratch/home"

cleanup() {
  target/debug/moat daemon stop >/dev/null 2>&1 || true
  kubectl delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT

cargo build --quiet -p moat -p moat-daemon
export MOAT_DAEMON_EXECUTABLE="$PWD/target/debug/moatd"
moat="$PWD/target/debug/moat"

kubectl create namespace "$namespace" >/dev/null
kubectl -n "$namespace" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: workspace}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
YAML

mkdir -p "$scratch/ws"
cat >"$scratch/ws/moat.yaml" <<YAML
runtime: kubernetes
kubernetes:
  namespace: $namespace
  workspace_claim: workspace
YAML
cd "$scratch/ws"

fail() { echo "k8s-e2e: FAIL: $*" >&2; exit 1; }

echo "k8s-e2e: a run's output and exit code"
set +e
output="$("$moat" run --image "$image" --policy permissive -- sh -c 'echo hello-from-the-cluster; exit 3' 2>&1)"
code=$?
set -e
[[ "$output" == *hello-from-the-cluster* ]] || fail "the output did not come back: $output"
[[ $code -eq 3 ]] || fail "exit code $code, expected 3: $output"

echo "k8s-e2e: the run's objects are removed"
for _ in $(seq 1 30); do
  left="$(kubectl -n "$namespace" get pods,configmaps,secrets,networkpolicies -l dev.moat.managed=true -o name)"
  [[ -z "$left" ]] && break
  sleep 1
done
[[ -z "$left" ]] || fail "objects left after the run: $left"

echo "k8s-e2e: a strict run cannot reach the internet"
set +e
output="$("$moat" run --image "$image" --policy strict -- sh -c 'wget -q -T 5 -O /dev/null http://example.com && echo REACHED' 2>&1)"
set -e
if [[ "$output" == *REACHED* ]]; then
  fail "a strict run reached example.com: does the cluster's network plugin enforce NetworkPolicies?"
fi

echo "k8s-e2e: passed"
