//! Hot-SKU group commit: reservations for one SKU that arrive within a
//! short window are applied in one transaction ([`Store::reserve_batch`]),
//! outcomes decided in arrival order.
//!
//! One worker task per SKU with requests, fed by a bounded queue. It takes
//! what is queued (at most `max`), waits at most `window` for more while
//! the batch is not full, runs the transaction and answers each request.
//! While a transaction runs the next batch queues up, so under load the
//! batch grows to what one commit's time gathers and throughput follows the
//! batch size instead of the row lock's one commit at a time. A full queue
//! is answered at once ([`Error::Overloaded`], 503), never waited on.
//! A worker idle for [`IDLE_EXIT`] ends; the map entry goes with it, under
//! the map's lock, only when its queue is empty, so no request is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::store::{Ask, Outcome, Store};
use crate::error::Error;

/// A worker without requests for this long ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(5);

type Reply = oneshot::Sender<Result<Outcome, String>>;

struct Pending {
    ask: Ask,
    now_ms: i64,
    reply: Reply,
}

/// The batching settings.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// How long a batch waits for more requests once it has one.
    pub window: Duration,
    /// Requests per transaction at most.
    pub max: usize,
    /// How long a reservation is held.
    pub hold_ms: i64,
}

/// The per-SKU workers.
pub struct GroupCommit {
    store: Store,
    settings: GroupSettings,
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<Pending>>>>,
}

impl GroupCommit {
    /// Batches over `store`.
    pub fn new(store: Store, settings: GroupSettings) -> GroupCommit {
        GroupCommit {
            store,
            settings,
            queues: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Starts `sku`'s worker and enters its queue in the map.
    fn spawn_worker(
        &self,
        queues: &mut HashMap<String, mpsc::Sender<Pending>>,
        sku: &str,
    ) -> mpsc::Sender<Pending> {
        // Room for a few full batches: past that the SKU is hotter than
        // its commits can drain.
        let (sender, receiver) = mpsc::channel(self.settings.max.saturating_mul(4));
        queues.insert(sku.to_owned(), sender.clone());
        tokio::spawn(worker(
            self.store.clone(),
            self.settings,
            Arc::clone(&self.queues),
            sku.to_owned(),
            receiver,
        ));
        sender
    }

    /// Queues `ask` behind its SKU's worker and waits for its outcome.
    pub async fn reserve(&self, ask: Ask, now_ms: i64) -> Result<Outcome, Error> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let mut pending = Pending { ask, now_ms, reply };
            // Under the map's lock: a worker only leaves with its queue
            // empty, checked under the same lock. A worker that died (a
            // panic) leaves a closed queue: replaced once, here.
            for _ in 0..2 {
                let sender = match queues.get(&pending.ask.sku) {
                    Some(sender) => sender.clone(),
                    None => self.spawn_worker(&mut queues, &pending.ask.sku),
                };
                match sender.try_send(pending) {
                    Ok(()) => break,
                    Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Overloaded),
                    Err(mpsc::error::TrySendError::Closed(back)) => {
                        queues.remove(&back.ask.sku);
                        pending = back;
                    }
                }
            }
        }
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(message)) => Err(Error::StockStore(message)),
            // The worker ended without answering (the runtime is stopping).
            Err(_) => Err(Error::StockStore(
                "the reservation batch was dropped".into(),
            )),
        }
    }
}

async fn worker(
    store: Store,
    settings: GroupSettings,
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<Pending>>>>,
    sku: String,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(settings.max);
    loop {
        let first = match tokio::time::timeout(IDLE_EXIT, receiver.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                let mut queues = queues.lock().unwrap_or_else(PoisonError::into_inner);
                if receiver.is_empty() {
                    queues.remove(&sku);
                    return;
                }
                continue;
            }
        };
        batch.push(first);
        while batch.len() < settings.max {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let deadline = Instant::now() + settings.window;
        while batch.len() < settings.max {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => batch.push(next),
                _ => break,
            }
        }
        run(&store, &sku, &mut batch, settings.hold_ms).await;
    }
}

/// One transaction for the batch (retried once: a key committed for
/// another SKU by a concurrent transaction fails the insert, and the retry
/// reads it as a replay), then every answer.
async fn run(store: &Store, sku: &str, batch: &mut Vec<Pending>, hold_ms: i64) {
    let asks: Vec<Ask> = batch.iter().map(|p| p.ask.clone()).collect();
    // One clock reading for the batch: its first request's.
    let now_ms = batch.first().map_or(0, |p| p.now_ms);
    let mut result = store.reserve_batch(sku, &asks, now_ms, hold_ms).await;
    if result.is_err() {
        result = store.reserve_batch(sku, &asks, now_ms, hold_ms).await;
    }
    match result {
        Ok(outcomes) => {
            for (pending, outcome) in batch.drain(..).zip(outcomes) {
                // A caller that went away (timed out) drops its receiver.
                let _ = pending.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(message.clone()));
            }
        }
    }
}
