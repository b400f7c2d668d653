//! The demo data set: `users` and `products`, on SQLite or PostgreSQL,
//! generated deterministically from the row number so that a second run
//! adds nothing (idempotent) and every test can predict any row.

use std::time::Instant;

use sqlx::AnyPool;

use crate::cache::source::count;
use crate::start_error::StartError;

/// Rows per INSERT statement.
const ROWS_PER_INSERT: u64 = 1_000;

const COUNTRIES: [&str; 8] = ["CN", "US", "DE", "JP", "BR", "IN", "FR", "GB"];

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoReport {
    pub users: u64,
    pub products: u64,
    pub inserted: bool,
}

/// Products generated for `users` users: a hundredth, at least one.
pub fn product_count(users: u64) -> u64 {
    (users / 100).max(1)
}

/// The demo user row `id` as the API serves it.
pub fn user_json(id: u64) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "name": format!("User {id}"),
        "email": format!("user{id}@example.com"),
        "country": COUNTRIES[(id % COUNTRIES.len() as u64) as usize],
        "balance_cents": (id * 7_919) % 1_000_000,
        "created_at": 1_600_000_000 + id,
    })
}

/// The SKU of demo product `i`.
pub fn sku(i: u64) -> String {
    format!("SKU-{i:07}")
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres")
}

/// Creates the demo tables if needed and fills them up to `users` users
/// (and a hundredth as many products). Rows already there are kept.
pub async fn ensure(
    pool: &AnyPool,
    url: &str,
    users: u64,
    quiet: bool,
) -> Result<DemoReport, StartError> {
    let db = |e: sqlx::Error| StartError::Database(e.to_string());
    // SQLite's rowid alias must be spelled INTEGER; PostgreSQL's INTEGER is
    // 32-bit, so it gets BIGINT.
    let int_key = if is_postgres(url) {
        "BIGINT"
    } else {
        "INTEGER"
    };
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS users (id {int_key} PRIMARY KEY, name TEXT NOT NULL, \
         email TEXT NOT NULL, country TEXT NOT NULL, balance_cents BIGINT NOT NULL, \
         created_at BIGINT NOT NULL)"
    ))
    .execute(pool)
    .await
    .map_err(db)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, title TEXT NOT NULL, \
         price_cents BIGINT NOT NULL, stock BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(db)?;

    let products = product_count(users);
    let have_users = count(pool, "SELECT COUNT(*) FROM users").await?;
    let have_products = count(pool, "SELECT COUNT(*) FROM products").await?;
    if have_users >= users && have_products >= products {
        return Ok(DemoReport {
            users: have_users,
            products: have_products,
            inserted: false,
        });
    }
    let started = Instant::now();
    if !quiet {
        tracing::info!("generating demo data: {users} users, {products} products …");
    }
    fill(pool, users, quiet, |start, end| {
        let rows: Vec<String> = (start..end)
            .map(|id| {
                format!(
                    "({id}, 'User {id}', 'user{id}@example.com', '{}', {}, {})",
                    COUNTRIES[(id % COUNTRIES.len() as u64) as usize],
                    (id * 7_919) % 1_000_000,
                    1_600_000_000 + id
                )
            })
            .collect();
        // Literal values are safe here: every one is generated above from
        // an integer, never from input.
        format!(
            "INSERT INTO users (id, name, email, country, balance_cents, created_at) VALUES {} \
             ON CONFLICT DO NOTHING",
            rows.join(", ")
        )
    })
    .await?;
    fill(pool, products, true, |start, end| {
        let rows: Vec<String> = (start..end)
            .map(|i| {
                format!(
                    "('{}', 'Product {i}', {}, {})",
                    sku(i),
                    100 + (i * 37) % 100_000,
                    (i * 13) % 1_000
                )
            })
            .collect();
        format!(
            "INSERT INTO products (sku, title, price_cents, stock) VALUES {} ON CONFLICT DO NOTHING",
            rows.join(", ")
        )
    })
    .await?;
    if !quiet {
        tracing::info!(
            "demo data ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(DemoReport {
        users,
        products,
        inserted: true,
    })
}

/// Inserts ids `1..=total` in statements of `ROWS_PER_INSERT`, 50 per
/// transaction, printing progress every tenth.
async fn fill(
    pool: &AnyPool,
    total: u64,
    quiet: bool,
    statement: impl Fn(u64, u64) -> String,
) -> Result<(), StartError> {
    let db = |e: sqlx::Error| StartError::Database(e.to_string());
    let mut next = 1;
    let mut reported = 0;
    while next <= total {
        let mut tx = pool.begin().await.map_err(db)?;
        for _ in 0..50 {
            if next > total {
                break;
            }
            let end = (next + ROWS_PER_INSERT).min(total + 1);
            sqlx::query(&statement(next, end))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            next = end;
        }
        tx.commit().await.map_err(db)?;
        let tenth = (next - 1) * 10 / total.max(1);
        if !quiet && tenth > reported {
            reported = tenth;
            tracing::info!("demo data {}%", tenth * 10);
        }
    }
    Ok(())
}
