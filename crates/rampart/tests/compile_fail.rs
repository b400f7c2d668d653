//! Go's concurrency bugs from the source document that Rust refuses to
//! compile: each `tests/compile_fail/*.rs` must fail to build, with
//! exactly the compiler error in its `.stderr` file (regenerate them with
//! `RAMPART_BLESS=1 cargo test -p rampart --test compile_fail` after a
//! toolchain change, and read the diff).
//!
//! Why rustc directly and not `trybuild`: the programs use std only, and
//! trybuild builds the crate's whole dependency tree, dev-dependencies
//! included (sqlx, axum, criterion…), in a target directory of its own —
//! minutes on every clean CI run — where rustc checks each file in about
//! a second.
#![cfg(not(rampart_loom))]

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/compile_fail")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    cases.sort();
    cases
}

/// The compiler's output without what differs between machines: line
/// endings, and the commit hash in paths into the standard library
/// (`/rustc/<hash>/library/…` → `$RUST/library/…`).
fn normalize(stderr: &str) -> String {
    let mut text = stderr.replace("\r\n", "\n");
    while let Some(at) = text.find("/rustc/") {
        let hash_end = at + "/rustc/".len() + 40;
        let is_hash = text
            .get(at + "/rustc/".len()..hash_end)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !is_hash {
            break;
        }
        text.replace_range(at..hash_end, "$RUST");
    }
    text
}

#[test]
fn go_concurrency_bugs_do_not_compile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compile_fail");
    let out = std::env::temp_dir().join(format!("rampart-compile-fail-{}", std::process::id()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let bless = std::env::var_os("RAMPART_BLESS").is_some();
    let cases = cases(&dir);
    assert!(cases.len() >= 5, "the cases are missing: {cases:?}");
    let mut mismatches = Vec::new();
    for case in &cases {
        let name = case.file_name().expect("name");
        let output = Command::new(&rustc)
            .current_dir(&dir)
            .args([
                "--edition",
                "2021",
                "--crate-type",
                "bin",
                "--emit",
                "metadata",
            ])
            .args(["--color", "never", "--out-dir"])
            .arg(&out)
            .arg(name)
            .output()
            .expect("rustc runs");
        assert!(!output.status.success(), "{name:?} compiled, but must not");
        let stderr = normalize(&String::from_utf8_lossy(&output.stderr));
        let expected_path = case.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, stderr.as_bytes()).expect("write .stderr");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != stderr {
            mismatches.push(format!("{name:?}: expected\n{expected}\ngot\n{stderr}"));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
