# Shortcuts from the repository root; the build itself is CMake (see README.md).
#   make bench           the whole benchmark (bench/README.md): the ceiling, labhook end to end,
#                        then 1,000,000 pending deliveries across a restart (about 6 min);
#                        ends with the summary line
#   make bench-quick     without the 1,000,000 backlog (about 70 s)
#   make bench-backlog   only the backlog scenario
#   make test            what CI runs (scripts/test.sh)
MAKEFLAGS += --no-print-directory

.PHONY: bench bench-quick bench-backlog test

bench:
	@$(MAKE) -s -C bench all-scenarios

bench-quick:
	@$(MAKE) -s -C bench run

bench-backlog:
	@$(MAKE) -s -C bench backlog

test:
	@bash scripts/test.sh
