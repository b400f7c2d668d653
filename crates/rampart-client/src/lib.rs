//! A typed client of rampart's config center (`/v1/config/...`).
//!
//! | module | what |
//! |---|---|
//! | [`client`] | [`Client`]: every config-center call, over several server URLs with failover |
//! | [`watcher`] | [`ConfigWatcher`]: the current `Arc<T>` without a lock, kept up to date by long-poll |
//! | [`persist`] | the last known good version on disk, written atomically |
//! | [`error`] | [`ClientError`] |
//!
//! ```no_run
//! # async fn run() -> Result<(), rampart_client::ClientError> {
//! #[derive(serde::Deserialize)]
//! struct Limits { max_connections: u32 }
//!
//! let client = rampart_client::Client::builder(["http://127.0.0.1:7070"]).build()?;
//! let mut limits = rampart_client::ConfigWatcher::<Limits>::builder(client, "limits")
//!     .last_known_good("limits.json")
//!     .validate(|l: &Limits| if l.max_connections > 0 { Ok(()) } else { Err("max_connections 0".into()) })
//!     .start()
//!     .await?;
//! println!("{}", limits.get().max_connections);
//! let newer = limits.changed().await;
//! println!("now {}", newer.max_connections);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod persist;
pub mod watcher;

pub use client::{Change, Client, ClientBuilder, Document, Precondition};
pub use error::ClientError;
pub use watcher::{ConfigWatcher, WatchStatus, WatcherBuilder};
