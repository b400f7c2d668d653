//! The reaper: every `stock.reap_interval`, holds past their time go back
//! into stock and keys past `stock.key_ttl` are forgotten, in SQL and in
//! the Redis gate; every `stock.reconcile_interval` (and at start) the
//! gate is rebuilt from SQL. Every instance
//! runs one; two reaping at once is safe (a hold is moved out of `held`
//! once, by whichever transaction updates its row first).

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Runs until `stop` (nothing to do without the stock capability).
pub async fn run(state: AppState, stop: CancellationToken) {
    let Some(stock) = state.stock.clone() else {
        return;
    };
    // At start: the gate (Redis) is rebuilt from the truth (SQL).
    if let Err(e) = stock.reconcile_all().await {
        tracing::warn!("stock: rebuilding the Redis gate at start: {e}");
    }
    let mut tick = tokio::time::interval(stock.settings().reap_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconciled = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match stock.reap().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "stock: holds returned"),
            Err(e) => tracing::warn!("stock reaper: {e}"),
        }
        let reconcile = reconciled.elapsed() >= stock.settings().reconcile_interval;
        if reconcile {
            reconciled = tokio::time::Instant::now();
        }
        if let Err(e) = stock.gate_upkeep(reconcile).await {
            tracing::debug!("stock: Redis gate upkeep: {e}");
        }
    }
}
