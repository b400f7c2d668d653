//! Key layout. Everything about one cache key lives under one hash tag, so
//! in a Cluster it is one slot and the Lua scripts may touch it all:
//!
//! ```text
//! {rampart:5:users:2:42}:v    the stored entry (codec), PX = its stale-if-error end
//! {rampart:5:users:2:42}:g    generation: random epoch, INCR on invalidation; fills must match
//! {rampart:5:users:2:42}:sf   the fence of the stored entry (same TTL as :v)
//! {rampart:5:users:2:42}:l    the lease: SET NX PX, value = holder's token
//! {rampart:5:users:2:42}:f    the fence counter: INCR per lease granted
//! {rampart:5:users:2:42#3}:v  copy 3 of a hot key (its own tag, so its own slot)
//! ```
//!
//! The tag is `{rampart:<len(resource)>:<resource>:<len(key)>:<key>[#<r>]}`,
//! lengths in bytes, in decimal, `#<r>` only for copies `r > 0`.
//!
//! # Why no two (resource, key, copy) share a name
//!
//! A name can be read back from its first byte: after `{rampart:` come
//! digits up to a `:` (the resource's length), then exactly that many bytes
//! (the resource — whatever it contains, `:` and `}` included), a `:`,
//! digits up to a `:` (the key's length), exactly that many bytes (the
//! key), then either `}` (copy 0) or `#`, digits and `}` (copy `r`), then
//! the suffix. Every step is forced, so two different (resource, key,
//! copy) triples cannot give the same name. Without the lengths they could:
//! copy 1 of `K` and copy 0 of `K~1` were both `{rampart:res:K~1}` once,
//! and namespace `a` with resource `b:c` met namespace `a:b` with `c`.
//!
//! A `}` inside the resource or key ends Redis Cluster's hash tag early,
//! but at the same byte for all names of that key and copy (they share the
//! whole prefix up to the suffix), so they still share a slot; such a key's
//! copies then share it too, which costs spreading, never correctness.

/// The five Redis keys of one cache key (or of one copy of a hot key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// The hash tag itself, `{…}`; also the payload of release notices.
    pub tag: String,
    /// The stored entry.
    pub value: String,
    /// The generation a fill must present.
    pub generation: String,
    /// The fence of the stored entry.
    pub stored_fence: String,
    /// The lease.
    pub lease: String,
    /// The fence counter.
    pub fence: String,
}

impl KeySet {
    /// The keys for `key` of `resource`.
    pub fn new(resource: &str, key: &str) -> KeySet {
        Self::replica(resource, key, 0)
    }

    /// The keys of copy `replica` of a hot key. Copy 0 is the key itself;
    /// copy `r > 0` has its own hash tag (`…#r`), so it lands in another
    /// slot — another Cluster node, usually — and spreads the hot key's
    /// reads.
    pub fn replica(resource: &str, key: &str, replica: u32) -> KeySet {
        let (rlen, klen) = (resource.len(), key.len());
        let tag = if replica == 0 {
            format!("{{rampart:{rlen}:{resource}:{klen}:{key}}}")
        } else {
            format!("{{rampart:{rlen}:{resource}:{klen}:{key}#{replica}}}")
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

    /// The Cluster hash slot all five keys share.
    pub fn slot(&self) -> u16 {
        crate::breakers::slot_of(&self.tag)
    }
}

/// The pub/sub channel on which lease holders announce a release.
pub const RELEASE_CHANNEL: &str = "rampart:released";

/// The pub/sub channel of the invalidation bus; messages are
/// `resource\nkey`.
pub const INVALIDATE_CHANNEL: &str = "rampart:invalidated";

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::KeySet;

    #[test]
    fn no_two_resource_key_copy_triples_share_a_name() {
        let resources = ["res", "a", "a:b", "b:c", "ns:res", "r}", "", "ü"];
        let keys = [
            "K", "K~1", "K#1", "K}", "K}#1", "a:b", "b", "1:K", "", "~", "#", "}", "日本", "ключ",
            "K#1}", "2:K#1",
        ];
        let mut seen: HashMap<String, (&str, &str, u32)> = HashMap::new();
        for resource in resources {
            for key in keys {
                for replica in 0..4 {
                    let set = KeySet::replica(resource, key, replica);
                    let names = [
                        &set.tag,
                        &set.value,
                        &set.generation,
                        &set.stored_fence,
                        &set.lease,
                        &set.fence,
                    ];
                    for name in names {
                        if let Some(other) = seen.insert(name.clone(), (resource, key, replica)) {
                            panic!(
                                "{name:?} is produced by {other:?} and by {:?}",
                                (resource, key, replica)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_old_collision_is_gone() {
        // Copy 1 of `K` and copy 0 of `K~1` were the same tag.
        assert_ne!(
            KeySet::replica("res", "K", 1).tag,
            KeySet::new("res", "K~1").tag
        );
        assert_ne!(KeySet::new("a", "b:c").tag, KeySet::new("a:b", "c").tag);
    }
}
