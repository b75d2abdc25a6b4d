#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and fuzzes each for SECONDS (default 60), starting
# from the committed seeds. New interesting inputs land in build-fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bash scripts/deps.sh --test
CC=clang cmake -S . -B build-fuzz -DLABHOOK_FUZZ=ON -DLABHOOK_SANITIZE=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_subscribe
mkdir -p build-fuzz/corpus/subscribe
./build-fuzz/tests/fuzz_subscribe -max_total_time="$seconds" -max_len=65536 \
  build-fuzz/corpus/subscribe tests/fuzz/seeds/subscribe
