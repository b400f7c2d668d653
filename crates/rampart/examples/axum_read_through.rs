//! A read-through cache in front of a sqlx query, inside an axum handler.
//!
//! `cargo run -p rampart --example axum_read_through`
//!
//! Starts an axum server on a free local port over an in-memory SQLite
//! table, asks it a few questions, prints the answers with their `x-cache`
//! status, and exits. Copy `Users`, `get_user` and the `TieredCache::builder`
//! call into your own service; the rest is scaffolding.
//!
//! What the cache gives the handler, with no more code than this:
//! * a hot key is read from the database once per `ttl`, not once per
//!   request; a burst of requests for a cold key makes one query
//!   (single-flight), the others wait for it;
//! * a key that does not exist is remembered too (`negative_ttl`), so a
//!   scan of random ids does not reach the database every time;
//! * the query runs behind a circuit breaker and a bulkhead (on by
//!   default, tuned below): a database that is down or slow gets refused
//!   calls instead of a pile-up, and the handler answers 503 with
//!   `Retry-After` at once;
//! * when the database fails, a recently expired value is still answered
//!   (`stale_if_error`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::cache::{CacheConfig, TieredCache};
use rampart::limit::{Bulkhead, BulkheadConfig};
use rampart::{BoxError, Loader};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

/// The source of truth: one query per key the cache misses.
struct Users {
    pool: SqlitePool,
}

#[async_trait]
impl Loader<i64, Arc<str>> for Users {
    async fn load(&self, id: &i64) -> Result<Option<Arc<str>>, BoxError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT name FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        // `None`: no such user, cached as such.
        Ok(row.map(|(name,)| Arc::from(name)))
    }
}

type UserCache = TieredCache<i64, Arc<str>>;

async fn get_user(State(users): State<UserCache>, Path(id): Path<i64>) -> Response {
    match users.get(&id).await {
        Ok(lookup) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-cache",
                HeaderValue::from_static(lookup.status().as_str()),
            );
            match lookup.value() {
                Some(name) => (headers, name.to_string()).into_response(),
                None => (StatusCode::NOT_FOUND, headers, "no such user").into_response(),
            }
        }
        // A guard refused (breaker open, bulkhead full): say when to come
        // back instead of making the client wait.
        Err(refused) if refused.is_rejection() => {
            let seconds = refused.retry_after().map_or(1, |d| d.as_secs().max(1));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, seconds.to_string())],
                refused.to_string(),
            )
                .into_response()
        }
        Err(failed) => (StatusCode::BAD_GATEWAY, failed.to_string()).into_response(),
    }
}

async fn database() -> Result<SqlitePool, sqlx::Error> {
    // One connection: every connection to `:memory:` is its own database.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    for (id, name) in [(1, "ada"), (2, "grace"), (3, "edsger")] {
        sqlx::query("INSERT INTO users (id, name) VALUES (?, ?)")
            .bind(id)
            .bind(name)
            .execute(&pool)
            .await?;
    }
    Ok(pool)
}

fn user_cache(pool: SqlitePool) -> Result<UserCache, rampart::Error> {
    // Every setting has a default; these are the ones a service usually
    // sets. `validate()` runs in `build()` and names a bad field.
    let config = CacheConfig {
        ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        load_timeout: Duration::from_millis(500),
        ..CacheConfig::default()
    };
    // The breaker and bulkhead are on by default; passing your own lets
    // you tune them and keep a handle for metrics (`breaker.stats()`).
    let breaker = CircuitBreaker::new("users-db", BreakerConfig::default());
    let bulkhead = Bulkhead::new(
        "users-db",
        BulkheadConfig {
            max_concurrent: 8,
            ..BulkheadConfig::default()
        },
    );
    TieredCache::builder("users", Users { pool })
        .config(config)
        .breaker(Some(breaker))
        .bulkhead(Some(bulkhead))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let users = user_cache(database().await?)?;
    let app = Router::new()
        .route("/users/{id}", get(get_user))
        .with_state(users.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on http://{addr}");

    // A few requests, as a client would make them.
    for path in ["/users/1", "/users/1", "/users/2", "/users/99", "/users/99"] {
        let (status, cache, body) = http_get(&format!("http://{addr}{path}")).await?;
        println!("GET {path:<10} -> {status} x-cache={cache:<8} {body}");
    }
    let stats = users.stats();
    println!("database loads: {} (5 requests)", stats.loads);
    // The repeated id and the repeated absent id were answered from memory.
    assert_eq!(stats.loads, 3);
    server.abort();
    Ok(())
}

/// A minimal HTTP/1.1 GET with hyper's client: (status, x-cache, body).
async fn http_get(url: &str) -> Result<(u16, String, String), BoxError> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(url.parse()?).await?;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, cache, String::from_utf8_lossy(&body).into_owned()))
}
