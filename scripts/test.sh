#!/usr/bin/env bash
# The whole test suite: unit, integration and stress tests, then the loom
# models. README's quick start and .ci/run both call this.
#
#   scripts/test.sh            everything
#   RAMPART_STRESS_SEED=N ...  replay a stress test's seed (each prints its own)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== tests (unit, integration, stress)"
cargo test --workspace --locked

# loom swaps the guards' locks for model-checked ones; the cfg changes every
# crate's build, so it gets a target directory of its own and release mode
# (loom explores thousands of interleavings).
echo "== loom models"
RUSTFLAGS="--cfg rampart_loom" CARGO_TARGET_DIR=target/loom \
  cargo test --locked --release -p rampart --test loom_flight
