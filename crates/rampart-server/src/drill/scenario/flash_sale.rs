//! `flash-sale`: 10,000 buyers for 1,000 units, each one `POST
//! /v1/stock/{sku}/reservations` of one unit under its own
//! `Idempotency-Key`, arriving together. Naive, the SQL path is the
//! classic read-then-write (`[stock] naive_read_then_write`): buyers who
//! read the same `available` sell the same unit, and more reservations are
//! granted than there are units. Guarded, rampart's path: the conditional
//! decrement, grouped per hot SKU — exactly the stock, never more.
//!
//! Its load is its own driver ([`Load::Own`]): an open loop of `POST`s,
//! one request a buyer, then the SQL totals read back. Buyers are the
//! plan's rate × duration and units a tenth of them, so `--rate` keeps
//! the sale's length and scales its crowd.

use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use crate::drill::config::{DrillConfig, DrillError, Post};
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;
use crate::stock::store::Precondition;

use super::measure::Half;
use super::{Drive, Driven, DriverFuture, Figure, Load, Mode, Plan, Scenario};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "flash-sale",
    incident: "10,000 buyers for 1,000 units: stock read, then written back minus one in a \
               separate statement — buyers who read the same count sell the same unit (oversold)",
    guards: "the conditional decrement (`… WHERE available >= qty`, zero rows = sold out) in \
             the reservation's transaction, grouped per hot SKU (group commit)",
    plan,
    configure,
    load: Load::Own(drive),
    client: |_| ClientRetry::Never,
    figures,
};

/// One unit for every ten buyers, as in the document's sale.
const BUYERS_PER_UNIT: u64 = 10;

/// Buyers and units of a plan: one buyer per request of its open loop.
fn sale(plan: &Plan) -> (u64, i64) {
    let buyers = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let units = i64::try_from(buyers / BUYERS_PER_UNIT).unwrap_or(i64::MAX);
    (buyers, units)
}

fn plan(quick: bool) -> Plan {
    // 10,000 buyers (CI: 1,000), the whole crowd within a few seconds
    // (at least two: the report's charts draw a point a second).
    let (buyers, rate) = if quick {
        (1_000.0, 500.0)
    } else {
        (10_000.0, 2_500.0)
    };
    Plan {
        rows: 1_000,
        keys: KeySpace::Fixed("FLASH-<half>".to_owned()),
        rate,
        duration: Duration::from_secs_f64(buyers / rate),
        connections: 256,
        request_timeout: Duration::from_secs(10),
        network: Vec::new(),
        source: Vec::new(),
        redis: None,
        incident: None,
    }
}

fn configure(config: &mut Config, mode: Mode) {
    config.stock.naive_read_then_write = mode == Mode::Naive;
}

/// A SKU of each half's own: both halves share the stage's schema.
fn sku(mode: Mode) -> String {
    format!("FLASH-{}", mode.as_str().to_uppercase())
}

fn failed(what: &str) -> impl Fn(sqlx::Error) -> DrillError + '_ {
    move |e| DrillError::Internal(format!("flash-sale: {what}: {e}"))
}

fn drive(run: Drive<'_>) -> DriverFuture<'_> {
    Box::pin(async move {
        let state = &run.server.state;
        let stock = state
            .stock
            .as_ref()
            .ok_or_else(|| DrillError::Internal("flash-sale: stock is off".to_owned()))?;
        let (buyers, units) = sale(run.plan);
        let sku = sku(run.mode);
        stock
            .put_total(&sku, units, Precondition::Absent)
            .await
            .map_err(|e| DrillError::Internal(format!("flash-sale: stocking {sku}: {e}")))?;
        let drill = DrillConfig {
            targets: vec![format!(
                "http://{}/v1/stock/{{key}}/reservations",
                run.server.addr
            )],
            keys: KeySpace::Fixed(sku.clone()),
            connections: run.plan.connections,
            duration: run.plan.duration,
            max_requests: Some(buyers),
            warmup: Duration::ZERO,
            request_timeout: run.plan.request_timeout,
            rate: Some(run.plan.rate),
            retry: ClientRetry::Never,
            seed: None,
            post: Some(Post {
                body: Bytes::from_static(br#"{"qty":1}"#),
                idempotency_prefix: Some(format!("{}-buyer-", run.mode.as_str())),
            }),
        };
        drill.validate()?;
        let load = crate::drill::run(&drill).await?;
        // The truth after the sale: the row and the reservations.
        let counts = stock
            .store()
            .counts(&sku)
            .await
            .map_err(failed("reading the stock row"))?
            .ok_or_else(|| DrillError::Internal(format!("flash-sale: {sku} is gone")))?;
        let (rows, promised): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(qty), 0) AS BIGINT) FROM reservations \
             WHERE sku = $1",
        )
        .bind(&sku)
        .fetch_one(&state.pool)
        .await
        .map_err(failed("counting reservations"))?;
        let granted = load.by_status.get(&201).copied().unwrap_or(0);
        let figures = vec![
            Figure {
                label: "buyers / units",
                value: format!("{buyers} / {units}"),
            },
            Figure {
                label: "granted (HTTP 201)",
                value: granted.to_string(),
            },
            Figure {
                label: "units promised (SQL rows)",
                value: format!("{promised} in {rows} reservations"),
            },
            Figure {
                label: "oversold",
                value: (promised - units).max(0).to_string(),
            },
            Figure {
                label: "stock row avail+held+sold",
                value: format!(
                    "{} + {} + {} = {}",
                    counts.available, counts.held, counts.sold, counts.total
                ),
            },
        ];
        Ok(Driven { load, figures })
    })
}

/// Everything is measured by the driver (the SQL totals after the sale).
fn figures(_: &Plan, _: &Half) -> Vec<Figure> {
    Vec::new()
}
