//! rampart's panic hook under a storm: 10,000 panics on four threads are
//! all counted, and only a bounded few are logged (one with a backtrace
//! per interval). Alone in its test binary: the hook is process-wide.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_server::ops::metrics::Metrics;
use rampart_server::ops::panic_hook::{self, Limits};

const PANICS: u64 = 10_000;
const THREADS: u64 = 4;

#[test]
fn ten_thousand_panics_are_all_counted_and_few_are_logged() {
    let limits = Limits {
        interval: Duration::from_secs(10),
        lines_per_interval: 5,
    };
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = {
        let logged = Arc::clone(&logged);
        Box::new(move |line: &str| {
            if let Ok(mut lines) = logged.lock() {
                lines.push(line.to_owned());
            }
        })
    };
    assert!(panic_hook::install_with(limits, sink), "installed once");
    assert!(
        !panic_hook::install_with(limits, Box::new(|_| {})),
        "a second install changes nothing"
    );

    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::Builder::new()
                .name(format!("storm-{t}"))
                .spawn(move || {
                    for i in 0..PANICS / THREADS {
                        let caught = std::panic::catch_unwind(|| {
                            panic!("storm panic {t}/{i}");
                        });
                        assert!(caught.is_err());
                    }
                })
                .expect("spawn")
        })
        .collect();
    for thread in threads {
        thread.join().expect("storm thread");
    }
    let elapsed = started.elapsed();

    assert_eq!(panic_hook::total(), PANICS, "every panic counted");
    let lines = logged.lock().expect("lines").clone();
    // Windows the storm touched; at a window's edge each racing thread may
    // slip one line more.
    let windows = elapsed.as_secs() / limits.interval.as_secs() + 2;
    let bound = windows * (limits.lines_per_interval + THREADS);
    println!(
        "{PANICS} panics in {elapsed:?}: {} logged (bound {bound})",
        lines.len()
    );
    assert!(!lines.is_empty(), "the first panics are logged");
    assert!(lines.len() as u64 <= bound, "{} lines logged", lines.len());
    let with_backtrace = lines.iter().filter(|l| l.contains("backtrace")).count() as u64;
    assert!(
        (1..=windows * THREADS).contains(&with_backtrace),
        "{with_backtrace} backtraces"
    );
    assert!(
        lines[0].contains("storm panic") && lines[0].contains("tests/panic_hook.rs"),
        "{}",
        lines[0]
    );

    // The count is exported.
    let text = Metrics::default().render();
    assert!(
        text.lines()
            .any(|l| l == format!("rampart_process_panics_total {PANICS}")),
        "{text}"
    );
}
