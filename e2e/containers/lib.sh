# shellcheck shell=bash
# Shared helpers of the container scripts: which engine to use and how to call it.
# Sourced, not executed. Podman gets the runc runtime and the cgroupfs settings of containers.conf,
# which work on CI runners where crun and the systemd cgroup manager do not.

E2E_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Print "docker" when a Docker engine answers, else "podman" when installed; fail otherwise.
detect_engine() {
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    echo "error: neither a Docker engine nor podman is available" >&2
    return 1
  fi
}

# Run the engine with the flags this machine needs (`engine build ...`, `engine run ...`).
engine() {
  local eng
  eng="$(detect_engine)" || return 1
  if [[ "$eng" == podman ]]; then
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$E2E_LIB_DIR/containers.conf}"
    local runtime=()
    if [[ -n "${PODMAN_RUNTIME:-}" ]]; then
      runtime=(--runtime "$PODMAN_RUNTIME")
    elif command -v runc >/dev/null 2>&1; then
      runtime=(--runtime runc)
    fi
    podman "${runtime[@]}" "$@"
  else
    "$eng" "$@"
  fi
}
