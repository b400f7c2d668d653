//! One circuit breaker per Redis node, so that one dead Cluster master
//! fails fast for its own slots and for nothing else.
//!
//! With one breaker for the whole deployment, a dead master of three made
//! a third of all calls run into the timeout (measured: ~500 ms each) while
//! the other two thirds succeeded: the failure rate never crossed the
//! threshold, no run of consecutive failures formed, and the breaker stayed
//! closed for as long as the master stayed dead. Judged per node, the dead
//! master's calls are all failures, its breaker opens after
//! `consecutive_failures` of them, and the healthy masters' breakers never
//! see them.
//!
//! Which node serves a call is the owner of the call's slot. The map from
//! slot to node comes from `CLUSTER SLOTS`, asked every [`REFRESH`] by a
//! background task: after a failover the promoted replica appears in the
//! map within one refresh, with a breaker of its own (closed), so the
//! slots recover without waiting for the dead master's breaker to probe.
//! Breakers are kept by node address for the life of the process, so a
//! node that returns at its old address finds its breaker's state.
//!
//! A single node (and a Cluster before its first map) has one breaker: the
//! one the deployment was given.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rampart::breaker::{CircuitBreaker, Transition};
use redis::Value;

use crate::conn::RedisConn;

/// How often a Cluster's slot map is asked for.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Redis Cluster's number of hash slots.
const SLOTS: usize = 16_384;

/// The hash slot of a Redis key, as Redis Cluster computes it: CRC16 of
/// the hash tag (the bytes between the first `{` and the next `}`, when
/// not empty), else of the whole key.
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let hashed = tagged.unwrap_or(bytes);
    // 16,384 slots: the remainder is below u16::MAX.
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS as u16
}

type Listener = Arc<dyn Fn(&Transition) + Send + Sync>;

/// The breakers of a deployment, one per node. Cheap to clone.
#[derive(Clone)]
pub struct NodeBreakers {
    inner: Arc<Inner>,
}

struct Inner {
    /// The breaker the deployment was given: the only one for a single
    /// node; the template (name, settings) of every node's breaker and the
    /// one used before the first slot map in a Cluster.
    first: CircuitBreaker,
    /// Slot → breaker; replaced whole on each refresh (reads are one
    /// read-lock and one clone, next to a network call).
    map: RwLock<Arc<SlotMap>>,
    /// Every node's breaker ever made, by address, in order of discovery:
    /// kept so a node that comes back finds its state, and listed for
    /// metrics.
    nodes: Mutex<Vec<(String, CircuitBreaker)>>,
    /// Listeners every breaker gets, the later ones too.
    listeners: Mutex<Vec<Listener>>,
}

#[derive(Default)]
struct SlotMap {
    /// Index into `breakers` per slot; empty until the first map.
    slot_node: Vec<u16>,
    breakers: Vec<CircuitBreaker>,
}

impl NodeBreakers {
    /// One breaker for every call: `first`. For a Cluster, call
    /// [`watch`](Self::watch) to split it per node.
    pub fn new(first: CircuitBreaker) -> NodeBreakers {
        NodeBreakers {
            inner: Arc::new(Inner {
                first,
                map: RwLock::new(Arc::new(SlotMap::default())),
                nodes: Mutex::new(Vec::new()),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The breaker that judges a call on `slot`.
    pub fn for_slot(&self, slot: u16) -> CircuitBreaker {
        let map = self.inner.map.read();
        match map.slot_node.get(usize::from(slot)) {
            Some(&node) => map.breakers[usize::from(node)].clone(),
            None => self.inner.first.clone(),
        }
    }

    /// Every breaker: the deployment's own first, then one per node seen,
    /// in the order the nodes were discovered.
    pub fn all(&self) -> Vec<CircuitBreaker> {
        let nodes = self.inner.nodes.lock();
        std::iter::once(self.inner.first.clone())
            .chain(nodes.iter().map(|(_, breaker)| breaker.clone()))
            .collect()
    }

    /// Calls `listener` on every state change of every breaker, those of
    /// nodes discovered later included.
    pub fn on_transition(&self, listener: impl Fn(&Transition) + Send + Sync + 'static) {
        let listener: Listener = Arc::new(listener);
        // Under the nodes lock, so a node discovered meanwhile gets the
        // listener exactly once (from the list, or from here).
        let nodes = self.inner.nodes.lock();
        self.inner.listeners.lock().push(listener.clone());
        for breaker in std::iter::once(&self.inner.first).chain(nodes.iter().map(|(_, b)| b)) {
            let listener = listener.clone();
            breaker.on_transition(move |t| listener(t));
        }
    }

    /// Starts the task that keeps the slot map of the Cluster behind
    /// `conn` (every [`REFRESH`], each ask bounded by `timeout`). Needs a
    /// tokio runtime; stops when the last clone of `self` is dropped. A
    /// single node has nothing to watch.
    pub fn watch(&self, conn: RedisConn, timeout: Duration) {
        if !matches!(conn, RedisConn::Cluster(_)) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: one Redis breaker for the whole Cluster");
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let mut conn = conn.clone();
                let asked = tokio::time::timeout(
                    timeout,
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async::<Value>(&mut conn),
                )
                .await;
                match asked {
                    Ok(Ok(reply)) => match parse_slots(&reply) {
                        Some(ranges) => NodeBreakers { inner }.install(&ranges),
                        None => tracing::warn!("CLUSTER SLOTS: unexpected reply"),
                    },
                    // A node that is down or slow: the next tick asks
                    // another (the connection picks one at random), and
                    // the old map stays meanwhile.
                    Ok(Err(err)) => tracing::debug!(%err, "CLUSTER SLOTS failed"),
                    Err(_) => tracing::debug!("CLUSTER SLOTS timed out"),
                }
            }
        });
    }

    /// `address`'s breaker, made (with every listener) the first time the
    /// node is seen; `nodes` is the locked list of breakers made so far.
    fn node_breaker(
        &self,
        nodes: &mut Vec<(String, CircuitBreaker)>,
        address: &str,
    ) -> CircuitBreaker {
        if let Some((_, breaker)) = nodes.iter().find(|(a, _)| a == address) {
            return breaker.clone();
        }
        let inner = &*self.inner;
        let breaker = CircuitBreaker::new(
            format!("{}@{address}", inner.first.name()),
            inner.first.config().clone(),
        );
        for listener in inner.listeners.lock().iter() {
            let listener = listener.clone();
            breaker.on_transition(move |t| listener(t));
        }
        nodes.push((address.to_owned(), breaker.clone()));
        breaker
    }

    /// Replaces the slot map with `ranges` (start, end inclusive, owner's
    /// address), making a breaker for each owner not seen before.
    fn install(&self, ranges: &[(u16, u16, String)]) {
        let inner = &*self.inner;
        let mut nodes = inner.nodes.lock();
        let mut breakers: Vec<CircuitBreaker> = Vec::new();
        let mut addresses: Vec<&str> = Vec::new();
        let mut slot_node = vec![u16::MAX; SLOTS];
        for (start, end, address) in ranges {
            let index = match addresses.iter().position(|a| a == address) {
                Some(index) => index,
                None => {
                    breakers.push(self.node_breaker(&mut nodes, address));
                    addresses.push(address);
                    breakers.len() - 1
                }
            };
            let Ok(index) = u16::try_from(index) else {
                return;
            };
            let (start, end) = (usize::from(*start), usize::from(*end).min(SLOTS - 1));
            if let Some(owned) = slot_node.get_mut(start..=end) {
                owned.fill(index);
            }
        }
        // Slots nobody owns (a Cluster being resharded) keep the
        // deployment's own breaker.
        let first = u16::try_from(breakers.len()).unwrap_or(u16::MAX);
        if slot_node.contains(&u16::MAX) {
            breakers.push(inner.first.clone());
            for node in slot_node.iter_mut().filter(|n| **n == u16::MAX) {
                *node = first;
            }
        }
        drop(nodes);
        *inner.map.write() = Arc::new(SlotMap {
            slot_node,
            breakers,
        });
    }
}

/// `CLUSTER SLOTS` → (start, end, master's `host:port`) per range; `None`
/// if the reply is not of that shape.
fn parse_slots(reply: &Value) -> Option<Vec<(u16, u16, String)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let start = u16::try_from(as_int(fields.first()?)?).ok()?;
            let end = u16::try_from(as_int(fields.get(1)?)?).ok()?;
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Value::SimpleString(text) => text.clone(),
                _ => return None,
            };
            let port = as_int(master.get(1)?)?;
            Some((start, end, format!("{host}:{port}")))
        })
        .collect()
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart::breaker::BreakerConfig;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from CLUSTER KEYSLOT on a real Cluster.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bar"), 5061);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("{}.x"), slot_of("{}.x"));
        assert_eq!(slot_of("foo{}{bar}"), 8363);
        assert_eq!(slot_of("foo{{bar}}zap"), 4015);
        assert_eq!(slot_of("{rampart:5:users:2:42}:v"), 7677);
    }

    #[test]
    fn each_owner_gets_its_own_breaker_and_keeps_it() {
        let breakers = NodeBreakers::new(CircuitBreaker::new("redis", BreakerConfig::default()));
        assert_eq!(breakers.for_slot(0).name(), "redis");
        breakers.install(&[
            (0, 8191, "10.0.0.1:7000".into()),
            (8192, 16383, "10.0.0.2:7000".into()),
        ]);
        assert_eq!(breakers.for_slot(0).name(), "redis@10.0.0.1:7000");
        assert_eq!(breakers.for_slot(16383).name(), "redis@10.0.0.2:7000");
        breakers.for_slot(0).force_open();
        // A failover: the second half moves to a new node; the first node's
        // breaker (open) is the same object after the refresh.
        breakers.install(&[
            (0, 8191, "10.0.0.1:7000".into()),
            (8192, 16383, "10.0.0.3:7000".into()),
        ]);
        assert_eq!(
            breakers.for_slot(0).state(),
            rampart::breaker::State::ForcedOpen
        );
        assert_eq!(breakers.for_slot(9000).name(), "redis@10.0.0.3:7000");
        let names: Vec<String> = breakers.all().iter().map(|b| b.name().to_owned()).collect();
        assert_eq!(
            names,
            [
                "redis",
                "redis@10.0.0.1:7000",
                "redis@10.0.0.2:7000",
                "redis@10.0.0.3:7000"
            ]
        );
    }

    #[test]
    fn unowned_slots_keep_the_first_breaker() {
        let breakers = NodeBreakers::new(CircuitBreaker::new("redis", BreakerConfig::default()));
        breakers.install(&[(0, 99, "10.0.0.1:7000".into())]);
        assert_eq!(breakers.for_slot(50).name(), "redis@10.0.0.1:7000");
        assert_eq!(breakers.for_slot(100).name(), "redis");
    }

    #[test]
    fn listeners_reach_breakers_made_later() {
        let breakers = NodeBreakers::new(CircuitBreaker::new("redis", BreakerConfig::default()));
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        breakers.on_transition(move |t| sink.lock().push(t.name.to_string()));
        breakers.install(&[(0, 16383, "10.0.0.1:7000".into())]);
        breakers.for_slot(1).force_open();
        breakers.all()[0].force_open();
        assert_eq!(*seen.lock(), ["redis@10.0.0.1:7000", "redis"]);
    }

    #[test]
    fn a_reply_of_another_shape_is_refused() {
        assert!(parse_slots(&Value::Int(1)).is_none());
        assert!(parse_slots(&Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_none());
        let good = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(7000),
                Value::BulkString(b"abc".to_vec()),
            ]),
        ])]);
        assert_eq!(
            parse_slots(&good),
            Some(vec![(0, 16383, "127.0.0.1:7000".to_owned())])
        );
    }
}
