//! Tests of the test harness itself (`tests/support`): private Redis servers
//! and clusters start, crash, stall, restart and clean up as advertised.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::RedisResult;
use support::{free_port, redis_processes_on_port, PrivateCluster, PrivateRedis};
use tokio::time::timeout;

async fn get(con: &mut MultiplexedConnection, key: &str) -> RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query_async(con).await
}

async fn plain(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// After a harness object is dropped: nothing listens on the port, no
/// redis-server mentions it, and the port can be bound again.
fn assert_port_released(port: u16, what: &str) {
    let left = redis_processes_on_port(port);
    assert!(
        left.is_empty(),
        "{what}: redis processes still on port {port}: {left:?}"
    );
    TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("{what}: port {port} not free after drop: {e}"));
}

#[test]
fn free_port_is_bindable_unique_and_not_6379() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let unique: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ports.len(),
        "free_port repeated a port: {ports:?}"
    );
    for p in ports {
        assert!(p >= 10_000, "free_port handed out a low port {p}");
        TcpListener::bind(("127.0.0.1", p))
            .unwrap_or_else(|e| panic!("free_port {p} not bindable: {e}"));
    }
}

#[tokio::test]
async fn private_redis_serves_crashes_restarts_and_cleans_up() {
    let mut redis = PrivateRedis::start();
    let port = redis.port();
    assert_ne!(port, 6379, "must never use the shared Redis port");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));

    // Serves PING / SET / GET, and it is our own process answering.
    let client = redis.client();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(get(&mut con, "k").await.unwrap().as_deref(), Some("v"));
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .unwrap();
    let pid = redis.pid().expect("running");
    assert!(
        info.contains(&format!("process_id:{pid}\r\n")),
        "INFO server does not name our child pid {pid}:\n{info}"
    );
    assert_eq!(
        redis_processes_on_port(port),
        vec![pid],
        "/proc scan should find exactly our server"
    );

    // Hard crash: process gone (reaped), old connection broken, new ones refused.
    redis.kill();
    assert!(!redis.is_running());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists after kill()"
    );
    assert!(redis_processes_on_port(port).is_empty());
    let old = timeout(Duration::from_secs(3), get(&mut con, "k"))
        .await
        .expect("GET on a connection to a killed server should fail, not hang");
    assert!(
        old.is_err(),
        "GET on a connection to a killed server succeeded: {old:?}"
    );
    let fresh = timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connecting to a killed server should fail fast, not hang");
    assert!(fresh.is_err(), "connected to a killed server");

    // Restart: same port, new process, empty dataset.
    redis.restart();
    assert_eq!(redis.port(), port);
    let new_pid = redis.pid().expect("running after restart");
    assert_ne!(new_pid, pid);
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 0, "dataset should be empty after a crash + restart");
    assert_eq!(get(&mut con, "k").await.unwrap(), None);
    let () = redis::cmd("SET")
        .arg("k2")
        .arg("v2")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(get(&mut con, "k2").await.unwrap().as_deref(), Some("v2"));

    // Drop: process gone, port free, temp dir removed.
    let dir = redis.dir().to_path_buf();
    assert!(
        dir.join("redis.log").exists(),
        "server log missing in {}",
        dir.display()
    );
    drop(con);
    drop(redis);
    assert!(
        !Path::new(&format!("/proc/{new_pid}")).exists(),
        "pid {new_pid} survived drop"
    );
    assert!(!dir.exists(), "temp dir {} survived drop", dir.display());
    assert_port_released(port, "PrivateRedis");
}

#[tokio::test]
async fn drop_kills_a_stopped_server() {
    let redis = PrivateRedis::start();
    let (port, pid) = (redis.port(), redis.pid().unwrap());
    redis.stop();
    drop(redis);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "SIGSTOPped pid {pid} survived drop"
    );
    assert_port_released(port, "stopped PrivateRedis");
}

#[tokio::test]
async fn stop_stalls_the_server_until_cont_and_pause_resumes_by_itself() {
    let redis = PrivateRedis::start();
    let mut con = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();

    redis.stop();
    let stalled = timeout(Duration::from_millis(200), get(&mut con, "k")).await;
    assert!(
        stalled.is_err(),
        "GET answered while the server was SIGSTOPped: {stalled:?}"
    );
    redis.cont();
    let v = timeout(Duration::from_secs(2), get(&mut con, "k"))
        .await
        .expect("GET still stalled after cont()")
        .unwrap();
    assert_eq!(v.as_deref(), Some("v"));

    // pause(d): stalled right away, answers again by itself after ~d.
    let began = Instant::now();
    redis.pause(Duration::from_millis(400));
    let stalled = timeout(Duration::from_millis(100), get(&mut con, "k")).await;
    assert!(stalled.is_err(), "GET answered during pause(): {stalled:?}");
    let v = timeout(Duration::from_secs(3), get(&mut con, "k"))
        .await
        .expect("server did not resume after pause()")
        .unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "pause(400ms) resumed after only {waited:?}"
    );
}

/// `CLUSTER SLOTS` → (start, end, port of master) ranges.
async fn slot_owners(con: &mut MultiplexedConnection) -> Vec<(i64, i64, u16)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await
        .unwrap();
    slots
        .into_iter()
        .map(|range| {
            let redis::Value::Array(parts) = range else {
                panic!("CLUSTER SLOTS entry: {range:?}")
            };
            let start: i64 = redis::from_redis_value(parts[0].clone()).unwrap();
            let end: i64 = redis::from_redis_value(parts[1].clone()).unwrap();
            let redis::Value::Array(master) = &parts[2] else {
                panic!("CLUSTER SLOTS master: {parts:?}")
            };
            let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
            (start, end, port)
        })
        .collect()
}

#[tokio::test]
async fn private_cluster_routes_keys_across_nodes_and_cleans_up() {
    let cluster = PrivateCluster::start();
    eprintln!("PrivateCluster::start took {:?}", cluster.startup);
    assert_eq!(cluster.node_count(), 3);
    let urls = cluster.urls();
    let ports = cluster.ports();
    assert_eq!(urls.len(), 3);
    for (url, port) in urls.iter().zip(&ports) {
        assert_eq!(url, &format!("redis://127.0.0.1:{port}/"));
        assert_ne!(*port, 6379);
    }

    let client = ClusterClient::new(urls.clone()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    let keys = ["{a}x", "{b}x", "{c}x"];
    for key in keys {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(format!("v-{key}"))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    for key in keys {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, Some(format!("v-{key}")));
    }

    // Where do the keys live? Ask every node directly.
    let mut nodes = Vec::new();
    for url in &urls {
        nodes.push(plain(url).await);
    }
    let owners = slot_owners(&mut nodes[0]).await;
    let covered: i64 = owners.iter().map(|(s, e, _)| e - s + 1).sum();
    assert_eq!(
        covered, 16384,
        "CLUSTER SLOTS does not cover all slots: {owners:?}"
    );
    let mut holders: HashMap<&str, u16> = HashMap::new();
    for key in keys {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut nodes[0])
            .await
            .unwrap();
        let owner = owners
            .iter()
            .find(|(s, e, _)| (*s..=*e).contains(&slot))
            .map(|(_, _, p)| *p)
            .unwrap();
        let mut found = Vec::new();
        for (node, port) in nodes.iter_mut().zip(&ports) {
            let in_slot: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(10)
                .query_async(node)
                .await
                .unwrap();
            if in_slot.iter().any(|k| k == key) {
                found.push(*port);
            }
        }
        assert_eq!(
            found,
            vec![owner],
            "{key} (slot {slot}) should be on exactly its owner :{owner}"
        );
        holders.insert(key, owner);
    }
    let distinct: HashSet<u16> = holders.values().copied().collect();
    assert!(
        distinct.len() >= 2,
        "keys did not spread over nodes: {holders:?}"
    );
    let mut total = 0;
    for node in &mut nodes {
        let n: i64 = redis::cmd("DBSIZE").query_async(node).await.unwrap();
        total += n;
    }
    assert_eq!(total, 3, "DBSIZE over all nodes");

    // Multi-key command within one hash tag.
    let () = redis::cmd("MSET")
        .arg("{t}1")
        .arg("a")
        .arg("{t}2")
        .arg("b")
        .query_async(&mut con)
        .await
        .unwrap();
    let both: Vec<Option<String>> = redis::cmd("MGET")
        .arg("{t}1")
        .arg("{t}2")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(both, vec![Some("a".to_string()), Some("b".to_string())]);

    drop(con);
    drop(nodes);
    drop(cluster);
    for port in ports {
        assert_port_released(port, "PrivateCluster");
        assert_port_released(port + 10_000, "PrivateCluster bus port");
    }
}

#[tokio::test]
async fn private_cluster_kill_node_fails_the_cluster_and_restart_node_heals_it() {
    let mut cluster = PrivateCluster::start();
    let victim = cluster.node_port(0);
    let pid = cluster.node_pid(0).unwrap();

    cluster.kill_node(0);
    assert!(cluster.node_pid(0).is_none());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "killed node pid {pid} still exists"
    );
    assert!(redis_processes_on_port(victim).is_empty());
    let refused = redis::Client::open(cluster.node_url(0))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    assert!(refused.is_err(), "connected to a killed cluster node");
    let began = Instant::now();
    cluster.wait_cluster_fail_seen(Duration::from_secs(10));
    eprintln!(
        "survivors reported cluster_state:fail after {:?}",
        began.elapsed()
    );

    let began = Instant::now();
    cluster.restart_node(0);
    cluster.wait_cluster_ok(Duration::from_secs(15));
    eprintln!(
        "cluster_state:ok again {:?} after restart_node",
        began.elapsed()
    );
    let client = ClusterClient::new(cluster.urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    for key in ["{a}x", "{b}x", "{c}x"] {
        let () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query_async(&mut con)
            .await
            .unwrap();
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v"));
    }

    let ports = cluster.ports();
    drop(con);
    drop(cluster);
    for port in ports {
        assert_port_released(port, "PrivateCluster after restart_node");
    }
}

#[test]
#[should_panic(expected = "Bad directive")]
fn a_server_that_cannot_start_panics_with_its_log() {
    let _ = PrivateRedis::start_with_args(&["--no-such-directive", "x"]);
}

#[test]
#[should_panic(expected = "Address already in use")]
fn restart_on_a_taken_port_panics_with_the_bind_error() {
    let mut redis = PrivateRedis::start();
    redis.kill();
    let _squatter = TcpListener::bind(("127.0.0.1", redis.port())).unwrap();
    redis.restart();
}
