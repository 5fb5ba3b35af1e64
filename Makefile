# regionstore — see README.md. `make test` sets up a fresh machine and runs everything CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps prune build run test test-long lint fmt clippy bench bench-compare clean

all: build

# What building needs (libclang for RocksDB's bindings, a C/C++ compiler): installed only when
# missing, quiet when present. The logic and its knobs are in scripts/deps.sh.
deps:
	@./scripts/deps.sh

# Stale test binaries and old incremental caches out of a persistent target dir (see the
# script); cargo rebuilds what it still needs.
prune:
	@./scripts/prune-target.sh

build: deps
	$(CARGO) build --workspace --all-targets

# A scheduler and three stores on loopback, data under ./regionstore-playground; Ctrl-C stops.
run: deps
	$(CARGO) build --quiet --bin regionstore
	$(CARGO) run --quiet --bin regionstore -- playground

fmt:
	$(CARGO) fmt --all

clippy: deps
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings

# One feature set for lint and tests, so cargo builds the workspace twice (check and test), not
# four times: failpoints are compiled in but inert until a test configures them. Failpoint tests
# serialize on fail::FailScenario's lock under cargo test; nextest runs each test in its own
# process (and .config/nextest.toml keeps them to one at a time).
TEST_FEATURES := --features test-cluster/failpoints,simulator/failpoints

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings

# The whole suite. Doc tests first (nextest does not run them), so the last line is the
# runner's summary: nextest's "Summary [...] N tests run: N passed", or cargo test's lines.
test: prune lint
	$(CARGO) test --workspace --doc --quiet $(TEST_FEATURES)
	@if command -v cargo-nextest >/dev/null 2>&1; then \
	    $(CARGO) nextest run --workspace $(TEST_FEATURES) --no-fail-fast; \
	else \
	    $(CARGO) test --workspace $(TEST_FEATURES) --no-fail-fast; \
	fi

# Soak variants: larger stress runs, not part of CI.
test-long: deps
	KILL_ITERATIONS=10 CHAOS_SEEDS=20 CHAOS_ROUNDS=6 SIM_SEEDS=50000 $(CARGO) test --workspace --release $(TEST_FEATURES) -- --include-ignored

bench: deps
	$(CARGO) bench --workspace --benches

# The same kv workload against a 3-member etcd and a 3-store regionstore, side by side
# (installs etcd-server from Debian when missing); results and plots in target/bench/.
bench-compare: deps
	CARGO=$(CARGO) ./scripts/bench-compare.sh

clean:
	$(CARGO) clean
