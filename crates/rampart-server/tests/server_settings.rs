//! The `[server]` connection and admin-token settings: the example's
//! defaults, and bad values refused naming the field.

use std::path::Path;
use std::time::Duration;

use rampart_server::config::{Secret, DEFAULT_CONFIG};
use rampart_server::Config;

fn example_with(replace: &str, with: &str) -> String {
    assert!(
        DEFAULT_CONFIG.contains(replace),
        "the example has {replace:?}"
    );
    DEFAULT_CONFIG.replacen(replace, with, 1)
}

#[test]
fn the_example_documents_the_defaults() {
    let server = Config::embedded().expect("valid").server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(server.max_connections, 10_000);
    assert_eq!(server.max_uri_bytes, 8_192);
    assert_eq!(server.max_header_bytes, 32_768);
    assert_eq!(server.admin_token_file, None);
    let with_file = example_with(
        "# admin_token_file = \"/etc/rampart/admin-token\"",
        "admin_token_file = \"/etc/rampart/admin-token\"",
    );
    let config = Config::parse(&with_file, Path::new("x.toml")).expect("valid");
    assert_eq!(
        config.server.admin_token_file.as_deref(),
        Some(Path::new("/etc/rampart/admin-token"))
    );
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases = [
        (
            example_with(
                "header_read_timeout = \"10s\"",
                "header_read_timeout = \"0s\"",
            ),
            "server.header_read_timeout",
        ),
        (
            example_with("idle_timeout = \"60s\"", "idle_timeout = \"0s\""),
            "server.idle_timeout",
        ),
        (
            example_with("max_connections = 10000", "max_connections = 0"),
            "server.max_connections",
        ),
        (
            example_with("max_uri_bytes = 8192", "max_uri_bytes = 100000"),
            "server.max_uri_bytes",
        ),
        (
            example_with("max_header_bytes = 32768", "max_header_bytes = 10"),
            "server.max_header_bytes",
        ),
    ];
    for (text, field) in cases {
        let err = Config::parse(&text, Path::new("bad.toml"))
            .err()
            .unwrap_or_else(|| panic!("{field}: accepted"));
        let message = err.to_string();
        assert!(
            message.contains("bad.toml") && message.contains(field),
            "{field}: {message}"
        );
    }
    let mut config = Config::embedded().expect("valid");
    config.server.admin_token = Some(Secret::new("short"));
    let message = config.validate().expect_err("a short token is refused");
    assert!(message.contains("RAMPART_ADMIN_TOKEN"), "{message}");
    assert!(
        !format!("{config:?}").contains("short\""),
        "Debug does not show the token"
    );
}
