//! The Lua scripts. Each touches only one key's hash tag (one slot), so
//! they run unchanged on a Cluster. `redis::Script` sends EVALSHA and falls
//! back to EVAL (loading the script) on NOSCRIPT, e.g. after a restart.

use std::sync::LazyLock;

use redis::Script;

/// Fenced, generation-checked fill.
/// KEYS: value, generation, stored fence. ARGV: expected generation, fence,
/// payload, ttl ms. Returns 1 if stored, 0 if refused (the key was
/// invalidated since the generation was read, or a newer fence is stored:
/// a load that outlived its lease must not overwrite newer data).
pub static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = tonumber(redis.call('GET', KEYS[2]) or '0')
if generation ~= tonumber(ARGV[1]) then return 0 end
local stored = tonumber(redis.call('GET', KEYS[3]) or '0')
if stored > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
return 1
",
    )
});

/// Invalidation: bump the generation first, then delete, in one step.
/// KEYS: value, generation, stored fence. ARGV: generation ttl ms.
pub static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
return generation
",
    )
});

/// Lease acquisition with its fence in one step.
/// KEYS: lease, fence counter. ARGV: token, lease ttl ms, fence ttl ms.
/// Returns the fence (> 0) if won, 0 if another holder has it.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return fence
end
return 0
",
    )
});

/// Watchdog renewal: extend only if we still hold it.
/// KEYS: lease. ARGV: token, ttl ms. Returns 1 if renewed.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Release: compare-and-delete, then tell the waiters (in every process)
/// through the release channel. KEYS: lease. ARGV: token, channel, tag.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
",
    )
});
