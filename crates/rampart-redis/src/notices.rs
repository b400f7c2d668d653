//! One pub/sub subscriber per process. It hears lease releases (and wakes
//! the local callers waiting on that key) and invalidations (and hands them
//! to a callback that drops the key from L1).
//!
//! Waiters register *before* they try the lease, so a release that lands
//! between a lost `SET NX` and the wait is not missed. A notice is a hint:
//! after waking, callers re-read L2, and a caller whose notice never comes
//! (the subscriber was reconnecting) still stops at its bounded wait.
//!
//! When the subscription drops, notices may have been missed: the gap
//! callback runs, so the owner can treat its L1 as suspect.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::keys::{INVALIDATE_CHANNEL, RELEASE_CHANNEL};

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
}

/// The process's notice subscriber. Cheap to clone.
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
    /// Starts the subscriber on `url` (any node of a Cluster hears every
    /// PUBLISH). It reconnects by itself, with backoff, until the process
    /// ends.
    pub fn start(url: &str) -> Result<Notices, rampart::Error> {
        let client = redis::Client::open(url).map_err(rampart::Error::tier)?;
        let notices = Notices::default();
        let shared = Arc::downgrade(&notices.shared);
        tokio::spawn(subscribe_forever(client, shared));
        Ok(notices)
    }

    /// True while the subscription is up.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    /// Calls `handler(resource, key)` for every invalidation heard.
    pub fn on_invalidate(&self, handler: impl Fn(&str, &str) + Send + Sync + 'static) {
        *self.shared.on_invalidate.lock() = Some(Arc::new(handler));
    }

    /// Calls `handler()` whenever the subscription was lost (notices may
    /// have been missed while it was down).
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
}

async fn subscribe_forever(client: redis::Client, shared: Weak<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                let subscribed = pubsub.subscribe(RELEASE_CHANNEL).await.is_ok()
                    && pubsub.subscribe(INVALIDATE_CHANNEL).await.is_ok();
                if subscribed {
                    backoff = Duration::from_millis(50);
                    if let Some(s) = shared.upgrade() {
                        s.subscribed.store(true, Ordering::Release);
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(s) = shared.upgrade() else { return };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match message.get_channel_name() {
                            RELEASE_CHANNEL => Notices::released(&s, &payload),
                            INVALIDATE_CHANNEL => {
                                let handler = s.on_invalidate.lock().clone();
                                if let (Some(handler), Some((resource, key))) =
                                    (handler, payload.split_once('\n'))
                                {
                                    handler(resource, key);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                // The subscription ended: whatever was published meanwhile
                // is lost to us.
                if let Some(s) = shared.upgrade() {
                    if s.subscribed.swap(false, Ordering::AcqRel) {
                        let handler = s.on_gap.lock().clone();
                        if let Some(handler) = handler {
                            handler();
                        }
                    }
                }
            }
            Err(err) => tracing::debug!(%err, "redis notice subscriber cannot connect"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
