#!/usr/bin/env bash
# Throughput through a mass expiry (issue 15): `rampart serve` on the
# embedded default warms 100k users at start with a short TTL, then
# `rampart drill` (uniform keys over the warm set, all L1 hits while fresh)
# runs in one-second windows until well past the moment they all go stale
# together; background refreshes (batched, `cache/refresh.rs`) reload
# them meanwhile. Prints each window (req/s, p99, stale answers, errors)
# and the worst window's throughput against the steady state before the
# expiry.
#
#   scripts/bench-expiry.sh [ttl-seconds] [connections]
#
# BENCH_DATA=DIR keeps the demo database between runs; RAMPART_BIN points
# at another build (an older commit's, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ttl=${1:-20}
connections=${2:-16}
keys=100000

bin=$(release_bin)
data=$(bench_data_dir)
trap 'bench_cleanup "$data"' EXIT

# The embedded config with the users' TTL short, so the 100k warmed keys
# expire together within the run (jitter 0.1 spreads them over ±10 %).
sed "0,/^ttl = \"60s\"/s//ttl = \"${ttl}s\"/" rampart.example.toml >"$data/expiry.toml"
grep -q "^ttl = \"${ttl}s\"" "$data/expiry.toml"

RAMPART_LOG="warn,sqlx::query=error,rampart_server::cache::warmup=info" RAMPART_LOG_FORMAT=json "$bin" serve --config "$data/expiry.toml" \
  --data-dir "$data" --listen 127.0.0.1:0 >"$data/expiry.out" 2>"$data/expiry.err" &
pid=$!
base=$(served_base "$data/expiry.out" "$data/expiry.err" "$pid")
for _ in $(seq 1 3000); do
  [[ $(grep -c '"warm-up finished"' "$data/expiry.err" || true) -ge 2 ]] && break
  sleep 0.1
done
warmed=$(date +%s.%N)
windows=$((ttl * 2 + 10))
echo "== $windows one-second drill windows, $connections connections, uniform keys over the $keys warmed users, TTL ${ttl}s"
for _ in $(seq 1 "$windows"); do
  json=$("$bin" drill --target "$base/v1/r/users/{key}" --keys "range:1:$keys" \
    --connections "$connections" --duration 1s --warmup 0s --json |
    python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')
  echo "$(python3 -c 'import sys,time; print(round(time.time() - float(sys.argv[1]), 1))' "$warmed") $json"
done >"$data/windows.txt"
python3 - "$data/windows.txt" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    at, js = line.split(" ", 1)
    x = json.loads(js)
    stale = x["by_header"].get("stale", 0)
    rows.append((float(at), x["throughput_rps"], x["latency_us"]["p99"], stale, x["errors"], x["by_header"]))
for at, rps, p99, stale, errors, headers in rows:
    print(f"  t+{at:5.1f}s {rps:>8.0f} req/s  p99 {p99:>6} us  stale {stale:>6}  errors {errors}")
first_stale = next((i for i, r in enumerate(rows) if r[3] > 0), None)
if first_stale is None:
    sys.exit("no window saw stale answers: the run ended before the expiry")
before = [r[1] for r in rows[:first_stale]]
steady = sorted(before)[len(before) // 2] if before else float("nan")
steady_mean = sum(before) / len(before) if before else float("nan")
expiry = [r for r in rows[first_stale:] if r[3] > 0]
worst = min(r[1] for r in expiry)
print(f"steady ({first_stale} windows before the first stale answer): median {steady:.0f} req/s, "
      f"mean {steady_mean:.0f} req/s")
print(f"through the expiry ({len(expiry)} windows with stale answers): worst {worst:.0f} req/s, "
      f"mean {sum(r[1] for r in expiry) / len(expiry):.0f} req/s; errors {sum(r[4] for r in rows)}")
expiry_mean = sum(r[1] for r in expiry) / len(expiry)
print(f"dip: {(1 - worst / steady) * 100:.1f} % (worst window vs steady median), "
      f"{(1 - expiry_mean / steady_mean) * 100:.1f} % (mean vs mean)")
PY
echo "source queries over the whole run (warm-up included):"
curl -sf "$base/metrics" | grep -E '^rampart_load_duration_seconds_count' || true
