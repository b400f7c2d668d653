//! The OpenAPI description, generated from one route table. A test walks
//! the table against the live router, so a route cannot be added to one
//! and not the other without a failing test.

use serde_json::{json, Map, Value};

/// One documented route.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Status codes it can answer, with a description each.
    pub responses: &'static [(u16, &'static str)],
}

/// Every route the service serves (the test-only panic route excepted).
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/r/{resource}/{key}",
        summary: "Read one row through the cache. Headers: x-cache (hit, stale, l2, miss, coalesced, negative, stale-if-error, stale-if-slow) and age.",
        responses: &[
            (200, "the row as JSON"),
            (400, "the key does not have the resource's key type"),
            (404, "no such resource, or no such key (cached negatively)"),
            (500, "a panic, contained to this request"),
            (503, "shed, timed out, or the source is down with nothing stale kept; Retry-After is set"),
        ],
    },
    Route {
        method: "get",
        path: "/v1/r/{resource}",
        summary: "Read many rows: ?keys=1,2,3 (bounded by server.max_batch_keys). Answers in the order asked.",
        responses: &[
            (200, "{ items: [{ key, x_cache, value } | { key, error }] }"),
            (400, "missing or malformed keys, or too many"),
            (404, "no such resource"),
            (503, "shed or timed out"),
        ],
    },
    Route {
        method: "post",
        path: "/v1/r/{resource}/{key}/invalidate",
        summary: "Drop a key from every tier; a load begun before this will not store its result. Needs Authorization: Bearer <admin token>.",
        responses: &[
            (204, "invalidated"),
            (400, "bad key"),
            (401, "no admin token (WWW-Authenticate: Bearer)"),
            (403, "wrong admin token"),
            (404, "no such resource"),
        ],
    },
    Route {
        method: "get",
        path: "/healthz",
        summary: "The process is alive.",
        responses: &[(200, "alive")],
    },
    Route {
        method: "get",
        path: "/readyz",
        summary: "Ready once warm-up reached its fraction or deadline.",
        responses: &[(200, "ready"), (503, "still warming")],
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text format.",
        responses: &[(200, "metrics")],
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document.",
        responses: &[(200, "OpenAPI 3.1")],
    },
];

/// The OpenAPI 3.1 document; `resources` become the `resource` enum.
pub fn document(resources: &[&str]) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters = Vec::new();
        if route.path.contains("{resource}") {
            parameters.push(json!({
                "name": "resource", "in": "path", "required": true,
                "schema": { "type": "string", "enum": resources }
            }));
        }
        if route.path.contains("{key}") {
            parameters.push(json!({
                "name": "key", "in": "path", "required": true,
                "schema": { "type": "string" }
            }));
        }
        if route.path == "/v1/r/{resource}" {
            parameters.push(json!({
                "name": "keys", "in": "query", "required": true,
                "schema": { "type": "string" }, "description": "comma-separated keys"
            }));
        }
        let responses: Map<String, Value> = route
            .responses
            .iter()
            .map(|(status, description)| {
                (status.to_string(), json!({ "description": description }))
            })
            .collect();
        let operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
        });
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rampart",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A guarded read-through cache over SQL. Every error is JSON { error, code, detail }, including 404 unknown_route, 405 method_not_allowed (with Allow), 414 uri_too_long and 431 headers_too_large."
        },
        "paths": paths,
    })
}
