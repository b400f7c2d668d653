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
import sys
import time

# Loading the sibling script must not leave a __pycache__ in scripts/.
sys.dont_write_bytecode = True
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "check_dashboard", os.path.join(_here, "check-dashboard.py"))
check_dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_dashboard)

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
    browser, profile, ws = check_dashboard.open_page(
        chromium, f"file://{report}", lambda url: url.startswith("file://"), window="1366,900")
    try:
        # The report's own document (not the blank one before it), loaded.
        check_dashboard.wait_until(
            ws, "document.readyState === 'complete' && !!document.getElementById('comparison')")
        result = ws.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)
        page = json.loads(result["result"]["value"])
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
        check_dashboard.close(browser, profile)


if __name__ == "__main__":
    sys.exit(main())
