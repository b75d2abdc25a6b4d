#!/usr/bin/env bash
# Sets up everything on Debian 12 (as root), builds labhook with AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs every test: unit, fuzz-seed replay, integration.
# Then the whole suite again on a ThreadSanitizer build (a race aborts the process, so the
# test that hit it fails). Ends with ctest's summary line; exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test
bash scripts/format.sh --check
# The optimised build first: -O2 finds warnings (hence errors) that -O0 does not.
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLABHOOK_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)"
cmake -S . -B build-test -DLABHOOK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-test -j"$(nproc)"
cd build-test
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --output-on-failure -j2 --timeout 600
cd ..
cmake -S . -B build-tsan -DLABHOOK_TSAN=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$(nproc)"
cd build-tsan
unset ASAN_OPTIONS UBSAN_OPTIONS
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
ctest --output-on-failure -j2 --timeout 600
