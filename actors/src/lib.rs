//! The actors of a chat node.
//!
//! - [`session::Session`]: one per WebSocket connection. Parses frames, validates,
//!   rate-limits, keeps the heartbeat, and writes through a bounded queue.
//! - [`conversation::Conversation`]: one per conversation with local interest. This
//!   node's single writer for it: group-commits sends, then fans out in seq order.
//! - [`registry::Registry`]: finds or starts Conversation actors, knows which sessions
//!   of which users (and audiences) are here, routes fan-out, and owns the bus
//!   subscriptions.
//! - [`maintenance`]: partition upkeep by whichever node holds the advisory lock.
//! - [`online::OnlineUsers`]: who has a socket open (asked by offline notifications).
//!
//! The logic that decides (push order with held messages and gap reads, group-commit
//! batching, the rate limit's token bucket, the socket writer's close paths) lives in
//! plain types ([`ordering::PushOrder`], [`batch::GroupCommit`], [`session::Bucket`],
//! [`session::writer`]) that the actors drive, each unit-tested on its own.
//!
//! [`service::Chat`] is the one entry point for the HTTP handlers and the sessions, so
//! an HTTP send and a WebSocket send take the same path.

pub mod batch;
pub mod conversation;
pub mod directory;
pub mod error;
pub mod maintenance;
pub mod messages;
pub mod metrics;
pub mod online;
pub mod ordering;
pub mod presence;
pub mod registry;
pub mod service;
pub mod session;
pub mod writer;

pub use error::ChatError;
pub use service::Chat;
