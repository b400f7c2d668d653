//! Key layout. Everything about one cache key lives under one hash tag, so
//! in a Cluster it is one slot and the Lua scripts may touch it all:
//!
//! ```text
//! {rampart:users:42}:v    the stored entry (codec), PX = its stale-if-error end
//! {rampart:users:42}:g    generation: INCR on invalidation; fills must match
//! {rampart:users:42}:sf   the fence of the stored entry (same TTL as :v)
//! {rampart:users:42}:l    the lease: SET NX PX, value = holder's token
//! {rampart:users:42}:f    the fence counter: INCR per lease granted
//! ```
//!
//! A key containing `}` ends the tag early, but at the same place for all
//! five names, so they still share a slot.

/// The five Redis keys of one cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    pub tag: String,
    pub value: String,
    pub generation: String,
    pub stored_fence: String,
    pub lease: String,
    pub fence: String,
}

impl KeySet {
    /// The keys for `key` of `resource`.
    pub fn new(resource: &str, key: &str) -> KeySet {
        Self::replica(resource, key, 0)
    }

    /// The keys of copy `replica` of a hot key. Copy 0 is the key itself;
    /// copy `r > 0` has its own hash tag (`…~r`), so it lands in another
    /// slot — another Cluster node, usually — and spreads the hot key's
    /// reads.
    pub fn replica(resource: &str, key: &str, replica: u32) -> KeySet {
        let tag = if replica == 0 {
            format!("{{rampart:{resource}:{key}}}")
        } else {
            format!("{{rampart:{resource}:{key}~{replica}}}")
        };
        KeySet {
            value: format!("{tag}:v"),
            generation: format!("{tag}:g"),
            stored_fence: format!("{tag}:sf"),
            lease: format!("{tag}:l"),
            fence: format!("{tag}:f"),
            tag,
        }
    }
}

/// The pub/sub channel on which lease holders announce a release.
pub const RELEASE_CHANNEL: &str = "rampart:released";

/// The pub/sub channel of the invalidation bus; messages are
/// `resource\nkey`.
pub const INVALIDATE_CHANNEL: &str = "rampart:invalidated";
