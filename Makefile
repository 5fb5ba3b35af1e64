# regionstore — see README.md. `make test` sets up a fresh machine and runs everything CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build run test test-long lint fmt clippy bench bench-compare clean

all: build

# RocksDB's bindings need libclang. Install it only when missing; quiet when present.
deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' && \
	    ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
	    echo "installing libclang-dev (needed by RocksDB's bindings)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libclang-dev >/dev/null; \
	fi
	@command -v cargo-nextest >/dev/null 2>&1 || echo "note: cargo-nextest not found; tests run with cargo test"

build: deps
	$(CARGO) build --workspace --all-targets

# A scheduler and three stores on loopback, data under ./regionstore-playground; Ctrl-C stops.
run: deps
	$(CARGO) build --quiet --bin regionstore
	$(CARGO) run --quiet --bin regionstore -- playground

fmt:
	$(CARGO) fmt --all

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p test-cluster --features failpoints --all-targets -- -D warnings

# The whole suite. Doc tests first (nextest does not run them), so the last line is the
# runner's summary: nextest's "Summary [...] N tests run: N passed", or cargo test's lines.
# Failpoint crash tests first (their own build with `--features failpoints`, one test at a time:
# failpoints are process-wide), then the whole suite, whose summary line ends the output.
test: lint
	$(CARGO) test --workspace --doc --quiet
	@if command -v cargo-nextest >/dev/null 2>&1; then \
	    $(CARGO) nextest run -p test-cluster --features failpoints --test failpoints \
	        --no-fail-fast --test-threads 1 && \
	    $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	    $(CARGO) test -p test-cluster --features failpoints --test failpoints -- --test-threads 1 && \
	    $(CARGO) test --workspace --no-fail-fast; \
	fi

# Soak variants: larger stress runs, not part of CI.
test-long: deps
	KILL_ITERATIONS=10 $(CARGO) test --workspace --release -- --include-ignored
	$(CARGO) test --release -p test-cluster --features failpoints --test failpoints -- --test-threads 1

bench: deps
	$(CARGO) bench --workspace --benches

# The same kv workload against a 3-member etcd and a 3-store regionstore, side by side
# (installs etcd-server from Debian when missing); results and plots in target/bench/.
bench-compare: deps
	CARGO=$(CARGO) ./scripts/bench-compare.sh

clean:
	$(CARGO) clean
