//! What the load is aimed at: the ceiling server, one node, two nodes on the Redis bus
//! (each user on node id % 2), or three nodes behind HAProxy.

use crate::common::{fail, pid_with_arg, token};
use chat_testkit::{
    free_port, Api, Endpoint, Haproxy, Node, NodeOptions, RedisServer, Result, TestDb,
};
use clap::ValueEnum;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The ceiling binary: fan-out in memory, nothing stored.
    Ceiling,
    /// One chat node, local bus.
    Node1,
    /// Two chat nodes on a Redis bus; user id % 2 picks the node.
    Node2,
    /// Three chat nodes on a Redis bus behind HAProxy (leastconn).
    Node3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ceiling => "ceiling",
            Kind::Node1 => "node1",
            Kind::Node2 => "node2",
            Kind::Node3 => "node3",
        }
    }

    pub const ALL: [Kind; 4] = [Kind::Ceiling, Kind::Node1, Kind::Node2, Kind::Node3];
}

/// A running target; everything it started stops when it is dropped.
pub struct Target {
    pub kind: Kind,
    pub nodes: Vec<Node>,
    _redis: Option<RedisServer>,
    _haproxy: Option<Haproxy>,
    ceiling: Option<tokio::process::Child>,
    /// Where users connect: one port, or one per node (node2).
    ports: Vec<u16>,
    /// The target's own processes (nodes, or the ceiling).
    pub pids: Vec<u32>,
    /// Redis and HAProxy.
    pub other_pids: Vec<u32>,
}

fn logs() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A binary next to this one (`ceiling`, `chat-node`).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Target {
    /// Starts `kind`. Nodes use `db` and `env`; the ceiling gets `groups` (conversation
    /// id, member ids).
    pub async fn start(
        kind: Kind,
        db: Option<&TestDb>,
        groups: &[(i64, Vec<i64>)],
        env: impl Fn(NodeOptions) -> NodeOptions,
    ) -> Result<Target> {
        let mut t = Target {
            kind,
            nodes: Vec::new(),
            _redis: None,
            _haproxy: None,
            ceiling: None,
            ports: Vec::new(),
            pids: Vec::new(),
            other_pids: Vec::new(),
        };
        if kind == Kind::Ceiling {
            let port = free_port();
            let file = logs().join(format!("ceiling-groups-{}-{port}.json", std::process::id()));
            let map: serde_json::Map<String, serde_json::Value> = groups
                .iter()
                .map(|(c, m)| (c.to_string(), serde_json::json!(m)))
                .collect();
            std::fs::write(&file, serde_json::Value::Object(map).to_string())?;
            let log = std::fs::File::create(logs().join(format!("ceiling-{port}.log")))?;
            let child = tokio::process::Command::new(sibling("ceiling"))
                .arg("--bind")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--groups")
                .arg(&file)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()?;
            t.pids.extend(child.id());
            t.ceiling = Some(child);
            t.ports.push(port);
            chat_testkit::process::wait_port(port, "ceiling", Duration::from_secs(15)).await?;
            return Ok(t);
        }
        let db = db.ok_or_else(|| fail("a node needs a database"))?;
        let n = match kind {
            Kind::Node1 => 1,
            Kind::Node2 => 2,
            _ => 3,
        };
        let redis = if n > 1 {
            let r = RedisServer::start().await?;
            t.other_pids
                .extend(pid_with_arg("redis-server", &r.port.to_string()));
            Some(r)
        } else {
            None
        };
        for i in 0..n {
            let mut opts = NodeOptions::new(&format!("bench-{}", i + 1), db);
            if let Some(r) = &redis {
                opts = opts.redis(&r.url());
            }
            let node = Node::start(env(opts)).await?;
            t.pids.extend(node.pid());
            t.nodes.push(node);
        }
        t._redis = redis;
        match kind {
            Kind::Node3 => {
                let ports: Vec<u16> = t.nodes.iter().map(|n| n.port).collect();
                let hp = Haproxy::start(&ports).await?;
                t.other_pids
                    .extend(pid_with_arg("haproxy", &format!("haproxy-{}.cfg", hp.port)));
                // Until every server's first health check passed.
                let api = hp.api();
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if let Ok((200, _)) = api.get("/readyz", None).await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                t.ports.push(hp.port);
                t._haproxy = Some(hp);
            }
            _ => t.ports.extend(t.nodes.iter().map(|n| n.port)),
        }
        Ok(t)
    }

    /// (port, path) of the socket of user `id`.
    pub fn path(&self, id: i64) -> (u16, String) {
        let port = self.ports[(id.rem_euclid(self.ports.len() as i64)) as usize];
        match self.kind {
            Kind::Ceiling => (port, format!("/ws?user={id}")),
            _ => (port, format!("/ws?token={}", token(id))),
        }
    }

    /// (port, path) for a pre-minted token (or the ceiling's `?user=`).
    pub fn path_with(&self, id: i64, token: &str) -> (u16, String) {
        let port = self.ports[(id.rem_euclid(self.ports.len() as i64)) as usize];
        match self.kind {
            Kind::Ceiling => (port, format!("/ws?user={id}")),
            _ => (port, format!("/ws?token={token}")),
        }
    }

    /// The HTTP API of every node.
    pub fn apis(&self) -> Vec<Api> {
        self.nodes.iter().map(|n| n.api()).collect()
    }

    /// Stops everything (also done on drop).
    pub async fn stop(mut self) {
        for n in &mut self.nodes {
            let _ = n.kill().await;
        }
        if let Some(mut c) = self.ceiling.take() {
            let _ = c.kill().await;
        }
    }
}

/// The value of a gauge or counter in a node's /metrics (summed over label sets).
pub async fn metric(api: &Api, name: &str) -> f64 {
    let Ok((_, body)) = api.get("/metrics", None).await else {
        return f64::NAN;
    };
    body.as_str()
        .unwrap_or("")
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// A line of the counters that tell of trouble, per node.
pub async fn trouble(t: &Target) -> String {
    let mut parts = Vec::new();
    for (i, api) in t.apis().iter().enumerate() {
        let mut line = format!("node {}:", i + 1);
        for (label, name) in [
            ("errors", "chat_errors_total"),
            ("slow-consumer closes", "chat_slow_consumer_closes_total"),
            ("bus publishes dropped", "chat_bus_publish_dropped_total"),
            ("bus reconnects", "chat_bus_reconnects_total"),
        ] {
            line.push_str(&format!(" {label} {}", metric(api, name).await));
        }
        parts.push(line);
    }
    parts.join("; ")
}
