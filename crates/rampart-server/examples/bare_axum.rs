//! The bare alternatives for the HTTP benchmark: a plain axum handler that
//! answers `GET /v1/r/users/{key}` with the same bytes rampart serves for
//! the demo data set, with no guards at all, from
//!
//! - `table`: a precomputed `Vec` indexed by the key (the cheapest lookup
//!   there is: one array index);
//! - `map`: a `quick_cache` map filled with every row (what a service that
//!   keeps an in-process cache would use: the same map rampart's L1 is).
//!
//! `cargo run --release -p rampart-server --example bare_axum -- 127.0.0.1:7071 100000 [table|map]`

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

fn found(row: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], row).into_response()
}

async fn from_table(State(rows): State<Arc<Vec<Bytes>>>, Path(key): Path<usize>) -> Response {
    match rows.get(key) {
        Some(row) if key > 0 => found(row.clone()),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn from_map(
    State(rows): State<Arc<quick_cache::sync::Cache<u64, Bytes>>>,
    Path(key): Path<u64>,
) -> Response {
    match rows.get(&key) {
        Some(row) => found(row),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7071".into());
    let count: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let mode = args.next().unwrap_or_else(|| "table".into());
    let row = |id: u64| {
        Bytes::from(
            serde_json::to_vec(&rampart_server::cache::demo::user_json(id)).unwrap_or_default(),
        )
    };
    let app = match mode.as_str() {
        // Index 0 is unused so that key N is at index N.
        "table" => Router::new()
            .route("/v1/r/users/{key}", get(from_table))
            .with_state(Arc::new((0..=count).map(row).collect::<Vec<_>>())),
        "map" => {
            let rows = quick_cache::sync::Cache::new(usize::try_from(count)?.max(1));
            for id in 1..=count {
                rows.insert(id, row(id));
            }
            Router::new()
                .route("/v1/r/users/{key}", get(from_map))
                .with_state(Arc::new(rows))
        }
        other => return Err(format!("mode must be table or map, not {other:?}").into()),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare axum ({mode}) serving {count} users on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
