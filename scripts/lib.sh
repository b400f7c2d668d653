# Shared by the bench scripts: `source scripts/lib.sh`.

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
