//! The last known good version of a namespace on disk, so a service
//! starts with its last config while the config center is down.
//!
//! Written atomically: a temporary file in the same directory, flushed to
//! disk (`fsync`), then renamed over the old one, and the directory
//! synced — a crash leaves the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ClientError;

/// What the file holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Saved {
    /// The namespace.
    pub namespace: String,
    /// Its version.
    pub version: u64,
    /// The content, as served.
    pub content: Value,
}

fn error(path: &Path, message: impl std::fmt::Display) -> ClientError {
    ClientError::Persist {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Writes `saved` to `path` atomically (blocking: call it off the async
/// threads, as [`save`] does).
pub fn save_blocking(path: &Path, saved: &Saved) -> Result<(), ClientError> {
    let bytes = serde_json::to_vec_pretty(saved).map_err(|e| error(path, e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| error(path, "not a file name"))?
        .to_string_lossy()
        .into_owned();
    // Unique per process and call, so two writers never share a temp file.
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        fastrand_suffix()
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename itself is durable once the directory is synced.
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        Ok::<(), std::io::Error>(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(|e| error(path, e))
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Writes `saved` to `path` atomically, on a blocking thread.
pub async fn save(path: PathBuf, saved: Saved) -> Result<(), ClientError> {
    let shown = path.clone();
    tokio::task::spawn_blocking(move || save_blocking(&path, &saved))
        .await
        .map_err(|e| error(&shown, e))?
}

/// Reads the file at `path`; `Ok(None)` when there is none.
pub async fn load(path: &Path) -> Result<Option<Saved>, ClientError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| error(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(path, e)),
    }
}
