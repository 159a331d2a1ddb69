#!/usr/bin/env bash
# Build the component images with whichever engine exists (a Docker engine, else Podman).
# Usage: docker/build.sh [component ...]   (default: scheduler nodesched workloadgen)
# Environment: IMAGE_PREFIX (default localhost/symphony-), IMAGE_TAG (default dev),
#   PYTHON_IMAGE (base image override), CONTAINER_ENGINE (force docker|podman),
#   REVISION (the org.opencontainers.image.revision label; default: git HEAD).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source e2e/containers/lib.sh

prefix="${IMAGE_PREFIX:-localhost/symphony-}"
tag="${IMAGE_TAG:-dev}"
components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(scheduler nodesched workloadgen)
eng="$(detect_engine)"
revision="${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"

args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
[[ -n "${PYTHON_IMAGE:-}" ]] && args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
if [[ "$eng" == podman ]]; then
  # Docker format keeps HEALTHCHECK; host networking and an explicit ulimit let pip reach PyPI
  # on runners where the default bridge or ulimits are unavailable during builds.
  args+=(--format docker --network=host --ulimit nofile=20000:20000)
fi

for c in "${components[@]}"; do
  [[ -f "docker/$c.Dockerfile" ]] || { echo "error: no docker/$c.Dockerfile (components: scheduler nodesched workloadgen)" >&2; exit 2; }
  echo "==> $eng build $prefix$c:$tag"
  ignore=()
  # BuildKit reads docker/<name>.Dockerfile.dockerignore by itself; Podman is told explicitly.
  [[ "$eng" == podman ]] && ignore=(--ignorefile "docker/$c.Dockerfile.dockerignore")
  engine build "${args[@]}" "${ignore[@]}" -f "docker/$c.Dockerfile" -t "$prefix$c:$tag" .
done
