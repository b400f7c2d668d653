//! How an instance learns of changes made through another: on PostgreSQL,
//! LISTEN on [`store::CHANNEL`](super::store::CHANNEL) (each write sends a
//! NOTIFY in its transaction, delivered on commit) on a connection of its
//! own; and everywhere, a periodic reconcile that reads every namespace's
//! revision, so a notice lost (listener down, connection dropped between
//! a commit and its delivery) delays an update by at most
//! `reconcile_interval`, never loses it. A reconnected listener reconciles
//! at once (the gap may have swallowed notices). Whatever arrives is
//! published through the registry's snapshots, which refuse an older
//! revision: a late notice or a slow reconcile cannot take an instance
//! backwards.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::store::CHANNEL;
use super::ConfigCenter;

/// The bound on connecting the listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the listener (PostgreSQL, `listen` on) and the reconcile until `stop`.
pub fn spawn(center: Arc<ConfigCenter>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !center.settings.enabled {
            return;
        }
        let listen = center.settings.listen && center.store.is_postgres();
        let mut listener: Option<PgListener> = None;
        let mut tick = tokio::time::interval(center.settings.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listen && listener.is_none() {
                listener = connect(&center.database_url).await;
                if listener.is_some() {
                    // Notices sent while no one listened are gone.
                    reconcile(&center).await;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => reconcile(&center).await,
                heard = recv(&mut listener) => match heard {
                    Ok(Some(notice)) => {
                        if let Err(err) = center.refresh(notice.payload()).await {
                            tracing::warn!(%err, "config center: refresh after a notice failed");
                        }
                    }
                    // The connection dropped and was re-established:
                    // notices in between are lost.
                    Ok(None) => reconcile(&center).await,
                    Err(err) => {
                        tracing::warn!(%err, "config center: notice listener failed; reconnecting");
                        listener = None;
                    }
                },
            }
        }
    })
}

async fn connect(url: &str) -> Option<PgListener> {
    let attempt = async {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(listener)) => Some(listener),
        Ok(Err(err)) => {
            tracing::warn!(%err, "config center: cannot listen for notices");
            None
        }
        Err(_) => {
            tracing::warn!("config center: connecting the notice listener timed out");
            None
        }
    }
}

/// The next notice; pending forever without a listener.
async fn recv(listener: &mut Option<PgListener>) -> Result<Option<PgNotification>, sqlx::Error> {
    match listener {
        Some(listener) => listener.try_recv().await,
        None => std::future::pending().await,
    }
}

async fn reconcile(center: &ConfigCenter) {
    match center.reconcile().await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(namespaces = n, "config center: reconcile refreshed"),
        Err(err) => tracing::warn!(%err, "config center: reconcile failed"),
    }
}
