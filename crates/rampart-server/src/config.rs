//! The service's configuration: a TOML file, overridden by environment
//! variables and flags, validated as a whole before anything starts.
//!
//! A bad file never starts the server: every error names the file, the
//! field and what is wrong with it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart::breaker::BreakerConfig;
use rampart::cache::CacheConfig;
use rampart::limit::BulkheadConfig;
use rampart::warm::WarmConfig;
use serde::Deserialize;

use crate::start_error::StartError;

/// The embedded default: the demo resources over SQLite in `./rampart-data`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../rampart.example.toml");

/// Everything the service needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Where the embedded SQLite database lives.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub warmup: WarmupConfig,
    /// Demo rows generated on first run when the database is the embedded
    /// default (`0` turns it off).
    #[serde(default = "defaults::demo_rows")]
    pub demo_rows: u64,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default, rename = "resource")]
    pub resources: Vec<ResourceConfig>,
    /// `[sessions]`: timeouts and bounds of `/v1/sessions`.
    #[serde(default)]
    pub sessions: crate::sessions::SessionsConfig,
    /// `[stock]`: reservations and their holds (`stock/config.rs`).
    #[serde(default)]
    pub stock: crate::stock::config::StockSettings,
    /// `[config_center]`: versioned configuration namespaces, watch, canary.
    #[serde(default)]
    pub config_center: crate::config_center::ConfigCenterConfig,
    /// `[reload]`: live settings from a config-center namespace.
    #[serde(default)]
    pub reload: crate::reload::ReloadConfig,
}

/// The shared tier: absent URLs keep the in-process tier (the embedded
/// default); one URL is a single node, several are Cluster seed nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default)]
    pub urls: Vec<String>,
    /// Separates deployments (or test runs) sharing one Redis: each key's
    /// names carry `<namespace>:<resource>` and the key, length-prefixed
    /// (`rampart-redis`'s `keys.rs` has the layout).
    #[serde(default = "defaults::redis_namespace")]
    pub namespace: String,
    /// Per-call bound; a slow Redis counts as a failing one.
    #[serde(default = "defaults::redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Lease length (renewed by a watchdog while a load runs).
    #[serde(default = "defaults::lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Cross-instance single-flight on misses. Off, each instance still
    /// loads a cold key once (its own flight), so N instances load it N
    /// times — the contrast the leases are measured against.
    #[serde(default = "defaults::yes")]
    pub leases: bool,
    /// The breaker that skips Redis while it is down.
    #[serde(default = "defaults::redis_breaker")]
    pub breaker: BreakerConfig,
    /// Off, the breaker never opens and every call tries Redis while it is
    /// down (each waiting on the reconnect, up to `timeout`): only for
    /// `rampart drill scenario redis-outage`'s naive half, the system of
    /// the incident.
    #[serde(default = "defaults::yes")]
    pub breaker_enabled: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            urls: Vec::new(),
            namespace: defaults::redis_namespace(),
            timeout: defaults::redis_timeout(),
            lease_ttl: defaults::lease_ttl(),
            leases: true,
            breaker: defaults::redis_breaker(),
            breaker_enabled: true,
        }
    }
}

/// The source of truth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty = SQLite in `data_dir`.
    #[serde(default)]
    pub url: String,
    /// Connections in the pool.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    /// How long a query may wait for a connection.
    #[serde(default = "defaults::acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            pool_size: defaults::pool_size(),
            acquire_timeout: defaults::acquire_timeout(),
        }
    }
}

/// HTTP-level defences.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A request still running after this is answered 503.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once; more are shed with 503 at once (never
    /// queued without bound).
    #[serde(default = "defaults::max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Keys one batch request may ask for.
    #[serde(default = "defaults::max_batch_keys")]
    pub max_batch_keys: usize,
    /// How long graceful shutdown waits for in-flight requests.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A request's head (request line and headers) must arrive whole within
    /// this, counted from the connection's accept or from the first byte of
    /// a later request on a kept-alive connection.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection without a request for this long is closed.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections at most; past it a new connection is accepted and
    /// closed at once (`rampart_connections_refused_total`).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Connections the kernel may hold waiting for an accept. Past it,
    /// new connections' handshakes are dropped and their clients retry a
    /// second or more later: a reconnect storm (a failover, a flash sale)
    /// turns into seconds of latency. The kernel caps it at
    /// `net.core.somaxconn`.
    #[serde(default = "defaults::listen_backlog")]
    pub listen_backlog: u32,
    /// The longest request URI answered; longer ones get 414.
    #[serde(default = "defaults::max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// The largest header section answered (names, values, separators);
    /// larger ones get 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// A file holding the admin token that write endpoints require. Absent
    /// (and no `RAMPART_ADMIN_TOKEN`): one is generated into
    /// `<data_dir>/admin-token` on first start and reused.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token given directly, from `RAMPART_ADMIN_TOKEN` only (a
    /// secret does not belong in a config file or on a command line).
    #[serde(skip)]
    pub admin_token: Option<Secret>,
    /// Misses (requests that neither L1 nor an existence filter answered)
    /// per second one client address may cause, all resources together;
    /// past it its misses get 429 with `Retry-After` while its hits are
    /// still served. 0 = no budget.
    #[serde(default)]
    pub misses_per_client: u32,
    /// Misses a client may cause in a burst above `misses_per_client`
    /// (default: one second's worth).
    #[serde(default)]
    pub miss_burst: Option<u32>,
}

/// A secret that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Shortest admin token accepted from the environment.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// The most hyper can take in a request URI (it answers 414 itself past it).
pub const MAX_URI_BYTES_LIMIT: usize = 65_534;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_timeout: defaults::request_timeout(),
            max_concurrent_requests: defaults::max_concurrent_requests(),
            max_batch_keys: defaults::max_batch_keys(),
            shutdown_grace: defaults::shutdown_grace(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
            listen_backlog: defaults::listen_backlog(),
            max_uri_bytes: defaults::max_uri_bytes(),
            max_header_bytes: defaults::max_header_bytes(),
            admin_token_file: None,
            admin_token: None,
            misses_per_client: 0,
            miss_burst: None,
        }
    }
}

/// Start-up warm-up and the readiness gate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    /// Warm the resources that have a `warm` query.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// `/readyz` turns ready when this fraction of the keys is warm…
    #[serde(default = "defaults::ready_fraction")]
    pub ready_fraction: f64,
    /// …or when this much time has passed, whichever comes first.
    #[serde(default = "defaults::ready_deadline", with = "humantime_serde")]
    pub ready_deadline: Duration,
    #[serde(default = "defaults::warm_batch_size")]
    pub batch_size: usize,
    #[serde(default = "defaults::warm_concurrency")]
    pub concurrency: usize,
    /// Keys per second, all resources together; 0 = unlimited.
    #[serde(default = "defaults::warm_rate")]
    pub max_keys_per_sec: u32,
    /// The warm-up halves its concurrency while waits for a source
    /// connection exceed this…
    #[serde(default = "defaults::pressure_pool_wait", with = "humantime_serde")]
    pub pressure_pool_wait: Duration,
    /// …or while foreground requests' p99 exceeds this.
    #[serde(
        default = "defaults::pressure_foreground_p99",
        with = "humantime_serde"
    )]
    pub pressure_foreground_p99: Duration,
    /// …or while it exceeds this multiple of the foreground's idle p99,
    /// probed by holding the warm-up back for two seconds every 30 while
    /// foreground traffic flows (`cache/pressure.rs`); 0 = off.
    #[serde(default = "defaults::pressure_foreground_ratio")]
    pub pressure_foreground_ratio: f64,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        WarmupConfig {
            enabled: true,
            ready_fraction: defaults::ready_fraction(),
            ready_deadline: defaults::ready_deadline(),
            batch_size: defaults::warm_batch_size(),
            concurrency: defaults::warm_concurrency(),
            max_keys_per_sec: defaults::warm_rate(),
            pressure_pool_wait: defaults::pressure_pool_wait(),
            pressure_foreground_p99: defaults::pressure_foreground_p99(),
            pressure_foreground_ratio: defaults::pressure_foreground_ratio(),
        }
    }
}

impl WarmupConfig {
    /// The library's warm-up settings.
    pub fn warm_config(&self) -> WarmConfig {
        WarmConfig {
            batch_size: self.batch_size,
            max_concurrency: self.concurrency,
            max_keys_per_sec: (self.max_keys_per_sec > 0).then_some(self.max_keys_per_sec),
            ..WarmConfig::default()
        }
    }
}

/// The type of a resource's key, checked before anything is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// A signed 64-bit integer.
    Integer,
    /// Text of 1 to 256 bytes.
    String,
}

/// One cached resource: where its rows come from and how they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The name in `/v1/r/{name}/{key}`.
    pub name: String,
    pub key_type: KeyType,
    /// The column holding the key in `load_many`'s rows.
    #[serde(default = "defaults::key_column")]
    pub key_column: String,
    /// SQL for one key, bound as `$1`; returns zero or one row.
    pub load: String,
    /// SQL for many keys: `{keys}` is replaced by `$1, $2, …`.
    pub load_many: Option<String>,
    /// SQL returning the keys to warm, one per row, first column.
    pub warm: Option<String>,
    /// Optional SQL counting the keys `warm` returns (for progress).
    pub warm_count: Option<String>,
    /// Entries in an in-process second tier (L2) under L1 when Redis is
    /// not configured; 0 = none (the default). In one process a second
    /// copy of L1's keys buys nothing a larger L1 does not, at ~60 % of
    /// the memory; set it to run the L2 path and the lease without Redis.
    #[serde(default = "defaults::l2_capacity")]
    pub l2_capacity: usize,
    /// Copies of each entry in Redis, in different slots (hot-key
    /// splitting): reads pick one, invalidation clears all. 1 = no split.
    #[serde(default = "defaults::replicas")]
    pub replicas: u32,
    /// The read path's settings (`[resource.cache]`): the library's own
    /// type, so its defaults and checks are the only ones.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The breaker on the source (`[resource.breaker]`).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The bulkhead on source loads (`[resource.bulkhead]`).
    #[serde(default)]
    pub bulkhead: BulkheadConfig,
    /// The existence filter (`[resource.filter]`); absent = off.
    #[serde(default)]
    pub filter: Option<FilterConfig>,
    /// Guards switched off (`[resource.guards]`, all on by default): only
    /// for `rampart drill scenario`'s naive runs.
    #[serde(default)]
    pub guards: crate::cache::guards::GuardsConfig,
    /// Faults injected into this resource's loads (`[resource.faults]`,
    /// all off by default): only for `rampart drill scenario`.
    #[serde(default)]
    pub faults: crate::cache::faults::FaultsConfig,
}

/// A resource's existence filter: a Bloom filter of every key, built from
/// `keys` at start and rebuilt every `rebuild_interval`, that answers a key
/// certainly absent 404 without a source load (cache penetration).
///
/// A row created in the database directly (not through rampart) is
/// answered "not found" until the next rebuild, `rebuild_interval` at
/// most, unless its key is invalidated through rampart, which also adds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Off keeps the section (and its SQL) without using it.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// SQL returning every key of the resource, one per row, first column;
    /// streamed, never held whole.
    pub keys: String,
    /// Keys the filter is sized for; a rebuild sizes for more if the
    /// resource has grown past it.
    pub capacity: u64,
    /// Target false-positive rate at `capacity` keys, in (0, 0.5].
    #[serde(default = "defaults::filter_false_positive_rate")]
    pub false_positive_rate: f64,
    /// Rebuild from `keys` this often, absorbing rows created behind
    /// rampart's back; `0s` = only at start and on demand.
    #[serde(
        default = "defaults::filter_rebuild_interval",
        with = "humantime_serde"
    )]
    pub rebuild_interval: Duration,
    /// `/readyz` waits at most this long for the first build; until it
    /// completes, misses go to the source as without a filter.
    #[serde(default = "defaults::filter_ready_wait", with = "humantime_serde")]
    pub ready_wait: Duration,
}

impl FilterConfig {
    /// The library's sizing for this section.
    pub fn size(&self) -> rampart::existence::FilterSize {
        rampart::existence::FilterSize {
            capacity: self.capacity,
            false_positive_rate: self.false_positive_rate,
        }
    }
}

/// Defaults fitted to a small machine (2 cores), all overridable.
mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7070))
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("rampart-data")
    }
    pub fn demo_rows() -> u64 {
        1_000_000
    }
    pub fn pool_size() -> u32 {
        10
    }
    pub fn acquire_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn max_concurrent_requests() -> usize {
        1_024
    }
    pub fn max_batch_keys() -> usize {
        100
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn listen_backlog() -> u32 {
        4_096
    }
    pub fn max_uri_bytes() -> usize {
        8 * 1024
    }
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub fn yes() -> bool {
        true
    }
    pub fn ready_fraction() -> f64 {
        0.9
    }
    pub fn ready_deadline() -> Duration {
        Duration::from_secs(60)
    }
    pub fn warm_batch_size() -> usize {
        500
    }
    pub fn warm_concurrency() -> usize {
        2
    }
    /// Off: the warm-up goes at the source's pace, held back by its
    /// pressure signals (issue 15; a fixed 50k keys/s cap held it to a
    /// fraction of what the embedded source serves).
    pub fn warm_rate() -> u32 {
        0
    }
    pub fn pressure_pool_wait() -> Duration {
        Duration::from_millis(20)
    }
    pub fn pressure_foreground_p99() -> Duration {
        Duration::from_millis(50)
    }
    pub fn pressure_foreground_ratio() -> f64 {
        2.0
    }
    pub fn key_column() -> String {
        "id".into()
    }
    pub fn replicas() -> u32 {
        1
    }
    pub fn filter_false_positive_rate() -> f64 {
        0.01
    }
    pub fn filter_rebuild_interval() -> Duration {
        Duration::from_secs(3_600)
    }
    pub fn filter_ready_wait() -> Duration {
        Duration::from_secs(10)
    }
    pub fn l2_capacity() -> usize {
        0
    }
    pub fn redis_namespace() -> String {
        "default".into()
    }
    pub fn redis_timeout() -> Duration {
        Duration::from_millis(250)
    }
    pub fn lease_ttl() -> Duration {
        Duration::from_secs(10)
    }
    /// Redis is judged faster than a database: a short window, few calls,
    /// a short open wait, so recovery is noticed within a second or two.
    pub fn redis_breaker() -> rampart::breaker::BreakerConfig {
        rampart::breaker::BreakerConfig {
            window: rampart::breaker::SlidingWindow::Time { seconds: 5 },
            minimum_calls: 10,
            failure_rate_threshold: 0.5,
            slow_call_duration: Duration::from_millis(200),
            slow_call_rate_threshold: 1.0,
            open_wait: Duration::from_secs(1),
            half_open_probes: 2,
            consecutive_failures: 10,
        }
    }
}

impl Config {
    /// The `[server]` connection and admin-token settings.
    fn validate_connections(&self) -> Result<(), String> {
        let server = &self.server;
        if server.header_read_timeout.is_zero() {
            return Err("server.header_read_timeout must be greater than 0".into());
        }
        if server.idle_timeout.is_zero() {
            return Err("server.idle_timeout must be greater than 0".into());
        }
        if server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        if !(1..=65_535).contains(&server.listen_backlog) {
            return Err(format!(
                "server.listen_backlog must be 1 to 65535, got {}",
                server.listen_backlog
            ));
        }
        if !(256..=MAX_URI_BYTES_LIMIT).contains(&server.max_uri_bytes) {
            return Err(format!(
                "server.max_uri_bytes must be 256 to {MAX_URI_BYTES_LIMIT}, got {}",
                server.max_uri_bytes
            ));
        }
        if !(1_024..=1_048_576).contains(&server.max_header_bytes) {
            return Err(format!(
                "server.max_header_bytes must be 1024 to 1048576, got {}",
                server.max_header_bytes
            ));
        }
        if let Some(secret) = &server.admin_token {
            if secret.expose().trim().chars().count() < MIN_ADMIN_TOKEN_CHARS {
                return Err(format!(
                    "RAMPART_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
                ));
            }
        }
        if server.miss_burst == Some(0) {
            return Err("server.miss_burst must be at least 1 (or absent)".into());
        }
        if server.miss_burst.is_some() && server.misses_per_client == 0 {
            return Err("server.miss_burst needs server.misses_per_client".into());
        }
        if server
            .admin_token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("server.admin_token_file must be a path (or absent)".into());
        }
        Ok(())
    }

    /// The embedded default configuration.
    pub fn embedded() -> Result<Self, StartError> {
        Self::parse(DEFAULT_CONFIG, Path::new("<embedded rampart.example.toml>"))
    }

    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, StartError> {
        let text = std::fs::read_to_string(path).map_err(|e| StartError::Config {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, StartError> {
        let config: Config = toml::from_str(text).map_err(|e| StartError::Config {
            file: origin.display().to_string(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| StartError::Config {
            file: origin.display().to_string(),
            message,
        })?;
        Ok(config)
    }

    /// The database URL to use: the configured one, or SQLite in `data_dir`.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("rampart.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// True when the database is the embedded default (demo data allowed).
    pub fn is_embedded_database(&self) -> bool {
        self.database.url.is_empty()
    }

    /// Checks what serde cannot: ranges, cross-field rules, SQL shape.
    /// The message names the field, as `resource "users": ttl …`.
    pub fn validate(&self) -> Result<(), String> {
        self.sessions.validate()?;
        if !self.database.url.is_empty()
            && !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|scheme| self.database.url.starts_with(scheme))
        {
            return Err(format!(
                "database.url must start with sqlite:// or postgres://, got {:?}",
                self.database.url
            ));
        }
        if self.database.pool_size == 0 {
            return Err("database.pool_size must be at least 1".into());
        }
        self.config_center.validate()?;
        self.reload.validate()?;
        if self.server.max_concurrent_requests == 0 {
            return Err("server.max_concurrent_requests must be at least 1".into());
        }
        if self.server.max_batch_keys == 0 {
            return Err("server.max_batch_keys must be at least 1".into());
        }
        if self.server.request_timeout.is_zero() {
            return Err("server.request_timeout must be greater than 0".into());
        }
        self.validate_connections()?;
        self.stock.validate()?;
        let warmup = &self.warmup;
        if !(warmup.ready_fraction > 0.0 && warmup.ready_fraction <= 1.0) {
            return Err(format!(
                "warmup.ready_fraction must be in (0, 1], got {}",
                warmup.ready_fraction
            ));
        }
        let ratio = warmup.pressure_foreground_ratio;
        if !(ratio == 0.0 || (ratio.is_finite() && ratio >= 1.0)) {
            return Err(format!(
                "warmup.pressure_foreground_ratio must be 0 (off) or a number ≥ 1, got {ratio}"
            ));
        }
        warmup
            .warm_config()
            .validate()
            .map_err(|e| format!("warmup: {e}"))?;
        for url in &self.redis.urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!("redis.urls: {url:?} must start with redis://"));
            }
        }
        if self.redis.namespace.is_empty() || self.redis.namespace.contains(['{', '}', '\n']) {
            return Err("redis.namespace must be non-empty, without braces or newlines".into());
        }
        if self.redis.timeout.is_zero() || self.redis.lease_ttl < Duration::from_millis(30) {
            return Err("redis.timeout must be > 0 and redis.lease_ttl at least 30ms".into());
        }
        self.redis
            .breaker
            .validate()
            .map_err(|e| format!("redis.breaker.{e}"))?;
        if self.resources.is_empty() {
            return Err("no [[resource]] defined: nothing to serve".into());
        }
        let mut names = HashSet::new();
        for resource in &self.resources {
            let field = |message: String| format!("resource {:?}: {message}", resource.name);
            if resource.name.is_empty()
                || !resource
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "resource name {:?} must be non-empty letters, digits, '_' or '-'",
                    resource.name
                ));
            }
            if !names.insert(resource.name.as_str()) {
                return Err(format!("resource {:?} is defined twice", resource.name));
            }
            if !resource.load.contains("$1") {
                return Err(field("load must bind the key as $1".into()));
            }
            if let Some(load_many) = &resource.load_many {
                if !load_many.contains("{keys}") {
                    return Err(field("load_many must contain {keys}".into()));
                }
            }
            if resource.warm.is_some() && resource.load_many.is_none() {
                return Err(field(
                    "warm needs load_many (warm-up loads in batches)".into(),
                ));
            }
            if !(1..=64).contains(&resource.replicas) {
                return Err(field(format!(
                    "replicas must be 1 to 64, got {}",
                    resource.replicas
                )));
            }
            resource
                .cache
                .validate()
                .map_err(|e| field(format!("cache.{e}")))?;
            // A request must outlive what its miss may wait for: the lease
            // holder (lease_wait), then its own load (load_timeout).
            // Otherwise a dead lease holder turns into request timeouts
            // instead of a load.
            let (cache, request_timeout) = (&resource.cache, self.server.request_timeout);
            if cache.load_timeout > request_timeout {
                return Err(field(format!(
                    "cache.load_timeout ({:?}) must not exceed server.request_timeout ({request_timeout:?})",
                    cache.load_timeout
                )));
            }
            if cache.lease_wait + cache.load_timeout >= request_timeout {
                return Err(field(format!(
                    "cache.lease_wait + cache.load_timeout ({:?} + {:?}) must be less than server.request_timeout ({request_timeout:?})",
                    cache.lease_wait, cache.load_timeout
                )));
            }
            resource
                .breaker
                .validate()
                .map_err(|e| field(format!("breaker.{e}")))?;
            resource
                .bulkhead
                .validate()
                .map_err(|e| field(format!("bulkhead.{e}")))?;
            resource
                .faults
                .validate()
                .map_err(|e| field(format!("faults.{e}")))?;
            if let Some(filter) = &resource.filter {
                if filter.keys.trim().is_empty() {
                    return Err(field("filter.keys must be a SQL query".into()));
                }
                filter.size().validate().map_err(|e| match e.kind() {
                    rampart::ErrorKind::InvalidConfig(message) => {
                        field(format!("filter.{message}"))
                    }
                    other => field(format!("filter: {other}")),
                })?;
            }
        }
        Ok(())
    }
}
