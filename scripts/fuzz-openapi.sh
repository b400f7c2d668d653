#!/usr/bin/env bash
# Property-based fuzzing of `rampart serve` against its own /openapi.json
# with schemathesis: every check (status codes, content types, headers,
# response schemas, negative and positive data, auth, unsupported methods),
# all phases (examples, coverage, fuzzing, stateful). Exits non-zero on any
# failure. scripts/test.sh calls it after the cargo tests.
#
#   scripts/fuzz-openapi.sh                    debug binary, 100 examples per operation
#   RAMPART_FUZZ_PROFILE=release ...           the release binary
#   RAMPART_FUZZ_EXAMPLES=200 ...              more examples per operation
#   RAMPART_FUZZ_SEED=N ...                    another seed (the default is fixed,
#                                              so a run is repeatable)
#
# schemathesis is installed, pinned, into a virtual environment under
# target/ on first use; the system's Python is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

schemathesis_version=4.32.5
profile=${RAMPART_FUZZ_PROFILE:-debug}
examples=${RAMPART_FUZZ_EXAMPLES:-100}
seed=${RAMPART_FUZZ_SEED:-20240601}
target_dir=${CARGO_TARGET_DIR:-target}
venv=$target_dir/fuzz-venv

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "== installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

echo "== building rampart ($profile)"
if [ "$profile" = release ]; then
  cargo build --locked --release -p rampart-server --bin rampart
else
  cargo build --locked -p rampart-server --bin rampart
fi
binary=$target_dir/$profile/rampart

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the server picks a free port and prints it, so two runs (or a
# busy port) never collide.
# The server wants at least 16 characters.
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
# The embedded config with the existence filters on, so that their rebuild
# route answers 202 / 409 to the fuzzer rather than 404 no_filter.
awk '/^\[resource.filter\]/ { f = 1 } f && /^enabled = false/ { sub(/false/, "true"); f = 0 } { print }' \
  rampart.example.toml >"$work/fuzz.toml"
grep -c '^enabled = true' "$work/fuzz.toml" | grep -qx 3
# Long-polls and watches held at most 2 s (not 55): the fuzzer sends
# `after` and `wait` of its choosing on every one.
sed -i 's/^max_wait = "55s"/max_wait = "2s"/' "$work/fuzz.toml"
grep -qx 'max_wait = "2s"' "$work/fuzz.toml"
RAMPART_ADMIN_TOKEN=$token RAMPART_LOG=${RAMPART_LOG:-warn} "$binary" serve --config "$work/fuzz.toml" \
  --listen 127.0.0.1:0 --data-dir "$work/data" --demo-rows 2000 \
  >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

base=$(served_base "$work/stdout" "$work/stderr" "$server_pid")
# Ready: warm-up of the small demo set is done, so /readyz answers 200.
wait_for "$base/readyz" 300 || true

# Left out: the profiling routes (each answer takes the `seconds` it is
# asked for, up to 9 by default, one at a time) and the dashboard's event
# stream (open for server.request_timeout): fuzzing them is minutes of
# waiting. tests/profile.rs, tests/dashboard.rs and tests/openapi.rs
# cover them.
echo "== schemathesis $schemathesis_version against $base (seed $seed, $examples examples per operation)"
start=$(date +%s)
status=0
"$venv/bin/schemathesis" run "$base/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 2 \
  --request-timeout 20 \
  --generation-database none \
  --exclude-path-regex '^/(debug/pprof/|dashboard/events$)' \
  --no-color \
  || status=$?
echo "== schemathesis finished in $(($(date +%s) - start)) s, exit status $status"
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "rampart serve exited during the run:" >&2
  cat "$work/stderr" >&2
  exit 1
fi
exit "$status"
