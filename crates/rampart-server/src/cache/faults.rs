//! `[resource.faults]`: faults injected into a resource's own loads. For
//! `rampart drill scenario` only (`panic-storm` replays "a share of
//! requests panic" on the real service); every fault is off by default
//! and has no place in production.
//!
//! A fault belongs to a key, not to a request: the same keys fail every
//! time, as a poison row does (a value the code never expected), so the
//! other keys are the "unrelated requests" whose fate a drill measures.

use serde::Deserialize;

use crate::cache::keys::Key;

/// Faults in a resource's loads.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Share of keys, in `[0, 1]`, whose loads panic after the query has
    /// run (so each still costs the source its query). 0, the default, is
    /// off.
    pub panic_share: f64,
}

impl FaultsConfig {
    /// Checks each field; the message names it.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.panic_share) {
            return Err(format!(
                "panic_share must be in [0, 1], got {}",
                self.panic_share
            ));
        }
        Ok(())
    }

    /// Whether loads of `key` panic: its stable hash falls in the lowest
    /// `panic_share` of the hash range. Stable across processes and runs:
    /// FNV-1a over the key's text (not the std hasher's random seed), then
    /// SplitMix64's finaliser, without which neighbouring ids (10, 11, …
    /// 17) land side by side and panic together.
    pub fn panics(&self, key: &Key) -> bool {
        if self.panic_share <= 0.0 {
            return false;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.to_string().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        (hash as f64 / u64::MAX as f64) < self.panic_share
    }

    /// Panics if loads of `key` are set to (the fault itself).
    pub fn inject(&self, resource: &str, key: &Key) {
        if self.panics(key) {
            panic!("drill fault: the load of {resource}/{key} panicked (faults.panic_share)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_of_keys_that_panic_is_about_panic_share_and_stable() {
        let faults = FaultsConfig { panic_share: 0.2 };
        let panicking = (1..=10_000)
            .filter(|i| faults.panics(&Key::Int(*i)))
            .count();
        assert!((1_700..=2_300).contains(&panicking), "{panicking}");
        // The same keys every time.
        let again = (1..=10_000)
            .filter(|i| faults.panics(&Key::Int(*i)))
            .count();
        assert_eq!(again, panicking);
        let off = FaultsConfig::default();
        assert!(!(1..=1_000).any(|i| off.panics(&Key::Int(i))));
        let all = FaultsConfig { panic_share: 1.0 };
        assert!((1..=1_000).all(|i| all.panics(&Key::Int(i))));
        assert!(FaultsConfig { panic_share: 1.5 }.validate().is_err());
        assert!(FaultsConfig { panic_share: -0.1 }
            .validate()
            .unwrap_err()
            .contains("panic_share"));
        assert!(FaultsConfig {
            panic_share: f64::NAN
        }
        .validate()
        .is_err());
    }
}
