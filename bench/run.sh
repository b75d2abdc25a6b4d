#!/usr/bin/env bash
# run.sh: the one entry point of labhook's benchmarks (also what `make -C bench` runs).
# Installs the Debian packages, builds labhook (Release, build-bench/) and the load
# generator, then hands over to bench.py, which owns every process it starts and stops
# them all on exit, failure or signal. Talks only to 127.0.0.1.
# Usage (root, Debian 12): bash bench/run.sh [main|backlog|pg|all]   settings: bench/README.md
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
scenario=${1:-main}
case $scenario in
main | backlog | pg | all) ;;
*)
	echo "usage: bash bench/run.sh [main|backlog|pg|all]" >&2
	exit 2
	;;
esac

step() { printf '== %s\n' "$*" >&2; }

step "Debian packages"
bash "$root/scripts/deps.sh"
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
for tool in openssl python3 pkg-config; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
# The pg scenario (and all) start a throwaway PostgreSQL 15 server; pg_stat_statements ships
# with it (no separate contrib package on Debian 12).
if [ "$scenario" = pg ] || [ "$scenario" = all ]; then
	[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
fi
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "build labhook (Release) and the load generator"
cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release -DLABHOOK_TESTS=OFF \
	>/dev/null
cmake --build "$root/build-bench" -j"$(nproc)" >/dev/null
make -s -C "$here" loadgen >/dev/null

# bench.py replaces this shell, so its cleanup (signal handlers + finally) is the trap.
exec python3 "$here/bench.py" "$scenario"
