//! A private `redis-server`: a child process on a free loopback port, in a
//! directory of its own, persistence off, that can be SIGKILLed and started
//! again on the same port — a Redis crash and its return, on demand. The
//! drill's `redis-outage` scenario plays it from its timeline; the stock
//! tests kill it mid-sale.
//!
//! The machine's shared Redis is never touched: the port is one the OS
//! just handed out, and the server counts as up only once `INFO server`
//! on that port names our child's pid. Dropping the value kills the
//! process, waits for it, and removes its directory (on every exit path,
//! errors and panics included; a parent that is itself SIGKILLed cannot
//! clean up).
//!
//! The binary is `$REDIS_SERVER_BIN` when set, else `redis-server` on `PATH`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

/// How long a start may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried when the one picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// One private `redis-server`; killed and cleaned up on drop.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "redis-server".to_owned())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The pid of the `redis-server` answering on `addr` (`INFO server`), so
/// that an answer from a process that took the port first is not taken
/// for ours.
async fn served_by(addr: SocketAddr) -> Option<u32> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"INFO server\r\n").await.ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // A bulk string: `$LEN\r\n` then LEN bytes and `\r\n`.
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let (head, body) = text.split_once("\r\n")?;
        let len: usize = head.strip_prefix('$')?.parse().ok()?;
        if body.len() >= len {
            return body
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|pid| pid.trim().parse().ok());
        }
    }
}

impl PrivateRedis {
    /// Starts a server on a free port and waits (≤ 5 s) until it answers.
    pub async fn start() -> io::Result<PrivateRedis> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rampart-private-redis-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        // Owned from here: an error below drops it, which removes `dir`.
        let mut redis = PrivateRedis {
            port: 0,
            dir,
            child: None,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port()?;
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no port tried")))
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and wait until it is gone: open connections break, new
    /// ones are refused. Nothing happens when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix: no shutdown, no goodbye.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (killing it first if running) and
    /// waits until it answers; the data set is empty (no persistence).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn().await
    }

    async fn spawn(&mut self) -> io::Result<()> {
        let log = std::fs::File::create(self.dir.join("redis.log"))?;
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {} (is redis-server installed?): {e}", binary()),
                )
            })?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let pid = self.child.as_ref().map(Child::id);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let exited = self.child.as_mut().map_or(Ok(None), |c| c.try_wait())?;
            if let Some(status) = exited {
                // Most often the port was taken meanwhile.
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server on 127.0.0.1:{} exited with {status}: {}",
                    self.port,
                    self.log_tail()
                )));
            }
            match tokio::time::timeout(Duration::from_millis(500), served_by(addr)).await {
                Ok(Some(answering)) if Some(answering) == pid => return Ok(()),
                Ok(Some(other)) => {
                    self.kill();
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "127.0.0.1:{} is served by another process (pid {other})",
                            self.port
                        ),
                    ));
                }
                _ => {}
            }
            sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "redis-server on 127.0.0.1:{} did not answer within {START_TIMEOUT:?}: {}",
                self.port,
                self.log_tail()
            ),
        ))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(redis: &PrivateRedis) -> Option<u32> {
        redis.child.as_ref().map(Child::id)
    }

    #[tokio::test]
    async fn a_killed_server_comes_back_on_its_port_and_nothing_is_left_after_drop() {
        let mut redis = PrivateRedis::start().await.expect("redis-server starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], redis.port()));
        let first = pid(&redis);
        assert!(first.is_some());
        assert_eq!(served_by(addr).await, first);

        redis.kill();
        assert!(!redis.is_running());
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "a SIGKILLed server refuses connections"
        );

        redis.restart().await.expect("restarts");
        let second = pid(&redis);
        assert_ne!(second, first, "a new process");
        assert_eq!(served_by(addr).await, second, "on the same port");

        let dir = redis.dir.clone();
        assert!(dir.exists());
        drop(redis);
        assert!(!dir.exists(), "its directory is removed");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "and the process is gone"
        );
    }
}
