# Shortcuts from the repository root; the build itself is CMake (see README.md).
#   make bench           ceiling + end-to-end benchmark (bench/README.md); ends with the summary
#   make bench-backlog   1,000,000 pending deliveries: restart and drain
#   make test            what CI runs (scripts/test.sh)
MAKEFLAGS += --no-print-directory

.PHONY: bench bench-backlog test

bench:
	@$(MAKE) -s -C bench run

bench-backlog:
	@$(MAKE) -s -C bench backlog

test:
	@bash scripts/test.sh
