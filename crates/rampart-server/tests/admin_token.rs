//! Write endpoints need the admin token: 401 without it (with
//! `WWW-Authenticate: Bearer`), 403 with another, 204 with it. The token
//! generated on first start is owner-only and reused; `rampart serve` says
//! where it is, never what it is, and never logs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{config, start};
use rampart_server::config::Secret;
use rampart_server::http::auth::{TokenOrigin, TOKEN_FILE};
use rampart_server::Server;
use serde_json::Value;

const INVALIDATE: &str = "/v1/r/users/3/invalidate";

#[tokio::test]
async fn invalidate_is_401_without_the_token_403_with_another_and_204_with_it() {
    let t = start(|_| {}).await;
    let bare = t
        .client
        .post(t.url(INVALIDATE))
        .send()
        .await
        .expect("request");
    assert_eq!(bare.status(), 401);
    let challenge = bare.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(bare.headers()["content-type"], "application/json");
    let body: Value = bare.json().await.expect("json");
    assert_eq!(body["code"], "unauthorized");

    let basic = t
        .client
        .post(t.url(INVALIDATE))
        .basic_auth("admin", Some(t.admin_token()))
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), 401, "only Bearer is accepted");

    let mut wrong_token = t.admin_token();
    wrong_token.replace_range(
        0..1,
        if wrong_token.starts_with('0') {
            "1"
        } else {
            "0"
        },
    );
    for wrong in [wrong_token.as_str(), "x", &format!("{}x", t.admin_token())] {
        let response = t
            .client
            .post(t.url(INVALIDATE))
            .bearer_auth(wrong)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{wrong}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "forbidden");
    }

    assert_eq!(t.admin_post(INVALIDATE).await.status(), 204);
    // Reads need no token.
    assert_eq!(t.get("/v1/r/users/3").await.status(), 200);
}

#[cfg(unix)]
#[tokio::test]
async fn the_generated_token_is_owner_only_and_reused_on_the_next_start() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(TOKEN_FILE);
    let first = Server::start(config(dir.path(), |_| {}))
        .await
        .expect("first start");
    assert_eq!(
        first.admin_token_origin(),
        &TokenOrigin::Generated(path.clone())
    );
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let token = std::fs::read_to_string(&path).expect("read");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    first.shutdown().await.expect("shutdown");

    let second = Server::start(config(dir.path(), |_| {}))
        .await
        .expect("second start");
    assert_eq!(
        second.admin_token_origin(),
        &TokenOrigin::Reused(path.clone())
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("read").trim(),
        token,
        "the same token"
    );
    let response = reqwest::Client::new()
        .post(format!("http://{}{INVALIDATE}", second.addr))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 204);
    second.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_configured_file_or_the_environment_take_precedence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("my-token");
    std::fs::write(&file, "from-the-file-0123456789\n").expect("write");
    let from_file = Server::start(config(dir.path(), |c| {
        c.server.admin_token_file = Some(file.clone());
    }))
    .await
    .expect("start");
    assert_eq!(
        from_file.admin_token_origin(),
        &TokenOrigin::File(file.clone())
    );
    let client = reqwest::Client::new();
    let invalidate = |server: &Server, token: &str| {
        client
            .post(format!("http://{}{INVALIDATE}", server.addr))
            .bearer_auth(token.to_owned())
            .send()
    };
    assert_eq!(
        invalidate(&from_file, "from-the-file-0123456789")
            .await
            .expect("request")
            .status(),
        204
    );
    assert!(
        !dir.path().join(TOKEN_FILE).exists(),
        "nothing generated when a token is configured"
    );
    from_file.shutdown().await.expect("shutdown");

    let from_env = Server::start(config(dir.path(), |c| {
        c.server.admin_token_file = Some(file.clone());
        c.server.admin_token = Some(Secret::new("from-the-environment-42"));
    }))
    .await
    .expect("start");
    assert_eq!(from_env.admin_token_origin(), &TokenOrigin::Environment);
    assert_eq!(
        invalidate(&from_env, "from-the-file-0123456789")
            .await
            .expect("request")
            .status(),
        403
    );
    assert_eq!(
        invalidate(&from_env, "from-the-environment-42")
            .await
            .expect("request")
            .status(),
        204
    );
    from_env.shutdown().await.expect("shutdown");

    let missing = dir.path().join("absent");
    let err = Server::start(config(dir.path(), |c| {
        c.server.admin_token_file = Some(missing.clone());
    }))
    .await
    .err()
    .expect("a missing token file stops the start");
    assert!(err.to_string().contains("server.admin_token_file"), "{err}");
}

/// The real binary: the start-up lines say where the token is; with every
/// log target at trace, a request carrying the token does not log it.
#[test]
fn serve_prints_where_the_token_is_and_never_logs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--listen", "127.0.0.1:0", "--demo-rows", "100"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RAMPART_LOG", "trace")
        .env_remove("RAMPART_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rampart serve");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let (mut base, mut token_line) = (None, None);
    while token_line.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("start-up lines");
        if let Some(rest) = line.strip_prefix("rampart serving on ") {
            base = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("admin token:") {
            token_line = Some(line);
        }
    }
    let token_line = token_line.unwrap_or_default();
    let token_path = dir.path().join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path)
        .expect("generated")
        .trim()
        .to_owned();
    assert!(
        token_line.contains(&token_path.display().to_string()),
        "{token_line}"
    );
    assert!(!token_line.contains(&token), "the token itself was printed");

    let base = base.expect("the serving line");
    let status = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            reqwest::Client::new()
                .post(format!("{base}{INVALIDATE}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("request")
                .status()
        });
    assert_eq!(status, 204);
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.join().expect("stderr reader");
    assert!(
        logs.contains(INVALIDATE),
        "the request was traced (else this test proves nothing)"
    );
    assert!(!logs.contains(&token), "the token appears in the logs");
}
