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
use common::Schema;
use serde_json::{json, Value};
use tokio::sync::RwLock;

#[tokio::test]
async fn an_instance_killed_mid_sale_loses_and_doubles_nothing() {
    let schema = Schema::create("stock_kill").await;
    let config = shared_config(&schema.name, true);
    let a = spawn(&config, &schema.url()).await;
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
    let bases = Arc::new(RwLock::new([a.base.clone(), b.base.clone()]));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let buyers: Vec<_> = (0..1_000)
        .map(|i| {
            let (client, bases) = (client.clone(), bases.clone());
            tokio::spawn(async move {
                let key = format!("buyer-{i}");
                // Arrivals spread over a second, so the kill lands mid-sale.
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                for attempt in 0usize.. {
                    assert!(attempt < 400, "{key} never got an answer");
                    let base = bases.read().await[(i + attempt) % 2].clone();
                    let sent = client
                        .post(format!("{base}/v1/stock/HOT/reservations"))
                        .header("Idempotency-Key", &key)
                        .json(&json!({ "qty": 1 }))
                        .send()
                        .await;
                    let Ok(r) = sent else {
                        // The killed instance: retry, same key.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let status = r.status().as_u16();
                    let Ok(b) = r.json::<Value>().await else {
                        continue;
                    };
                    match (status, b["code"].as_str()) {
                        (201, _) => return Some(b["id"].as_str().expect("id").to_owned()),
                        (409, Some("sold_out")) => return None,
                        (503, _) | (409, Some("idempotency_in_flight")) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        other => panic!("{other:?}: {b}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // Mid-sale: kill A, then start a new A on another port.
    let mut a = a;
    let held_now = || async {
        let (held,): (i64,) = sqlx::query_as(&format!(
            "SELECT held FROM {}.stock WHERE sku = 'HOT'",
            schema.name
        ))
        .fetch_one(&schema.admin)
        .await
        .expect("held");
        held
    };
    while held_now().await < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let at_kill = held_now().await;
    assert!(at_kill < total, "the kill came mid-sale ({at_kill} held)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a2 = spawn(&config, &schema.url()).await;
    bases.write().await[0] = a2.base.clone();
    let mut won = Vec::new();
    for buyer in buyers {
        if let Some(id) = buyer.await.expect("buyer") {
            won.push(id);
        }
    }
    let distinct: HashSet<_> = won.iter().collect();
    assert_eq!(distinct.len(), won.len(), "no reservation answered twice");
    assert_eq!(
        won.len() as i64,
        total,
        "every unit sold once, to a buyer who was told"
    );
    let (available, held, sold): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT available, held, sold FROM {}.stock WHERE sku = 'HOT'",
        schema.name
    ))
    .fetch_one(&schema.admin)
    .await
    .expect("counts");
    assert_eq!(available + held + sold, total);
    assert_eq!((available, held), (0, total));
    let (rows, units): (i64, i64) = sqlx::query_as(&format!(
        "SELECT COUNT(*), COALESCE(SUM(qty), 0)::BIGINT FROM {}.reservations WHERE sku = 'HOT' AND state = 'held'",
        schema.name
    ))
    .fetch_one(&schema.admin)
    .await
    .expect("rows");
    assert_eq!((rows, units), (total, total), "one row per unit held");
    drop((a2, b));
    schema.drop().await;
}
