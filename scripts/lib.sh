# Shared by the scripts: `source scripts/lib.sh`.

# wait_for URL [tries]: polls URL every 0.1 s until it answers 2xx, at most
# `tries` times (default 600: a minute); fails if it never does.
wait_for() {
  local url=$1 tries=${2:-600}
  for _ in $(seq 1 "$tries"); do
    curl -sf "$url" >/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $url" >&2
  return 1
}

# served_base STDOUT STDERR PID: waits (at most 30 s) for `rampart serve`
# (process PID, started with `--listen 127.0.0.1:0`, its output going to the
# two files) to print the address it serves on, and prints that base URL;
# fails showing its output if it exits first or never says.
served_base() {
  local out=$1 err=$2 pid=$3 base=
  for _ in $(seq 1 300); do
    base=$(sed -n 's/^rampart serving on \(http:[^ ]*\).*/\1/p' "$out" | head -n1)
    if [ -n "$base" ]; then
      echo "$base"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "rampart serve did not start:" >&2
  cat "$out" "$err" >&2
  return 1
}

# release_bin: prints the rampart binary to measure: RAMPART_BIN if set,
# else target/release/rampart, built first.
release_bin() {
  if [[ -z "${RAMPART_BIN:-}" ]]; then
    cargo build --release -q -p rampart-server --bin rampart >&2
  fi
  echo "${RAMPART_BIN:-target/release/rampart}"
}

# bench_data_dir: prints a data directory for a benchmark: BENCH_DATA if
# set (kept between runs, so a large demo database is generated once),
# else a new temporary one.
bench_data_dir() {
  local data=${BENCH_DATA:-$(mktemp -d)}
  mkdir -p "$data"
  echo "$data"
}

# bench_cleanup DIR: for `trap … EXIT`: stops the script's background jobs,
# and removes DIR unless it is BENCH_DATA.
bench_cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [[ -n "${BENCH_DATA:-}" ]] || rm -rf "$1"
}
