//! The bare alternative for the HTTP benchmark: a plain axum handler that
//! answers `GET /v1/r/users/{key}` with the same bytes rampart serves for
//! the demo data set, from a precomputed table, with no guards at all.
//!
//! `cargo run --release -p rampart-server --example bare_axum -- 127.0.0.1:7071 100000`

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

async fn user(State(rows): State<Arc<Vec<Bytes>>>, Path(key): Path<usize>) -> Response {
    match rows.get(key) {
        Some(row) if key > 0 => {
            ([(header::CONTENT_TYPE, "application/json")], row.clone()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7071".into());
    let count: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    // Index 0 is unused so that key N is at index N.
    let rows: Vec<Bytes> = (0..=count)
        .map(|id| {
            Bytes::from(
                serde_json::to_vec(&rampart_server::cache::demo::user_json(id)).unwrap_or_default(),
            )
        })
        .collect();
    let app = Router::new()
        .route("/v1/r/users/{key}", get(user))
        .with_state(Arc::new(rows));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare axum serving {count} users on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
