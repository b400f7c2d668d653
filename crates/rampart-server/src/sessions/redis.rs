//! The Redis session store, shared by every instance: one hash per
//! session under `{<namespace>:session:<hex of the token's SHA-256>}`,
//! fields `_c` (created, Unix ms), `_l` (last used) and `d:<key>` (each
//! top-level data key, its value's JSON), with a TTL of whatever comes
//! first, the idle or the absolute timeout.
//!
//! Every operation is one Lua script on that one key (one slot, so it
//! runs unchanged on a Cluster), through `rampart-redis`'s guarded
//! connection (its breaker and timeout): checking expiry, merging a PATCH
//! field by field and sliding the TTL happen in one atomic step on the
//! server, never as a load here and a save later. Rotation is two steps —
//! take the old hash (read and delete in one script), then write the new
//! one — because the two keys may live on different Cluster nodes; a crash
//! between them loses the session (the caller logs in again), never
//! leaves the old token alive.
//!
//! Timestamps come from each instance's wall clock; instances are assumed
//! to agree within a small fraction of the idle timeout.

use std::sync::LazyLock;

use async_trait::async_trait;
use rampart_redis::breakers::slot_of;
use rampart_redis::conn::GuardedRedis;
use redis::Script;
use serde_json::Value;

use super::config::SessionsConfig;
use super::store::{self, Data, Session, SessionStore};
use super::token::SessionId;
use crate::error::Error;

/// What every script starts with: the key and times, `live()` (the
/// creation time of a live session; an expired one is deleted) and
/// `touch(c)` (restart the idle timeout, TTL = the nearer deadline).
/// ARGV[1] now, ARGV[2] idle ms, ARGV[3] absolute ms.
const PRELUDE: &str = r"
local key, now, idle, abs = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function live()
  local meta = redis.call('HMGET', key, '_c', '_l')
  if not meta[1] or not meta[2] then return nil end
  local c, l = tonumber(meta[1]), tonumber(meta[2])
  if now >= l + idle or now >= c + abs then
    redis.call('DEL', key)
    return nil
  end
  return c
end
local function touch(c)
  redis.call('HSET', key, '_l', ARGV[1])
  redis.call('PEXPIRE', key, string.format('%d', math.max(1, math.min(idle, c + abs - now))))
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// A new session. ARGV[4] created ms, then field/value pairs.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('DEL', key)
redis.call('HSET', key, '_c', ARGV[4], '_l', ARGV[1])
for i = 5, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
touch(tonumber(ARGV[4]))
return {1, redis.call('HGETALL', key)}
",
    )
});

/// The live session, idle timeout restarted.
static GET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local c = live()
if not c then return {0, {}} end
touch(c)
return {1, redis.call('HGETALL', key)}
",
    )
});

/// Merge: ARGV[4] max bytes, ARGV[5] the number of fields set, then
/// their field/value pairs, then the fields removed. The size is checked
/// first, so a refused patch changes nothing. Answers `{2, {size}}` when
/// too large.
static PATCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local c = live()
if not c then return {0, {}} end
local all = redis.call('HGETALL', key)
local sizes, total = {}, 0
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'd:' then
    local s = #all[i] - 2 + #all[i + 1]
    sizes[all[i]] = s
    total = total + s
  end
end
local last_set = 5 + 2 * tonumber(ARGV[5])
for i = 6, last_set, 2 do total = total - (sizes[ARGV[i]] or 0) + #ARGV[i] - 2 + #ARGV[i + 1] end
for i = last_set + 1, #ARGV do total = total - (sizes[ARGV[i]] or 0) end
if total > tonumber(ARGV[4]) then return {2, {tostring(total)}} end
for i = 6, last_set, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
for i = last_set + 1, #ARGV do redis.call('HDEL', key, ARGV[i]) end
touch(c)
return {1, redis.call('HGETALL', key)}
",
    )
});

/// Read and delete the live session in one step (rotation's first half).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local c = live()
if not c then return {0, {}} end
local all = redis.call('HGETALL', key)
redis.call('DEL', key)
return {1, all}
",
    )
});

/// Log out: delete, answering whether the session was live.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local c = live()
redis.call('DEL', key)
if c then return {1, {}} end
return {0, {}}
",
    )
});

/// Sessions in Redis.
pub struct RedisStore {
    redis: GuardedRedis,
    namespace: String,
    config: SessionsConfig,
}

/// A script's answer: a status and a flat field/value list.
type Answer = (i64, Vec<String>);

impl RedisStore {
    /// Sessions over `redis`, keys under `namespace`.
    pub fn new(redis: GuardedRedis, namespace: &str, config: SessionsConfig) -> RedisStore {
        RedisStore {
            redis,
            namespace: namespace.to_owned(),
            config,
        }
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{{{}:session:{}}}", self.namespace, id.hex())
    }

    /// Runs `script` on `id`'s key with the common ARGV and `extra`.
    async fn run(
        &self,
        script: &'static Script,
        id: &SessionId,
        now: u64,
        extra: Vec<String>,
    ) -> Result<Answer, Error> {
        let key = self.key(id);
        let (idle, abs) = (self.config.idle_ms(), self.config.absolute_ms());
        let answer = self
            .redis
            .call(slot_of(&key), |mut conn| {
                let mut invocation = script.key(&key);
                invocation.arg(now).arg(idle).arg(abs);
                for arg in &extra {
                    invocation.arg(arg);
                }
                async move { invocation.invoke_async::<Answer>(&mut conn).await }
            })
            .await?;
        Ok(answer)
    }
}

/// The session in a flat HGETALL answer.
fn decode(fields: Vec<String>) -> Result<Session, Error> {
    let mut session = Session {
        data: Data::new(),
        created_ms: 0,
        last_seen_ms: 0,
    };
    let mut fields = fields.into_iter();
    while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
        let corrupt = || {
            Error::Guard(rampart::Error::tier(format!(
                "session field {field:?} is corrupt"
            )))
        };
        match field.as_str() {
            "_c" => session.created_ms = value.parse().map_err(|_| corrupt())?,
            "_l" => session.last_seen_ms = value.parse().map_err(|_| corrupt())?,
            _ => {
                if let Some(name) = field.strip_prefix("d:") {
                    let value: Value = serde_json::from_str(&value).map_err(|_| corrupt())?;
                    session.data.insert(name.to_owned(), value);
                }
            }
        }
    }
    Ok(session)
}

/// The data as field/value pairs.
fn encode(data: Data) -> Vec<String> {
    data.into_iter()
        .flat_map(|(k, v)| [format!("d:{k}"), v.to_string()])
        .collect()
}

fn live(answer: Answer) -> Result<Option<Session>, Error> {
    match answer.0 {
        1 => decode(answer.1).map(Some),
        _ => Ok(None),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, id: SessionId, data: Data, now: u64) -> Result<Session, Error> {
        store::fits(&data, self.config.max_data_bytes)?;
        let mut extra = vec![now.to_string()];
        extra.extend(encode(data));
        let answer = self.run(&CREATE, &id, now, extra).await?;
        decode(answer.1)
    }

    async fn get(&self, id: &SessionId, now: u64) -> Result<Option<Session>, Error> {
        live(self.run(&GET, id, now, Vec::new()).await?)
    }

    async fn patch(&self, id: &SessionId, patch: Data, now: u64) -> Result<Option<Session>, Error> {
        let (removed, set): (Vec<_>, Vec<_>) = patch.into_iter().partition(|(_, v)| v.is_null());
        let mut extra = vec![
            self.config.max_data_bytes.to_string(),
            set.len().to_string(),
        ];
        extra.extend(encode(set.into_iter().collect()));
        extra.extend(removed.into_iter().map(|(k, _)| format!("d:{k}")));
        let answer = self.run(&PATCH, id, now, extra).await?;
        if answer.0 == 2 {
            let size = answer
                .1
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            return Err(store::too_large(size, self.config.max_data_bytes));
        }
        live(answer)
    }

    async fn delete(&self, id: &SessionId, now: u64) -> Result<bool, Error> {
        Ok(self.run(&DELETE, id, now, Vec::new()).await?.0 == 1)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: u64,
    ) -> Result<Option<Session>, Error> {
        let Some(session) = live(self.run(&TAKE, old, now, Vec::new()).await?)? else {
            return Ok(None);
        };
        let mut extra = vec![session.created_ms.to_string()];
        extra.extend(encode(session.data));
        let answer = self.run(&CREATE, &new, now, extra).await?;
        decode(answer.1).map(Some)
    }
}
