//! One pub/sub subscriber per process. It hears lease releases (and wakes
//! the local callers waiting on that key) and invalidations (and hands them
//! to a callback that drops the key from L1).
//!
//! Waiters register *before* they try the lease, so a release that lands
//! between a lost `SET NX` and the wait is not missed. A notice is a hint:
//! after waking, callers re-read L2, and a caller whose notice never comes
//! (the subscriber was reconnecting) still stops at its bounded wait.
//!
//! # Gaps
//!
//! Notices published while no subscription is up are lost to this
//! process, and an invalidation lost means a stale L1 entry for a whole
//! TTL. So the gap callback runs whenever notices may have been missed:
//! when the subscription drops, and again when it is back up after a drop
//! or a failed attempt (the fills made while it was down are just as
//! suspect as the ones before). The second call comes after SUBSCRIBE is
//! confirmed, so whatever the owner caches from then on is covered. Only
//! a first attempt that succeeds runs no callback.
//!
//! # Staying subscribed
//!
//! * Each attempt (connect + SUBSCRIBE) is bounded by the per-call
//!   timeout, so a black-holed node cannot hang the subscriber.
//! * Each attempt goes to the next configured URL (every Cluster seed
//!   node hears every PUBLISH), so one dead node does not leave the
//!   process unsubscribed.
//! * A node that dies without closing the socket (stopped, cut off) leaves
//!   a subscription that looks alive and hears nothing. A PING on the
//!   subscription every [`LIVENESS_EVERY`] that must be answered within
//!   [`LIVENESS_TIMEOUT`] notices it within about 1.5 s.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::keys::{INVALIDATE_CHANNEL, RELEASE_CHANNEL};

/// How often the subscription is checked with a PING.
pub const LIVENESS_EVERY: Duration = Duration::from_millis(500);
/// How long that PING may take before the subscription counts as dead.
/// Fixed rather than the per-call timeout: a dead subscription must be
/// noticed within seconds whatever that is, and a second is far above a
/// healthy loopback or LAN answer even on a loaded host.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause between failed attempts; it doubles up to
/// [`MAX_BACKOFF`] and is reset by a successful subscription.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

type InvalidationHandler = Arc<dyn Fn(&str, &str) + Send + Sync>;
type GapHandler = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    /// Hash tag → the waiters' Notify. Weak: an entry dies with its last
    /// waiter and is pruned on the next registration.
    waiters: Mutex<HashMap<String, Weak<Notify>>>,
    on_invalidate: Mutex<Option<InvalidationHandler>>,
    on_gap: Mutex<Option<GapHandler>>,
    subscribed: AtomicBool,
    /// The URL the subscription is up through, while it is up.
    subscribed_url: Mutex<Option<String>>,
    /// Subscriptions lost.
    gaps: AtomicU64,
    /// Subscriptions established, the first one included.
    subscriptions: AtomicU64,
}

impl Shared {
    fn run_gap_handler(&self) {
        let handler = self.on_gap.lock().clone();
        if let Some(handler) = handler {
            handler();
        }
    }
}

/// The process's notice subscriber. Cheap to clone; the subscriber stops
/// when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Notices {
    shared: Arc<Shared>,
}

/// A registered wait for one key's release.
pub struct Waiter {
    notified: Pin<Box<OwnedNotified>>,
}

impl Waiter {
    /// Resolves when a release of the key is heard.
    pub async fn wait(self) {
        self.notified.await;
    }
}

impl Notices {
    /// Starts the subscriber over `urls` (a single node, or any Cluster
    /// nodes: each hears every PUBLISH), trying them in turn; `timeout`
    /// bounds each connect + SUBSCRIBE. It reconnects by itself, with
    /// backoff, until the last clone is dropped. Must be called within a
    /// Tokio runtime.
    pub fn start(urls: &[String], timeout: Duration) -> Result<Notices, rampart::Error> {
        if urls.is_empty() {
            return Err(rampart::Error::invalid_config(
                "redis notices: no URL given",
            ));
        }
        let clients = urls
            .iter()
            .map(|url| {
                redis::Client::open(url.as_str())
                    .map(|client| (url.clone(), client))
                    .map_err(rampart::Error::tier)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let notices = Notices::default();
        let shared = Arc::downgrade(&notices.shared);
        tokio::spawn(subscribe_forever(clients, shared, timeout));
        Ok(notices)
    }

    /// True while the subscription is up.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    /// The URL the subscription is up through, if it is up.
    pub fn subscribed_url(&self) -> Option<String> {
        self.shared.subscribed_url.lock().clone()
    }

    /// How many times the subscription was lost.
    pub fn gaps(&self) -> u64 {
        self.shared.gaps.load(Ordering::Acquire)
    }

    /// How many times the subscription was established (the first
    /// included): resubscriptions are this minus one.
    pub fn subscriptions(&self) -> u64 {
        self.shared.subscriptions.load(Ordering::Acquire)
    }

    /// Calls `handler(resource, key)` for every invalidation heard.
    pub fn on_invalidate(&self, handler: impl Fn(&str, &str) + Send + Sync + 'static) {
        *self.shared.on_invalidate.lock() = Some(Arc::new(handler));
    }

    /// Calls `handler()` whenever notices may have been missed: when the
    /// subscription is lost, and when it is back up (see the module doc).
    pub fn on_gap(&self, handler: impl Fn() + Send + Sync + 'static) {
        *self.shared.on_gap.lock() = Some(Arc::new(handler));
    }

    /// Registers a wait for `tag`'s release; call before trying the lease.
    pub fn waiter(&self, tag: &str) -> Waiter {
        let notify = {
            let mut waiters = self.shared.waiters.lock();
            let existing = waiters.get(tag).and_then(Weak::upgrade);
            existing.unwrap_or_else(|| {
                if waiters.len() > 1_024 {
                    waiters.retain(|_, w| w.strong_count() > 0);
                }
                let notify = Arc::new(Notify::new());
                waiters.insert(tag.to_owned(), Arc::downgrade(&notify));
                notify
            })
        };
        let mut notified = Box::pin(notify.notified_owned());
        // Enabled now, so a notify_waiters() from here on reaches it even
        // before it is first polled.
        notified.as_mut().enable();
        Waiter { notified }
    }

    fn released(shared: &Shared, tag: &str) {
        let notify = shared.waiters.lock().get(tag).and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    fn heard(shared: &Shared, message: &redis::Msg) {
        let Ok(payload) = message.get_payload::<String>() else {
            return;
        };
        match message.get_channel_name() {
            RELEASE_CHANNEL => Notices::released(shared, &payload),
            INVALIDATE_CHANNEL => {
                let handler = shared.on_invalidate.lock().clone();
                if let (Some(handler), Some((resource, key))) = (handler, payload.split_once('\n'))
                {
                    handler(resource, key);
                }
            }
            _ => {}
        }
    }
}

async fn subscribe_forever(
    clients: Vec<(String, redis::Client)>,
    shared: Weak<Shared>,
    timeout: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    // Whether notices may have been missed since the last subscription.
    let mut missed = false;
    for (url, client) in clients.iter().cycle() {
        if shared.strong_count() == 0 {
            return;
        }
        match subscribe(client, timeout).await {
            Ok((sink, stream)) => {
                backoff = MIN_BACKOFF;
                {
                    let Some(s) = shared.upgrade() else { return };
                    // Before `subscribed` is set: whoever sees it up sees
                    // the suspect L1 already dealt with.
                    if missed {
                        s.run_gap_handler();
                    }
                    *s.subscribed_url.lock() = Some(url.clone());
                    s.subscriptions.fetch_add(1, Ordering::AcqRel);
                    s.subscribed.store(true, Ordering::Release);
                }
                listen(sink, stream, &shared).await;
                // The subscription ended: whatever is published until the
                // next one is lost to us.
                let Some(s) = shared.upgrade() else { return };
                s.subscribed.store(false, Ordering::Release);
                *s.subscribed_url.lock() = None;
                s.gaps.fetch_add(1, Ordering::AcqRel);
                s.run_gap_handler();
                tracing::warn!(%url, "redis notice subscription lost; resubscribing");
            }
            Err(err) => tracing::debug!(%url, %err, "redis notice subscriber cannot subscribe"),
        }
        missed = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects and subscribes to both channels, within `timeout`.
async fn subscribe(
    client: &redis::Client,
    timeout: Duration,
) -> Result<(PubSubSink, PubSubStream), String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub
            .subscribe(&[RELEASE_CHANNEL, INVALIDATE_CHANNEL])
            .await?;
        Ok::<_, redis::RedisError>(pubsub.split())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(split)) => Ok(split),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no subscription within {timeout:?}")),
    }
}

/// Delivers messages until the subscription ends or stops answering PING
/// (or the last `Notices` is dropped).
async fn listen(mut sink: PubSubSink, mut stream: PubSubStream, shared: &Weak<Shared>) {
    let heartbeat = async {
        loop {
            tokio::time::sleep(LIVENESS_EVERY).await;
            if shared.strong_count() == 0 {
                return;
            }
            let answered =
                tokio::time::timeout(LIVENESS_TIMEOUT, sink.ping::<redis::Value>()).await;
            if !matches!(answered, Ok(Ok(_))) {
                tracing::debug!("redis notice subscription did not answer PING");
                return;
            }
        }
    };
    let deliver = async {
        while let Some(message) = stream.next().await {
            let Some(s) = shared.upgrade() else { return };
            Notices::heard(&s, &message);
        }
    };
    tokio::select! {
        () = heartbeat => {}
        () = deliver => {}
    }
}
