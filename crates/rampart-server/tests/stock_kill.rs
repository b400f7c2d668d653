//! A flash sale across two `rampart serve` processes on PostgreSQL, one
//! SIGKILLed mid-sale and restarted: every buyer retries under its own key
//! (on the other instance while the first is down), and at the end
//! sold + held + available = total, one reservation per winning key,
//! nothing lost or doubled.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::process::{shared_config, spawn};
use common::stock::{in_db, rows_in_db, staggered_sale};
use common::Schema;
use tokio::sync::RwLock;

#[tokio::test]
async fn an_instance_killed_mid_sale_loses_and_doubles_nothing() {
    let schema = Schema::create("stock_kill").await;
    let config = shared_config(&schema.name, true);
    let mut a = spawn(&config, &schema.url()).await;
    let b = spawn(&config, &schema.url()).await;
    let total = 300i64;
    sqlx::query(&format!(
        "INSERT INTO {}.stock (sku, total, available, held, sold, version) VALUES ('HOT', $1, $1, 0, 0, 1)",
        schema.name
    ))
    .bind(total)
    .execute(&schema.admin)
    .await
    .expect("stock");
    let bases = Arc::new(RwLock::new(vec![a.base.clone(), b.base.clone()]));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let sale = staggered_sale(client, bases.clone(), "HOT", 1_000, 1);
    // Mid-sale: kill A, then start a new A on another port.
    while in_db(&schema, "HOT", "held").await < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let at_kill = in_db(&schema, "HOT", "held").await;
    assert!(at_kill < total, "the kill came mid-sale ({at_kill} held)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a2 = spawn(&config, &schema.url()).await;
    bases.write().await[0] = a2.base.clone();
    let won = sale.await.expect("sale");
    let distinct: HashSet<_> = won.iter().collect();
    assert_eq!(distinct.len(), won.len(), "no reservation answered twice");
    assert_eq!(
        won.len() as i64,
        total,
        "every unit sold once, to a buyer who was told"
    );
    let (available, held, sold) = (
        in_db(&schema, "HOT", "available").await,
        in_db(&schema, "HOT", "held").await,
        in_db(&schema, "HOT", "sold").await,
    );
    assert_eq!(available + held + sold, total);
    assert_eq!((available, held), (0, total));
    assert_eq!(
        rows_in_db(&schema, "HOT").await,
        (total, total),
        "one row per unit held"
    );
    drop((a2, b));
    schema.drop().await;
}
