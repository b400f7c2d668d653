#!/usr/bin/env python3
"""Opens a `rampart drill scenario --report` HTML file in headless Chromium
and checks, through the DevTools protocol, that the report renders on its
own: the four charts (answers, p99, errors, source loads) are drawn with a
naive and a guarded line of one point per second, the comparison table is
filled, and nothing was fetched from a network.

    scripts/check-report.py CHROMIUM REPORT.html

Standard library only; the DevTools WebSocket client is the dashboard
check's (scripts/check-dashboard.py), loaded from beside this file.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "check_dashboard", os.path.join(_here, "check-dashboard.py"))
check_dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_dashboard)
Socket = check_dashboard.Socket

METRICS = ["answers", "p99", "errors", "source"]

READ_PAGE = """JSON.stringify({
  charts: [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {
      metric: svg.dataset.metric,
      width: box.width, height: box.height,
      lines: [...svg.querySelectorAll('polyline.series')].map(p => ({
        cls: p.getAttribute('class'),
        points: p.points.numberOfItems,
        length: p.getTotalLength(),
      })),
    };
  }),
  rows: document.querySelectorAll('#comparison tbody tr').length,
  resources: performance.getEntriesByType('resource').map(r => r.name),
  scripts: document.scripts.length,
})"""


def main():
    chromium, report = sys.argv[1], os.path.abspath(sys.argv[2])
    html = open(report, encoding="utf-8").read()
    failures = []
    # Self-contained: nothing to fetch, nothing to run.
    if re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html):
        failures.append("the report links to something outside itself")
    profile = tempfile.mkdtemp(prefix="rampart-chromium-")
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1366,900",
         f"file://{report}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = None
        deadline = time.time() + 60
        while endpoint is None and time.time() < deadline:
            line = browser.stderr.readline()
            if not line and browser.poll() is not None:
                raise RuntimeError("chromium exited before DevTools was up")
            if "DevTools listening on " in line:
                endpoint = line.strip().split("DevTools listening on ", 1)[1]
        if endpoint is None:
            raise RuntimeError("no DevTools endpoint from chromium in 60 s")
        port = endpoint.split("://", 1)[1].split("/", 1)[0]
        page_ws = None
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://{port}/json/list", timeout=10))
            pages = [t for t in targets if t.get("type") == "page" and t.get("url", "").startswith("file://")]
            if pages:
                page_ws = pages[0]["webSocketDebuggerUrl"]
                break
            time.sleep(0.1)
        if page_ws is None:
            raise RuntimeError("the report did not open")
        ws = Socket(page_ws)
        page = None
        for _ in range(50):
            result = ws.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)
            page = json.loads(result["result"]["value"])
            if page["charts"]:
                break
            time.sleep(0.1)
        print("page:", json.dumps(page))
        charts = {c["metric"]: c for c in page["charts"]}
        for metric in METRICS:
            chart = charts.get(metric)
            if chart is None:
                failures.append(f"no {metric} chart")
                continue
            if chart["width"] < 100 or chart["height"] < 100:
                failures.append(f"the {metric} chart is not laid out: {chart['width']}x{chart['height']}")
            for half in ("naive", "guarded"):
                lines = [l for l in chart["lines"] if half in l["cls"].split()]
                if not lines:
                    failures.append(f"the {metric} chart has no {half} line")
                elif lines[0]["points"] < 2 or lines[0]["length"] <= 0:
                    failures.append(f"the {metric} chart's {half} line is empty: {lines[0]}")
        if page["rows"] < 10:
            failures.append(f"the comparison table has {page['rows']} rows")
        if page["scripts"]:
            failures.append("the report has scripts")
        if page["resources"]:
            failures.append(f"the report fetched: {page['resources']}")
        if failures:
            for f in failures:
                print("FAIL:", f, file=sys.stderr)
            return 1
        print(f"report: {len(METRICS)} charts, naive and guarded, and the table render in headless Chromium")
        return 0
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
