#!/usr/bin/env bash
# Cache penetration: healthy cached GETs (rampart drill, Zipf keys over the
# warm set) beside a storm of distinct missing keys (ids far past the last
# row, uniformly random: negative caching never helps), with the users
# resource's existence filter off and on; and, for scale, beside an equal
# storm of cached hits. Prints healthy req/s, storm req/s and source loads/s
# (from /metrics) for each. The figures that compare: source loads/s under
# the missing-key storm with the filter on (goal: ~0), and healthy req/s
# beside the missing-key storm / beside the hit storm (goal: >= 0.8).
#
#   scripts/bench-penetration.sh [duration] [healthy connections] [storm connections] [demo rows]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
healthy=${2:-16}
storm=${3:-16}
rows=${4:-1000000}
warm=100000
port=7073
base="http://127.0.0.1:$port"

cargo build --release -q -p rampart-server --bin rampart
bin=target/release/rampart
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

# The embedded example, with the users filter switched on or left off.
cp rampart.example.toml "$data/off.toml"
python3 - "$data/off.toml" "$data/on.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
at = text.index("[resource.filter]")
on = text[:at] + text[at:].replace("enabled = false", "enabled = true", 1)
open(sys.argv[2], "w").write(on)
PY

drill() {
  "$bin" drill --target "$base/v1/r/users/{key}" --keys "$1" --connections "$2" \
    --duration "$duration" --warmup 2s --json
}

loads() {
  curl -sf "$base/metrics" | awk '/^rampart_load_duration_seconds_count\{outcome="ok",resource="users"\}/ {print $2}'
}

results="$data/results.jsonl"
for filter in off on; do
  RAMPART_LOG="warn,sqlx::query=error" "$bin" serve --config "$data/$filter.toml" \
    --listen "127.0.0.1:$port" --data-dir "$data/db" --demo-rows "$rows" \
    >/dev/null 2>"$data/server-$filter.log" &
  server=$!
  for _ in $(seq 1 3000); do
    curl -sf "$base/readyz" >/dev/null && break
    sleep 0.1
  done
  if [ "$filter" = on ]; then
    for _ in $(seq 1 600); do
      curl -sf "$base/metrics" | grep -q '^rampart_filter_ready{resource="users"} 1' && break
      sleep 0.1
    done
  fi
  for storm_kind in hits missing; do
    case $storm_kind in
      hits) storm_keys="zipf:$warm" ;;
      missing) storm_keys="range:$((rows * 2)):1000000000000" ;;
    esac
    drill "$storm_keys" "$storm" >"$data/storm.json" &
    storm_pid=$!
    before=$(loads)
    healthy_json=$(drill "zipf:$warm" "$healthy")
    wait "$storm_pid"
    after=$(loads)
    printf '{"filter": "%s", "storm": "%s", "healthy": %s, "stormer": %s, "loads": %s}\n' \
      "$filter" "$storm_kind" "$healthy_json" "$(cat "$data/storm.json")" "$(( ${after%.*} - ${before%.*} ))" \
      | tr -d '\n' >>"$results"
    echo >>"$results"
  done
  curl -sf "$base/metrics" | grep '^rampart_filter_' >"$data/filter-$filter.txt" || true
  kill "$server"
  wait "$server" 2>/dev/null || true
done

cat "$data/filter-on.txt"
python3 - "$results" "$duration" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(r["filter"], r["storm"]): r for r in rows}
print(f"{'filter':>6} {'storm':>8} {'healthy req/s':>14} {'p99 us':>8} {'storm req/s':>12} {'source loads':>13} {'loads/s':>9}")
for r in rows:
    h, s = r["healthy"], r["stormer"]
    # Loads are counted from before the healthy drill's 2 s warm-up to the
    # end of the storm.
    rate = f"{r['loads'] / (h['elapsed_secs'] + 2):.0f}"
    print(f"{r['filter']:>6} {r['storm']:>8} {h['throughput_rps']:>14.0f} {h['latency_us']['p99']:>8} {s['throughput_rps']:>12.0f} {r['loads']:>13} {rate:>9}")
for f in ("off", "on"):
    ratio = by[(f, "missing")]["healthy"]["throughput_rps"] / by[(f, "hits")]["healthy"]["throughput_rps"]
    print(f"filter {f}: healthy beside missing-key storm / beside hit storm = {ratio:.2f}")
PY
