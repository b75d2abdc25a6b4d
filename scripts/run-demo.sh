#!/usr/bin/env bash
# Sets up everything on Debian 12 (as root), builds labhook and runs `labhook serve` on its
# embedded default (SQLite in ./var) with demo accounts printed on the console.
# Extra arguments go to `labhook serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLABHOOK_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)"
exec ./build-release/labhook serve --demo "$@"
