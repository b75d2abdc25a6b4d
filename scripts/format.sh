#!/usr/bin/env bash
# Formats the C sources with the repository's .clang-format; with --check, changes nothing
# and fails (listing the files) when any file is not formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tracked files in a clone; in a source tarball (no .git, maybe no git) the same
# folders as found on disk, build directories being elsewhere.
if [ -e .git ] && command -v git >/dev/null; then
  files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'tests/fuzz/*.c' 'bench/*.c')
else
  files=$(find src tests/unit tests/fuzz bench -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' \) \
    ! -path 'tests/unit/*.h' ! -path 'tests/fuzz/*.h' ! -path 'bench/*.h' | LC_ALL=C sort)
fi
if [ "${1:-}" = "--check" ]; then
  bad=$(for f in $files; do clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
  if [ -n "$bad" ]; then
    echo "not formatted (run scripts/format.sh):" $bad >&2
    exit 1
  fi
else
  clang-format -i $files
fi
