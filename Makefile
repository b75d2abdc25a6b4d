# Shortcuts from the repository root; the build itself is CMake (see README.md).
#   make bench           the whole benchmark (bench/README.md): the ceiling, labhook end to end,
#                        1,000,000 pending deliveries across a restart, then the PostgreSQL
#                        runs of bench-pg (about 9 min), then what one metrics count costs
#                        (bench/metrics_cost.c)
#   make bench-quick     without the 1,000,000 backlog (about 70 s)
#   make bench-backlog   only the backlog scenario
#   make bench-pg        SQLite, one node on PostgreSQL and two nodes on one PostgreSQL side by
#                        side, and the takeover after a SIGKILL (about 3.5 min); ends with its
#                        summary line and which of issue 13's targets are met
#   make test            what CI runs (scripts/test.sh)
#   make deb             labhook_<version>_<arch>.deb into build-deb/ with debhelper
#                        (packaging/build-deb.sh; docs/operations.md, "Installing the
#                        Debian package"); DEB_OUT=dir for another directory
#   make soak            a hundred SIGKILLs under load (tests/integration/test_kill.py, with the
#                        sanitizer build; about 3 min); prints the count lost (must be 0) and
#                        the duplicates. KILLS=n for another count.
MAKEFLAGS += --no-print-directory

.PHONY: bench bench-quick bench-backlog bench-pg test soak deb

KILLS ?= 100

bench:
	@$(MAKE) -s -C bench all-scenarios
	@$(MAKE) -s -C bench metrics-cost

bench-quick:
	@$(MAKE) -s -C bench run

bench-backlog:
	@$(MAKE) -s -C bench backlog

bench-pg:
	@$(MAKE) -s -C bench pg

test:
	@bash scripts/test.sh

DEB_OUT ?= build-deb
deb:
	@bash packaging/build-deb.sh $(DEB_OUT)

soak:
	@cmake -S . -B build-test -DLABHOOK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-test -j"$$(nproc)" --target labhook >/dev/null
	@cd tests/integration && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		LABHOOK_KILLS=$(KILLS) LABHOOK_BIN=$(CURDIR)/build-test/labhook \
		python3 test_kill.py
