#!/usr/bin/env bash
# The Kubernetes runtime against a real cluster (kind, k3d or any other),
# the one KUBECONFIG (or ~/.kube/config) points at: a run's output, exit
# code and cleanup, a strict run's NetworkPolicy holding its egress, and
# the namespace's proxy: a grant injected by it (the pod never holds the
# credential), a strict rule, the trace back in network.jsonl.
# Skipped, with a message, when no cluster is configured. Not part of
# scripts/test.sh (no cluster on moat's CI machine). docs/kubernetes.md.
#
#   MOAT_K8S_NAMESPACE  namespace to create and delete (default moat-e2e)
#   MOAT_K8S_IMAGE      an image the nodes can pull (default busybox:1.36)
#   MOAT_K8S_PROXY_IMAGE the proxy's image, holding moatd, that the nodes can
#                       pull; default: built by scripts/proxy-image.sh and
#                       loaded with `kind load` or `k3d image import` when
#                       one of them is installed; else the proxy scenario is
#                       skipped with a message
#   MOAT_K8S_CURL_IMAGE an image with curl (default curlimages/curl:8.10.1)
#   MOAT_K8S_ECHO_HOST  an HTTPS service echoing request headers as JSON,
#                       reachable from the cluster (default postman-echo.com)
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
repo="$PWD"
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
moat="$bin/moat"

cleanup() {
  "$moat" daemon stop >/dev/null 2>&1 || true
  kubectl delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT

cargo build --quiet -p moat -p moat-daemon
export MOAT_DAEMON_EXECUTABLE="$bin/moatd"

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

proxy_image="${MOAT_K8S_PROXY_IMAGE:-}"
if [[ -z "$proxy_image" ]]; then
  proxy_image="moat-proxy:$("$moat" --version | awk '{print $2}')"
  if command -v kind >/dev/null; then
    "$repo/scripts/proxy-image.sh" "$proxy_image" && kind load docker-image "$proxy_image"
  elif command -v k3d >/dev/null; then
    "$repo/scripts/proxy-image.sh" "$proxy_image" && k3d image import "$proxy_image"
  else
    echo "k8s-e2e: proxy scenario skipped: set MOAT_K8S_PROXY_IMAGE to a moat proxy image the nodes can pull"
    echo "k8s-e2e: passed"
    exit 0
  fi
fi
curl_image="${MOAT_K8S_CURL_IMAGE:-curlimages/curl:8.10.1}"
echo_host="${MOAT_K8S_ECHO_HOST:-postman-echo.com}"
credential="moat-e2e-credential-$RANDOM$RANDOM"
mkdir -p "$MOAT_HOME/providers"
cat >"$MOAT_HOME/providers/echo.yaml" <<YAML
name: echo
hosts: ["$echo_host"]
header: Authorization
prefix: "Bearer "
placeholder: moat-echo-placeholder-0000000000
env: ECHO_TOKEN
YAML
printf '%s\n' "$credential" | "$moat" grant echo >/dev/null
cat >"$scratch/ws/moat.yaml" <<YAML
runtime: kubernetes
kubernetes:
  namespace: $namespace
  workspace_claim: workspace
  proxy_image: $proxy_image
grants: [echo]
network:
  policy: strict
YAML

echo "k8s-e2e: a strict run's grant is injected by the namespace's proxy"
set +e
output="$("$moat" run --trust --image "$curl_image" -- sh -c \
  "env | grep -c '$credential'; curl -sS https://$echo_host/headers; echo; curl -sS -o /dev/null -w 'other=%{http_code}\n' https://example.com" 2>&1)"
set -e
[[ "$output" == 0* ]] || fail "the credential is in the pod's environment: $output"
[[ "$output" == *"Bearer $credential"* ]] || fail "the credential was not injected: $output"
[[ "$output" != *other=200* ]] || fail "a strict run reached example.com through the proxy: $output"
run_id="$(ls -t "$MOAT_HOME/runs" | head -n1)"
grep -q "$echo_host" "$MOAT_HOME/runs/$run_id/network.jsonl" || fail "no trace of $echo_host in network.jsonl"
if grep -rq "$credential" "$MOAT_HOME/runs"; then fail "the credential is in the run's records"; fi
if kubectl -n "$namespace" get pods,secrets,configmaps -o yaml | grep -q "$credential"; then
  fail "the credential is in an object of the cluster"
fi

echo "k8s-e2e: passed"
