#!/usr/bin/env bash
# The whole test suite: unit, integration and stress tests, then the loom
# models. README's quick start and .ci/run both call this.
#
#   scripts/test.sh            everything
#   RAMPART_STRESS_SEED=N ...  replay a stress test's seed (each prints its own)
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth) is part of the
# suite: the server's tests run on it as well as on SQLite.
pg_url=${RAMPART_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "== starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  fi
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break; sleep 0.2; done
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "PostgreSQL is not running on 127.0.0.1:5432. Start it with:" >&2
    echo "  sudo apt-get install -y postgresql && sudo pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
    echo "or point RAMPART_TEST_PG_URL at one (now: $pg_url)." >&2
    exit 1
  fi
fi

# Redis on 127.0.0.1:6379, and its binaries for the private instances and
# the private Cluster that the fault tests start and kill.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "redis-server and redis-cli are needed. Install them with:" >&2
  echo "  sudo apt-get install -y redis-server" >&2
  exit 1
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "== starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "== tests (unit, integration, stress, end to end)"
cargo test --workspace --locked

# The examples a newcomer copies from, run as they would run them (the
# test run above built them and ran the doctests).
echo "== examples"
for example in axum_read_through guarded_http_client bounded_warmup; do
  cargo run --locked -q -p rampart --example "$example" >/dev/null
done
cargo run --locked -q -p rampart-redis --example redis_tier >/dev/null

# The service against its own /openapi.json: a property-based fuzzer
# (schemathesis, installed pinned under target/ on first use).
echo "== OpenAPI fuzzing"
scripts/fuzz-openapi.sh

# loom swaps the guards' locks for model-checked ones; the cfg changes every
# crate's build, so it gets a target directory of its own and release mode
# (loom explores thousands of interleavings).
echo "== loom models"
RUSTFLAGS="--cfg rampart_loom" CARGO_TARGET_DIR=target/loom \
  cargo test --locked --release -p rampart --test loom_flight --test loom_breaker --test loom_existence --test loom_stock

# The Prometheus alert rules: valid, and each firing on its failure
# (promtool, from Debian's prometheus package; installed when missing).
echo "== alert rules"
scripts/check-alerts.sh

# /dashboard in a real browser under a drill: live values appear and change
# (headless Chromium, from Debian's chromium package; installed when missing).
echo "== dashboard in a browser"
scripts/check-dashboard.sh

# The deadlock detector exists only in builds with its feature (it makes
# every parking_lot lock keep a wait graph): one test binary built with it.
echo "== deadlock detector"
cargo test --locked -p rampart-server --features deadlock-detection --test deadlock
