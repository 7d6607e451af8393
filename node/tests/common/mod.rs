//! The node run inside the test process: a fresh database and a node serving on a
//! `127.0.0.1:0` listener, with no process boundary. Tests that need a real process
//! (a log file, a signal, a kill) start one with `chat_testkit::Node`.

use chat_node::config::Settings;
use chat_node::ChatNode;
use chat_testkit::process::{SERVICE_KEY, TEST_SECRET};
use chat_testkit::{Endpoint, Node, NodeOptions, TestDb};
use tokio::sync::oneshot;

/// A node serving inside this test; it drains and stops when dropped.
pub struct LocalNode {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl Endpoint for LocalNode {
    fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `CHAT__LIMITS__MAX_FRAME_BYTES` → `limits.max_frame_bytes`: tests name settings as
/// the environment does.
fn setting_path(env_key: &str) -> String {
    env_key
        .strip_prefix("CHAT__")
        .unwrap_or(env_key)
        .to_ascii_lowercase()
        .replace("__", ".")
}

/// A fresh database and one node on it, with extra settings (`CHAT__…` names).
pub async fn node_with(settings: &[(&str, &str)]) -> (TestDb, LocalNode) {
    let db = TestDb::create().await.expect("create test database");
    let mut pairs: Vec<(String, String)> = [
        ("node.id", "node-1"),
        ("database.url", db.url.as_str()),
        ("auth.jwt_secret", TEST_SECRET),
        ("api.service_keys", SERVICE_KEY),
        ("server.workers", "2"),
        ("database.pool_size", "8"),
        ("bus.kind", "local"),
        // Tests write over HTTP in bursts; the limit's own test sets it low.
        ("limits.http_writes_per_sec", "100000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    pairs.extend(
        settings
            .iter()
            .map(|(k, v)| (setting_path(k), v.to_string())),
    );
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let settings = Settings::with_overrides(&pairs).expect("settings");
    let node = ChatNode::build(settings).await.expect("build the node");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = listener.local_addr().expect("local address").port();
    let (stop, stopped) = oneshot::channel::<()>();
    actix_rt::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = node.serve(listener, shutdown).await {
            eprintln!("in-process node failed: {e}");
        }
    });
    (
        db,
        LocalNode {
            port,
            stop: Some(stop),
        },
    )
}

pub async fn node() -> (TestDb, LocalNode) {
    node_with(&[]).await
}

/// A node process of this build on `db`, with extra `CHAT__…` settings.
pub async fn process_node(db: &TestDb, id: &str, settings: &[(&str, &str)]) -> Node {
    let mut options = NodeOptions::new(id, db).bin(env!("CARGO_BIN_EXE_chat-node"));
    for (k, v) in settings {
        options = options.set(k, v);
    }
    Node::start(options).await.expect("start node")
}
