#!/usr/bin/env bash
# `make bench-compare`: the same kv workload against a 3-member etcd cluster and a 3-store
# regionstore cluster on this machine, one after the other, then the ratio tables. Each
# workload gets a fresh cluster of each kind. Results (JSON) and plots (SVG) go to
# target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
DURATION=${BENCH_DURATION:-30}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
VALUE=${BENCH_VALUE:-256}
KEYS=${BENCH_KEYS:-100000}
CARGO=${CARGO:-cargo}

if ! command -v etcd >/dev/null 2>&1; then
    echo "installing etcd-server (Debian) for the comparison"
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; else
        echo "etcd is missing and neither root nor sudo is available: install etcd-server" >&2
        exit 1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
fi

# As .ci/run: reuse the persistent target dir when this machine has one (RocksDB's C++ build
# is long); otherwise the usual ./target.
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/regionstore/target" ]; then
    export CARGO_TARGET_DIR="$HOME/.cache/regionstore/target"
fi
$CARGO build --release --quiet --bin regionstore
BIN="${CARGO_TARGET_DIR:-target}/release/regionstore"
mkdir -p "$OUT"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ETCD_DIR="$OUT/etcd-data"
PIDS=()
stop_etcd() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap stop_etcd EXIT

CLUSTER=""
ENDPOINTS=""
for i in 1 2 3; do
    CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:3${i}380"
    ENDPOINTS+="${ENDPOINTS:+,}http://127.0.0.1:3${i}379"
done

# A fresh 3-member etcd: same disk as the regionstore cluster (both under target/bench),
# etcd's defaults (fsync per batch, linearizable reads) except a backend quota large enough
# for the runs.
start_etcd() {
    rm -rf "$ETCD_DIR"
    mkdir -p "$ETCD_DIR"
    for i in 1 2 3; do
        for port in "3${i}379" "3${i}380"; do
            if ! port_free "$port"; then
                echo "port $port is taken (an etcd left from an earlier run?)" >&2
                exit 1
            fi
        done
    done
    for i in 1 2 3; do
        etcd --name "m$i" --data-dir "$ETCD_DIR/m$i" \
            --listen-client-urls "http://127.0.0.1:3${i}379" \
            --advertise-client-urls "http://127.0.0.1:3${i}379" \
            --listen-peer-urls "http://127.0.0.1:3${i}380" \
            --initial-advertise-peer-urls "http://127.0.0.1:3${i}380" \
            --initial-cluster "$CLUSTER" --initial-cluster-state new \
            --initial-cluster-token regionstore-bench \
            --quota-backend-bytes 8589934592 \
            >"$ETCD_DIR/m$i.log" 2>&1 &
        PIDS+=($!)
    done
}

COMMON=(--concurrency "$CONCURRENCY" --value-size "$VALUE" --keys "$KEYS" --duration-secs "$DURATION" --out "$OUT" --quiet)
run_etcd() { # name read-ratio
    start_etcd
    # The bench waits until every member takes writes.
    "$BIN" bench kv --target etcd --etcd "$ENDPOINTS" --read-ratio "$2" --name "$1" "${COMMON[@]}"
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "an etcd member died during $1; see $ETCD_DIR" >&2; exit 1; }
    done
    stop_etcd
}
run_regionstore() { # name read-ratio
    "$BIN" bench kv --read-ratio "$2" --name "$1" --cluster-dir "$OUT/cluster" --port-offset 1000 "${COMMON[@]}"
}

echo "== etcd $(etcd --version | head -1 | awk '{print $3}'), 3 members: write-only"
run_etcd etcd-write 0
echo "== etcd, 3 members: 90% reads / 10% writes"
run_etcd etcd-read90 0.9
echo "== regionstore, 3 stores: write-only"
run_regionstore regionstore-write 0
echo "== regionstore, 3 stores: 90% reads / 10% writes"
run_regionstore regionstore-read90 0.9

echo
echo "== write-only: regionstore / etcd"
"$BIN" bench compare "$OUT/etcd-write.json" "$OUT/regionstore-write.json"
echo
echo "== 90/10 read/write: regionstore / etcd"
"$BIN" bench compare "$OUT/etcd-read90.json" "$OUT/regionstore-read90.json"
