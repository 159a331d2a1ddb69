#!/usr/bin/env bash
# Makes sure Debian's Prometheus (2.42 on bookworm) is installed; CI runs this as root on a fresh
# machine. The package's service is not started: the test runs its own Prometheus.
set -euo pipefail
if command -v prometheus >/dev/null; then
  prometheus --version 2>&1 | head -1
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "error: prometheus is not installed and this is not root: apt-get install prometheus" >&2; exit 1; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version 2>&1 | head -1
