//! [`ConfigWatcher`]: one namespace's content as a typed value, read
//! without a lock and kept current by a long-poll loop.
//!
//! The cursor (the version held) moves only once a new version has
//! deserialized into `T` and passed the validator: a bad version is
//! refused, reported ([`WatchStatus`], a warning in the log) and the last
//! good value stays; the loop then waits for the version after the bad
//! one instead of asking for it again. Each good version is written to
//! the last-known-good file (atomically, see [`crate::persist`]), from
//! which [`WatcherBuilder::start`] starts when no server answers.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rampart::limit::Backoff;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{Client, Document};
use crate::error::ClientError;
use crate::persist::{self, Saved};

type Validator<T> = Box<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

/// Where the watcher stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// The version held (0 before any).
    pub version: u64,
    /// Whether the value came from the last-known-good file and no server
    /// has answered since.
    pub from_file: bool,
    /// Versions refused (did not deserialize or failed the validator).
    pub refused: u64,
    /// Why the last one was refused.
    pub last_refusal: Option<String>,
    /// Failed polls in a row (0 while a server answers).
    pub failures: u32,
}

/// Builds a [`ConfigWatcher`].
pub struct WatcherBuilder<T> {
    client: Client,
    namespace: String,
    file: Option<PathBuf>,
    validator: Option<Validator<T>>,
    wait: Duration,
    backoff: Backoff,
}

impl<T> WatcherBuilder<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// Keeps the last good version in `path`, and starts from it when no
    /// server answers at start.
    pub fn last_known_good(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// A check a version must pass (after deserializing) to be taken.
    pub fn validate(
        mut self,
        check: impl Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Box::new(check));
        self
    }

    /// How long each long-poll is held by the server (default 30 s; the
    /// server caps it at its `config_center.max_wait`).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The back-off between failed polls (default 250 ms doubling to 30 s,
    /// full jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Reads the current version (from a server, else from the
    /// last-known-good file) and starts following the namespace.
    ///
    /// Fails when neither gives a good version: no server answers (or the
    /// namespace does not exist, or its version is refused) and there is
    /// no usable file.
    pub async fn start(self) -> Result<ConfigWatcher<T>, ClientError> {
        let WatcherBuilder {
            client,
            namespace,
            file,
            validator,
            ..
        } = &self;
        let mut status = WatchStatus::default();
        let first = match client.get(namespace).await {
            Ok(doc) => match decode(&doc, validator.as_ref()) {
                Ok(value) => Ok((doc.version, value, Some(doc))),
                Err(e) => {
                    note_refusal(namespace, &mut status, &e);
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let (version, value, fetched) = match first {
            Ok(first) => first,
            Err(server) => {
                let saved = match &file {
                    Some(path) => persist::load(path).await?,
                    None => None,
                };
                let Some(saved) = saved.filter(|s| &s.namespace == namespace) else {
                    return Err(server);
                };
                let value = decode_content(saved.version, &saved.content, validator.as_ref())?;
                tracing::warn!(namespace, version = saved.version, error = %server, "starting from the last known good version");
                status.from_file = true;
                (saved.version, value, None)
            }
        };
        if let (Some(path), Some(doc)) = (file, &fetched) {
            persist::save(path.clone(), saved(doc)).await?;
        }
        status.version = version;
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(value),
            status: Mutex::new(status),
        });
        let (tell, changes) = watch::channel(version);
        let follow = Follow {
            how: self,
            shared: Arc::clone(&shared),
            tell,
        };
        let task = tokio::spawn(follow.run(version));
        Ok(ConfigWatcher {
            shared,
            changes,
            task,
            _type: PhantomData,
        })
    }
}

/// What the watcher and its loop share.
struct Shared<T> {
    /// The current value: a load is a few instructions, no lock.
    current: ArcSwap<T>,
    status: Mutex<WatchStatus>,
}

/// A namespace's content as a `T`, current. Dropping it stops the loop.
pub struct ConfigWatcher<T> {
    shared: Arc<Shared<T>>,
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Drop for ConfigWatcher<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> ConfigWatcher<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// Starts building a watcher of `namespace` through `client`.
    pub fn builder(client: Client, namespace: impl Into<String>) -> WatcherBuilder<T> {
        WatcherBuilder {
            client,
            namespace: namespace.into(),
            file: None,
            validator: None,
            wait: Duration::from_secs(30),
            backoff: Backoff {
                base: Duration::from_millis(250),
                cap: Duration::from_secs(30),
            },
        }
    }

    /// The current value, without a lock.
    pub fn get(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// Waits for the next good version and returns it.
    pub async fn changed(&mut self) -> Arc<T> {
        // The sender lives in the loop's task, which runs until this
        // watcher is dropped; if it ever ended, the value stays current.
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.get()
    }

    /// The version held, refusals and failures.
    pub fn status(&self) -> WatchStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The version held.
    pub fn version(&self) -> u64 {
        *self.changes.borrow()
    }
}

/// The long-poll loop.
struct Follow<T> {
    /// What the watcher was built with.
    how: WatcherBuilder<T>,
    shared: Arc<Shared<T>>,
    tell: watch::Sender<u64>,
}

impl<T> Follow<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// `cursor`: the version held. `seen`, what the poll asks past: the
    /// last version the server served, held or refused (a refused version
    /// is not asked for again).
    async fn run(self, mut cursor: u64) {
        let mut seen = cursor;
        let mut failures: u32 = 0;
        loop {
            match self
                .how
                .client
                .poll(&self.how.namespace, seen, self.how.wait)
                .await
            {
                Ok(None) => failures = 0,
                Ok(Some(doc)) => {
                    failures = 0;
                    seen = doc.version;
                    if doc.version == cursor && !doc.resync {
                        // Back from a canary to the version held, say.
                        self.update(|s| s.from_file = false);
                        continue;
                    }
                    match decode(&doc, self.how.validator.as_ref()) {
                        Ok(value) => {
                            cursor = doc.version;
                            self.shared.current.store(Arc::new(value));
                            self.update(|s| {
                                s.version = cursor;
                                s.from_file = false;
                                s.failures = 0;
                            });
                            let _ = self.tell.send(cursor);
                            if let Some(path) = &self.how.file {
                                if let Err(e) = persist::save(path.clone(), saved(&doc)).await {
                                    tracing::warn!(namespace = self.how.namespace, error = %e, "cannot save the last known good version");
                                }
                            }
                        }
                        Err(e) => {
                            let mut status = self.status();
                            note_refusal(&self.how.namespace, &mut status, &e);
                            self.update(|s| *s = status);
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.update(|s| s.failures = failures);
                    let delay = self.how.backoff.delay(failures.saturating_sub(1).min(16));
                    tracing::debug!(namespace = self.how.namespace, error = %e, ?delay, "config poll failed");
                    // A namespace deleted or not yet created answers 404:
                    // retried like an outage, with the back-off.
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn status(&self) -> WatchStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut WatchStatus)) {
        change(
            &mut self
                .shared
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

fn decode<T: DeserializeOwned>(
    doc: &Document,
    validator: Option<&Validator<T>>,
) -> Result<T, ClientError> {
    decode_content(doc.version, &doc.content, validator)
}

fn decode_content<T: DeserializeOwned>(
    version: u64,
    content: &serde_json::Value,
    validator: Option<&Validator<T>>,
) -> Result<T, ClientError> {
    let value = T::deserialize(content).map_err(|e| ClientError::Refused {
        version,
        reason: e.to_string(),
    })?;
    if let Some(check) = validator {
        check(&value).map_err(|reason| ClientError::Refused { version, reason })?;
    }
    Ok(value)
}

fn note_refusal(namespace: &str, status: &mut WatchStatus, error: &ClientError) {
    status.refused += 1;
    status.last_refusal = Some(error.to_string());
    tracing::warn!(namespace, error = %error, "config version refused; the last good one stays");
}

fn saved(doc: &Document) -> Saved {
    Saved {
        namespace: doc.namespace.clone(),
        version: doc.version,
        content: doc.content.clone(),
    }
}
