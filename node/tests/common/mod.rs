//! Shared set-up of the node's integration tests: a fresh database and a real node
//! process per test.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub use chat_testkit::process::{SERVICE_KEY, TEST_SECRET};
pub use chat_testkit::{Api, Incoming, Node, NodeOptions, TestDb, WsClient};
pub use serde_json::{json, Value};
pub use std::time::Duration;

pub const T: Duration = Duration::from_secs(10);

/// A fresh database and one node on it, with extra `CHAT__…` settings.
pub async fn node_with(settings: &[(&str, &str)]) -> (TestDb, Node) {
    std::env::set_var("CHAT_NODE_BIN", env!("CARGO_BIN_EXE_chat-node"));
    let db = TestDb::create().await.expect("create test database");
    let mut opts = NodeOptions::new("node-1", &db);
    for (k, v) in settings {
        opts = opts.set(k, v);
    }
    let node = Node::start(opts).await.expect("start node");
    (db, node)
}

pub async fn node() -> (TestDb, Node) {
    node_with(&[]).await
}

/// A user of the node: id, token.
pub struct User {
    pub id: i64,
    pub token: String,
}

pub async fn user(api: &Api, name: &str) -> User {
    let (id, token) = api.register(name).await.expect("register");
    User { id, token }
}

/// Mints a token as a company's backend would, with the shared secret.
pub fn mint(sub: &str, iat: i64, exp: i64) -> String {
    let claims = json!({"sub": sub, "iat": iat, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Number of stored message rows of a conversation.
pub async fn rows(db: &TestDb, conv: i64) -> i64 {
    db.count("SELECT count(*) FROM messages WHERE conv = $1", conv)
        .await
        .expect("count")
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
