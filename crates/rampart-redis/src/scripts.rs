//! The Lua scripts. Each touches only one key's hash tag (one slot), so
//! they run unchanged on a Cluster. `redis::Script` sends EVALSHA and falls
//! back to EVAL (loading the script) on NOSCRIPT, e.g. after a restart.
//!
//! # Generations never repeat
//!
//! A fill presents the generation it read; FILL stores only if the key's
//! generation is still exactly that. Counting from 0 made that unsafe when
//! the generation key was lost (evicted, expired, or a Redis restart): it
//! read as 0 again, so a fill that had read 0 (or 1, 2…) before the loss
//! matched the new life's counter and landed, possibly over an
//! invalidation. Now a missing generation is never read as a number:
//!
//! * READ creates it, in the same step as reading the value, from a random
//!   epoch the client draws (52 bits, so a Lua double holds it exactly);
//! * INVALIDATE of a missing generation starts from such an epoch too;
//! * FILL refuses when the generation is missing.
//!
//! A fill that read `G` before a loss therefore meets either no generation
//! (refused) or a fresh random one (a 2⁻⁵² chance to match), never `G`
//! again. Generations are compared as strings, so no float rounding is
//! involved. Scripts never draw the random number themselves: Redis seeds
//! Lua's `math.random` identically for every call.
//!
//! Copies of a hot key (`r > 0`) cannot draw their own epochs: a fill
//! presents one generation for all copies. They mirror copy 0's instead
//! (FILL_COPY, INVALIDATE_COPY; the tier's doc says why that is safe).

use std::sync::LazyLock;

use redis::Script;

/// L2 read: the stored entry and the generation a fill must present,
/// creating the generation (from a random epoch) when it is missing.
/// KEYS: value, generation. ARGV: epoch, generation ttl ms.
/// Returns `{value or nil, generation}`.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = redis.call('GET', KEYS[2])
if not generation then
  generation = ARGV[1]
  redis.call('SET', KEYS[2], generation, 'PX', ARGV[2])
end
return {redis.call('GET', KEYS[1]), generation}
",
    )
});

/// The fence check and the store that [`FILL`] and [`FILL_COPY`] share,
/// after each has checked its generation: refuse a fenced fill older than
/// the stored entry's fence, store the entry, and keep the larger fence
/// (see [`FILL`]). KEYS[1] value, KEYS[3] stored fence; ARGV[2] fence,
/// ARGV[3] payload, ARGV[4] ttl ms.
const FENCED_STORE: &str = "local fence = tonumber(ARGV[2])
local stored = tonumber(redis.call('GET', KEYS[3]) or '0')
if fence > 0 and stored > fence then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
if fence >= stored then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
else
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
";

/// Fenced, generation-checked fill.
/// KEYS: value, generation, stored fence. ARGV: expected generation, fence,
/// payload, ttl ms, generation ttl ms. Returns 1 if stored, 0 if refused:
/// the key was invalidated since the generation was read, or its
/// generation was lost (see the module doc), or a newer fence is stored (a
/// load that outlived its lease must not overwrite newer data).
///
/// Fence 0 is an unfenced fill (a batch: warm-up, batch reads take no
/// lease). It is judged by the generation alone and keeps the stored fence
/// (never lowers it), so a late holder of an older lease is still refused
/// after it. The stored fence is written from the caller's string, never
/// from a Lua number: fences start from Redis `TIME` in µs (16 digits),
/// which Lua's `tostring` would print as `1.7648e+15`, losing the digits
/// that order two fences. Refusing it for any stored fence instead kept every key once
/// written under a lease out of reach of batches until its stale-if-error
/// window ended: warm-up warmed none of them, and batch reads went to the
/// source each time.
pub static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
{FENCED_STORE}redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
",
    ))
});

/// Fill of a copy `r > 0` of a hot key, after copy 0 took the same fill
/// (fences as in [`FILL`]).
/// The copy's generation mirrors copy 0's: a different one means an
/// invalidation has passed this copy since the fill's generation was read
/// (refused); none means the copy is new or was lost (it adopts the
/// fill's, which copy 0 has just confirmed).
/// KEYS: value, generation, stored fence. ARGV: generation, fence,
/// payload, ttl ms, generation ttl ms. Returns 1 if stored, 0 if refused.
pub static FILL_COPY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local generation = redis.call('GET', KEYS[2])
if generation and generation ~= ARGV[1] then return 0 end
{FENCED_STORE}redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[5])
return 1
",
    ))
});

/// Invalidation of a copy `r > 0`, after copy 0's: its generation becomes
/// copy 0's new one (or a fresh epoch if copy 0 could not be reached), and
/// its entry goes. KEYS: value, generation, stored fence. ARGV: generation,
/// generation ttl ms.
pub static INVALIDATE_COPY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1], KEYS[3])
return 1
",
    )
});

/// Invalidation: bump the generation first, then delete, in one step. A
/// missing generation starts from the random epoch (see the module doc).
/// KEYS: value, generation, stored fence. ARGV: epoch, generation ttl ms.
pub static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1])
end
local generation = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1], KEYS[3])
return generation
",
    )
});

/// Lease acquisition with its fence in one step.
/// KEYS: lease, fence counter, stored fence. ARGV: token, lease ttl ms,
/// fence ttl ms. Returns the fence (> 0) if won, 0 if another holder has
/// it.
///
/// The fence counter expires (its memory is bounded), so it may be missing
/// while fences it issued are still alive: stored next to a value (`:sf`),
/// or held by a slow holder that has not filled yet. Restarting it at 0
/// would hand out fences below those, and every fill would be refused
/// until the stored entry expired — or a stale holder's fill would beat a
/// newer one. So a missing counter restarts at Redis's `TIME` in
/// microseconds: the old counter started at an earlier `TIME` and grew by
/// one per lease granted, and granting leases faster than one per
/// microsecond on one key is not possible (each is a script run), so the
/// new start is above every fence it issued. A clock stepped back is
/// covered for the stored fence by starting at least at it.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  local start = now[1] .. string.format('%06d', tonumber(now[2]))
  local stored = redis.call('GET', KEYS[3])
  if stored and tonumber(stored) > tonumber(start) then start = stored end
  redis.call('SET', KEYS[2], start)
end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return fence
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
/// Also run after an ACQUIRE whose answer never came: the token is ours
/// alone, so it deletes nothing but a lease that call may have taken.
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
