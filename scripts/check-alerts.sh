#!/usr/bin/env bash
# The Prometheus alert rules (ops/prometheus/rampart-alerts.yml): valid
# (`promtool check rules`), and each alert firing on its failure and quiet
# without it (`promtool test rules` on rampart-alerts.test.yml).
# scripts/test.sh calls it.
#
# promtool is in Debian's `prometheus` package; installed here when it is
# missing and apt-get can run as root, else the script stops naming the
# command to run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  install="apt-get install -y --no-install-recommends prometheus"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing promtool: $install"
    # The package's service is not wanted, only its promtool.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
  fi
  if ! command -v promtool >/dev/null; then
    echo "promtool is needed to check the alert rules. Install it with:" >&2
    echo "  sudo $install" >&2
    exit 1
  fi
fi

cd ops/prometheus
promtool check rules rampart-alerts.yml
promtool test rules rampart-alerts.test.yml
