//! A bad config never starts the server; the message names the file, the
//! field and what is wrong. Tested through the real binary, as a user runs it.

use std::process::Command;

use rampart_server::Config;

fn rampart(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .env("RAMPART_LOG", "error")
        .output()
        .expect("run rampart");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn with_file(text: &str, check: impl FnOnce(&str)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    check(path.to_str().expect("utf-8 path"));
}

fn example_with(replace: &str, with: &str) -> String {
    let text = rampart_server::config::DEFAULT_CONFIG;
    assert!(text.contains(replace), "the example has {replace:?}");
    text.replacen(replace, with, 1)
}

#[test]
fn the_embedded_example_is_valid() {
    let config = Config::embedded().expect("valid");
    let names: Vec<&str> = config.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["users", "products"]);
}

#[test]
fn bad_files_are_refused_naming_file_and_field() {
    let cases = [
        (example_with("ttl = \"60s\"", "ttl = \"sixty\""), "ttl"),
        (
            example_with("ttl = \"60s\"", "ttl = \"0s\""),
            "ttl must be greater than 0",
        ),
        (example_with("jitter = 0.1", "jitter = 3.0"), "jitter"),
        (
            example_with("pool_size = 10", "pool_size = 0"),
            "database.pool_size",
        ),
        (
            example_with("key_type = \"integer\"", "key_type = \"uuid\""),
            "key_type",
        ),
        (
            example_with("max_queued = 256", "max_queued = 256\ncolour = \"red\""),
            "colour",
        ),
        (
            example_with("name = \"products\"", "name = \"users\""),
            "defined twice",
        ),
        (example_with("WHERE id = $1", "WHERE id = 5"), "$1"),
        (
            example_with("failure_rate_threshold = 0.5", "failure_rate_threshold = 1.5"),
            "breaker.failure_rate_threshold",
        ),
        (
            example_with("window = \"10s\"", "window = \"1.5s\""),
            "whole seconds",
        ),
        (
            example_with(
                "max_wait = \"500ms\"",
                "max_wait = \"500ms\"\n\n[resource.faults]\npanic_share = 1.5",
            ),
            "faults.panic_share must be in [0, 1], got 1.5",
        ),
        // A dead lease holder must cost a load, not the request's timeout.
        (
            example_with("lease_wait = \"1s\"", "lease_wait = \"4s\""),
            "cache.lease_wait + cache.load_timeout (4s + 2s) must be less than server.request_timeout",
        ),
        (
            example_with("load_timeout = \"2s\"", "load_timeout = \"6s\""),
            "cache.load_timeout (6s) must not exceed server.request_timeout",
        ),
        (
            example_with("on_lease_timeout = \"load\"", "on_lease_timeout = \"retry\""),
            "on_lease_timeout",
        ),
        (
            example_with("ready_fraction = 0.9", "ready_fraction = 0"),
            "warmup.ready_fraction",
        ),
        (
            example_with("pressure_foreground_ratio = 2.0", "pressure_foreground_ratio = 0.5"),
            "warmup.pressure_foreground_ratio must be 0 (off) or a number ≥ 1, got 0.5",
        ),
        (
            example_with("listen_backlog = 4096", "listen_backlog = 0"),
            "server.listen_backlog must be 1 to 65535, got 0",
        ),
        (
            example_with("replicas = 1", "replicas = 0"),
            "replicas must be 1 to 64",
        ),
        (
            example_with("urls = []", "urls = [\"http://x\"]"),
            "redis.urls",
        ),
        (
            example_with("capacity = 2000000", "capacity = 0"),
            "resource \"users\": filter.capacity must be at least 1",
        ),
        (
            example_with("false_positive_rate = 0.01", "false_positive_rate = 1.5"),
            "filter.false_positive_rate must be in (0, 0.5]",
        ),
        (
            example_with("keys = \"SELECT id FROM users\"", "keys = \" \""),
            "filter.keys must be a SQL query",
        ),
        (
            example_with("misses_per_client = 0", "misses_per_client = 0\nmiss_burst = 0"),
            "server.miss_burst must be at least 1",
        ),
        ("listen = [".to_owned(), "TOML"),
    ];
    for (text, expected) in cases {
        with_file(&text, |path| {
            let (ok, stderr) = rampart(&["serve", "--config", path]);
            assert!(!ok, "{expected}: the server started");
            assert!(
                stderr.contains(path),
                "{expected}: the file is named: {stderr}"
            );
            assert!(
                stderr.to_lowercase().contains(&expected.to_lowercase()),
                "{expected}: not in {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        });
    }
}

#[test]
fn a_missing_file_and_bad_flags_are_clear_errors() {
    let (ok, stderr) = rampart(&["serve", "--config", "/nonexistent/rampart.toml"]);
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/rampart.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
    let (ok, stderr) = rampart(&["serve", "--listen", "not-an-address"]);
    assert!(!ok);
    assert!(stderr.contains("--listen"), "{stderr}");
    let (ok, stderr) = rampart(&["serve", "--database-url", "mysql://x"]);
    assert!(!ok);
    assert!(
        stderr.contains("--database-url") && stderr.contains("sqlite://"),
        "{stderr}"
    );
    let (ok, stderr) = rampart(&["serve", "--demo-rows=-5"]);
    assert!(!ok);
    assert!(stderr.contains("--demo-rows"), "{stderr}");
}
