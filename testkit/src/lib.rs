//! Test harness of the chat node: real node processes, real Postgres databases, real
//! Redis servers, and HTTP and WebSocket clients that speak the public contract.
//!
//! Everything here binds to loopback only, and every wait is bounded.

pub mod client;
pub mod fixtures;
pub mod process;
pub mod proxy;
pub mod receiver;

pub use client::{Api, Incoming, WsClient};
pub use process::{free_port, Endpoint, Haproxy, Node, NodeOptions, RedisServer, TestDb};
pub use proxy::{Fault, FaultProxy};
pub use receiver::{Receiver, Taken};

/// What can go wrong in the harness; tests fail with its message.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("postgres: {0}: {detail}", detail = .0.as_db_error().map(|d| d.message()).unwrap_or(""))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("http: {0}")]
    Http(String),
    #[error("websocket: {0}")]
    Ws(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, HarnessError>;
