#!/usr/bin/env bash
# /dashboard in a real browser: `rampart serve` (debug build), `rampart
# drill` against it, and headless Chromium on the page, checked through the
# DevTools protocol (scripts/check-dashboard.py): live values appear and
# change every second. scripts/test.sh calls it.
#
# Chromium is Debian's `chromium` package; installed here when it is
# missing and apt-get can run as root, else the script stops naming the
# command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! chromium=$(find_chromium); then
  echo "Chromium is needed to check /dashboard in a browser. Install it with:" >&2
  echo "  sudo apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi

target_dir=${CARGO_TARGET_DIR:-target}
cargo build --locked -q -p rampart-server --bin rampart
binary=$target_dir/debug/rampart

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

RAMPART_LOG=${RAMPART_LOG:-warn} "$binary" serve --listen 127.0.0.1:0 \
  --data-dir "$work/data" --demo-rows 2000 >"$work/stdout" 2>"$work/stderr" &
pids+=($!)
base=$(served_base "$work/stdout" "$work/stderr" "${pids[-1]}")

# Load for the whole check: Zipf keys over the demo users, a few connections.
"$binary" drill --target "$base/v1/r/users/{key}" --keys zipf:2000 \
  --connections 4 --duration 60s --warmup 0s >/dev/null 2>&1 &
pids+=($!)

echo "== dashboard in headless Chromium ($("$chromium" --version 2>/dev/null || echo chromium)) against $base"
python3 scripts/check-dashboard.py "$chromium" "$base"
