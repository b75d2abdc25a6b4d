#!/usr/bin/env bash
# Sets up everything on Debian 12 (as root), builds labhook, installs it as
# /usr/local/bin/labhook (cmake --install, so the docs' `labhook ...` commands work as
# written) and runs `labhook serve` on its embedded default (SQLite in ./var) with demo
# accounts printed on the console. Not root: nothing is installed; run ./build-release/labhook.
# Extra arguments go to `labhook serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLABHOOK_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)"
if [ "$(id -u)" -eq 0 ]; then
  cmake --install build-release >/dev/null
  echo "run-demo: installed $(command -v labhook) (and labhook(8))"
else
  echo "run-demo: not root, so labhook is not installed: the docs' 'labhook' is ./build-release/labhook"
fi
exec ./build-release/labhook serve --demo "$@"
