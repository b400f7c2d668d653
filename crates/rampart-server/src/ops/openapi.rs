//! The OpenAPI 3.1 description, generated from one route table and the
//! configured resources. A test walks the table against the live router, so
//! a route cannot be added to one and not the other without a failing test;
//! an OpenAPI-driven fuzzer (`scripts/fuzz-openapi.sh`) holds the server to
//! every schema, status and header written here.
//!
//! Each resource gets its own concrete paths (`/v1/r/users/{key}`, …) so its
//! key can have its own schema: a fuzzer given one generic `{resource}`
//! could only guess names and key types.

use serde_json::{json, Map, Value};

use crate::cache::demo;
use crate::cache::keys::MAX_STRING_KEY;
use crate::config::{Config, KeyType, ResourceConfig};

/// One documented route, as the router spells it (`{resource}` is expanded
/// per configured resource in the document).
pub struct Route {
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// The router's path template.
    pub path: &'static str,
    /// One line for the operation.
    pub summary: &'static str,
    /// Statuses it can answer: (status, error codes for an error status,
    /// description). The defence layers' answers (`LAYER_ANSWERS`) are
    /// added to every route in the document.
    pub responses: &'static [(u16, &'static [&'static str], &'static str)],
    /// What the fields above cannot say (parameters, a request body,
    /// security, response headers or content), as a partial OpenAPI
    /// operation merged into the generated one by [`merge`]: objects
    /// merge key by key, arrays are appended, anything else replaces.
    /// A capability documents its own routes this way, in its own table.
    pub extra: Option<fn(&Config) -> Value>,
}

/// Every route table the service serves, one per capability. A new
/// capability adds its table here; the router test, the OpenAPI document
/// and the fuzzer then cover it.
pub const TABLES: &[&[Route]] = &[
    ROUTES,
    crate::config_center::routes::ROUTES,
    crate::reload::routes::ROUTES,
    crate::stock::routes::ROUTES,
    crate::sessions::ROUTES,
];

/// Every documented route, from every table.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    TABLES.iter().flat_map(|table| table.iter())
}

/// The answers of the source's guards, as `error.rs` classifies them.
const GUARD_503: &[&str] = &[
    "breaker_open",
    "source_busy",
    "lease_timeout",
    "retry_budget",
    "source_unavailable",
    "source_timeout",
];

/// The cache's and the operators' routes (the test-only routes excepted).
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/r/{resource}/{key}",
        summary: "Read one row through the cache.",
        responses: &[
            (200, &[], "The row as a JSON object; x-cache says where it came from."),
            (400, &["bad_key", "bad_path"], "The key does not have the resource's key type, or the path is not UTF-8 once decoded."),
            (404, &["not_found", "unknown_route"], "No such key (remembered negatively: x-cache: negative), or a key that makes the path another one (empty, or a dot segment a client normalised away)."),
            (429, &["miss_budget"], "This client address has caused more misses than server.misses_per_client allows (a cached key is still answered); retry after Retry-After seconds."),
            (500, &["panic", "internal"], "A panic, contained to this request."),
            (503, GUARD_503, "The source is down, slow or guarded and nothing stale is kept."),
        ],
        extra: None,
    },
    Route {
        method: "get",
        path: "/v1/r/{resource}",
        summary: "Read many rows, in the order asked.",
        responses: &[
            (200, &[], "One item per key asked: { key, x_cache, value } (value null: no such key) or { key, error }."),
            (400, &["bad_key", "bad_request"], "`keys` missing, a malformed key, or more keys than server.max_batch_keys."),
            (500, &["panic", "internal"], "A panic, contained to this request."),
        ],
        extra: None,
    },
    Route {
        method: "post",
        path: "/v1/r/{resource}/{key}/invalidate",
        summary: "Drop a key from every tier; a load begun before this will not store its result.",
        responses: &[
            (204, &[], "Invalidated."),
            (400, &["bad_key", "bad_path"], "The key does not have the resource's key type."),
            (401, &["unauthorized"], "No admin token (WWW-Authenticate: Bearer)."),
            (403, &["forbidden"], "Another token than the admin token."),
            (404, &["unknown_route"], "A key that makes the path another one (empty)."),
            (500, &["panic", "internal"], "A panic, contained to this request."),
            (503, &["cache_unavailable", "breaker_open"], "The shared tier (Redis) could not be told, or its breaker is open."),
        ],
        extra: None,
    },
    Route {
        method: "post",
        path: "/v1/filter/{resource}/rebuild",
        summary: "Rebuild the resource's existence filter from its keys query, in the background: rows created in the database behind rampart's back stop being answered 404.",
        responses: &[
            (202, &[], "The rebuild started; rampart_filter_age_seconds restarts from 0 when it completes."),
            (401, &["unauthorized"], "No admin token (WWW-Authenticate: Bearer)."),
            (403, &["forbidden"], "Another token than the admin token."),
            (404, &["no_filter"], "The resource has no enabled existence filter ([resource.filter])."),
            (409, &["rebuild_running"], "A rebuild of this filter is already running."),
            (500, &["panic", "internal"], "A panic, contained to this request."),
        ],
        extra: None,
    },
    Route {
        method: "get",
        path: "/debug/pprof/profile",
        summary: "A CPU profile of the process for `seconds`, in pprof's protobuf format (admin token).",
        responses: PROFILE_ANSWERS,
        extra: None,
    },
    Route {
        method: "get",
        path: "/debug/pprof/flamegraph",
        summary: "A CPU profile of the process for `seconds`, as an SVG flame graph (admin token).",
        responses: PROFILE_ANSWERS,
        extra: None,
    },
    Route {
        method: "get",
        path: "/dashboard",
        summary: "The live dashboard: an HTML page following /dashboard/events.",
        responses: &[(200, &[], "The page.")],
        extra: None,
    },
    Route {
        method: "get",
        path: "/dashboard/stats",
        summary: "The dashboard's kept history: one stats object per second, oldest first.",
        responses: &[(200, &[], "The history.")],
        extra: None,
    },
    Route {
        method: "get",
        path: "/dashboard/events",
        summary: "Server-sent events: one `stats` event per second, for server.request_timeout; then the stream ends and EventSource reconnects.",
        responses: &[(200, &[], "The event stream.")],
        extra: None,
    },
    Route {
        method: "get",
        path: "/healthz",
        summary: "The process is alive.",
        responses: &[(200, &[], "Alive.")],
        extra: None,
    },
    Route {
        method: "get",
        path: "/readyz",
        summary: "Ready once warm-up reached its fraction (and, with Redis, the notice subscription is up, and each existence filter's first build is done or waited its ready_wait out), or at the deadline.",
        responses: &[
            (200, &[], "Ready, with each resource's warm-up progress."),
            (503, &[], "Still warming (the readiness body), or shed/timed out (the error body)."),
        ],
        extra: None,
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text exposition format.",
        responses: &[(200, &[], "The metrics.")],
        extra: None,
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document.",
        responses: &[(200, &[], "OpenAPI 3.1.")],
        extra: None,
    },
];

/// The profiling routes' answers (`ops/profile.rs`).
const PROFILE_ANSWERS: &[(u16, &[&str], &str)] = &[
    (200, &[], "The profile."),
    (
        400,
        &["bad_request", "bad_query"],
        "`seconds` out of bounds, or not a whole number.",
    ),
    (
        401,
        &["unauthorized"],
        "No admin token (WWW-Authenticate: Bearer).",
    ),
    (403, &["forbidden"], "Another token than the admin token."),
    (
        409,
        &["profile_in_progress"],
        "Another profile is being taken; one at a time.",
    ),
    (
        500,
        &["panic", "internal"],
        "The profiler failed, or a panic was contained.",
    ),
];

/// What the defence layers (`layers.rs`) can answer on every route.
pub const LAYER_ANSWERS: &[(u16, &[&str], &str)] = &[
    (
        414,
        &["uri_too_long"],
        "The request URI is longer than server.max_uri_bytes.",
    ),
    (
        431,
        &["headers_too_large"],
        "The header section is larger than server.max_header_bytes.",
    ),
    (500, &["panic"], "A panic, contained to this request."),
    (
        503,
        &["overloaded", "timeout"],
        "Shed (too many requests in flight) or past server.request_timeout.",
    ),
];

/// Every error code `error.rs` answers with; the `code` field's enum.
pub const ERROR_CODES: &[&str] = &[
    "internal",
    "source_unavailable",
    "unknown_resource",
    "bad_key",
    "bad_request",
    "not_found",
    "overloaded",
    "timeout",
    "panic",
    "unknown_route",
    "method_not_allowed",
    "uri_too_long",
    "headers_too_large",
    "bad_path",
    "bad_query",
    "unauthorized",
    "forbidden",
    "breaker_open",
    "source_busy",
    "lease_timeout",
    "retry_budget",
    "source_timeout",
    "cache_unavailable",
    "miss_budget",
    "no_filter",
    "rebuild_running",
    "profile_in_progress",
    "no_session",
    "sessions_full",
    "unknown_sku",
    "sold_out",
    "missing_idempotency_key",
    "idempotency_key_reused",
    "idempotency_in_flight",
    "unknown_reservation",
    "reservation_expired",
    "reservation_settled",
    "precondition_failed",
    "precondition_required",
    "total_below_committed",
    "unknown_namespace",
    "bad_namespace",
    "unknown_version",
    "version_mismatch",
    "namespace_exists",
    "content_too_large",
    "malformed_json",
    "invalid_body",
    "missing_change",
    "schema_violation",
    "invalid_schema",
    "canary_active",
    "reload_refused",
    "no_canary",
    "config_store_unavailable",
    "config_center_disabled",
];

/// The `x-cache` values (`rampart::cache::Source::as_str`).
pub const X_CACHE_VALUES: &[&str] = &[
    "hit",
    "stale",
    "l2",
    "miss",
    "coalesced",
    "negative",
    "stale-if-error",
    "stale-if-slow",
];

/// The concrete path of `route` for `resource` (`{resource}` filled in).
pub fn concrete_path(route: &Route, resource: &str) -> String {
    route.path.replace("{resource}", resource)
}

/// The OpenAPI 3.1 document for `config`'s resources and limits.
pub fn document(config: &Config) -> Value {
    let mut paths = Map::new();
    for route in routes() {
        if route.path.contains("{resource}") {
            for resource in &config.resources {
                let path = concrete_path(route, &resource.name);
                let operation = operation(route, Some(resource), config);
                insert(&mut paths, path, route.method, operation);
            }
        } else {
            insert(
                &mut paths,
                route.path.to_owned(),
                route.method,
                operation(route, None, config),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rampart",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A guarded read-through cache over SQL. Every error is JSON { error, code, detail } (application/json), \
                including the router's: 404 unknown_route for any other path (and 404 unknown_resource for a resource \
                not configured), 405 method_not_allowed with Allow for a documented path with another method."
        },
        "paths": paths,
        "components": components(),
    })
}

fn insert(paths: &mut Map<String, Value>, path: String, method: &str, operation: Value) {
    let entry = paths
        .entry(path)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(methods) = entry {
        methods.insert(method.to_owned(), operation);
    }
}

/// One operation: its parameters, security and every response.
fn operation(route: &Route, resource: Option<&ResourceConfig>, config: &Config) -> Value {
    let mut parameters = Vec::new();
    if let Some(resource) = resource {
        if route.path.contains("{key}") {
            parameters.push(json!({
                "name": "key", "in": "path", "required": true,
                "schema": path_key_schema(resource.key_type),
                "example": example_key(resource.key_type),
            }));
        }
        if route.path == "/v1/r/{resource}" {
            parameters.push(json!({
                "name": "keys", "in": "query", "required": true,
                "style": "form", "explode": true,
                "description": format!(
                    "The keys, at most {max} (server.max_batch_keys). Repeat the parameter, one key each \
                     (?keys=a&keys=b,c asks for `a` and `b,c`), or give it once with the keys separated \
                     by commas (?keys=1,2,3); a single parameter is always split, so a key with a comma \
                     needs the repeated form.",
                    max = config.server.max_batch_keys
                ),
                "schema": batch_keys_schema(resource.key_type, config.server.max_batch_keys),
            }));
        }
    }
    if route.path.starts_with("/debug/pprof/") {
        use crate::ops::profile::{max_seconds, DEFAULT_SECONDS};
        let max = max_seconds(config.server.request_timeout);
        parameters.push(json!({
            "name": "seconds", "in": "query", "required": false,
            "description": format!(
                "How long to sample, 1 to {max} s (server.request_timeout + 4 s, at most 30); default {}.",
                DEFAULT_SECONDS.min(max)
            ),
            "schema": { "type": "integer", "minimum": 1, "maximum": max },
        }));
    }
    let mut responses = Map::new();
    let mut answers: Vec<(u16, Vec<&str>, String)> = route
        .responses
        .iter()
        .map(|(status, codes, description)| (*status, codes.to_vec(), (*description).to_owned()))
        .collect();
    for (status, codes, description) in LAYER_ANSWERS {
        match answers.iter_mut().find(|(s, ..)| s == status) {
            Some((_, known, text)) => {
                for code in *codes {
                    if !known.contains(code) {
                        known.push(code);
                    }
                }
                if *status == 503 {
                    text.push_str(" Also: ");
                    text.push_str(description);
                }
            }
            None => answers.push((*status, codes.to_vec(), (*description).to_owned())),
        }
    }
    answers.sort_by_key(|(status, ..)| *status);
    for (status, codes, description) in &answers {
        let response = response(route, resource, *status, codes, description);
        responses.insert(status.to_string(), response);
    }
    let name = resource.map_or(String::new(), |r| format!("_{}", r.name));
    let id = match (route.method, route.path) {
        ("get", "/v1/r/{resource}/{key}") => format!("get{name}"),
        ("get", "/v1/r/{resource}") => format!("batch{name}"),
        ("post", "/v1/filter/{resource}/rebuild") => format!("rebuildFilter{name}"),
        ("post", "/v1/r/{resource}/{key}/invalidate") => format!("invalidate{name}"),
        ("get", path) => operation_id(path),
        (method, path) => format!("{method}_{}", operation_id(path)),
    };
    let mut operation = json!({
        "operationId": id,
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    });
    // The admin routes of this table; other tables say so in `extra`.
    if route.path.ends_with("/invalidate")
        || route.path.ends_with("/rebuild")
        || route.path.starts_with("/debug/")
    {
        operation["security"] = json!([{ "bearerAuth": [] }]);
    }
    if let Some(extra) = route.extra {
        merge(&mut operation, extra(config));
    }
    operation
}

/// An operation id from a path: `/v1/config/{ns}` → `v1_config_ns`.
fn operation_id(path: &str) -> String {
    path.trim_start_matches('/')
        .replace(['{', '}'], "")
        .replace(['.', '/', '-'], "_")
}

/// Merges `extra` into `into`: objects key by key (recursively), arrays
/// appended, any other value replaces what was there.
pub fn merge(into: &mut Value, extra: Value) {
    match (into, extra) {
        (Value::Object(into), Value::Object(extra)) => {
            for (key, value) in extra {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(into), Value::Array(extra)) => into.extend(extra),
        (into, extra) => *into = extra,
    }
}

/// The response object for one status of one route.
fn response(
    route: &Route,
    resource: Option<&ResourceConfig>,
    status: u16,
    codes: &[&str],
    description: &str,
) -> Value {
    let mut headers = Map::new();
    headers.insert(
        "x-request-id".into(),
        json!({ "$ref": "#/components/headers/RequestId" }),
    );
    let is_read = route.path == "/v1/r/{resource}/{key}";
    if is_read && status == 200 {
        headers.insert(
            "x-cache".into(),
            json!({ "$ref": "#/components/headers/XCache" }),
        );
        headers.insert("age".into(), json!({ "$ref": "#/components/headers/Age" }));
    }
    if is_read && status == 404 {
        // Only the negative answer carries them; unknown_route does not.
        headers.insert(
            "x-cache".into(),
            json!({ "$ref": "#/components/headers/XCacheOptional" }),
        );
        headers.insert(
            "age".into(),
            json!({ "$ref": "#/components/headers/AgeOptional" }),
        );
    }
    if status == 429 {
        headers.insert(
            "retry-after".into(),
            json!({ "$ref": "#/components/headers/RetryAfter" }),
        );
    }
    if status == 503 {
        // Every 503 error sets Retry-After; /readyz's "warming" body does not.
        let reference = if route.path == "/readyz" {
            "#/components/headers/RetryAfterOptional"
        } else {
            "#/components/headers/RetryAfter"
        };
        headers.insert("retry-after".into(), json!({ "$ref": reference }));
    }
    if status == 401 {
        headers.insert(
            "www-authenticate".into(),
            json!({ "$ref": "#/components/headers/WwwAuthenticate" }),
        );
    }
    let mut answer = json!({ "description": description, "headers": headers });
    // Links feed the fuzzer's stateful phase: read a key, invalidate it,
    // read it again (a reload, never a 5xx).
    if let Some(resource) = resource {
        let next = match (route.method, status) {
            ("get", 200) if is_read => {
                Some(("invalidate", format!("invalidate_{}", resource.name)))
            }
            ("post", 204) => Some(("reread", format!("get_{}", resource.name))),
            _ => None,
        };
        if let Some((name, operation_id)) = next {
            answer["links"] = json!({
                name: { "operationId": operation_id, "parameters": { "key": "$request.path.key" } }
            });
        }
    }
    let content = match (route.path, status) {
        (_, 204) | (_, 304) => None,
        // A table with extras documents its own success bodies there.
        (_, ok) if ok < 400 && route.extra.is_some() => None,
        ("/v1/r/{resource}/{key}", 200) => Some(json!({
            "application/json": {
                "schema": { "$ref": "#/components/schemas/Row" },
                "example": resource.map(|r| example_row(r.key_type)),
            }
        })),
        ("/v1/r/{resource}", 200) => Some(json!({
            "application/json": {
                "schema": { "$ref": "#/components/schemas/BatchAnswer" },
                "example": resource.map(|r| json!({ "items": [
                    { "key": example_key_text(r.key_type), "x_cache": "hit", "value": example_row(r.key_type) },
                    { "key": "0", "x_cache": "negative", "value": null },
                ]})),
            }
        })),
        ("/v1/filter/{resource}/rebuild", 202) => Some(json!({
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["resource", "rebuilding", "keys"],
                    "properties": {
                        "resource": { "type": "string" },
                        "rebuilding": { "const": true },
                        "keys": { "type": "integer", "minimum": 0, "description": "Keys in the filter in use when the rebuild started." },
                    },
                },
                "example": resource.map(|r| json!({ "resource": r.name, "rebuilding": true, "keys": 1_000_000 })),
            }
        })),
        ("/healthz", 200) => Some(json!({
            "application/json": { "schema": { "$ref": "#/components/schemas/Health" }, "example": { "status": "ok" } }
        })),
        ("/readyz", 200) => Some(json!({
            "application/json": { "schema": { "$ref": "#/components/schemas/Readiness" } }
        })),
        ("/readyz", 503) => Some(json!({
            "application/json": { "schema": { "anyOf": [
                { "$ref": "#/components/schemas/Readiness" },
                error_schema(codes),
            ] } }
        })),
        ("/metrics", 200) => Some(json!({
            "text/plain": { "schema": { "type": "string" }, "example": "# TYPE rampart_ready gauge\nrampart_ready 1\n" }
        })),
        ("/debug/pprof/profile", 200) => Some(json!({
            "application/octet-stream": { "schema": { "type": "string", "format": "binary" } }
        })),
        ("/debug/pprof/flamegraph", 200) => Some(json!({
            "image/svg+xml": { "schema": { "type": "string" } }
        })),
        ("/dashboard", 200) => Some(json!({
            "text/html": { "schema": { "type": "string" } }
        })),
        ("/dashboard/stats", 200) => Some(json!({
            "application/json": { "schema": {
                "type": "object", "required": ["interval_seconds", "history_seconds", "history"],
                "properties": { "history": { "type": "array", "items": { "type": "object" } } },
            } }
        })),
        ("/dashboard/events", 200) => Some(json!({
            "text/event-stream": { "schema": { "type": "string" } }
        })),
        ("/openapi.json", 200) => Some(json!({
            "application/json": { "schema": { "type": "object", "required": ["openapi", "info", "paths"] } }
        })),
        _ => Some(json!({
            "application/json": {
                "schema": error_schema(codes),
                "example": codes.first().map(|code| json!({
                    "error": code.replace('_', " "), "code": code, "detail": description,
                })),
            }
        })),
    };
    if let Some(content) = content {
        answer["content"] = content;
    }
    answer
}

/// The error body with `code` narrowed to the codes this status can carry.
fn error_schema(codes: &[&str]) -> Value {
    json!({
        "allOf": [{ "$ref": "#/components/schemas/Error" }],
        "properties": { "code": { "enum": codes } },
    })
}

/// Control characters (Unicode Cc), which `Key::parse` refuses.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// A string key as `source::Key::parse` accepts it: 1 to 256 bytes, no
/// control characters. JSON Schema counts characters, not bytes, so
/// `maxLength` is exact for ASCII keys only; the description says so.
fn string_key_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_STRING_KEY,
        "pattern": format!("^[^{CONTROL}]{{1,{MAX_STRING_KEY}}}$"),
        "description": format!("1 to {MAX_STRING_KEY} bytes of UTF-8 (non-ASCII characters count 2 to 4 each), no control characters."),
    })
}

fn key_schema(key_type: KeyType) -> Value {
    match key_type {
        KeyType::Integer => json!({ "type": "integer", "format": "int64" }),
        KeyType::String => string_key_schema(),
    }
}

/// A key in a path: as [`key_schema`], but `.` and `..` are left out for
/// string keys: clients remove such dot segments from a path before
/// sending it (RFC 3986, 5.2.4), so the request reaches another route.
fn path_key_schema(key_type: KeyType) -> Value {
    match key_type {
        KeyType::Integer => key_schema(key_type),
        KeyType::String => {
            let rest = MAX_STRING_KEY - 1;
            let mut schema = string_key_schema();
            schema["pattern"] = json!(format!(
                "^([^.{CONTROL}][^{CONTROL}]{{0,{rest}}}|\\.[^.{CONTROL}][^{CONTROL}]{{0,{}}}|\\.\\.[^{CONTROL}]{{1,{}}})$",
                rest - 1,
                rest - 1,
            ));
            schema["description"] = json!(format!(
                "1 to {MAX_STRING_KEY} bytes of UTF-8, no control characters; not `.` or `..` (a client would remove them from the path)."
            ));
            schema
        }
    }
}

/// The `keys` query parameter. A single parameter is split on commas, so
/// a lone key must not contain one (the repeated form may).
fn batch_keys_schema(key_type: KeyType, max: usize) -> Value {
    match key_type {
        KeyType::Integer => json!({
            "type": "array", "minItems": 1, "maxItems": max, "items": key_schema(key_type),
        }),
        KeyType::String => {
            let mut lone = string_key_schema();
            lone["pattern"] = json!(format!("^[^,{CONTROL}]{{1,{MAX_STRING_KEY}}}$"));
            json!({
                "type": "array", "minItems": 1, "maxItems": max, "items": key_schema(key_type),
                "if": { "maxItems": 1 },
                "then": { "items": lone },
            })
        }
    }
}

fn example_key_text(key_type: KeyType) -> String {
    match key_type {
        KeyType::Integer => "1".to_owned(),
        KeyType::String => demo::sku(1),
    }
}

fn example_key(key_type: KeyType) -> Value {
    match key_type {
        KeyType::Integer => json!(1),
        KeyType::String => json!(demo::sku(1)),
    }
}

fn example_row(key_type: KeyType) -> Value {
    match key_type {
        KeyType::Integer => {
            json!({ "id": 1, "name": "user 1", "email": "user1@example.com", "country": "DE", "balance_cents": 1234, "created_at": "2024-01-01T00:00:00Z" })
        }
        KeyType::String => {
            json!({ "sku": demo::sku(1), "title": "product 1", "price_cents": 999, "stock": 5 })
        }
    }
}

/// Schemas, headers and the security scheme shared by the operations.
fn components() -> Value {
    json!({
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "code", "detail"],
                "additionalProperties": false,
                "properties": {
                    "error": { "type": "string", "description": "The code in words." },
                    "code": { "type": "string", "enum": ERROR_CODES },
                    "detail": { "type": "string", "maxLength": 513, "description": "What went wrong; caller input echoed at most 64 characters." },
                    "current_version": { "type": "integer", "description": "412 version_mismatch / namespace_exists: the version to retry against." },
                    "missing": { "type": "array", "items": { "type": "string" }, "description": "422 missing_change: each change-record field missing." },
                    "violations": { "type": "array", "items": { "type": "object", "required": ["pointer", "message"], "properties": { "pointer": { "type": "string" }, "message": { "type": "string" } } }, "description": "422 schema_violation: the JSON pointer of each violation (at most 20)." },
                    "total": { "type": "integer", "description": "422 schema_violation: all violations, counted." },
                    "line": { "type": "integer", "description": "400 malformed_json: where the body stopped being JSON." },
                    "column": { "type": "integer" },
                },
            },
            "Row": {
                "type": "object",
                "description": "The row's columns by name, as the resource's load query returns them.",
                "additionalProperties": { "type": ["string", "number", "integer", "boolean", "null"] },
            },
            "BatchAnswer": {
                "type": "object",
                "required": ["items"],
                "additionalProperties": false,
                "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/BatchItem" } } },
            },
            "BatchItem": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["key", "x_cache", "value"],
                        "additionalProperties": false,
                        "properties": {
                            "key": { "type": "string" },
                            "x_cache": { "type": "string", "enum": X_CACHE_VALUES },
                            "value": { "oneOf": [{ "$ref": "#/components/schemas/Row" }, { "type": "null" }] },
                        },
                    },
                    {
                        "type": "object",
                        "required": ["key", "error"],
                        "additionalProperties": false,
                        "properties": {
                            "key": { "type": "string" },
                            "error": {
                                "type": "object",
                                "required": ["code", "detail"],
                                "additionalProperties": false,
                                "properties": {
                                    "code": { "type": "string", "enum": GUARD_503.iter().chain(["panic", "internal", "miss_budget"].iter()).collect::<Vec<_>>() },
                                    "detail": { "type": "string" },
                                },
                            },
                        },
                    },
                ],
            },
            "Health": {
                "type": "object", "required": ["status"],
                "properties": { "status": { "const": "ok" } },
            },
            "Readiness": {
                "type": "object",
                "required": ["status", "warmup"],
                "additionalProperties": false,
                "properties": {
                    "status": { "enum": ["ready", "warming"] },
                    "warmup": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["keys_done", "keys_failed", "expected", "finished"],
                            "additionalProperties": false,
                            "properties": {
                                "keys_done": { "type": "integer", "minimum": 0 },
                                "keys_failed": { "type": "integer", "minimum": 0 },
                                "expected": { "type": ["integer", "null"], "minimum": 0 },
                                "finished": { "type": "boolean" },
                            },
                        },
                    },
                    "redis": {
                        "description": "With Redis configured: the notice subscription that carries other instances' invalidations.",
                        "type": "object",
                        "required": ["subscribed", "subscribed_through", "subscriptions", "gaps"],
                        "additionalProperties": false,
                        "properties": {
                            "subscribed": { "type": "boolean" },
                            "subscribed_through": { "type": ["string", "null"] },
                            "subscriptions": { "type": "integer", "minimum": 0 },
                            "gaps": { "type": "integer", "minimum": 0 },
                        },
                    },
                },
            },
        },
        "headers": {
            "RequestId": {
                "description": "The caller's x-request-id, or one the server made up.",
                "required": true, "schema": { "type": "string" },
            },
            "XCache": {
                "description": "Where the answer came from.",
                "required": true, "schema": { "type": "string", "enum": X_CACHE_VALUES },
            },
            "XCacheOptional": {
                "description": "negative, when the key is remembered as missing.",
                "schema": { "type": "string", "enum": X_CACHE_VALUES },
            },
            "Age": {
                "description": "Seconds since the value was loaded from the source.",
                "required": true, "schema": { "type": "integer", "minimum": 0 },
            },
            "AgeOptional": {
                "description": "Seconds since the key was found missing.",
                "schema": { "type": "integer", "minimum": 0 },
            },
            "RetryAfter": {
                "description": "Seconds to wait before retrying.",
                "required": true, "schema": { "type": "integer", "minimum": 1 },
            },
            "RetryAfterOptional": {
                "description": "Seconds to wait before retrying (on a shed or timed-out request).",
                "schema": { "type": "integer", "minimum": 1 },
            },
            "WwwAuthenticate": {
                "description": "The scheme to use.",
                "required": true, "schema": { "type": "string", "const": "Bearer realm=\"rampart\"" },
            },
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The admin token: RAMPART_ADMIN_TOKEN, server.admin_token_file, or <data_dir>/admin-token.",
            },
            "sessionToken": {
                "type": "http", "scheme": "bearer",
                "description": "A session's token, as POST /v1/sessions or its rotation answered it.",
            },
        },
    })
}
