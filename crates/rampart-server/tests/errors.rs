//! Every error the service answers is the documented JSON
//! `{error, code, detail}` with `content-type: application/json` — also
//! the ones the router, the extractors and the head limits produce, which
//! were empty or text/plain before.

mod common;

use std::time::Duration;

use common::start;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Checks the JSON error shape and returns the body.
async fn json_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let what = format!("{} {}", response.url().path(), response.status());
    assert_eq!(response.status().as_u16(), status, "{what}");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{what}"
    );
    let body: Value = response.json().await.expect("the body is JSON");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert!(
        body["error"].is_string() && body["detail"].is_string(),
        "{what}: {body}"
    );
    body
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json_with_allow() {
    let t = start(|_| {}).await;
    json_error(t.get("/nope").await, 404, "unknown_route").await;
    json_error(t.get("/v1/r/users/1/2/3").await, 404, "unknown_route").await;

    let wrong = t
        .client
        .delete(t.url("/v1/r/users/1"))
        .send()
        .await
        .expect("request");
    let allow = wrong
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(allow.contains("GET"), "Allow: {allow:?}");
    json_error(wrong, 405, "method_not_allowed").await;

    let get_on_post = t.get("/v1/r/users/1/invalidate").await;
    assert_eq!(
        get_on_post
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    json_error(get_on_post, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn bad_percent_encoding_and_bad_queries_are_json() {
    let t = start(|_| {}).await;
    // %FF decodes to a byte that is not UTF-8.
    json_error(t.get("/v1/r/users/%FF").await, 400, "bad_path").await;
    json_error(t.get("/v1/r/%FF%FE/1").await, 400, "bad_path").await;
    // Query values decode lossily (U+FFFD), so this one reaches the key parser.
    json_error(t.get("/v1/r/users?keys=%FF").await, 400, "bad_key").await;
    json_error(t.get("/v1/test/slow?ms=soon").await, 400, "bad_query").await;
}

#[tokio::test]
async fn past_the_documented_limits_uri_and_headers_are_json_414_and_431() {
    let t = start(|c| {
        c.server.max_uri_bytes = 1_024;
        c.server.max_header_bytes = 4_096;
    })
    .await;
    let long = format!("/v1/r/products/{}", "a".repeat(2_000));
    let body = json_error(t.get(&long).await, 414, "uri_too_long").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("at most 1024"),
        "{body}"
    );
    // Just within the limit: routed as usual (a bad key, past 256 bytes).
    let within = format!("/v1/r/products/{}", "a".repeat(900));
    json_error(t.get(&within).await, 400, "bad_key").await;

    let big = t
        .client
        .get(t.url("/v1/r/users/1"))
        .header("x-filler", "b".repeat(5_000))
        .send()
        .await
        .expect("request");
    let body = json_error(big, 431, "headers_too_large").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("at most 4096"),
        "{body}"
    );
    // Many small headers add up the same way.
    let mut many = t.client.get(t.url("/v1/r/users/1"));
    for i in 0..60 {
        many = many.header(format!("x-h{i}"), "v".repeat(70));
    }
    json_error(
        many.send().await.expect("request"),
        431,
        "headers_too_large",
    )
    .await;
    assert_eq!(t.get("/v1/r/users/1").await.status(), 200, "and it goes on");
}

/// Past hyper's own buffer (the outer bound) hyper answers by itself and
/// closes; the server is unharmed.
#[tokio::test]
async fn a_head_past_the_outer_bound_is_refused_and_the_server_goes_on() {
    let t = start(|c| {
        c.server.max_uri_bytes = 1_024;
        c.server.max_header_bytes = 4_096;
    })
    .await;
    // Async IO: the server runs on this test's (single) runtime thread.
    let mut stream = tokio::net::TcpStream::connect(t.server.addr)
        .await
        .expect("connect");
    let head = format!(
        "GET /v1/r/users/1 HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "c".repeat(200_000)
    );
    let exchange = async {
        // The server may close before reading it all; a failed write is fine.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("answered and closed well inside the header timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(t.get("/v1/r/users/1").await.status(), 200);
}

#[tokio::test]
async fn echoed_keys_are_truncated() {
    let t = start(|_| {}).await;
    // Within the URI limit (8 KiB), so the key reaches the parser.
    let huge = "9".repeat(6_000);
    let body = json_error(t.get(&format!("/v1/r/users/{huge}")).await, 400, "bad_key").await;
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.len() < 300, "{} bytes: {detail:.200}", detail.len());
    assert!(detail.contains(&format!("{}…", "9".repeat(64))), "{detail}");

    let name = "n".repeat(5_000);
    let body = json_error(
        t.get(&format!("/v1/r/{name}/1")).await,
        404,
        "unknown_resource",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap_or("").len() < 300,
        "{body:.300}"
    );
    let body = json_error(t.get(&format!("/{name}")).await, 404, "unknown_route").await;
    assert!(
        body["detail"].as_str().unwrap_or("").len() < 300,
        "{body:.300}"
    );
}
