//! The stock gate on Redis: one Lua script checks and decrements a SKU's
//! available units, records the request key and the hold (a sorted set by
//! expiry), all under the SKU's one hash tag (one slot in a Cluster):
//!
//! ```text
//! {rampart:<len>:<ns>:stock:<len>:<sku>}:a        available units (integer)
//! {rampart:<len>:<ns>:stock:<len>:<sku>}:h        holds: member = request key, score = expiry (Unix ms)
//! {rampart:<len>:<ns>:stock:<len>:<sku>}:k:<key>  the request key's quantity, PX = key retention
//! ```
//!
//! Redis is a gate in front of the database, never the truth: a caller the
//! gate lets through still reserves in SQL (where the decrement is
//! conditional), and the gate is told to give the units back when SQL
//! refuses. So a gate that drifts (a process killed between the two, a
//! lost compensation) can only refuse too much until the next
//! [`RedisStock::load`] rebuilds it from SQL; it cannot oversell.

use std::sync::LazyLock;

use rampart::Error;
use redis::Script;

use crate::breakers::slot_of;
use crate::conn::GuardedRedis;
use crate::keys::KeySet;

/// RESERVE: KEYS available, holds, key; ARGV request key, qty, expiry ms,
/// key retention ms. `{1, left}` held; `{0, available}` too few;
/// `{2, qty}` the key was seen (its quantity); `{3, 0}` not loaded.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prior = redis.call('GET', KEYS[3])
if prior then return {2, tonumber(prior)} end
local a = redis.call('GET', KEYS[1])
if not a then return {3, 0} end
a = tonumber(a)
local q = tonumber(ARGV[2])
if a < q then return {0, a} end
redis.call('DECRBY', KEYS[1], q)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SET', KEYS[3], q, 'PX', ARGV[4])
return {1, a - q}
",
    )
});

/// RELEASE: KEYS available, holds, key; ARGV request key, qty, credit
/// (1: back into stock), forget (1: the key too). The units move only if
/// the hold was still there: a release is idempotent.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 and ARGV[3] == '1' then redis.call('INCRBY', KEYS[1], ARGV[2]) end
if ARGV[4] == '1' then redis.call('DEL', KEYS[3]) end
return removed
",
    )
});

/// REAP: KEYS available, holds; ARGV now ms, key prefix. Holds past their
/// time go back into stock; returns how many.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local n = 0
for _, member in ipairs(due) do
  local q = tonumber(redis.call('GET', ARGV[2] .. member) or '0')
  redis.call('ZREM', KEYS[2], member)
  if q > 0 then redis.call('INCRBY', KEYS[1], q) end
  n = n + 1
end
return n
",
    )
});

/// LOAD: KEYS available, holds; ARGV available, key prefix, key
/// retention ms, then (key, expiry, qty) of each live hold. Replaces what
/// the gate knows of the SKU.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 3 do
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  redis.call('SET', ARGV[2] .. ARGV[i], ARGV[i + 2], 'PX', ARGV[3])
end
return 1
",
    )
});

/// What the gate answered a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAnswer {
    /// Held in Redis; `left` units remain. Reserve in SQL now.
    Held {
        /// Units left after this one.
        left: i64,
    },
    /// Fewer units than asked for, as far as the gate knows.
    SoldOut {
        /// Units available in the gate.
        available: i64,
    },
    /// The request key was seen (a replay, or the same key in flight).
    Seen,
    /// The gate has no count for the SKU: [`RedisStock::load`] it.
    NotLoaded,
}

/// The SKU's keys.
struct StockKeys {
    available: String,
    holds: String,
    key_prefix: String,
    slot: u16,
}

impl StockKeys {
    fn new(namespace: &str, sku: &str) -> StockKeys {
        // The cache's injective tag layout, with `<ns>:stock` as resource.
        let tag = KeySet::new(&format!("{namespace}:stock"), sku).tag;
        StockKeys {
            slot: slot_of(&tag),
            available: format!("{tag}:a"),
            holds: format!("{tag}:h"),
            key_prefix: format!("{tag}:k:"),
        }
    }

    fn key(&self, request_key: &str) -> String {
        format!("{}{request_key}", self.key_prefix)
    }
}

/// The gate over one guarded connection (breaker per node, timeout).
#[derive(Clone)]
pub struct RedisStock {
    redis: GuardedRedis,
    namespace: String,
    key_ttl_ms: u64,
}

impl RedisStock {
    /// The gate in `namespace`; request keys kept `key_ttl_ms`.
    pub fn new(redis: GuardedRedis, namespace: impl Into<String>, key_ttl_ms: u64) -> RedisStock {
        RedisStock {
            redis,
            namespace: namespace.into(),
            key_ttl_ms,
        }
    }

    /// Checks and holds `qty` of `sku` for `request_key` until `expires_ms`.
    pub async fn reserve(
        &self,
        sku: &str,
        request_key: &str,
        qty: i64,
        expires_ms: i64,
    ) -> Result<GateAnswer, Error> {
        let keys = StockKeys::new(&self.namespace, sku);
        let key = keys.key(request_key);
        let ttl = self.key_ttl_ms.max(1);
        let (code, n): (i64, i64) = self
            .redis
            .call(keys.slot, |mut conn| async move {
                RESERVE
                    .key(&keys.available)
                    .key(&keys.holds)
                    .key(&key)
                    .arg(request_key)
                    .arg(qty)
                    .arg(expires_ms)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(match code {
            1 => GateAnswer::Held { left: n },
            0 => GateAnswer::SoldOut { available: n },
            2 => GateAnswer::Seen,
            _ => GateAnswer::NotLoaded,
        })
    }

    /// Drops `request_key`'s hold: its units back into stock when `credit`
    /// (a cancel, or SQL refused what the gate held), not for a confirm;
    /// the key itself too when `forget` (so it can be retried).
    pub async fn release(
        &self,
        sku: &str,
        request_key: &str,
        qty: i64,
        credit: bool,
        forget: bool,
    ) -> Result<bool, Error> {
        let keys = StockKeys::new(&self.namespace, sku);
        let key = keys.key(request_key);
        let removed: i64 = self
            .redis
            .call(keys.slot, |mut conn| async move {
                RELEASE
                    .key(&keys.available)
                    .key(&keys.holds)
                    .key(&key)
                    .arg(request_key)
                    .arg(qty)
                    .arg(if credit { "1" } else { "0" })
                    .arg(if forget { "1" } else { "0" })
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(removed == 1)
    }

    /// Returns `sku`'s holds past `now_ms` into the gate's stock.
    pub async fn reap(&self, sku: &str, now_ms: i64) -> Result<u64, Error> {
        let keys = StockKeys::new(&self.namespace, sku);
        self.redis
            .call(keys.slot, |mut conn| async move {
                REAP.key(&keys.available)
                    .key(&keys.holds)
                    .arg(now_ms)
                    .arg(&keys.key_prefix)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
    }

    /// Rebuilds the gate's view of `sku` from the truth: `available`
    /// (total − sold − live holds) and the live holds (request key,
    /// expiry, quantity).
    pub async fn load(
        &self,
        sku: &str,
        available: i64,
        holds: &[(String, i64, i64)],
    ) -> Result<(), Error> {
        let keys = StockKeys::new(&self.namespace, sku);
        let holds = holds.to_vec();
        let ttl = self.key_ttl_ms.max(1);
        let _: i64 = self
            .redis
            .call(keys.slot, |mut conn| async move {
                let mut invocation = LOAD.key(&keys.available);
                invocation
                    .key(&keys.holds)
                    .arg(available)
                    .arg(&keys.key_prefix)
                    .arg(ttl);
                for (key, expires_ms, qty) in &holds {
                    invocation.arg(key).arg(*expires_ms).arg(*qty);
                }
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// The gate's available count for `sku` (None: not loaded).
    pub async fn available(&self, sku: &str) -> Result<Option<i64>, Error> {
        let keys = StockKeys::new(&self.namespace, sku);
        self.redis
            .call(keys.slot, |mut conn| async move {
                redis::cmd("GET")
                    .arg(&keys.available)
                    .query_async(&mut conn)
                    .await
            })
            .await
    }
}
