//! Test support: private, disposable Redis servers and Redis Clusters.
//!
//! Every server started here is a child `redis-server` process on a free
//! loopback port, in its own temporary directory, with persistence off. The
//! machine's shared Redis (127.0.0.1:6379) is never contacted: helpers only
//! talk to ports they picked and verified to be served by their own child
//! process (`INFO server` → `process_id` must equal the child's pid).
//!
//! Dropping a [`PrivateRedis`] / [`PrivateCluster`] SIGKILLs its processes,
//! reaps them, and removes the temporary directories — including when a test
//! panics (unwinding runs `Drop`). A test process that is itself SIGKILLed
//! cannot clean up; its servers are then orphaned.
//!
//! All waits are bounded and every failure message names what was being
//! waited for and includes the tail of the server's log.
//!
//! Binaries: `$REDIS_SERVER_BIN` / `$REDIS_CLI_BIN` if set, else
//! `/usr/bin/redis-server` / `/usr/bin/redis-cli` if present, else `PATH`.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a freshly spawned server gets to answer PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fresh cluster gets to reach `cluster_state:ok` on every node.
pub const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `redis-cli --cluster create` may run.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports when a server fails to bind its port.
const PORT_ATTEMPTS: usize = 5;
/// Lines of server log quoted in failure messages.
const LOG_TAIL_LINES: usize = 30;
const POLL: Duration = Duration::from_millis(20);
/// Ports below this are never handed out (6379 in particular).
const MIN_PORT: u16 = 10_000;

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Ports this test binary already handed out; never handed out twice, so two
/// tests running in parallel cannot race for the same port.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback TCP port that was free a moment ago (bind to port 0, read the
/// port, drop the listener). Never returns the same port twice within one
/// test binary, and never a port below 10000.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 to pick a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of probe listener")
            .port();
        drop(listener);
        if port < MIN_PORT {
            continue;
        }
        if handed_out().lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused free port found after 1000 tries");
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// A port P such that both P and its cluster-bus port P+10000 are free.
/// Drawn from 16000..=22000 (bus 26000..=32000), below Linux's default
/// ephemeral range so outgoing connections cannot grab either of them.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = 16_000 + (random_u64() % 6001) as u16;
        if !can_bind(port) || !can_bind(port + 10_000) {
            continue;
        }
        let mut set = handed_out().lock().unwrap();
        if set.contains(&port) || set.contains(&(port + 10_000)) {
            continue;
        }
        set.insert(port);
        set.insert(port + 10_000);
        return port;
    }
    panic!("free_cluster_port: no port P with P and P+10000 free after 1000 tries");
}

// ---------------------------------------------------------------------------
// Binaries, processes, logs
// ---------------------------------------------------------------------------

fn binary(env: &str, default: &str, name: &str) -> String {
    if let Ok(path) = std::env::var(env) {
        if !path.is_empty() {
            return path;
        }
    }
    if Path::new(default).exists() {
        default.to_string()
    } else {
        name.to_string()
    }
}

pub fn redis_server_bin() -> String {
    binary("REDIS_SERVER_BIN", "/usr/bin/redis-server", "redis-server")
}

pub fn redis_cli_bin() -> String {
    binary("REDIS_CLI_BIN", "/usr/bin/redis-cli", "redis-cli")
}

/// The last `n` lines of a text file, or a note saying why there are none.
pub fn file_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            if lines.is_empty() {
                format!("<{} is empty>", path.display())
            } else {
                lines[start..].join("\n")
            }
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Pids of live processes whose command line mentions `:PORT` or
/// `--port PORT` and "redis" — i.e. a redis-server serving that port
/// (redis-server retitles itself `redis-server 127.0.0.1:PORT`).
/// Reads `/proc/*/cmdline`; zombies (empty cmdline) are not reported.
pub fn redis_processes_on_port(port: u16) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let needles = [format!(":{port}"), format!("--port {port}")];
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if !cmdline.contains("redis") {
            continue;
        }
        let hit = needles.iter().any(|needle| {
            cmdline.match_indices(needle.as_str()).any(|(i, m)| {
                !cmdline[i + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
        });
        if hit {
            pids.push(pid);
        }
    }
    pids
}

fn send_signal(pid: u32, signal: &str) -> Result<(), String> {
    let out = Command::new("/bin/kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run /bin/kill -{signal} {pid}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "/bin/kill -{signal} {pid} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A one-off synchronous connection to a private server, with bounded
/// connect/read/write times.
fn probe_connection(port: u16, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// `INFO server` → `process_id`.
fn server_pid(port: u16) -> Result<u32, String> {
    let mut con = probe_connection(port, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no process_id in INFO server: {info:?}"))
}

/// Runs one command on a private server over a fresh bounded connection.
fn query_port<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T, String> {
    let mut con = probe_connection(port, Duration::from_millis(1000)).map_err(|e| e.to_string())?;
    cmd.query(&mut con).map_err(|e| e.to_string())
}

#[derive(Debug)]
enum StartError {
    /// The server could not bind its port (someone else holds it).
    PortInUse(String),
    Other(String),
}

/// Shared between a server and its detached `pause` threads: the pid that is
/// alive now, and a generation bumped on every kill so a late SIGCONT never
/// hits a recycled pid.
#[derive(Default)]
struct PidSlot {
    pid: Option<u32>,
    generation: u64,
}

/// One redis-server child process; `Drop` kills and reaps it.
struct ServerProc {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    stdio_log: PathBuf,
    /// Extra arguments (after the common ones).
    args: Vec<String>,
    child: Option<Child>,
    slot: Arc<Mutex<PidSlot>>,
    label: String,
}

impl ServerProc {
    fn new(label: String, port: u16, dir: &Path, args: Vec<String>) -> Self {
        ServerProc {
            port,
            dir: dir.to_path_buf(),
            log: dir.join("redis.log"),
            stdio_log: dir.join("redis.stdio.log"),
            args,
            child: None,
            slot: Arc::new(Mutex::new(PidSlot::default())),
            label,
        }
    }

    fn log_tail(&self, n: usize) -> String {
        format!(
            "--- {} (last {n} lines) ---\n{}\n--- {} ---\n{}",
            self.log.display(),
            file_tail(&self.log, n),
            self.stdio_log.display(),
            file_tail(&self.stdio_log, 10),
        )
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the server and waits (bounded) until it answers as itself.
    fn start(&mut self, timeout: Duration) -> Result<(), StartError> {
        assert!(self.child.is_none(), "{}: start while running", self.label);
        let stdio = File::options()
            .create(true)
            .append(true)
            .open(&self.stdio_log)
            .map_err(|e| StartError::Other(format!("open {}: {e}", self.stdio_log.display())))?;
        let stdio2 = stdio
            .try_clone()
            .map_err(|e| StartError::Other(format!("dup stdio log: {e}")))?;
        let mut cmd = Command::new(redis_server_bin());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&self.log)
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio2);
        let child = cmd.spawn().map_err(|e| {
            StartError::Other(format!(
                "cannot spawn {}: {e} (is redis-server installed?)",
                redis_server_bin()
            ))
        })?;
        let pid = child.id();
        self.child = Some(child);
        {
            let mut slot = self.slot.lock().unwrap();
            slot.pid = Some(pid);
        }
        self.wait_ready(pid, timeout)
    }

    fn wait_ready(&mut self, pid: u32, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.reap();
                let log = self.log_tail(LOG_TAIL_LINES);
                let msg = format!(
                    "{}: redis-server (pid {pid}) on 127.0.0.1:{} exited with {status} before answering PING\n{log}",
                    self.label, self.port
                );
                return Err(if log.contains("Address already in use") {
                    StartError::PortInUse(msg)
                } else {
                    StartError::Other(msg)
                });
            }
            let last_err = match server_pid(self.port) {
                Ok(p) if p == pid => return Ok(()),
                Ok(other) => {
                    // Someone else answers on our port; our child will fail to bind.
                    self.hard_kill();
                    return Err(StartError::PortInUse(format!(
                        "{}: 127.0.0.1:{} is served by another process (pid {other}), not our redis-server (pid {pid})",
                        self.label, self.port
                    )));
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.hard_kill();
                return Err(StartError::Other(format!(
                    "{}: timed out after {timeout:?} waiting for redis-server (pid {pid}) on 127.0.0.1:{} to answer PING \
                     (last error: {last_err})\n{}",
                    self.label,
                    self.port,
                    self.log_tail(LOG_TAIL_LINES)
                )));
            }
            thread::sleep(POLL);
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let mut slot = self.slot.lock().unwrap();
        slot.pid = None;
        slot.generation += 1;
    }

    /// SIGKILL (works on SIGSTOPped processes too) and reap. Never panics.
    fn hard_kill(&mut self) {
        // Invalidate pending pause threads first so none SIGCONTs a recycled pid.
        {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.pid = None;
            slot.generation += 1;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn running_pid(&self, what: &str) -> u32 {
        self.pid().unwrap_or_else(|| {
            panic!(
                "{}: {what}: redis-server on port {} is not running",
                self.label, self.port
            )
        })
    }

    fn signal(&self, signal: &str) {
        let pid = self.running_pid(&format!("SIG{signal}"));
        if let Err(e) = send_signal(pid, signal) {
            panic!("{}: {e}\n{}", self.label, self.log_tail(LOG_TAIL_LINES));
        }
    }

    /// Waits until /proc says the process is (or is no longer) stopped.
    fn wait_proc_state(&self, want_stopped: bool) {
        let pid = self.running_pid("wait for process state");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let state = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().chars().next())
                })
                .flatten();
            let stopped = matches!(state, Some('T') | Some('t'));
            if state.is_none() || stopped == want_stopped {
                return; // no /proc (non-Linux) → nothing to wait for
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: pid {pid} did not become {} within 2s (state {state:?})",
                    self.label,
                    if want_stopped { "stopped" } else { "running" }
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.hard_kill();
    }
}

// ---------------------------------------------------------------------------
// PrivateRedis
// ---------------------------------------------------------------------------

/// A private standalone `redis-server` for one test.
pub struct PrivateRedis {
    // Declared before `dir`: the process dies before its directory goes.
    server: ServerProc,
    dir: TempDir,
}

impl PrivateRedis {
    /// Starts a server on a free port and waits (≤ 5 s) until it answers.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments
    /// appended, e.g. `&["--maxmemory", "10mb"]`.
    pub fn start_with_args(extra: &[&str]) -> Self {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("rampart-redis-")
                .tempdir()
                .expect("create temp dir for private redis");
            let port = free_port();
            let mut server = ServerProc::new(
                format!("PrivateRedis:{port}"),
                port,
                dir.path(),
                args.clone(),
            );
            match server.start(START_TIMEOUT) {
                Ok(()) => return PrivateRedis { server, dir },
                Err(StartError::PortInUse(msg)) => failures.push(msg),
                Err(StartError::Other(msg)) => panic!("PrivateRedis::start: {msg}"),
            }
        }
        panic!(
            "PrivateRedis::start: could not bind a free port in {PORT_ATTEMPTS} attempts:\n{}",
            failures.join("\n\n")
        );
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.server.port)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// A `redis::Client` for [`url`](Self::url).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis::Client::open(private url)")
    }

    /// Pid of the running server, `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub fn is_running(&self) -> bool {
        self.server.pid().is_some()
    }

    /// The server's working directory (`--dir`), holding its log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of the server log (and of its stdout/stderr).
    pub fn log_tail(&self, n: usize) -> String {
        self.server.log_tail(n)
    }

    /// Hard crash: SIGKILL the server and wait until it is gone. Existing
    /// connections break; new ones are refused. Idempotent.
    pub fn kill(&mut self) {
        self.server.hard_kill();
    }

    /// Starts the server again on the SAME port (after [`kill`](Self::kill);
    /// kills first if still running) and waits until it answers. The dataset
    /// is empty: persistence is off.
    pub fn restart(&mut self) {
        self.server.hard_kill();
        if let Err(StartError::PortInUse(msg) | StartError::Other(msg)) =
            self.server.start(START_TIMEOUT)
        {
            panic!("PrivateRedis::restart on the same port: {msg}");
        }
    }

    /// SIGSTOP: the server stops reading/answering (TCP connects still
    /// succeed via the kernel backlog) until [`cont`](Self::cont).
    /// Returns once the process is actually stopped.
    pub fn stop(&self) {
        self.server.signal("STOP");
        self.server.wait_proc_state(true);
    }

    /// SIGCONT after [`stop`](Self::stop) / during [`pause`](Self::pause).
    pub fn cont(&self) {
        self.server.signal("CONT");
        self.server.wait_proc_state(false);
    }

    /// Stalls the server for `d`: SIGSTOP now (returns once stopped), SIGCONT
    /// from a background thread after `d`. [`cont`](Self::cont) ends the stall
    /// early; a [`kill`](Self::kill) before `d` cancels the pending SIGCONT.
    pub fn pause(&self, d: Duration) {
        self.stop();
        let slot = Arc::clone(&self.server.slot);
        let (pid, generation) = {
            let s = slot.lock().unwrap();
            (s.pid.expect("pause: running pid"), s.generation)
        };
        thread::spawn(move || {
            thread::sleep(d);
            let s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.generation == generation && s.pid == Some(pid) {
                let _ = send_signal(pid, "CONT");
            }
        });
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.server.hard_kill();
        // `dir` (TempDir) is removed when the fields drop, after this.
    }
}

// ---------------------------------------------------------------------------
// PrivateCluster
// ---------------------------------------------------------------------------

struct ClusterNode {
    server: ServerProc,
    dir: TempDir,
}

/// A private Redis Cluster: 3 masters (nodes 0..3), optionally with
/// replicas (the nodes after them), all slots assigned,
/// `cluster-node-timeout 2000`.
pub struct PrivateCluster {
    nodes: Vec<ClusterNode>,
    /// How long creation took (spawn → `cluster_state:ok` everywhere).
    pub startup: Duration,
}

const MASTERS: usize = 3;

impl PrivateCluster {
    /// Starts 3 nodes, runs `redis-cli --cluster create`, and waits (≤ 15 s)
    /// until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with_replicas(0)
    }

    /// Like [`start`](Self::start), with `replicas` replicas per master:
    /// `3 × (1 + replicas)` nodes. `redis-cli` makes the first three nodes
    /// the masters; a killed master's replica takes over after the node
    /// timeout (≈ 2–4 s).
    pub fn start_with_replicas(replicas: usize) -> Self {
        Self::start_with_args(replicas, &[])
    }

    /// Like [`start_with_replicas`](Self::start_with_replicas), with `extra`
    /// arguments for every node's `redis-server`.
    pub fn start_with_args(replicas: usize, extra: &[&str]) -> Self {
        let size = MASTERS * (1 + replicas);
        let began = Instant::now();
        let mut failures = Vec::new();
        'attempt: for _ in 0..PORT_ATTEMPTS {
            let mut nodes = Vec::with_capacity(size);
            for _ in 0..size {
                let port = free_cluster_port();
                let dir = tempfile::Builder::new()
                    .prefix("rampart-redis-cluster-")
                    .tempdir()
                    .expect("create temp dir for cluster node");
                let args: Vec<String> = [
                    "--cluster-enabled".to_string(),
                    "yes".to_string(),
                    "--cluster-config-file".to_string(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".to_string(),
                    "2000".to_string(),
                    // A replica syncs at once instead of after Redis's
                    // default 5 s: a replica that never synced refuses to
                    // fail over, and tests kill masters right after start.
                    "--repl-diskless-sync-delay".to_string(),
                    "0".to_string(),
                ]
                .into_iter()
                .chain(extra.iter().map(|arg| arg.to_string()))
                .collect();
                let mut server = ServerProc::new(
                    format!("PrivateCluster node :{port}"),
                    port,
                    dir.path(),
                    args,
                );
                match server.start(START_TIMEOUT) {
                    Ok(()) => nodes.push(ClusterNode { server, dir }),
                    Err(StartError::PortInUse(msg)) => {
                        failures.push(msg);
                        continue 'attempt; // `nodes` drops: started ones are killed
                    }
                    Err(StartError::Other(msg)) => panic!("PrivateCluster::start: {msg}"),
                }
            }
            let mut cluster = PrivateCluster {
                nodes,
                startup: Duration::ZERO,
            };
            cluster.create(replicas);
            cluster.wait_cluster_ok(CLUSTER_OK_TIMEOUT);
            cluster.wait_replicas_synced(CLUSTER_OK_TIMEOUT);
            cluster.startup = began.elapsed();
            return cluster;
        }
        panic!(
            "PrivateCluster::start: could not bind free ports in {PORT_ATTEMPTS} attempts:\n{}",
            failures.join("\n\n")
        );
    }

    fn create(&self, replicas: usize) {
        let out_path = self.nodes[0].dir.path().join("cluster-create.out");
        let out = File::create(&out_path).expect("create cluster-create.out");
        let err = out.try_clone().expect("dup cluster-create.out");
        let mut cmd = Command::new(redis_cli_bin());
        cmd.arg("--cluster").arg("create");
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.server.port));
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {} --cluster create: {e}", redis_cli_bin()));
        let deadline = Instant::now() + CLUSTER_CREATE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "PrivateCluster: `redis-cli --cluster create` did not finish within {CLUSTER_CREATE_TIMEOUT:?}\n\
                         --- output ---\n{}\n{}",
                        file_tail(&out_path, 40),
                        self.all_log_tails()
                    );
                }
            }
        };
        let output = file_tail(&out_path, 60);
        if !status.success() || !output.contains("[OK] All 16384 slots covered") {
            panic!(
                "PrivateCluster: `redis-cli --cluster create` failed ({status})\n--- output ---\n{output}\n{}",
                self.all_log_tails()
            );
        }
    }

    fn all_log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.server.log_tail(15))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `CLUSTER INFO` of node `i` (fresh bounded connection).
    pub fn cluster_info(&self, i: usize) -> Result<String, String> {
        query_port(self.nodes[i].server.port, redis::cmd("CLUSTER").arg("INFO"))
    }

    /// Waits until every running node says `cluster_state:ok`, knows all
    /// nodes, and has all 16384 slots assigned. Panics after `timeout` with
    /// each node's CLUSTER INFO and log tail.
    pub fn wait_cluster_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let infos: Vec<(usize, Result<String, String>)> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].server.pid().is_some())
                .map(|i| (i, self.cluster_info(i)))
                .collect();
            let ok = |info: &Result<String, String>| {
                info.as_ref().is_ok_and(|s| {
                    s.contains("cluster_state:ok")
                        && s.contains("cluster_slots_assigned:16384")
                        && s.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                })
            };
            if infos.iter().all(|(_, info)| ok(info)) {
                return;
            }
            if Instant::now() >= deadline {
                let report = infos
                    .iter()
                    .map(|(i, info)| {
                        format!(
                            "node {i} (:{}): {}",
                            self.nodes[*i].server.port,
                            match info {
                                Ok(s) => s.lines().take(7).collect::<Vec<_>>().join(" "),
                                Err(e) => format!("error: {e}"),
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "PrivateCluster: timed out after {timeout:?} waiting for cluster_state:ok on every node\n{report}\n{}",
                    self.all_log_tails()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every replica's link to its master is up (its first
    /// sync done): only then can it take over from a killed master.
    fn wait_replicas_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let replicas: Vec<usize> = (MASTERS..self.nodes.len()).collect();
        loop {
            let synced = |i: &usize| {
                query_port::<String>(
                    self.nodes[*i].server.port,
                    redis::cmd("INFO").arg("replication"),
                )
                .is_ok_and(|info| info.contains("master_link_status:up"))
            };
            if replicas.iter().all(synced) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "PrivateCluster: replicas not synced after {timeout:?}\n{}",
                    self.all_log_tails()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until some running node reports `cluster_state:fail` — e.g. after [`kill_node`](Self::kill_node), once
    /// the survivors have agreed the dead master FAILed (≈ node timeout + gossip).
    pub fn wait_cluster_fail_seen(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].server.pid().is_some())
                .any(|i| {
                    self.cluster_info(i)
                        .is_ok_and(|s| s.contains("cluster_state:fail"))
                });
            if seen {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "PrivateCluster: timed out after {timeout:?} waiting for a surviving node to report cluster_state:fail\n{}",
                    self.all_log_tails()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:P/` for every node (including killed ones).
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node_url(i)).collect()
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.nodes[i].server.port)
    }

    pub fn node_port(&self, i: usize) -> u16 {
        self.nodes[i].server.port
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.server.port).collect()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].server.pid()
    }

    /// The index of the node serving `url` (as [`urls`](Self::urls) spells it).
    pub fn node_of_url(&self, url: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.node_url(i) == url)
    }

    /// Whether node `i` is a master now (`ROLE`; a replica becomes one on
    /// failover).
    pub fn is_master(&self, i: usize) -> Result<bool, String> {
        let role: Vec<redis::Value> = query_port(self.nodes[i].server.port, &redis::cmd("ROLE"))?;
        Ok(matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"master"))
    }

    pub fn node_log_tail(&self, i: usize, n: usize) -> String {
        self.nodes[i].server.log_tail(n)
    }

    /// Hard crash of node `i` (SIGKILL + reap). With no replicas its slots
    /// become unserved; after ~2 s (node timeout) plus gossip the survivors
    /// mark it FAIL and report `cluster_state:fail`.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].server.hard_kill();
    }

    /// Restarts node `i` on the same port with its `nodes-P.conf` (kept in
    /// its dir), so it rejoins as the same master with the same slots and an
    /// empty dataset. Waits only until it answers PING; use
    /// [`wait_cluster_ok`](Self::wait_cluster_ok) for the cluster to heal
    /// (Redis delays clearing FAIL on a master for 2 × node timeout).
    pub fn restart_node(&mut self, i: usize) {
        let server = &mut self.nodes[i].server;
        server.hard_kill();
        if let Err(StartError::PortInUse(msg) | StartError::Other(msg)) =
            server.start(START_TIMEOUT)
        {
            panic!("PrivateCluster::restart_node({i}): {msg}");
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.server.hard_kill();
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers the tier and lease tests share
// ---------------------------------------------------------------------------

/// An entry holding `value`, fresh (and kept) for a minute from now.
pub fn stored(value: &str) -> rampart::cache::Stored<bytes::Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    rampart::cache::Stored {
        value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
        loaded_at_ms: now,
        fresh_until_ms: now + 60_000,
        grace_until_ms: now + 60_000,
        error_until_ms: now + 60_000,
        load_micros: 1,
    }
}

/// A guarded connection to `server` whose breaker does not open within a
/// test (a window of 1,000 calls), so the test sees Redis's own answers.
pub async fn guarded(
    server: &PrivateRedis,
    timeout: Duration,
) -> rampart_redis::conn::GuardedRedis {
    use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
    let conn = rampart_redis::RedisConn::connect(&[server.url()])
        .await
        .expect("connect");
    let breaker = CircuitBreaker::new(
        "redis",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 1_000 },
            minimum_calls: 1_000,
            ..BreakerConfig::default()
        },
    );
    rampart_redis::conn::GuardedRedis::new(conn, breaker, timeout)
}
