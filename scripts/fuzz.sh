#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes each named target (all
# when none is named) for SECONDS each (default 60), one after another, starting from the
# committed seeds. New interesting inputs land in build-fuzz/corpus/<target>/, crashes in
# build-fuzz/crash-<target>-*. Stops at the first target with a finding.
#   scripts/fuzz.sh [SECONDS] [subscribe|body|jwt|retry_after|url|xff|config ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
all=(subscribe body bill lead catalog jwt retry_after url xff config)
targets=("${@:-${all[@]}}")
for t in "${targets[@]}"; do
  [[ -d tests/fuzz/seeds/$t ]] || { echo "unknown fuzz target '$t' (one of: ${all[*]})" >&2; exit 2; }
done
bash scripts/deps.sh --test
CC=clang cmake -S . -B build-fuzz -DLABHOOK_FUZZ=ON -DLABHOOK_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}"
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "== fuzz_$t for ${seconds}s"
  ./build-fuzz/tests/"fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/crash-$t-" \
    "build-fuzz/corpus/$t" "tests/fuzz/seeds/$t"
done
