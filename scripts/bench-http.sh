#!/usr/bin/env bash
# HTTP hit path: `rampart serve` (cache warm, every request an L1 hit with all
# layers on) against two bare axum handlers returning the same bytes, one
# from a `Vec` indexed by key ("table": the cheapest lookup there is) and
# one from a quick_cache map holding every row ("map": what a service with
# an in-process cache would write), driven alternately with the same
# settings in the same run: `rounds` rounds of `rampart drill` (Zipf keys),
# then, if `wrk` is installed, `rounds` rounds of `wrk -t2` with uniformly
# random keys over the warm set. Each round runs the three back to back;
# the ratios are per round.
#
#   scripts/bench-http.sh [duration] [connections] [rounds]
#
# RAMPART_BIN / BARE_BIN point at other builds (e.g. an older commit's, to
# compare); by default both are built here in release.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
duration=${1:-10s}
connections=${2:-32}
rounds=${3:-3}
keys=100000

if [[ -z "${RAMPART_BIN:-}" || -z "${BARE_BIN:-}" ]]; then
  cargo build --release -q -p rampart-server --bin rampart --example bare_axum
fi
bin=${RAMPART_BIN:-target/release/rampart}
bare=${BARE_BIN:-target/release/examples/bare_axum}
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

# The embedded config with the users' TTL at an hour: with its 60 s, every
# round after the first minute would measure refreshes and misses, not the
# hit path.
sed '0,/^ttl = "60s"/s//ttl = "1h"/' rampart.example.toml >"$data/bench.toml"
grep -q '^ttl = "1h"' "$data/bench.toml"
RAMPART_LOG="warn,sqlx::query=error" "$bin" serve --config "$data/bench.toml" --listen 127.0.0.1:7070 \
  --data-dir "$data" --demo-rows $keys >/dev/null &
rampart_pid=$!
"$bare" 127.0.0.1:7071 $keys table >/dev/null &
bare_pid=$!
"$bare" 127.0.0.1:7072 $keys map >/dev/null &
map_pid=$!
for port in 7070 7071 7072; do
  wait_for "http://127.0.0.1:$port/v1/r/users/1"
done
# rampart warms 100k users at start; wait until it is ready.
wait_for http://127.0.0.1:7070/readyz

drill() {
  "$bin" drill --target "$1" --keys "zipf:$keys" --connections "$connections" \
    --duration "$duration" --warmup 2s --json
}
echo "== rampart drill, $connections connections, zipf keys, $duration per target"
for round in $(seq 1 "$rounds"); do
  rampart_json=$(drill 'http://127.0.0.1:7070/v1/r/users/{key}')
  bare_json=$(drill 'http://127.0.0.1:7071/v1/r/users/{key}')
  map_json=$(drill 'http://127.0.0.1:7072/v1/r/users/{key}')
  python3 - "$round" "$rampart_json" "$bare_json" "$map_json" <<'PY'
import json, sys
n, r, b, m = sys.argv[1], *(json.loads(a) for a in sys.argv[2:5])
for name, x in (("rampart serve", r), ("bare table", b), ("bare map", m)):
    l = x["latency_us"]
    print(f"  {name:14} {x['throughput_rps']:>10.0f} req/s  p50 {l['p50']} us  p99 {l['p99']} us  errors {x['errors']}  x-cache {x['by_header']}")
print(f"round {n} ratio rampart / bare table: {r['throughput_rps'] / b['throughput_rps']:.2f}, / bare map: {r['throughput_rps'] / m['throughput_rps']:.2f}")
PY
done

if command -v wrk >/dev/null; then
  # Uniformly random keys over the warm set (every one an L1 hit).
  script="$data/random-keys.lua"
  cat >"$script" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/r/users/" .. math.random(1, $keys))
end
LUA
  # Prints "req/s requests server-cpu-ticks": the server's CPU time (user
  # + system, in clock ticks) is the per-request cost with the noise of
  # other processes on the machine left out, which throughput is not.
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  wrk_run() {
    local before after out
    before=$(cpu_ticks "$2")
    out=$(wrk -t2 -c64 -d"$duration" -s "$script" "$1")
    after=$(cpu_ticks "$2")
    echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '/requests in/ {print $1}' <<<"$out") $((after - before))"
  }
  echo "== wrk -t2 -c64, random keys, $duration per target"
  for round in $(seq 1 "$rounds"); do
    r=$(wrk_run http://127.0.0.1:7070 "$rampart_pid")
    b=$(wrk_run http://127.0.0.1:7071 "$bare_pid")
    m=$(wrk_run http://127.0.0.1:7072 "$map_pid")
    python3 - "$round" "$(getconf CLK_TCK)" $r $b $m <<'PY'
import sys
n, hz = sys.argv[1], float(sys.argv[2])
v = list(map(float, sys.argv[3:12]))
runs = {name: (v[3 * i], v[3 * i + 2] / hz / v[3 * i + 1] * 1e6)
        for i, name in enumerate(("rampart", "table", "map"))}
for name, (rps, us) in runs.items():
    print(f"  {name:8} {rps:.0f} req/s  {us:.1f} us server CPU per request")
(r_rps, r_us) = runs["rampart"]
for base in ("table", "map"):
    b_rps, b_us = runs[base]
    print(f"round {n} rampart / bare {base}: {r_rps / b_rps:.2f} throughput, {b_us / r_us:.2f} by server CPU per request")
PY
  done
fi
