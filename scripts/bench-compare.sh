#!/usr/bin/env bash
# `make bench-compare`: the same kv workload against a 3-member etcd cluster and a 3-store
# regionstore cluster on this machine, one after the other, then the ratio tables.
# Results (JSON) and plots (SVG) go to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
DURATION=${BENCH_DURATION:-30}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
VALUE=${BENCH_VALUE:-256}
KEYS=${BENCH_KEYS:-100000}

if ! command -v etcd >/dev/null 2>&1; then
    echo "installing etcd-server (Debian) for the comparison"
    SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
fi
# The package may start a system etcd on 2379; ours use other ports, and the regionstore
# cluster offsets its ports too.

# As .ci/run: reuse a persistent target dir when the machine has one (RocksDB's C++ build is
# long); a cold build works too, just slower.
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache" ]; then
    export CARGO_TARGET_DIR="$HOME/.cache/regionstore/target"
fi
cargo build --release --quiet --bin regionstore
BIN="${CARGO_TARGET_DIR:-target}/release/regionstore"
mkdir -p "$OUT"

ETCD_DIR="$OUT/etcd-data"
rm -rf "$ETCD_DIR"
mkdir -p "$ETCD_DIR"
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
for i in 1 2 3; do
    # Same disk as the regionstore cluster (both under target/bench); etcd's defaults
    # otherwise (fsync per batch, linearizable reads).
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
# The bench waits for the etcd cluster to take writes before it starts.
COMMON=(--concurrency "$CONCURRENCY" --value-size "$VALUE" --keys "$KEYS" --duration-secs "$DURATION" --out "$OUT" --quiet)
echo "== etcd 3.x, 3 members: write-only"
"$BIN" bench kv --target etcd --etcd "$ENDPOINTS" --read-ratio 0 --name etcd-write "${COMMON[@]}"
echo "== etcd, 3 members: 90% reads / 10% writes"
"$BIN" bench kv --target etcd --etcd "$ENDPOINTS" --read-ratio 0.9 --name etcd-read90 "${COMMON[@]}"
stop_etcd

echo "== regionstore, 3 stores: write-only"
"$BIN" bench kv --read-ratio 0 --name regionstore-write --cluster-dir "$OUT/cluster" --port-offset 1000 "${COMMON[@]}"
echo "== regionstore, 3 stores: 90% reads / 10% writes"
"$BIN" bench kv --read-ratio 0.9 --name regionstore-read90 --cluster-dir "$OUT/cluster" --port-offset 1000 "${COMMON[@]}"

echo
echo "== write-only: regionstore / etcd"
"$BIN" bench compare "$OUT/etcd-write.json" "$OUT/regionstore-write.json"
echo
echo "== 90/10 read/write: regionstore / etcd"
"$BIN" bench compare "$OUT/etcd-read90.json" "$OUT/regionstore-read90.json"
