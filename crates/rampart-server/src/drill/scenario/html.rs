//! The report people look at: one HTML file, no script, no network —
//! four inline SVG charts (answers/s, p99, errors/s, source loads/s; naive
//! and guarded on the same axes, the incident window shaded) and the
//! table. Every chart is an `<svg class="chart" data-metric=…>` holding one
//! `<polyline class="series naive|guarded">` per half with a point per
//! second, which is what `scripts/check-report.py` looks for.

use std::fmt::Write as _;

use super::measure::Half;
use super::table::Comparison;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 28.0;
const NAIVE: &str = "#d9480f";
const GUARDED: &str = "#2b8a3e";

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One chart's data: a value per second for each half.
struct Chart {
    metric: &'static str,
    title: &'static str,
    unit: &'static str,
    naive: Vec<f64>,
    guarded: Vec<f64>,
}

fn series(half: &Half, metric: &str) -> Vec<f64> {
    match metric {
        "answers" => half
            .load
            .series
            .iter()
            .map(|s| s.requests.saturating_sub(s.errors) as f64)
            .collect(),
        "p99" => half
            .load
            .series
            .iter()
            .map(|s| s.p99_us as f64 / 1e3)
            .collect(),
        "errors" => half.load.series.iter().map(|s| s.errors as f64).collect(),
        _ => half.source.iter().map(|s| s.loads as f64).collect(),
    }
}

/// A round number at or above `v`, for the y axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn svg(chart: &Chart, seconds: usize, window: Option<(f64, f64)>) -> String {
    let peak = chart
        .naive
        .iter()
        .chain(&chart.guarded)
        .copied()
        .fold(0.0, f64::max);
    let y_max = nice_max(peak);
    let span = seconds.max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // A point per second, at the middle of its second.
    let x = |t: f64| LEFT + (t / span) * plot_w;
    let y = |v: f64| TOP + plot_h - (v / y_max).clamp(0.0, 1.0) * plot_h;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<figure><figcaption>{title} <small>({unit})</small></figcaption><svg class="chart" data-metric="{metric}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}">"#,
        title = esc(chart.title),
        unit = esc(chart.unit),
        metric = chart.metric,
    );
    if let Some((from, to)) = window {
        let _ = write!(
            out,
            r##"<rect class="incident" x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#fff3bf"/>"##,
            x(from),
            (x(to.min(span)) - x(from)).max(0.0)
        );
    }
    // Axes and gridlines at 0, 1/2 and the top.
    for frac in [0.0, 0.5, 1.0] {
        let v = y_max * frac;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#dee2e6"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#495057">{}</text>"##,
            WIDTH - RIGHT,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        );
    }
    let mut t = 0.0;
    let step = if span > 60.0 {
        10.0
    } else if span > 20.0 {
        5.0
    } else {
        1.0
    };
    while t <= span {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#495057">{t:.0}s</text>"##,
            x(t),
            HEIGHT - 8.0
        );
        t += step;
    }
    for (class, colour, values) in [
        ("naive", NAIVE, &chart.naive),
        ("guarded", GUARDED, &chart.guarded),
    ] {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series {class}" data-points="{}" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            values.len(),
            points.join(" ")
        );
    }
    out.push_str("</svg></figure>");
    out
}

/// The whole report.
pub fn render(c: &Comparison) -> String {
    let charts = [
        ("answers", "Answered requests per second", "req/s"),
        (
            "p99",
            "p99 latency per second, from the intended send time",
            "ms",
        ),
        ("errors", "Errors per second (no answer, 5xx, 429)", "req/s"),
        ("source", "Loads reaching PostgreSQL per second", "loads/s"),
    ]
    .map(|(metric, title, unit)| Chart {
        metric,
        title,
        unit,
        naive: series(&c.naive, metric),
        guarded: series(&c.guarded, metric),
    });
    let seconds = charts
        .iter()
        .map(|ch| ch.naive.len().max(ch.guarded.len()))
        .max()
        .unwrap_or(0)
        .max(c.duration_secs.ceil() as usize);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rampart drill: {name}</title><style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1320px;color:#212529;padding:0 16px}}
h1{{font-size:22px;margin:0 0 4px}}.sub{{color:#495057;margin:0 0 16px}}
.charts{{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:12px}}
figure{{margin:0;border:1px solid #dee2e6;border-radius:6px;padding:8px}}figcaption{{font-weight:600;margin-bottom:4px}}
table{{border-collapse:collapse;margin-top:16px}}td,th{{border-bottom:1px solid #dee2e6;padding:4px 12px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.naive{{color:{NAIVE}}}.guarded{{color:{GUARDED}}}.key span{{display:inline-block;width:18px;height:3px;vertical-align:middle;margin:0 4px 0 12px}}
</style></head><body><h1>rampart drill scenario <code>{name}</code>{quick}</h1><p class="sub">{incident}</p>"#,
        name = esc(c.scenario),
        quick = if c.quick { " (quick)" } else { "" },
        incident = esc(c.incident),
    );
    let _ = write!(
        out,
        r#"<p>Load: {load}; PostgreSQL behind a fault proxy. Timeline: {timeline}.</p><p class="key"><span style="background:{NAIVE}"></span>naive (guards off)<span style="background:{GUARDED}"></span>guarded (rampart's defaults)<span style="background:#fff3bf;height:12px"></span>incident</p><div class="charts">"#,
        load = esc(&c.load_line()),
        timeline = if c.timeline.is_empty() {
            "none".to_owned()
        } else {
            esc(&c.timeline.join("; "))
        },
    );
    for chart in &charts {
        out.push_str(&svg(chart, seconds, c.incident_window));
    }
    out.push_str(r#"</div><table id="comparison"><thead><tr><th></th><th class="naive">naive</th><th class="guarded">guarded</th></tr></thead><tbody>"#);
    for row in &c.table {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&row.label),
            esc(&row.naive),
            esc(&row.guarded)
        );
    }
    let _ = write!(out, "</tbody></table><p>Guard: {}</p>", esc(c.guards));
    if let Some(v) = &c.slo {
        let _ = write!(
            out,
            "<p>SLO <code>{}</code> on the guarded half: {}</p>",
            esc(&v.slo),
            if v.missed.is_empty() {
                "met".to_owned()
            } else {
                format!("<strong>missed</strong>: {}", esc(&v.missed.join("; ")))
            }
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_axes_are_round() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(1_234.0), 2_000.0);
        assert_eq!(nice_max(2_400.0), 2_500.0);
    }
}
