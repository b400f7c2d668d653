#!/usr/bin/env bash
# A panic storm must not starve healthy traffic. Healthy cached GETs (rampart
# drill, Zipf keys) run alone, then beside a storm of requests to a route
# that panics (the `test-routes` feature's /v1/test/panic), then beside a
# storm of ordinary 404s to an unknown route — each with RUST_BACKTRACE=1 and
# without. The figure that compares: healthy throughput beside the panic
# storm / beside the 404 storm (goal: >= 0.8). Also prints how many bytes
# of log each server wrote.
#
#   scripts/bench-panic.sh [duration] [healthy connections] [storm connections]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
duration=${1:-10s}
healthy=${2:-16}
storm=${3:-16}
keys=100000
port=7072
base="http://127.0.0.1:$port"

cargo build --release -q -p rampart-server --features test-routes --bin rampart
bin=target/release/rampart
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

drill() {
  "$bin" drill --target "$1" --keys "zipf:$keys" --connections "$2" \
    --duration "$duration" --warmup 2s --json
}

results="$data/results.jsonl"
for backtrace in 0 1; do
  log="$data/server-$backtrace.log"
  RUST_BACKTRACE=$backtrace RAMPART_LOG="warn,sqlx::query=error" \
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data/db" --demo-rows $keys \
    >/dev/null 2>"$log" &
  server=$!
  wait_for "$base/readyz"
  for storm_kind in none 404 panic; do
    case $storm_kind in
      none) storm_json='null' ;;
      404) storm_target="$base/v1/no-such-route/{key}" ;;
      panic) storm_target="$base/v1/test/panic" ;;
    esac
    if [ "$storm_kind" != none ]; then
      drill "$storm_target" "$storm" >"$data/storm.json" &
      storm_pid=$!
    fi
    healthy_json=$(drill "$base/v1/r/users/{key}" "$healthy")
    if [ "$storm_kind" != none ]; then
      wait "$storm_pid"
      storm_json=$(cat "$data/storm.json")
    fi
    printf '{"backtrace": %s, "storm": "%s", "healthy": %s, "stormer": %s, "log_bytes": %s}\n' \
      "$backtrace" "$storm_kind" "$healthy_json" "$storm_json" "$(stat -c %s "$log")" \
      | tr -d '\n' >>"$results"
    echo >>"$results"
  done
  kill "$server"
  wait "$server" 2>/dev/null || true
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(r["backtrace"], r["storm"]): r for r in rows}
print(f"{'RUST_BACKTRACE':>14} {'storm':>6} {'healthy req/s':>14} {'p99 us':>8} {'storm req/s':>12} {'log bytes':>10}")
for r in rows:
    h, s = r["healthy"], r["stormer"]
    storm_rps = f"{s['throughput_rps']:.0f}" if s else "-"
    print(f"{r['backtrace']:>14} {r['storm']:>6} {h['throughput_rps']:>14.0f} {h['latency_us']['p99']:>8} {storm_rps:>12} {r['log_bytes']:>10}")
for bt in (0, 1):
    panic, nf = by[(bt, "panic")], by[(bt, "404")]
    ratio = panic["healthy"]["throughput_rps"] / nf["healthy"]["throughput_rps"]
    print(f"RUST_BACKTRACE={bt}: healthy beside panics / beside 404s = {ratio:.2f}")
PY
