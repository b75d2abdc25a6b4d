#!/usr/bin/env bash
# Runs the console's browser tests (console.test.mjs): installs the pinned puppeteer-core
# from package-lock.json first when node_modules does not hold exactly that (npm ci; npm's
# cache makes it offline after the first time). Needs node, npm and Debian's chromium
# (scripts/deps.sh --test). Arguments go to node --test (e.g. --test-name-pattern=operator).
set -euo pipefail
cd "$(dirname "$0")"
for tool in node npm "${CHROMIUM:-/usr/bin/chromium}"; do
  command -v "$tool" >/dev/null || { echo "browser tests: $tool not found; run scripts/deps.sh --test" >&2; exit 1; }
done
if ! cmp -s package-lock.json node_modules/.labhook-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --prefer-offline --loglevel=error
  cp package-lock.json node_modules/.labhook-lock
fi
exec node --test --test-concurrency=1 "$@" console.test.mjs
