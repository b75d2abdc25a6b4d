#!/usr/bin/env bash
# Formats the C sources with the repository's .clang-format; with --check, changes nothing
# and fails (listing the files) when any file is not formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'tests/fuzz/*.c' 'bench/*.c')
if [ "${1:-}" = "--check" ]; then
  bad=$(for f in $files; do clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
  if [ -n "$bad" ]; then
    echo "not formatted (run scripts/format.sh):" $bad >&2
    exit 1
  fi
else
  clang-format -i $files
fi
