#!/usr/bin/env bash
# Provide the Dockerfiles' base image: pull it when a registry is reachable; otherwise make it
# locally (machines without registry access): a Debian bookworm root with python3 3.11 from
# mmdebstrap, tagged with the official image's name so the very same Dockerfiles build.
# Idempotent: does nothing when the tag exists. The local path needs root and podman
# (apt-get installs mmdebstrap when missing).
set -euo pipefail
# shellcheck source=e2e/containers/lib.sh
source "$(dirname "$0")/lib.sh"

BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
SUITE="${SUITE:-bookworm}"

if engine image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE already present"
  exit 0
fi
if engine pull "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "pulled $BASE_IMAGE"
  exit 0
fi
echo "cannot pull $BASE_IMAGE: making a stand-in locally"
command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ca_bundle=/etc/ssl/certs/ca-certificates.crt
hooks=()
# Carry the host's CA bundle in, so pip inside the build trusts whatever the host's TLS trusts.
[[ -f "$ca_bundle" ]] && hooks=(--customize-hook="copy-in $ca_bundle /etc/ssl/certs/")
echo "building $BASE_IMAGE with mmdebstrap ($SUITE)"
mmdebstrap --quiet --variant=apt \
  --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  "${hooks[@]}" "$SUITE" "$work/base.tar"
engine import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV PIP_CERT=$ca_bundle" \
  --change 'CMD ["python3"]' \
  "$work/base.tar" "$BASE_IMAGE"
