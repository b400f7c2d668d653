//! Idempotency by request key: the first request under a key is answered
//! and its answer kept; a replay (same key, same request) gets that answer
//! again, another request under the key is a conflict, and a replay while
//! the first is still being answered is told so ("in flight") instead of
//! being run twice.
//!
//! Memory is bounded twice: a key is kept for `keep_for` (24 h by default,
//! the retention payment APIs promise) and at most `max_keys` are kept at
//! once. When the table is full of live keys a new key is refused
//! ([`IdempotencyFull`]) rather than an old one dropped: dropping a live key
//! would let its retry run twice, which is the one thing this table exists
//! to prevent.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::sync::{Arc, Mutex};

/// How long keys are kept and how many at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// How long a key is remembered after its answer (and at most how long
    /// one may stay in flight). Default 24 h.
    pub keep_for: Duration,
    /// Keys kept at once; past it new keys are refused. Default 1,000,000.
    pub max_keys: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            keep_for: Duration::from_secs(24 * 60 * 60),
            max_keys: 1_000_000,
        }
    }
}

/// What [`Idempotency::begin`] found under a key.
#[derive(Debug)]
pub enum Begin<V> {
    /// A new key: answer the request, then [`Ticket::finish`] (dropping the
    /// ticket unfinished forgets the key, so the request can be retried).
    Started(Ticket<V>),
    /// The same request was answered before: here is its answer.
    Replay(V),
    /// The same request is being answered now.
    InFlight,
    /// The key was used for another request.
    Conflict,
}

/// Every slot is taken by a live key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency table is full ({max_keys} live keys)")]
pub struct IdempotencyFull {
    /// The configured bound.
    pub max_keys: usize,
}

/// A key's first request, being answered. Dropped without
/// [`finish`](Self::finish) (an error, a cancelled caller), the key is
/// forgotten.
#[derive(Debug)]
pub struct Ticket<V> {
    table: Arc<Mutex<Table<V>>>,
    key: Option<String>,
    digest: u64,
    keep_for_ms: u64,
}

impl<V> Ticket<V> {
    /// Records `answer` as the key's answer, kept for `keep_for` from `now_ms`.
    pub fn finish(mut self, answer: V, now_ms: u64) {
        if let Some(key) = self.key.take() {
            let expires_ms = now_ms.saturating_add(self.keep_for_ms);
            let mut table = self.table.lock();
            table.order.push_back((expires_ms, key.clone()));
            table.map.insert(
                key,
                Slot {
                    digest: self.digest,
                    expires_ms,
                    answer: Some(answer),
                },
            );
        }
    }
}

impl<V> Drop for Ticket<V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut table = self.table.lock();
            // Only this ticket's in-flight slot: never a finished answer.
            if table
                .map
                .get(&key)
                .is_some_and(|slot| slot.answer.is_none())
            {
                table.map.remove(&key);
            }
        }
    }
}

#[derive(Debug)]
struct Slot<V> {
    digest: u64,
    expires_ms: u64,
    /// `None` while in flight.
    answer: Option<V>,
}

#[derive(Debug)]
struct Table<V> {
    map: HashMap<String, Slot<V>>,
    /// (expiry, key) in insertion order; with one `keep_for` that is expiry
    /// order, so expired keys are popped from the front in O(1) each. An
    /// entry whose slot was replaced since is skipped (its expiry differs).
    order: VecDeque<(u64, String)>,
}

/// Request keys → first answers; see the module docs. Clones share the table.
#[derive(Debug)]
pub struct Idempotency<V> {
    config: IdempotencyConfig,
    table: Arc<Mutex<Table<V>>>,
}

impl<V> Clone for Idempotency<V> {
    fn clone(&self) -> Self {
        Idempotency {
            config: self.config.clone(),
            table: Arc::clone(&self.table),
        }
    }
}

impl<V: Clone> Idempotency<V> {
    /// An empty table.
    pub fn new(config: IdempotencyConfig) -> Self {
        Idempotency {
            config,
            table: Arc::new(Mutex::new(Table {
                map: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    /// Looks `key` up for the request whose digest is `digest` (see
    /// [`request_digest`]); a new key is marked in flight.
    pub fn begin(&self, key: &str, digest: u64, now_ms: u64) -> Result<Begin<V>, IdempotencyFull> {
        let keep_for_ms = u64::try_from(self.config.keep_for.as_millis()).unwrap_or(u64::MAX);
        let mut table = self.table.lock();
        table.expire(now_ms);
        if let Some(slot) = table.map.get(key) {
            return Ok(if slot.digest != digest {
                Begin::Conflict
            } else {
                match &slot.answer {
                    Some(answer) => Begin::Replay(answer.clone()),
                    None => Begin::InFlight,
                }
            });
        }
        if table.map.len() >= self.config.max_keys {
            return Err(IdempotencyFull {
                max_keys: self.config.max_keys,
            });
        }
        let expires_ms = now_ms.saturating_add(keep_for_ms);
        table.order.push_back((expires_ms, key.to_owned()));
        table.map.insert(
            key.to_owned(),
            Slot {
                digest,
                expires_ms,
                answer: None,
            },
        );
        drop(table);
        Ok(Begin::Started(Ticket {
            table: Arc::clone(&self.table),
            key: Some(key.to_owned()),
            digest,
            keep_for_ms,
        }))
    }

    /// Keys kept now (answered and in flight).
    pub fn len(&self) -> usize {
        self.table.lock().map.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets keys whose time is up; [`begin`](Self::begin) does this too.
    pub fn expire(&self, now_ms: u64) {
        self.table.lock().expire(now_ms);
    }
}

impl<V> Table<V> {
    fn expire(&mut self, now_ms: u64) {
        while let Some((expires_ms, _)) = self.order.front() {
            if *expires_ms > now_ms {
                break;
            }
            let Some((expires_ms, key)) = self.order.pop_front() else {
                break;
            };
            if self
                .map
                .get(&key)
                .is_some_and(|s| s.expires_ms == expires_ms)
            {
                self.map.remove(&key);
            }
        }
        // Entries for keys replaced or abandoned since pile up only as fast
        // as keys are used; bound them by the live keys all the same.
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order.retain(|(expires_ms, key)| {
                map.get(key).is_some_and(|s| s.expires_ms == *expires_ms)
            });
        }
    }
}

/// A stable 64-bit digest of a request's parts (FNV-1a over each part and
/// its length): the same in every process and release, so it can be stored
/// next to the key in a database and compared by another instance.
pub fn request_digest(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    };
    for part in parts {
        // The length first: ("ab", "c") and ("a", "bc") differ.
        for byte in (part.len() as u64).to_le_bytes() {
            eat(byte);
        }
        for &byte in *part {
            eat(byte);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_keys: usize) -> Idempotency<u32> {
        Idempotency::new(IdempotencyConfig {
            keep_for: Duration::from_secs(10),
            max_keys,
        })
    }

    #[test]
    fn replay_conflict_in_flight_and_expiry() {
        let t = table(10);
        let Ok(Begin::Started(ticket)) = t.begin("k", 1, 0) else {
            panic!("new key")
        };
        assert!(matches!(t.begin("k", 1, 0), Ok(Begin::InFlight)));
        assert!(matches!(t.begin("k", 2, 0), Ok(Begin::Conflict)));
        ticket.finish(7, 1_000);
        assert!(matches!(t.begin("k", 1, 5_000), Ok(Begin::Replay(7))));
        assert!(matches!(t.begin("k", 2, 5_000), Ok(Begin::Conflict)));
        // Kept 10 s from the answer (at 1 s): gone at 11 s.
        assert!(matches!(t.begin("k", 1, 10_999), Ok(Begin::Replay(7))));
        assert!(matches!(t.begin("k", 2, 11_000), Ok(Begin::Started(_))));
    }

    #[test]
    fn a_dropped_ticket_forgets_the_key() {
        let t = table(10);
        let Ok(Begin::Started(ticket)) = t.begin("k", 1, 0) else {
            panic!("new key")
        };
        drop(ticket);
        assert!(t.is_empty());
        assert!(matches!(t.begin("k", 2, 0), Ok(Begin::Started(_))));
    }

    #[test]
    fn full_of_live_keys_refuses_new_ones_until_some_expire() {
        let t = table(2);
        for key in ["a", "b"] {
            let Ok(Begin::Started(ticket)) = t.begin(key, 1, 0) else {
                panic!("new key")
            };
            ticket.finish(1, 0);
        }
        assert_eq!(
            t.begin("c", 1, 9_999).err(),
            Some(IdempotencyFull { max_keys: 2 })
        );
        assert!(matches!(t.begin("a", 1, 9_999), Ok(Begin::Replay(1))));
        assert!(matches!(t.begin("c", 1, 10_000), Ok(Begin::Started(_))));
        assert_eq!(t.len(), 0, "c's ticket was dropped, a and b expired");
    }

    #[test]
    fn the_digest_separates_parts() {
        assert_ne!(
            request_digest(&[b"ab", b"c"]),
            request_digest(&[b"a", b"bc"])
        );
        assert_eq!(
            request_digest(&[b"SKU-1", b"2"]),
            request_digest(&[b"SKU-1", b"2"])
        );
    }
}
