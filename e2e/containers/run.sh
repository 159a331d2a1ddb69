#!/usr/bin/env bash
# Container end-to-end test: the real images on a real container network.
#
#   scheduler  +  node-0, node-1 (engine sim)  +  one workload generator run
#
# Builds the three images (Podman, or Docker when an engine answers), starts the stack with the
# chart's hardening (read-only root, no capabilities, no new privileges, non-root user), runs the
# generator to completion, then asserts: the generator exits 0, every turn completed, the
# scheduler and both nodes serve /metrics with the symphony_* series and counted the turns, the
# images' HEALTHCHECKs pass, and SIGTERM stops every server with exit code 0.
#
# Needs root on a Debian-like machine (installs podman, runc, mmdebstrap when missing). Idempotent;
# removes its containers and network on exit, even on failure. Outputs: .e2e/containers/.
# Knobs: CLIENTS (8), DURATION (40 s of sending), TIME_SCALE (10), KEEP=1 keeps the stack up,
# E2E_SOURCE=head builds the images from the last commit instead of the working tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
source e2e/containers/lib.sh

PREFIX=symphony-e2e
NET="$PREFIX-net"
TAG="${IMAGE_TAG:-e2e}"
IMG="localhost/symphony-"
CLIENTS="${CLIENTS:-8}"
DURATION="${DURATION:-40}"
TIME_SCALE="${TIME_SCALE:-10}"
OUT="$root/.e2e/containers"
NODES=(node-0 node-1)
CONTAINERS=("$PREFIX-scheduler" "${NODES[@]/#/$PREFIX-}" "$PREFIX-workloadgen")

log() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

install_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [[ ${#missing[@]} -gt 0 ]] && ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
    [[ $EUID -eq 0 ]] || fail "run as root (or install: ${missing[*]})"
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

remove_stack() {
  engine rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
  engine network rm -f "$NET" >/dev/null 2>&1 || true
}

collect_logs() {
  mkdir -p "$OUT/logs"
  for c in "${CONTAINERS[@]}"; do
    engine logs "$c" >"$OUT/logs/${c#"$PREFIX-"}.log" 2>&1 || true
  done
}

on_exit() {
  local rc=$?
  collect_logs
  if [[ $rc -ne 0 ]]; then
    echo "e2e-containers FAILED (exit $rc); container logs in $OUT/logs/" >&2
    for f in "$OUT"/logs/*.log; do
      [[ -s "$f" ]] && { echo "--- tail of $f" >&2; tail -n 25 "$f" >&2; }
    done
  fi
  [[ "${KEEP:-0}" == 1 ]] || remove_stack
  exit $rc
}

# Every server runs as the chart runs it: read-only root, /tmp as the only writable place.
# shellcheck disable=SC2054  # the comma is part of the tmpfs option
hardened=(--read-only --tmpfs /tmp:rw,size=256m --cap-drop ALL --security-opt no-new-privileges)
[[ "$(detect_engine 2>/dev/null || true)" == podman ]] && hardened+=(--ulimit host)

probe() {  # probe.py from a throw-away container on the stack's network
  engine run --rm --no-healthcheck --network "$NET" "${hardened[@]}" -v "$root/e2e/containers/probe.py:/probe.py:ro" \
    --entrypoint python3 "${IMG}workloadgen:$TAG" /probe.py "$@"
}

exit_code() { engine inspect -f '{{.State.ExitCode}}' "$1"; }

main() {
  local t0=$SECONDS
  install_tools
  trap on_exit EXIT
  rm -rf "$OUT" && mkdir -p "$OUT/run"
  remove_stack  # leftovers of an interrupted run

  log "base image"
  e2e/containers/base-image.sh
  log "images (tag $TAG, sources: ${E2E_SOURCE:-worktree})"
  local src="$root"
  if [[ "${E2E_SOURCE:-worktree}" == head ]]; then
    src="$OUT/src"
    mkdir -p "$src" && git archive HEAD | tar -x -C "$src"
    REVISION="$(git rev-parse --short HEAD)"
    export REVISION
  fi
  IMAGE_PREFIX="$IMG" IMAGE_TAG="$TAG" "$src/docker/build.sh"
  echo "images built in $((SECONDS - t0)) s"

  log "network $NET, scheduler, ${#NODES[@]} sim node schedulers"
  engine network create "$NET" >/dev/null
  # (Podman without systemd logs that it cannot schedule health checks: they run explicitly below.)
  engine run -d --name "$PREFIX-scheduler" --network "$NET" "${hardened[@]}" "${IMG}scheduler:$TAG" \
    --listen 0.0.0.0:50051 --http-listen 0.0.0.0:8080 --policy symphony \
    --heartbeat-interval 0.5 --lease 5.0 --log-level info >/dev/null 2>>"$OUT/engine.log"
  for node in "${NODES[@]}"; do
    engine run -d --name "$PREFIX-$node" --network "$NET" "${hardened[@]}" "${IMG}nodesched:$TAG" \
      --node-id "$node" --listen 0.0.0.0:50061 --advertise "$PREFIX-$node:50061" \
      --scheduler "$PREFIX-scheduler:50051" --engine sim --profile cpu-tiny/test \
      --time-scale "$TIME_SCALE" --metrics-listen 0.0.0.0:9100 --disk-dir /tmp/kv --log-level info >/dev/null 2>>"$OUT/engine.log"
  done
  local sched="http://$PREFIX-scheduler:8080"
  probe ready "$sched/readyz" --timeout 120
  probe metric "$sched/metrics" symphony_nodes_healthy --min "${#NODES[@]}" --timeout 60

  log "workload: $CLIENTS clients, synthetic dataset, ${DURATION} s, time scale $TIME_SCALE"
  chown 10001:10001 "$OUT/run" 2>/dev/null || chmod 0777 "$OUT/run"  # the images run as uid 10001
  engine run -d --no-healthcheck --name "$PREFIX-workloadgen" --network "$NET" "${hardened[@]}" \
    -v "$OUT/run:/out" "${IMG}workloadgen:$TAG" \
    --scheduler-ip "$PREFIX-scheduler" --scheduler-port 50051 --num-clients "$CLIENTS" \
    --dataset synthetic --time-scale "$TIME_SCALE" --duration "$DURATION" --seed 7 \
    --out /out --progress-interval 5 >/dev/null
  local wg_rc
  wg_rc="$(engine wait "$PREFIX-workloadgen")"
  engine logs "$PREFIX-workloadgen" 2>&1 | grep -v ' INFO ' || true
  [[ $wg_rc -eq 0 ]] || fail "the workload generator exited $wg_rc (0 means every turn completed)"
  [[ -s "$OUT/run/summary.json" ]] || fail "no summary.json written"
  local ok failed
  read -r ok failed < <(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["turns"]; print(t["ok"], t["failed"])' "$OUT/run/summary.json")
  [[ "$failed" -eq 0 ]] || fail "$failed turns failed"
  [[ "$ok" -gt 0 ]] || fail "no turn completed"
  echo "ok: $ok turns completed, 0 failed"

  log "gRPC health and metrics of every server"
  probe grpc-health "$PREFIX-scheduler:50051"
  for node in "${NODES[@]}"; do probe grpc-health "$PREFIX-$node:50061"; done
  probe metrics "$sched/metrics" symphony_turns_total symphony_routing_decisions_total \
    symphony_nodes_healthy symphony_sessions_active symphony_turn_ttft_seconds symphony_advisories_total
  # The scheduler saw at least every turn the generator completed, and routed them.
  probe metric "$sched/metrics" symphony_turns_total --min "$ok" --timeout 10
  probe metric "$sched/metrics" symphony_routing_decisions_total --min 1 --timeout 10
  for node in "${NODES[@]}"; do
    probe metrics "http://$PREFIX-$node:9100/metrics" symphony_kv_tier_used_bytes \
      symphony_engine_requests_running symphony_kv_transfers_total symphony_recomputed_prompt_tokens_total
  done

  if [[ "$(detect_engine)" == podman ]]; then
    log "image health checks"
    for c in "$PREFIX-scheduler" "${NODES[@]/#/$PREFIX-}"; do
      engine healthcheck run "$c" 2>/dev/null || fail "health check of $c failed"
      echo "ok: $c healthy"
    done
  fi

  log "graceful shutdown (SIGTERM)"
  for c in "${NODES[@]/#/$PREFIX-}" "$PREFIX-scheduler"; do
    engine stop -t 20 "$c" >/dev/null
    [[ "$(exit_code "$c")" == 0 ]] || fail "$c exited $(exit_code "$c") on SIGTERM"
    echo "ok: $c exited 0"
  done

  collect_logs
  echo "e2e-containers PASSED in $((SECONDS - t0)) s ($ok turns, outputs in $OUT)"
}

main "$@"
