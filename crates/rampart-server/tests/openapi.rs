//! `/openapi.json` is precise enough to test against: every documented
//! operation is routed and answers only documented statuses, every `$ref`
//! resolves, each resource has its own key schema, every error code the
//! server can answer is in the `code` enum. And the batch route's two
//! forms of `keys` (a comma-separated one, repeated ones for keys with a
//! comma), as documented there.

mod common;

use common::start;
use rampart_server::cache::demo;
use rampart_server::error::Error;
use rampart_server::ops::openapi::{self, ERROR_CODES};
use serde_json::Value;

/// The value at a local `$ref` ("#/a/b"), if it resolves.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` anywhere under `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map {
                match (name.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_json_and_every_reference_resolves() {
    let t = start(|_| {}).await;
    let response = t.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(
        found.len() > 20,
        "the operations share their schemas by $ref"
    );
    for reference in found {
        assert!(
            resolve(&doc, reference).is_some(),
            "{reference} does not resolve"
        );
    }
    // The write route names its security scheme, and the scheme exists.
    let invalidate = &doc["paths"]["/v1/r/users/{key}/invalidate"]["post"];
    assert_eq!(
        invalidate["security"][0]["bearerAuth"],
        Value::Array(vec![])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    for status in ["401", "403"] {
        assert!(
            invalidate["responses"][status].is_object(),
            "{status} undocumented"
        );
    }
}

#[tokio::test]
async fn each_resource_has_its_own_paths_and_key_schema() {
    let t = start(|_| {}).await;
    let doc: Value = t.get("/openapi.json").await.json().await.expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        !paths.keys().any(|p| p.contains("{resource}")),
        "no generic {{resource}} path: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let users = &paths["/v1/r/users/{key}"]["get"]["parameters"][0]["schema"];
    assert_eq!(users["type"], "integer");
    assert_eq!(users["format"], "int64");
    let products = &paths["/v1/r/products/{key}"]["get"]["parameters"][0]["schema"];
    assert_eq!(products["type"], "string");
    assert_eq!(products["minLength"], 1);
    assert_eq!(
        products["maxLength"],
        rampart_server::cache::keys::MAX_STRING_KEY
    );
    let batch = &paths["/v1/r/products"]["get"]["parameters"][0];
    assert_eq!(batch["name"], "keys");
    assert_eq!(batch["explode"], true);
    assert_eq!(batch["schema"]["type"], "array");
    // The configured bound, not a constant.
    let t5 = start(|c| c.server.max_batch_keys = 5).await;
    let doc5: Value = t5.get("/openapi.json").await.json().await.expect("json");
    assert_eq!(
        doc5["paths"]["/v1/r/users"]["get"]["parameters"][0]["schema"]["maxItems"],
        5
    );
}

/// A request for a documented operation, with the documented example key.
fn example_path(route: &openapi::Route, resource: &str, key: &str) -> String {
    let path = openapi::concrete_path(route, resource).replace("{key}", key);
    if route.path == "/v1/r/{resource}" {
        format!("{path}?keys={key}")
    } else {
        path
    }
}

/// The stock routes' example requests: they need a header, a body or a
/// reservation made first, which the generic walk cannot guess.
async fn stock_example(
    t: &common::TestServer,
    method: &str,
    path: &str,
) -> Option<reqwest::Response> {
    let reserve = |key: &'static str| {
        t.client
            .post(t.url(&format!("/v1/stock/{}/reservations", demo::sku(1))))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "qty": 1 }))
            .send()
    };
    let made = |key: &'static str| async move {
        let r: Value = reserve(key)
            .await
            .expect("reserve")
            .json()
            .await
            .expect("json");
        r["id"].as_str().expect("id").to_owned()
    };
    let request = match (method, path) {
        ("get", "/v1/stock/{sku}") => t.client.get(t.url(&format!("/v1/stock/{}", demo::sku(1)))),
        ("post", "/v1/stock/{sku}/reservations") => {
            return Some(reserve("openapi-walk").await.expect("reserve"))
        }
        ("post", "/v1/reservations/{id}/confirm") => {
            let id = made("openapi-confirm").await;
            t.client
                .post(t.url(&format!("/v1/reservations/{id}/confirm")))
        }
        ("post", "/v1/reservations/{id}/cancel") => {
            let id = made("openapi-cancel").await;
            t.client
                .post(t.url(&format!("/v1/reservations/{id}/cancel")))
        }
        ("put", "/v1/stock/{sku}") => t
            .client
            .put(t.url("/v1/stock/OPENAPI-WALK"))
            .bearer_auth(t.admin_token())
            .header("If-None-Match", "*")
            .json(&serde_json::json!({ "total": 1 })),
        _ => return None,
    };
    Some(request.send().await.expect("request"))
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_documented_statuses() {
    // Existence filters on, so their rebuild route answers 2xx too.
    let t = start(|c| {
        for filter in c.resources.iter_mut().filter_map(|r| r.filter.as_mut()) {
            filter.enabled = true;
        }
    })
    .await;
    let built = std::time::Instant::now();
    while t.server.state.resources.values().any(|r| {
        r.cache
            .existence()
            .is_some_and(|f| !f.stats().ready || f.stats().rebuilding)
    }) {
        assert!(
            built.elapsed() < std::time::Duration::from_secs(20),
            "filters never built"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let doc: Value = t.get("/openapi.json").await.json().await.expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let resources = [("users", "1".to_owned()), ("products", demo::sku(1))];
    for route in openapi::routes() {
        let concrete: Vec<(String, String)> = if route.path.contains("{resource}") {
            resources
                .iter()
                .map(|(name, key)| {
                    (
                        openapi::concrete_path(route, name),
                        example_path(route, name, key),
                    )
                })
                .collect()
        } else {
            vec![(route.path.to_owned(), route.path.to_owned())]
        };
        for (documented, request) in concrete {
            let operation = &paths
                .get(&documented)
                .unwrap_or_else(|| panic!("{documented} undocumented"))[route.method];
            assert!(operation.is_object(), "{} {documented}", route.method);
            // Admin routes are documented with `security`; profiles are
            // asked for the shortest duration.
            let secured = operation.get("security").is_some();
            // Session routes take a session's token: a fresh session for
            // each, as logging out or rotating ends the one before.
            let token = if operation["security"][0].get("sessionToken").is_some() {
                let created: Value = t
                    .client
                    .post(t.url("/v1/sessions"))
                    .send()
                    .await
                    .expect("request")
                    .json()
                    .await
                    .expect("json");
                created["token"].as_str().expect("token").to_owned()
            } else {
                t.admin_token()
            };
            let request = if route.path.starts_with("/debug/pprof/") {
                format!("{request}?seconds=1")
            } else {
                request
            };
            let response = match stock_example(&t, route.method, route.path).await {
                Some(response) => Ok(response),
                None => match route.method {
                    _ if route.path.starts_with("/v1/config") => config_example(&t, route).await,
                    "get" if secured => {
                        t.client
                            .get(t.url(&request))
                            .bearer_auth(&token)
                            .send()
                            .await
                    }
                    "get" => t.client.get(t.url(&request)).send().await,
                    "post" => {
                        t.client
                            .post(t.url(&request))
                            .bearer_auth(&token)
                            .send()
                            .await
                    }
                    "patch" => {
                        t.client
                            .patch(t.url(&request))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({}))
                            .send()
                            .await
                    }
                    "delete" => {
                        t.client
                            .delete(t.url(&request))
                            .bearer_auth(&token)
                            .send()
                            .await
                    }
                    other => panic!("method {other}"),
                },
            }
            .expect("request");
            let status = response.status().as_u16().to_string();
            let documented_answer = &operation["responses"][&status];
            assert!(
                documented_answer.is_object(),
                "{} {request} answered {status}, not documented",
                route.method
            );
            assert!(
                status.starts_with('2'),
                "{} {request}: the example answers {status}",
                route.method
            );
            // Required headers are there.
            let headers = documented_answer["headers"].as_object().expect("headers");
            for (name, header) in headers {
                let header = header["$ref"]
                    .as_str()
                    .and_then(|r| resolve(&doc, r))
                    .unwrap_or(header);
                if header["required"] == true {
                    assert!(
                        response.headers().contains_key(name.as_str()),
                        "{request}: {name} missing"
                    );
                }
            }
        }
    }
    // A documented path with another method: 405, which the router's
    // fallback answers as JSON (the fuzzer's unsupported_method check).
    let wrong = t
        .client
        .delete(t.url("/v1/r/products/x"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 405);
}

/// The config center's routes with an example that answers 2xx: a
/// namespace `demo` with two versions, then each route in table order
/// (a canary is started before its abort and promotion).
async fn config_example(
    t: &common::TestServer,
    route: &openapi::Route,
) -> reqwest::Result<reqwest::Response> {
    use serde_json::json;
    let change = json!({ "author": "a", "reason": "r", "rollback_plan": "p" });
    let current = |t: &common::TestServer| {
        let request = t.client.get(t.url("/v1/config/demo"));
        async move {
            match request.send().await {
                Ok(r) if r.status() == 200 => {
                    r.headers()["etag"].to_str().expect("etag").to_owned()
                }
                _ => String::new(),
            }
        }
    };
    let admin = |method: reqwest::Method, path: &str| {
        t.client
            .request(method, t.url(path))
            .bearer_auth(t.admin_token())
    };
    if current(t).await.is_empty() {
        for (header, value, n) in [("if-none-match", "*", 1), ("if-match", "\"1\"", 2)] {
            let made = admin(reqwest::Method::PUT, "/v1/config/demo")
                .header(header, value)
                .json(&json!({ "content": { "n": n }, "change": change }))
                .send()
                .await?;
            assert!(made.status().is_success(), "{}", made.status());
        }
    }
    let start_canary = || async {
        admin(reqwest::Method::PUT, "/v1/config/demo/canary")
            .header("if-match", current(t).await)
            .json(&json!({ "content": { "n": 0 }, "change": change, "percent": 50 }))
            .send()
            .await
    };
    match (route.method, route.path) {
        ("get", "/v1/config") => t.client.get(t.url("/v1/config")).send().await,
        ("get", "/v1/config/{ns}") => t.client.get(t.url("/v1/config/demo")).send().await,
        ("post", "/v1/config/watch") => {
            t.client
                .post(t.url("/v1/config/watch"))
                .json(&json!({ "namespaces": { "demo": 0 }, "wait": "1s" }))
                .send()
                .await
        }
        ("put", "/v1/config/{ns}") => {
            admin(reqwest::Method::PUT, "/v1/config/demo")
                .header("if-match", current(t).await)
                .json(&json!({ "content": { "n": 3 }, "change": change }))
                .send()
                .await
        }
        ("get", "/v1/config/{ns}/history") => {
            t.client.get(t.url("/v1/config/demo/history")).send().await
        }
        ("get", "/v1/config/{ns}/versions/{version}") => {
            t.client
                .get(t.url("/v1/config/demo/versions/1"))
                .send()
                .await
        }
        ("get", "/v1/config/{ns}/diff") => {
            t.client
                .get(t.url("/v1/config/demo/diff?from=1&to=2"))
                .send()
                .await
        }
        ("post", "/v1/config/{ns}/rollback") => {
            admin(reqwest::Method::POST, "/v1/config/demo/rollback")
                .header("if-match", current(t).await)
                .json(&json!({ "to": 1, "change": change }))
                .send()
                .await
        }
        ("put", "/v1/config/{ns}/canary") => {
            let started = start_canary().await;
            // Leave none pending for the next route.
            admin(reqwest::Method::DELETE, "/v1/config/demo/canary")
                .send()
                .await?;
            started
        }
        ("delete", "/v1/config/{ns}/canary") => {
            start_canary().await?;
            admin(reqwest::Method::DELETE, "/v1/config/demo/canary")
                .send()
                .await
        }
        ("post", "/v1/config/{ns}/canary/promote") => {
            start_canary().await?;
            admin(reqwest::Method::POST, "/v1/config/demo/canary/promote")
                .send()
                .await
        }
        (method, path) => panic!("no example for {method} {path}: add one"),
    }
}

#[test]
fn every_error_code_is_in_the_code_enum() {
    let errors = [
        Error::UnknownResource("x".into()),
        Error::BadKey {
            resource: "x".into(),
            detail: "x".into(),
        },
        Error::BadRequest("x".into()),
        Error::NotFound {
            resource: "x".into(),
            key: "x".into(),
        },
        Error::Guard(rampart::Error::source("x")),
        Error::Guard(rampart::Error::tier("x")),
        Error::Overloaded,
        Error::Timeout,
        Error::Panic,
        Error::UnknownRoute {
            method: "GET".into(),
            path: "/".into(),
        },
        Error::MethodNotAllowed {
            method: "GET".into(),
            path: "/".into(),
        },
        Error::UriTooLong { len: 2, max: 1 },
        Error::HeadersTooLarge { len: 2, max: 1 },
        Error::BadPath("x".into()),
        Error::BadQuery("x".into()),
        Error::Unauthorized,
        Error::Forbidden,
        Error::UnknownSku("x".into()),
        Error::SoldOut {
            sku: "x".into(),
            available: 0,
            asked: 1,
        },
        Error::MissingIdempotencyKey,
        Error::IdempotencyKeyReused("x".into()),
        Error::IdempotencyInFlight("x".into()),
        Error::UnknownReservation("x".into()),
        Error::ReservationExpired("x".into()),
        Error::ReservationSettled {
            id: "x".into(),
            state: "confirmed".into(),
        },
        Error::PreconditionFailed("x".into()),
        Error::PreconditionRequired,
        Error::TotalBelowCommitted {
            total: 0,
            committed: 1,
        },
        Error::StockStore("x".into()),
        Error::UnknownNamespace("x".into()),
        Error::BadNamespace("x".into()),
        Error::UnknownVersion {
            namespace: "x".into(),
            version: 1,
        },
        Error::VersionMismatch(1),
        Error::NamespaceExists(1),
        Error::ContentTooLarge { len: None, max: 1 },
        Error::MalformedJson {
            line: 1,
            column: 1,
            detail: "x".into(),
        },
        Error::InvalidBody("x".into()),
        Error::MissingChange(vec!["change.author"]),
        Error::SchemaViolation {
            violations: Vec::new(),
            total: 1,
        },
        Error::InvalidSchema("x".into()),
        Error::CanaryActive("x".into()),
        Error::NoCanary("x".into()),
        Error::ConfigStore("x".into()),
        Error::ConfigCenterDisabled,
    ];
    for error in &errors {
        assert!(
            ERROR_CODES.contains(&error.code()),
            "{} missing from the code enum",
            error.code()
        );
    }
}

/// The `key`s of a batch answer, in order.
async fn batch_keys(t: &common::TestServer, query: &str) -> Vec<String> {
    let response = t.get(&format!("/v1/r/products?{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.expect("json");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["key"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn repeated_keys_parameters_ask_for_keys_with_commas() {
    let t = start(|c| c.server.max_batch_keys = 3).await;
    let sku = demo::sku(1);
    // Repeated: each value whole, commas included (raw or %2C).
    assert_eq!(
        batch_keys(&t, &format!("keys={sku}&keys=b,c&keys=d%2Ce")).await,
        [sku.as_str(), "b,c", "d,e"]
    );
    // A single parameter keeps the comma-separated form, encoded or not.
    assert_eq!(
        batch_keys(&t, &format!("keys={sku},b")).await,
        [sku.as_str(), "b"]
    );
    assert_eq!(batch_keys(&t, "keys=a%2Cb").await, ["a", "b"]);
    // The found row and the missing comma key, side by side.
    let body: Value = t
        .get(&format!("/v1/r/products?keys={sku}&keys=no,such"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["items"][0]["value"]["sku"], sku.as_str());
    assert!(body["items"][1]["value"].is_null(), "{body}");

    // The bound counts keys, whichever the form.
    let too_many = t.get("/v1/r/products?keys=a&keys=b&keys=c&keys=d").await;
    assert_eq!(too_many.status(), 400);
    let body: Value = too_many.json().await.expect("json");
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("at most 3"),
        "{body}"
    );
    // Every repeated value is a key: an empty one is a bad key.
    let empty = t.get("/v1/r/users?keys=1&keys=").await;
    assert_eq!(empty.status(), 400);
    let body: Value = empty.json().await.expect("json");
    assert_eq!(body["code"], "bad_key");
    // Other parameters are no keys.
    let response = t.get("/v1/r/users?keys=1&other=2").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
}
