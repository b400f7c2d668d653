#!/usr/bin/env bash
# HTTP hit path: `rampart serve` (cache warm, every request an L1 hit with all
# layers on) against a bare axum handler returning the same bytes, both
# driven by `rampart drill` with the same settings in the same run.
#
#   scripts/bench-http.sh [duration] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-32}
keys=100000

cargo build --release -q -p rampart-server --bin rampart --example bare_axum
bin=target/release/rampart
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

RAMPART_LOG="warn,sqlx::query=error" "$bin" serve --listen 127.0.0.1:7070 --data-dir "$data" --demo-rows $keys >/dev/null &
target/release/examples/bare_axum 127.0.0.1:7071 $keys >/dev/null &
for port in 7070 7071; do
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/v1/r/users/1" >/dev/null && break
    sleep 0.1
  done
done
# rampart warms 100k users at start; wait until it is ready.
for _ in $(seq 1 600); do
  curl -sf http://127.0.0.1:7070/readyz >/dev/null && break
  sleep 0.1
done

run() {
  "$bin" drill --target "$1" --keys "zipf:$keys" --connections "$connections" \
    --duration "$duration" --warmup 2s --json
}
echo "== rampart (cache hit path, all layers)"
rampart_json=$(run 'http://127.0.0.1:7070/v1/r/users/{key}')
echo "== bare axum"
bare_json=$(run 'http://127.0.0.1:7071/v1/r/users/{key}')
python3 - "$rampart_json" "$bare_json" <<'PY'
import json, sys
r, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, x in (("rampart serve", r), ("bare axum", b)):
    l = x["latency_us"]
    print(f"{name:14} {x['throughput_rps']:>10.0f} req/s  p50 {l['p50']} us  p99 {l['p99']} us  errors {x['errors']}  x-cache {x['by_header']}")
print(f"ratio (rampart / bare axum throughput): {r['throughput_rps'] / b['throughput_rps']:.2f}")
PY
