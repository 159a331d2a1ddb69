#!/usr/bin/env bash
# kind end-to-end test: a real Kubernetes cluster (kind), the real images, `helm install` of the
# chart with engine: sim, the workload generator Job, then assertions on the Job's summary and on
# the scheduler's and node schedulers' /metrics (read through the API server's proxy).
#
# Needs a Docker engine, kind, kubectl and helm (the GitHub workflow .github/workflows/e2e-kind.yml
# provides them). It cannot run on a machine without a container engine that kind supports; the
# parts that can (chart rendering, images, containers) are `make test-chart` and
# `make e2e-containers`. Idempotent; deletes its cluster on exit unless KEEP=1.
# Outputs and diagnostics: .e2e/kind/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

CLUSTER="${CLUSTER:-symphony-e2e}"
NS="${NAMESPACE:-symphony}"
RELEASE="${RELEASE:-sym}"
TAG=dev
OUT="$root/.e2e/kind"
FULL="$RELEASE-symphony"
NODES=2

log() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

missing=()
for tool in docker kind kubectl helm; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[[ ${#missing[@]} -eq 0 ]] || fail "missing tools: ${missing[*]} (see docs/kubernetes.md, 'Testing on kind')"
docker info >/dev/null 2>&1 || fail "no Docker engine answers; kind needs one"

diagnostics() {
  mkdir -p "$OUT"
  kubectl -n "$NS" get all -o wide >"$OUT/resources.txt" 2>&1 || true
  kubectl -n "$NS" describe pods >"$OUT/pods.txt" 2>&1 || true
  kubectl -n "$NS" get events --sort-by=.lastTimestamp >"$OUT/events.txt" 2>&1 || true
  for pod in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
    kubectl -n "$NS" logs "$pod" --all-containers --prefix >"$OUT/${pod#pod/}.log" 2>&1 || true
  done
}

on_exit() {
  local rc=$?
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    diagnostics
    [[ $rc -eq 0 ]] || { echo "e2e-kind FAILED (exit $rc); diagnostics in $OUT" >&2; tail -n 30 "$OUT"/*.log >&2 || true; }
    [[ "${KEEP:-0}" == 1 ]] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap on_exit EXIT

rm -rf "$OUT" && mkdir -p "$OUT"
log "kind cluster $CLUSTER"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
image=()
[[ -n "${KIND_NODE_IMAGE:-}" ]] && image=(--image "$KIND_NODE_IMAGE")  # e.g. kindest/node:v1.33.1
kind create cluster --name "$CLUSTER" --config e2e/kind/cluster.yaml "${image[@]}" --wait 180s

log "images"
IMAGE_PREFIX=symphony- IMAGE_TAG="$TAG" CONTAINER_ENGINE=docker docker/build.sh
for c in scheduler nodesched workloadgen; do
  kind load docker-image "symphony-$c:$TAG" --name "$CLUSTER"
done

log "helm install (engine: sim)"
helm lint charts/symphony -f charts/symphony/ci/sim-values.yaml --strict
helm upgrade --install "$RELEASE" charts/symphony --namespace "$NS" --create-namespace \
  -f charts/symphony/ci/sim-values.yaml --wait --timeout 5m
kubectl -n "$NS" rollout status "daemonset/$FULL-nodesched" --timeout 3m
kubectl -n "$NS" wait --for=condition=Available "deployment/$FULL-scheduler" --timeout 3m

log "helm test"
helm test "$RELEASE" --namespace "$NS" --logs --timeout 3m

log "workload generator Job"
job="job/$FULL-workloadgen"
deadline=$((SECONDS + 900))
until kubectl -n "$NS" wait --for=condition=Complete "$job" --timeout 10s >/dev/null 2>&1; do
  if kubectl -n "$NS" wait --for=condition=Failed "$job" --timeout 1s >/dev/null 2>&1; then
    kubectl -n "$NS" logs "$job" --all-containers >&2 || true
    fail "the workload generator Job failed (a turn failed or it could not run)"
  fi
  [[ $SECONDS -lt $deadline ]] || fail "the workload generator Job did not finish in 15 minutes"
done
kubectl -n "$NS" logs "$job" -c workloadgen >"$OUT/workloadgen.log"
summary="$(grep -E '^turns: [0-9]+ ok, [0-9]+ failed' "$OUT/workloadgen.log" | tail -1)"
[[ -n "$summary" ]] || fail "no summary line in the Job's log"
echo "$summary"
ok="$(sed -E 's/^turns: ([0-9]+) ok.*/\1/' <<<"$summary")"
failed="$(sed -E 's/^turns: [0-9]+ ok, ([0-9]+) failed.*/\1/' <<<"$summary")"
[[ "$failed" -eq 0 ]] || fail "$failed turns failed"
[[ "$ok" -gt 0 ]] || fail "no turn completed"

log "metrics"
metric_sum() {  # metric_sum <raw API path> <metric name>: sum of the samples
  kubectl get --raw "$1" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { print s + 0 }'
}
sched="/api/v1/namespaces/$NS/services/$FULL-scheduler:http/proxy/metrics"
healthy="$(metric_sum "$sched" symphony_nodes_healthy)"
[[ "${healthy%.*}" -eq $NODES ]] || fail "scheduler sees $healthy healthy nodes, expected $NODES"
routed="$(metric_sum "$sched" symphony_routing_decisions_total)"
[[ "${routed%.*}" -ge "$ok" ]] || fail "scheduler counted $routed routing decisions for $ok turns"
echo "ok: scheduler: $healthy nodes healthy, $routed routing decisions"
for pod in $(kubectl -n "$NS" get pods -l app.kubernetes.io/component=nodesched -o name); do
  text="$(kubectl get --raw "/api/v1/namespaces/$NS/pods/${pod#pod/}:9100/proxy/metrics")"
  grep -q '^# TYPE symphony_kv_tier_used_bytes gauge' <<<"$text" || fail "$pod /metrics lacks symphony_kv_tier_used_bytes"
  echo "ok: $pod serves /metrics"
done
echo "e2e-kind PASSED ($ok turns)"
