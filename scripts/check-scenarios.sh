#!/usr/bin/env bash
# The quick version of every `rampart drill scenario` (naive then guarded,
# on a private PostgreSQL schema behind the fault proxy), each checked for
# the difference its guard makes, and each HTML report opened in headless
# Chromium (scripts/check-report.py). scripts/test.sh calls it; about two
# and a half minutes on an idle machine.
#
# Chromium is Debian's `chromium` package: installed when missing and
# apt-get can run as root; otherwise the browser check is SKIPPED, said
# so loudly, and the rest still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

target_dir=${CARGO_TARGET_DIR:-target}
cargo build --locked -q -p rampart-server --bin rampart
binary=$target_dir/debug/rampart

chromium=$(find_chromium) || chromium=

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for scenario in $("$binary" drill scenario --list | awk '/^[a-z]/ {print $1}'); do
  echo "== drill scenario $scenario --quick"
  RAMPART_LOG=${RAMPART_LOG:-error} "$binary" drill scenario "$scenario" --quick \
    --json --report "$work/$scenario.html" >"$work/$scenario.json"
  python3 - "$work/$scenario.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
rows = {r["label"]: r for r in c["table"]}
for r in c["table"]:
    print(f"  {r['label']:<36}{r['naive']:>20}  {r['guarded']}")
def num(label, half):
    return float(rows[label][half].split()[0])
def micros(text):
    for unit, scale in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"not a duration: {text!r}")
name, failures = c["scenario"], []
if name == "stampede":
    naive, guarded = num("source loads per expiry", "naive"), num("source loads per expiry", "guarded")
    if not (guarded <= 2 and naive >= 5 * guarded):
        failures.append(f"loads per expiry naive {naive} vs guarded {guarded}")
elif name == "db-outage":
    if rows["breaker open after"]["guarded"] == "never":
        failures.append("the guarded breaker never opened during the stall")
    if num("errors during the outage", "guarded") >= num("errors during the outage", "naive"):
        failures.append("guarded had no fewer errors during the outage")
elif name == "retry-storm":
    naive, guarded = (num("source loads per request, failing", h) for h in ("naive", "guarded"))
    if not (naive > 1.5 and guarded < 0.5):
        failures.append(f"source loads per request while failing: naive {naive}, guarded {guarded}")
    if num("HTTP sent per request, failing", "guarded") >= num("HTTP sent per request, failing", "naive"):
        failures.append("the budgeted client sent no fewer retries")
elif name == "redis-outage":
    # Naive, each read waits on the dead tier (a reconnect, up to the
    # 250 ms call timeout, twice) for the whole outage; guarded, the Redis
    # breaker opens and reads go L1 -> source at once.
    naive, guarded = (micros(rows["median second's p99, outage"][h]) for h in ("naive", "guarded"))
    if not guarded * 2 < naive:
        failures.append(f"median p99 during the outage: guarded {guarded} us not under half of naive {naive} us")
    if int(rows["Redis breaker opened"]["guarded"]) < 1 or int(rows["Redis breaker opened"]["naive"]) != 0:
        failures.append("the Redis breaker should open guarded only: " + str(rows["Redis breaker opened"]))
elif name == "flash-sale":
    oversold = {h: int(rows["oversold"][h]) for h in ("naive", "guarded")}
    if oversold["guarded"] != 0:
        failures.append(f"guarded oversold {oversold['guarded']} units (must be exactly 0)")
    if oversold["naive"] <= 0:
        failures.append("the naive read-then-write did not oversell")
    # Guarded, SQL sold out exactly: every unit in one reservation row, the
    # row's held count agreeing; each 201 is one of them (a buyer whose
    # answer timed out on a loaded machine may hold a unit unseen).
    units = int(rows["buyers / units"]["guarded"].split("/")[1])
    promised = int(rows["units promised (SQL rows)"]["guarded"].split()[0])
    held = int(rows["stock row avail+held+sold"]["guarded"].split("+")[1])
    granted = int(rows["granted (HTTP 201)"]["guarded"])
    errors = int(rows["errors"]["guarded"].split()[0])
    if not (promised == units == held and granted <= promised and (errors > 0 or granted == units)):
        failures.append(f"guarded: {units} units, {promised} promised in SQL, {held} held in the row, {granted} granted")
elif name == "panic-storm":
    # The panics' own retries at the source: structural (three immediate
    # retries and no single-flight against a budget and one shared load),
    # so the direction holds however fast the machine is.
    naive, guarded = (num("source loads per request", h) for h in ("naive", "guarded"))
    if not naive > 1.2 * guarded:
        failures.append(f"source loads per request: naive {naive}, guarded {guarded}")
    # Both may be 0 on a fast machine (the naive pool never saturates);
    # a percent of slack for a stray refusal.
    unrelated = {h: num("failed unrelated requests", h) for h in ("naive", "guarded")}
    if unrelated["guarded"] > unrelated["naive"] + 0.01 * num("requests", "guarded"):
        failures.append(f"guarded failed more unrelated requests: {unrelated}")
    for h in ("naive", "guarded"):
        if not rows["still answering at the end"][h].startswith("yes"):
            failures.append(f"the {h} service stopped answering")
elif name == "warmup-storm":
    # 500 one-key queries at a time against batches of 500, two at a time:
    # the naive warm-up is slower and queues on the pool on any machine.
    naive, guarded = (num("warm-up keys/s", h) for h in ("naive", "guarded"))
    if not guarded > 2 * naive:
        failures.append(f"warm-up keys/s: naive {naive}, guarded {guarded}")
    waits = {h: num("peak pool wait (mean/s)", h) for h in ("naive", "guarded")}
    if not waits["naive"] > waits["guarded"]:
        failures.append(f"peak pool wait (ms): {waits}")
elif name == "config-push":
    def count(label, half):
        return int(rows[label][half].split()[0])
    watchers = c["naive"]["load"]["connections"]
    for half in ("naive", "guarded"):
        if count("good change: watchers updated", half) != watchers:
            failures.append(f"{half}: not every watcher took the good change")
    if count("bad change: watchers running it", "guarded") != 0:
        failures.append("a guarded watcher runs the bad version")
    if count("bad change: last known good kept", "guarded") != watchers:
        failures.append("a guarded watcher lost its last known good version")
    if count("bad change: watchers running it", "naive") == 0:
        failures.append("no naive watcher took the bad version: the scenario shows nothing")
else:
    failures.append(f"no check for scenario {name}: add one here")
for f in failures:
    print(f"FAIL {name}: {f}", file=sys.stderr)
sys.exit(1 if failures else 0)
PY
  if [ -n "$chromium" ]; then
    python3 scripts/check-report.py "$chromium" "$work/$scenario.html" | tail -n 1
  else
    echo "SKIPPED: the $scenario report was not opened in a browser (no Chromium; install it with: sudo apt-get install -y --no-install-recommends chromium)"
  fi
done
