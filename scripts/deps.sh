#!/usr/bin/env bash
# Installs the Debian 12 packages labhook needs to build, run and test.
# Usage: scripts/deps.sh [--test]   (as root; --test adds the test, fuzz and packaging tooling:
# debhelper, lintian and fakeroot for make deb; systemd for systemd-analyze verify; groff-base
# and man-db to check the man page; python3-jsonschema for the OpenAPI check of the integration
# suite; chromium for the console's browser tests; node and npm for the OpenAPI lint and type
# generation and the browser tests, from Debian unless a node is installed already, since
# nodesource's nodejs conflicts with Debian's npm)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libmicrohttpd-dev libcurl4-openssl-dev
      libjansson-dev libsqlite3-dev libpq-dev libssl-dev libjwt-dev libsystemd-dev curl
      ca-certificates jq)
if [ "${1:-}" = "--test" ]; then
  # prometheus: promtool, with which test_metrics.py checks the /metrics exposition
  pkgs+=(git libcmocka-dev python3 openssl clang libclang-rt-14-dev clang-format postgresql-15
         debhelper lintian fakeroot systemd groff-base man-db adduser prometheus
         python3-jsonschema chromium)
  if ! command -v node >/dev/null; then
    pkgs+=(nodejs npm)
  fi
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
