#!/usr/bin/env bash
# Warm-up at the source's pace, and memory per cached key (issue 15), on the
# embedded default (SQLite, L1 alone) with every demo user warmed.
#
#   [WARM=keys] [RATIO=N] scripts/bench-warmup.sh [users] [foreground-duration]
#
# 1. `rampart warm --measure`: the source's batch-read ceiling (a plain
#    sqlx client, one connection, `IN` lists of 500, the same rows), the
#    warm query itself read plainly (when it returns whole rows), and the
#    warm-up's rate, in one run, and their ratios.
# 2. `rampart serve` with the same config: `rampart drill` (hot keys, all
#    L1 hits once warm) runs while the start-up warm-up runs, then again
#    once it is done (idle): foreground p99 during warm-up vs idle.
# 3. VmRSS once warm, against the same server started without a warm-up:
#    bytes per cached key.
#
# The first run generates the demo rows (a minute or two); BENCH_DATA=DIR
# keeps them between runs. RAMPART_BIN points at another build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
users=${1:-1000000}
fg=${2:-3s}

bin=$(release_bin)
data=$(bench_data_dir)
trap 'bench_cleanup "$data"' EXIT

# The embedded config, warming every user, L1 holding them all. WARM=keys
# warms from a key list (batch reads of load_many) instead of the example's
# whole rows (one pass), to compare the two.
cap=$((users + users / 10 + 1000))
sed -e '/^warm = "SELECT .* FROM users ORDER BY id LIMIT 100000"$/s/ LIMIT 100000"$/"/' \
  -e 's/^warm_count = .*LIMIT 100000.*/warm_count = "SELECT COUNT(*) FROM users"/' \
  -e "s/^l1_capacity = 700000/l1_capacity = $cap/" \
  rampart.example.toml >"$data/bench.toml"
if [[ ${WARM:-rows} == keys ]]; then
  sed -i 's/^warm = "SELECT .* FROM users ORDER BY id"$/warm = "SELECT id FROM users ORDER BY id"/' "$data/bench.toml"
fi
# RATIO=N sets warmup.pressure_foreground_ratio (0: the relative p99
# signal off), to compare the foreground with and without it.
if [[ -n ${RATIO:-} ]]; then
  sed -i "s/^pressure_foreground_ratio = .*/pressure_foreground_ratio = $RATIO/" "$data/bench.toml"
fi
grep -q '^warm = "SELECT .*FROM users ORDER BY id"$' "$data/bench.toml"
grep -q "^l1_capacity = $cap$" "$data/bench.toml"
# The same without a warm-up: the memory baseline.
sed '0,/^enabled = true/s//enabled = false/' "$data/bench.toml" >"$data/cold.toml"

# Warm-up lines only: the access log (on at info) would cost more than what is measured.
export RAMPART_LOG="warn,sqlx::query=error,rampart_server::cache::warmup=info"
echo "== rampart warm --measure ($users users)"
"$bin" warm --measure --config "$data/bench.toml" --data-dir "$data" --demo-rows "$users" \
  2>/dev/null | grep -E 'ceiling|keys warm'

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
serve() {
  RAMPART_LOG_FORMAT=json "$bin" serve --config "$1" --data-dir "$data" --listen 127.0.0.1:0 \
    >"$data/$2.out" 2>"$data/$2.err" &
  echo $!
}
drill() {
  "$bin" drill --target "$1/v1/r/users/{key}" --keys range:1:5000 --connections 16 \
    --duration "$fg" --warmup 500ms --json
}

echo "== foreground p99 during the warm-up vs idle; RSS"
cold_pid=$(serve "$data/cold.toml" cold)
cold_base=$(served_base "$data/cold.out" "$data/cold.err" "$cold_pid")
wait_for "$cold_base/v1/r/users/1"
cold_rss=$(rss_kb "$cold_pid")
kill "$cold_pid"
wait "$cold_pid" 2>/dev/null || true

pid=$(serve "$data/bench.toml" warm)
base=$(served_base "$data/warm.out" "$data/warm.err" "$pid")
during=$(drill "$base")
# Warm-up done: the last resource's "warm-up finished" line.
for _ in $(seq 1 1200); do
  [[ $(grep -c '"warm-up finished"' "$data/warm.err" || true) -ge 2 ]] && break
  sleep 0.1
done
warm_rss=$(rss_kb "$pid")
idle=$(drill "$base")
# Started inside $(…), so not a job of this shell: the trap would miss it,
# and `wait` cannot wait for it.
kill "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
python3 - "$during" "$idle" "$data/warm.err" "$cold_rss" "$warm_rss" <<'PY'
import json, sys
during, idle = json.loads(sys.argv[1]), json.loads(sys.argv[2])
keys, secs = 0, 0.0
for line in open(sys.argv[3]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    fields = event.get("fields", {})
    if fields.get("message") == "warm-up finished":
        keys += int(fields.get("keys", 0))
        secs += float(fields.get("secs", 0))
        print(f"  serve's warm-up: {fields.get('resource', event.get('span', {}).get('resource'))} "
              f"{fields['keys']} keys in {float(fields['secs']):.2f} s")
for name, x in (("during warm-up", during), ("idle", idle)):
    l = x["latency_us"]
    print(f"  foreground {name:15} {x['throughput_rps']:>8.0f} req/s  p50 {l['p50']} us  p99 {l['p99']} us  errors {x['errors']}")
print(f"  p99 during / idle: {during['latency_us']['p99'] / max(idle['latency_us']['p99'], 1):.2f}")
cold, warm = int(sys.argv[4]), int(sys.argv[5])
print(f"  RSS without warm-up {cold / 1024:.0f} MiB, warm {warm / 1024:.0f} MiB: "
      f"{(warm - cold) * 1024 / max(keys, 1):.0f} bytes per cached key ({keys} keys)")
PY
