//! Processes a test starts: databases, chat nodes, Redis, HAProxy.

use crate::{HarnessError, Result};
use rand::Rng;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Admin URL of the Postgres the tests create databases in.
pub fn admin_url() -> String {
    std::env::var("CHAT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The chat-node binary: `CHAT_NODE_BIN`, or the workspace's debug build.
pub fn node_bin() -> PathBuf {
    std::env::var_os("CHAT_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/chat-node")
        })
}

async fn admin() -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
    actix_rt::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A throwaway database, dropped when the test ends (best effort).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Result<TestDb> {
        // A run of scripts/test.sh names its own prefix, and drops only its own.
        let prefix = std::env::var("CHAT_TEST_DB_PREFIX")
            .ok()
            .filter(|p| {
                !p.is_empty()
                    && p.len() <= 32
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
            .unwrap_or_else(|| "chat_t".to_owned());
        let name = format!(
            "{prefix}_{}_{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        );
        admin()
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{}", &base[..i], name),
            None => base,
        };
        Ok(TestDb { name, url })
    }

    /// The Postgres server's port (from the URL; 5432 when it names none).
    pub fn port(&self) -> u16 {
        self.url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432)
    }

    /// This database's URL on another port of loopback (a [`crate::FaultProxy`]'s).
    pub fn url_via(&self, port: u16) -> String {
        self.url
            .replace(&format!(":{}/", self.port()), &format!(":{port}/"))
    }

    /// A client connected to this database, for checks and bulk set-up in SQL.
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        actix_rt::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The stored `(seq, cid)` of a conversation's messages, by seq.
    pub async fn stored(&self, conv: i64) -> Result<Vec<(i64, String)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, cid FROM messages WHERE conv = $1 ORDER BY seq",
                &[&conv],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `SELECT count(*)` of a query whose one parameter is a conversation id.
    pub async fn count(&self, sql: &str, conv: i64) -> Result<i64> {
        Ok(self.client().await?.query_one(sql, &[&conv]).await?.get(0))
    }

    pub async fn drop_now(self) -> Result<()> {
        admin()
            .await?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        Ok(())
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: String,
    pub database_url: String,
    /// `None`: the local bus. `Some(url)`: the Redis bus.
    pub redis_url: Option<String>,
    pub port: Option<u16>,
    /// More `CHAT__…` settings.
    pub env: Vec<(String, String)>,
    /// The binary to run; [`node_bin`] when `None`.
    pub bin: Option<PathBuf>,
}

pub const TEST_SECRET: &str = "test-secret-of-at-least-16-bytes";
pub const SERVICE_KEY: &str = "test-service-key";

impl NodeOptions {
    pub fn new(node_id: &str, db: &TestDb) -> Self {
        NodeOptions {
            node_id: node_id.into(),
            database_url: db.url.clone(),
            redis_url: None,
            port: None,
            env: Vec::new(),
            bin: None,
        }
    }

    /// Runs this binary (a test's `env!("CARGO_BIN_EXE_chat-node")`).
    pub fn bin(mut self, path: &str) -> Self {
        self.bin = Some(PathBuf::from(path));
        self
    }

    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Something that serves the chat node's HTTP API and WebSockets on a loopback port:
/// a node process, a node run inside the test, or HAProxy in front of nodes.
pub trait Endpoint {
    fn port(&self) -> u16;

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    fn api(&self) -> crate::Api {
        crate::Api::new(&self.http())
    }

    fn ws_url(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?token={}", self.port(), token)
    }
}

impl Endpoint for Node {
    fn port(&self) -> u16 {
        self.port
    }
}

/// A running chat-node process, killed when dropped.
pub struct Node {
    pub id: String,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
    options: NodeOptions,
}

impl Node {
    pub async fn start(options: NodeOptions) -> Result<Node> {
        let port = options.port.unwrap_or_else(free_port);
        let log = log_dir().join(format!(
            "{}-{}-{}.log",
            options.node_id,
            port,
            std::process::id()
        ));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(options.bin.clone().unwrap_or_else(node_bin));
        cmd.env("CHAT__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CHAT__NODE__ID", &options.node_id)
            .env("CHAT__DATABASE__URL", &options.database_url)
            .env("CHAT__AUTH__JWT_SECRET", TEST_SECRET)
            .env("CHAT__API__SERVICE_KEYS", SERVICE_KEY)
            .env("CHAT__SERVER__WORKERS", "2")
            .env("CHAT__DATABASE__POOL_SIZE", "8")
            // Tests write over HTTP in bursts; the limit's own test sets it low.
            .env("CHAT__LIMITS__HTTP_WRITES_PER_SEC", "100000")
            .env("CHAT__LOG__LEVEL", "info")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        match &options.redis_url {
            Some(url) => cmd
                .env("CHAT__BUS__KIND", "redis")
                .env("CHAT__REDIS__URL", url),
            None => cmd.env("CHAT__BUS__KIND", "local"),
        };
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let node = Node {
            id: options.node_id.clone(),
            port,
            log,
            child: Some(child),
            options,
        };
        node.wait_ready(Duration::from_secs(30)).await?;
        Ok(node)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let api = self.api();
        while Instant::now() < deadline {
            if let Ok((200, _)) = api.get("/readyz", None).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HarnessError::Timeout(format!(
            "node {} not ready; log at {}",
            self.id,
            self.log.display()
        )))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) -> Result<()> {
        stop_child(&mut self.child).await
    }

    /// SIGTERM: the node drains and exits by itself.
    pub fn terminate(&self) -> Result<()> {
        if let Some(pid) = self.pid() {
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
        }
        Ok(())
    }

    /// Waits for the process to exit (after `terminate`); returns whether it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<bool> {
        let Some(child) = self.child.as_mut() else {
            return Ok(true);
        };
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => {
                status?;
                self.child = None;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Starts the node again with the same options and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        let mut options = self.options.clone();
        options.port = Some(self.port);
        *self = Node::start(options).await?;
        Ok(())
    }

    /// The node's log so far (for assertions about what must not be logged).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits up to `limit` until something listens on `port`; `what` names it in the error.
pub async fn wait_port(port: u16, what: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(HarnessError::Timeout(format!("{what} did not start")))
}

/// Kills a child process once.
async fn stop_child(child: &mut Option<Child>) -> Result<()> {
    if let Some(mut c) = child.take() {
        c.kill().await?;
    }
    Ok(())
}

/// A Redis server on a spare port, with no persistence; stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Result<RedisServer> {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Result<RedisServer> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let server = RedisServer {
            port,
            child: Some(child),
        };
        wait_port(port, "redis-server", Duration::from_secs(10)).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn stop(&mut self) -> Result<()> {
        stop_child(&mut self.child).await
    }
}

/// HAProxy in front of nodes, with the project's config rewritten for their ports.
pub struct Haproxy {
    pub port: u16,
    /// Where its log (the config's `log stdout`) goes.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Haproxy {
    pub async fn start(backends: &[u16]) -> Result<Haproxy> {
        let port = free_port();
        let template = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/haproxy.cfg"),
        )?;
        let mut out = String::new();
        let mut skipping = false;
        for line in template.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("# BEGIN servers") {
                out.push_str(line);
                out.push('\n');
                for (i, p) in backends.iter().enumerate() {
                    out.push_str(&format!(
                        "    server node-{} 127.0.0.1:{p} check inter 500ms fall 2 rise 1\n",
                        i + 1
                    ));
                }
                skipping = true;
                continue;
            }
            if trimmed.starts_with("# END servers") {
                skipping = false;
            }
            if skipping {
                continue;
            }
            if trimmed.starts_with("bind ") {
                out.push_str(&format!("    bind 127.0.0.1:{port}\n"));
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        let cfg = log_dir().join(format!("haproxy-{port}.cfg"));
        std::fs::write(&cfg, out)?;
        let log = log_dir().join(format!("haproxy-{port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()?;
        let hp = Haproxy {
            port,
            log,
            child: Some(child),
        };
        wait_port(port, "haproxy", Duration::from_secs(10)).await?;
        Ok(hp)
    }

    pub async fn stop(&mut self) -> Result<()> {
        stop_child(&mut self.child).await
    }

    /// What HAProxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Endpoint for Haproxy {
    fn port(&self) -> u16 {
        self.port
    }
}
