//! The world a run brings up on loopback, and tears down when dropped (also when the
//! run fails): its own Postgres cluster (initdb into a temporary directory, its own
//! port), its own Redis, the nodes (each reaching Postgres and Redis through fault
//! proxies of its own) and HAProxy in front of them.

use chat_testkit::process::NodeOptions;
use chat_testkit::{
    free_port, Endpoint, FaultProxy, Haproxy, HarnessError, Node, RedisServer, Result,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An error of the run itself (not of the node under test).
pub fn fail(msg: impl Into<String>) -> HarnessError {
    HarnessError::Http(msg.into())
}

/// Where the Postgres server programs are: `initdb` on the PATH, or the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !path.is_empty() {
            let real = std::fs::canonicalize(&path)?;
            if let Some(dir) = real.parent() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| fail("no PostgreSQL server programs (initdb): run scripts/test.sh once, or install postgresql"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| fail("no initdb under /usr/lib/postgresql/*/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A Postgres cluster of the run's own.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// Postgres refuses to run as root: then its programs run as `postgres`.
    as_postgres: bool,
    log: PathBuf,
}

impl PgCluster {
    pub fn init(root: &Path) -> Result<PgCluster> {
        let bin = pg_bin_dir()?;
        let dir = root.join("pgdata");
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(root))?;
        }
        let pg = PgCluster {
            log: root.join("postgres.log"),
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        pg.run_pg(
            "initdb",
            &["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            true,
        )?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run_pg(&self, program: &str, args: &[&str], with_dir: bool) -> Result<()> {
        let mut c = self.command(program);
        if with_dir {
            c.arg("-D").arg(&self.dir);
        }
        c.args(args);
        run(&mut c)
    }

    pub fn start(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c shared_buffers=128MB",
            self.port,
            self.dir.display()
        );
        let log = self.log.display().to_string();
        self.run_pg(
            "pg_ctl",
            &["-w", "-t", "60", "-l", &log, "-o", &options, "start"],
            true,
        )
    }

    /// `mode`: `fast` (clients are disconnected, a clean shutdown) or `immediate` (a
    /// crash: recovery from the WAL at the next start).
    pub fn stop(&self, mode: &str) -> Result<()> {
        self.run_pg("pg_ctl", &["-w", "-t", "60", "-m", mode, "stop"], true)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// One node with its own way to Postgres and to Redis.
pub struct Slot {
    pub node: Node,
    pub pg: FaultProxy,
    pub redis: FaultProxy,
    pub paused: bool,
}

impl Slot {
    pub fn name(&self) -> &str {
        &self.node.id
    }

    pub fn signal(&self, sig: &str) -> Result<()> {
        if let Some(pid) = self.node.pid() {
            run(Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string()))?;
        }
        Ok(())
    }
}

/// Everything a run needs.
pub struct World {
    pub slots: Vec<Slot>,
    pub lb: Haproxy,
    pub redis: RedisServer,
    pub pg: PgCluster,
    /// The chat database, directly (not through a node's proxy): for set-up and checks.
    pub db_url: String,
    /// Proxies run on a runtime of their own, off the workload's thread. Last, so
    /// the proxies are gone first.
    _proxies: ProxyRuntime,
}

/// A runtime that may be dropped on an async thread (it is shut down in the
/// background).
struct ProxyRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl World {
    pub async fn start(root: &Path, nodes: usize, node_env: &[(String, String)]) -> Result<World> {
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root)?;
        let pg = PgCluster::init(root)?;
        pg.start()?;
        let admin = connect(&pg.url("postgres")).await?;
        admin.batch_execute("CREATE DATABASE chat").await?;
        let db_url = pg.url("chat");
        let redis = RedisServer::start().await?;
        let runtime = ProxyRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("fault-proxy")
                .enable_all()
                .build()?,
        ));
        let proxies = runtime.0.as_ref().ok_or_else(|| fail("no proxy runtime"))?;
        let mut slots = Vec::new();
        for i in 0..nodes {
            let pg_addr = pg.addr();
            let redis_addr: SocketAddr = ([127, 0, 0, 1], redis.port).into();
            let pg_proxy = proxies
                .spawn(FaultProxy::start(pg_addr))
                .await
                .map_err(|e| fail(e.to_string()))??;
            let redis_proxy = proxies
                .spawn(FaultProxy::start(redis_addr))
                .await
                .map_err(|e| fail(e.to_string()))??;
            let mut options = NodeOptions {
                node_id: format!("node-{}", i + 1),
                database_url: format!("postgres://postgres@127.0.0.1:{}/chat", pg_proxy.port),
                redis_url: Some(redis_proxy.url("redis", "")),
                port: None,
                env: Vec::new(),
                bin: None,
            };
            for (k, v) in node_env {
                options = options.set(k, v);
            }
            let node = Node::start(options).await?;
            slots.push(Slot {
                node,
                pg: pg_proxy,
                redis: redis_proxy,
                paused: false,
            });
        }
        let ports: Vec<u16> = slots.iter().map(|s| s.node.port).collect();
        let lb = Haproxy::start(&ports).await?;
        // Until HAProxy's checks have seen every node.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(World {
            slots,
            lb,
            redis,
            pg,
            db_url,
            _proxies: runtime,
        })
    }

    pub fn api(&self) -> chat_testkit::Api {
        self.lb.api()
    }

    pub fn lb_port(&self) -> u16 {
        self.lb.port
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for slot in &self.slots {
            if slot.paused {
                let _ = slot.signal("CONT");
            }
        }
    }
}

/// A plain connection (its driver on the current runtime).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
