//! The stock routes, thin: check the input, ask [`Stock`], shape the
//! answer. Reserving, confirming and cancelling are for buyers (no token);
//! setting a SKU's stock is an admin write (`app.rs` puts it behind the
//! token and the write bulkhead).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::service::Stock;
use super::store::{Counts, Precondition, ReservationRow};
use crate::config::Config;
use crate::error::{echo, Error};
use crate::http::etag::{etag, quoted_version};
use crate::http::extract::Path;
use crate::ops::openapi::Route;
use crate::state::AppState;

/// The header a buyer's retries repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on every reservation answer: `true` when it is a replay.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest SKU and request key, in bytes.
pub const MAX_SKU: usize = 64;
/// Longest request key, in bytes.
pub const MAX_KEY: usize = 255;
/// Largest `total` a SKU may have.
pub const MAX_TOTAL: i64 = 1 << 62;

fn stock(state: &AppState, method: &Method, uri: &Uri) -> Result<Arc<Stock>, Error> {
    state.stock.clone().ok_or_else(|| Error::UnknownRoute {
        method: method.to_string(),
        path: echo(uri.path()),
    })
}

/// A SKU: 1 to 64 of `A-Z a-z 0-9 . _ -`.
fn check_sku(sku: &str) -> Result<(), Error> {
    let ok = !sku.is_empty()
        && sku.len() <= MAX_SKU
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "sku {:?}: 1 to {MAX_SKU} characters of A-Z, a-z, 0-9, '.', '_', '-'",
            echo(sku)
        )))
    }
}

/// The request key: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Error> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or(Error::MissingIdempotencyKey)?;
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::BadRequest(format!(
            "header Idempotency-Key: 1 to {MAX_KEY} visible ASCII characters (a UUID fits)"
        )));
    }
    Ok(key.to_owned())
}

/// The body as a JSON object with one integer field `field` in
/// `min..=max`; anything else names what is wrong.
fn integer_field(
    body: Result<Bytes, BytesRejection>,
    field: &str,
    min: i64,
    max: i64,
) -> Result<i64, Error> {
    let body = body.map_err(|e| Error::BadRequest(format!("body: {}", e.body_text())))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("body: not JSON ({e}); send {{\"{field}\": N}}")))?;
    let Value::Object(object) = value else {
        return Err(Error::BadRequest(format!(
            "body: a JSON object {{\"{field}\": N}}"
        )));
    };
    if let Some(other) = object.keys().find(|k| k.as_str() != field) {
        return Err(Error::BadRequest(format!(
            "body: unknown field {:?}; only {field:?}",
            echo(other)
        )));
    }
    let n = object
        .get(field)
        .ok_or_else(|| Error::BadRequest(format!("body: field {field:?} is required")))?;
    // JSON Schema's "integer" includes 2.0: a whole float is accepted.
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    });
    match whole {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::BadRequest(format!(
            "{field}: an integer from {min} to {max}, got {}",
            echo(&n.to_string())
        ))),
    }
}

fn counts_body(sku: &str, c: &Counts) -> Value {
    json!({
        "sku": sku, "total": c.total, "available": c.available,
        "held": c.held, "sold": c.sold, "version": c.version,
    })
}

fn reservation_body(r: &ReservationRow) -> Json<&ReservationRow> {
    Json(r)
}

/// `GET /v1/stock/{sku}`: the counts, the version as `ETag`.
pub async fn get_stock(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Path(sku): Path<String>,
) -> Result<Response, Error> {
    let stock = stock(&state, &method, &uri)?;
    check_sku(&sku)?;
    let counts = stock.counts(&sku).await?;
    Ok((
        [(header::ETAG, etag(counts.version))],
        Json(counts_body(&sku, &counts)),
    )
        .into_response())
}

/// `POST /v1/stock/{sku}/reservations` with `Idempotency-Key` and `{"qty": N}`.
pub async fn reserve(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let stock = stock(&state, &method, &uri)?;
    check_sku(&sku)?;
    let key = idempotency_key(&headers)?;
    let max = i64::try_from(stock.settings().max_qty).unwrap_or(i64::MAX);
    let qty = integer_field(body, "qty", 1, max)?;
    let reserved = stock.reserve(&sku, qty, &key).await?;
    let location = HeaderValue::from_str(&format!("/v1/reservations/{}", reserved.reservation.id))
        .unwrap_or(HeaderValue::from_static("/v1/reservations"));
    let replayed = HeaderValue::from_static(if reserved.replayed { "true" } else { "false" });
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::HeaderName::from_static(REPLAYED), replayed),
        ],
        reservation_body(&reserved.reservation),
    )
        .into_response())
}

/// `POST /v1/reservations/{id}/confirm`: the units are sold.
pub async fn confirm(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    settle(&state, &method, &uri, &id, true).await
}

/// `POST /v1/reservations/{id}/cancel`: the units go back into stock.
pub async fn cancel(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    settle(&state, &method, &uri, &id, false).await
}

async fn settle(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    id: &str,
    confirm: bool,
) -> Result<Response, Error> {
    let row = stock(state, method, uri)?.settle(id, confirm).await?;
    Ok(reservation_body(&row).into_response())
}

/// `PUT /v1/stock/{sku}` `{"total": N}` (admin): `If-None-Match: *` creates,
/// `If-Match: "version"` changes; what is held or sold is kept.
pub async fn put_stock(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let stock = stock(&state, &method, &uri)?;
    check_sku(&sku)?;
    let header_text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").trim().to_owned())
            // An empty header is no header (a client that cleared it).
            .filter(|v| !v.is_empty())
    };
    // Every input is checked (400) before the preconditions are judged.
    let absent = match header_text(header::IF_NONE_MATCH) {
        None => false,
        Some(star) if star == "*" => true,
        Some(_) => {
            return Err(Error::BadRequest(
                "If-None-Match: only * (create) is supported".into(),
            ))
        }
    };
    let version = match header_text(header::IF_MATCH) {
        None => None,
        Some(tag) => Some(
            quoted_version::<i64>(&tag).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "If-Match: the ETag of GET /v1/stock/{{sku}}, a quoted version like \"3\"; got {:?}",
                        echo(&tag)
                    ))
                })?,
        ),
    };
    let total = integer_field(body, "total", 0, MAX_TOTAL)?;
    let precondition =
        match (absent, version) {
            // Both: "absent" and "at this version" cannot both hold (RFC 9110
            // evaluates If-Match first; it fails on an absent SKU, and on a
            // present one If-None-Match: * fails).
            (true, Some(_)) => return Err(Error::PreconditionFailed(
                "If-None-Match: * (absent) and If-Match (present at a version) cannot both hold"
                    .into(),
            )),
            (true, None) => Precondition::Absent,
            (false, Some(version)) => Precondition::Version(version),
            (false, None) => return Err(Error::PreconditionRequired),
        };
    let (counts, created) = stock.put_total(&sku, total, precondition).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::ETAG, etag(counts.version))],
        Json(counts_body(&sku, &counts)),
    )
        .into_response())
}

/// Any method/path: 404 `unknown_route` when `[stock]` is off.
const OFF: &str = "404 unknown_route when stock.enabled is false.";

/// The stock routes.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/stock/{sku}",
        summary: "A SKU's stock: total, available, held, sold, and its version (also the ETag).",
        responses: &[
            (200, &[], "The counts; available + held + sold = total."),
            (400, &["bad_request", "bad_path"], "A malformed SKU."),
            (404, &["unknown_sku", "unknown_route"], "No stock was set for the SKU."),
            (503, &["source_unavailable"], "The database could not be read."),
        ],
        extra: Some(get_extra),
    },
    Route {
        method: "post",
        path: "/v1/stock/{sku}/reservations",
        summary: "Hold qty units of a SKU until confirmed, cancelled or expired. Idempotent by Idempotency-Key.",
        responses: &[
            (201, &[], "Held (Idempotent-Replayed: false), or the first answer to this key again (Idempotent-Replayed: true)."),
            (400, &["bad_request", "bad_path", "missing_idempotency_key"], "No Idempotency-Key, a malformed one, a malformed SKU, or a qty that is not an integer from 1 to stock.max_qty."),
            (404, &["unknown_sku", "unknown_route"], "No stock was set for the SKU."),
            (409, &["sold_out", "idempotency_in_flight"], "Fewer units are left than asked (the detail says how many), or this key's first request is still being answered."),
            (422, &["idempotency_key_reused"], "The key was used for another request (another SKU or qty)."),
            (503, &["source_unavailable"], "The database could not be written, or the SKU's queue is full."),
        ],
        extra: Some(reserve_extra),
    },
    Route {
        method: "post",
        path: "/v1/reservations/{id}/confirm",
        summary: "Sell a held reservation. Confirming it again answers the same.",
        responses: SETTLE_ANSWERS,
        extra: Some(settle_extra),
    },
    Route {
        method: "post",
        path: "/v1/reservations/{id}/cancel",
        summary: "Return a held reservation's units into stock. Cancelling it again answers the same.",
        responses: SETTLE_ANSWERS,
        extra: Some(settle_extra),
    },
    Route {
        method: "put",
        path: "/v1/stock/{sku}",
        summary: "Set a SKU's total (admin token): If-None-Match: * creates, If-Match: \"version\" changes; held and sold units are kept.",
        responses: &[
            (200, &[], "Changed; the new counts and ETag."),
            (201, &[], "Created; the counts and ETag."),
            (400, &["bad_request", "bad_path"], "A malformed SKU, body, or If-Match (not a quoted version) / If-None-Match (not *)."),
            (401, &["unauthorized"], "No admin token (WWW-Authenticate: Bearer)."),
            (403, &["forbidden"], "Another token than the admin token."),
            (404, &["unknown_route"], OFF),
            (409, &["total_below_committed"], "The total is below the units held and sold."),
            (412, &["precondition_failed"], "If-None-Match: * but the SKU exists, If-Match names another version (or no stock yet), or both headers."),
            (428, &["precondition_required"], "Neither If-None-Match: * nor If-Match."),
            (503, &["source_unavailable"], "The database could not be written."),
        ],
        extra: Some(put_extra),
    },
];

const SETTLE_ANSWERS: &[(u16, &[&str], &str)] = &[
    (200, &[], "The reservation in its new state."),
    (400, &["bad_path"], "A path that does not decode."),
    (
        404,
        &["unknown_reservation", "unknown_route"],
        "No such reservation (or forgotten after stock.key_ttl).",
    ),
    (
        409,
        &["reservation_settled"],
        "Already settled the other way.",
    ),
    (
        410,
        &["reservation_expired"],
        "The hold ran out; its units went back into stock.",
    ),
    (
        503,
        &["source_unavailable"],
        "The database could not be written.",
    ),
];

fn sku_parameter() -> Value {
    json!({
        "name": "sku", "in": "path", "required": true,
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" },
        "example": "SKU-0000001",
    })
}

fn counts_schema() -> Value {
    json!({
        "type": "object",
        "required": ["sku", "total", "available", "held", "sold", "version"],
        "properties": {
            "sku": { "type": "string" },
            "total": { "type": "integer", "minimum": 0 },
            "available": { "type": "integer", "minimum": 0 },
            "held": { "type": "integer", "minimum": 0 },
            "sold": { "type": "integer", "minimum": 0 },
            "version": { "type": "integer" },
        },
    })
}

fn reservation_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "sku", "qty", "state", "created_at", "expires_at"],
        "properties": {
            "id": { "type": "string" },
            "sku": { "type": "string" },
            "qty": { "type": "integer", "minimum": 1 },
            "state": { "enum": ["held", "confirmed", "cancelled", "expired"] },
            "created_at": { "type": "integer", "description": "Unix ms." },
            "expires_at": { "type": "integer", "description": "Unix ms: a hold not confirmed by then goes back into stock." },
        },
    })
}

fn etag_header() -> Value {
    json!({ "ETag": { "description": "The SKU's version, quoted: If-Match's value.", "schema": { "type": "string" } } })
}

fn get_extra(_: &Config) -> Value {
    json!({
        "parameters": [sku_parameter()],
        "responses": { "200": {
            "headers": etag_header(),
            "content": { "application/json": { "schema": counts_schema() } },
        } },
    })
}

fn reserve_extra(config: &Config) -> Value {
    json!({
        "parameters": [sku_parameter(), {
            "name": "Idempotency-Key", "in": "header", "required": true,
            "description": "One key per purchase attempt, the same on every retry of it; kept stock.key_ttl.",
            "schema": { "type": "string", "pattern": "^[!-~]{1,255}$" },
        }],
        "requestBody": { "required": true, "content": { "application/json": { "schema": {
            "type": "object", "required": ["qty"], "additionalProperties": false,
            "properties": { "qty": { "type": "integer", "minimum": 1, "maximum": config.stock.max_qty } },
        } } } },
        "responses": { "201": {
            "headers": {
                "Idempotent-Replayed": { "schema": { "enum": ["true", "false"] } },
                "Location": { "schema": { "type": "string" } },
            },
            "content": { "application/json": { "schema": reservation_schema() } },
        } },
    })
}

fn settle_extra(_: &Config) -> Value {
    json!({
        "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
        "responses": { "200": { "content": { "application/json": { "schema": reservation_schema() } } } },
    })
}

fn put_extra(_: &Config) -> Value {
    json!({
        "parameters": [sku_parameter(),
            { "name": "If-None-Match", "in": "header", "required": false, "schema": { "const": "*" } },
            { "name": "If-Match", "in": "header", "required": false, "schema": { "type": "string", "pattern": "^\"[0-9]+\"$" } }],
        "requestBody": { "required": true, "content": { "application/json": { "schema": {
            "type": "object", "required": ["total"], "additionalProperties": false,
            "properties": { "total": { "type": "integer", "minimum": 0, "maximum": MAX_TOTAL } },
        } } } },
        "security": [{ "bearerAuth": [] }],
        "responses": {
            "200": { "headers": etag_header(), "content": { "application/json": { "schema": counts_schema() } } },
            "201": { "headers": etag_header(), "content": { "application/json": { "schema": counts_schema() } } },
        },
    })
}
