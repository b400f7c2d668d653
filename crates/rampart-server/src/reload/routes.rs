//! `POST /v1/admin/reload`: re-read the config file and apply its live
//! settings, so tests and operators need no signals.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::apply::Applied;
use crate::error::Error;
use crate::ops::openapi::Route;
use crate::state::AppState;

/// The admin routes (behind the admin token and the write bulkhead).
pub fn writes() -> Router<AppState> {
    Router::new().route("/v1/admin/reload", post(reload))
}

/// Re-reads the file the process started from and applies it. The
/// validation and the swap are synchronous and short (no I/O but reading
/// the file), so they run here rather than on a blocking thread.
async fn reload(State(state): State<AppState>) -> Result<Json<Applied>, Error> {
    let reload = std::sync::Arc::clone(&state.reload);
    reload.reload_file(&state).map(Json)
}

/// This capability's documented routes.
pub const ROUTES: &[Route] = &[Route {
    method: "post",
    path: "/v1/admin/reload",
    summary: "Re-read the config file (admin token) and apply its live settings: per-resource cache, breaker and bulkhead, and server.max_concurrent_requests.",
    responses: &[
        (200, &[], "{ version, source, changed: [setting] }: applied (changed is empty when nothing differed)."),
        (401, &["unauthorized"], "No admin token (WWW-Authenticate: Bearer)."),
        (403, &["forbidden"], "Another token than the admin token."),
        (422, &["reload_refused"], "The file is invalid, or changes a setting only a restart can change: the detail names the field; the running settings stay."),
    ],
    extra: Some(reload_extra),
}];

fn reload_extra(_: &crate::config::Config) -> Value {
    json!({
        "security": [{ "bearerAuth": [] }],
        "responses": {
            "200": { "content": { "application/json": { "schema": {
                "type": "object",
                "required": ["version", "source", "changed"],
                "properties": {
                    "version": { "type": "integer", "minimum": 1, "description": "The settings version now in force (1 = as started)." },
                    "source": { "type": "string", "enum": ["file", "namespace"] },
                    "namespace_version": { "type": "integer" },
                    "changed": { "type": "array", "items": { "type": "string" }, "description": "e.g. resource.users.cache, server.max_concurrent_requests." }
                }
            } } } }
        }
    })
}
