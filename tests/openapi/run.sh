#!/usr/bin/env bash
# The OpenAPI document's npm checks, run by ctest in the build dir <out>:
#   run.sh lint <out>   @redocly/cli lint with redocly.yaml (fails on any error)
#   run.sh types <out>  openapi-typescript generates <out>/labhook-api.d.ts and tsc --noEmit
#                       --strict type-checks receiver.ts against it
# The tools are the versions package-lock.json pins, installed by `npm ci` into <out> (again
# only when the lock file changed). Needs node and npm (scripts/deps.sh --test).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
doc="$here/../../docs/openapi.json"
out="$2"
mkdir -p "$out"
if ! cmp -s "$here/package-lock.json" "$out/package-lock.json.installed" ||
   [ ! -x "$out/node_modules/.bin/redocly" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$out/"
  (cd "$out" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$out/package-lock.json.installed"
fi
bin="$out/node_modules/.bin"
case "$1" in
  lint)
    "$bin/redocly" lint --config "$here/redocly.yaml" "$doc" ;;
  types)
    "$bin/openapi-typescript" "$doc" -o "$out/labhook-api.d.ts"
    cp "$here/receiver.ts" "$out/receiver.ts"
    "$bin/tsc" --noEmit --strict --target es2020 --module es2020 --moduleResolution node \
      "$out/receiver.ts" ;;
  *) echo "usage: run.sh lint|types OUTDIR" >&2; exit 2 ;;
esac
