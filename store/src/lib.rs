//! The Postgres store of the chat node.
//!
//! This crate is the only code of the node that speaks SQL (tests, the test kit and the
//! bench inspect the database directly). Each domain is one file holding the
//! statements it runs (as `const`s next to the methods that run them) and its own
//! `impl Store` block; [`Store`] runs them on a deadpool pool with prepared (cached)
//! statements:
//!
//! - `store.rs`: [`Store`] and [`StoreConfig`]: the pool, `migrate`, `ping`, retention.
//! - `users.rs`: users, login lookup, search and attributes ([`NewUser`], [`UserAuth`],
//!   [`UserRecord`]).
//! - `conversations.rs`: direct, group and broadcast conversations, [`Membership`],
//!   members and the conversation list.
//! - `messages.rs`: `append_many` (group commit across conversations: [`Batch`],
//!   [`BatchOutcome`], [`NewMessage`], [`Appended`]) and history.
//! - `cursors.rs`: read cursors and unread counts ([`ReadOutcome`]).
//! - `events.rs`: each user's own event stream ([`Recorded`], [`record_user_event`]).
//! - `contacts.rs`: friend requests, contacts and blocks ([`ContactError`], [`Changed`],
//!   [`Sent`], [`Answer`]); [`DirectRules`] of direct conversations.
//! - `settings.rs`: a member's own settings of a conversation (muted, pinned,
//!   archived), each change an event of their stream.
//! - `notify.rs`: the queue and outbox of offline notifications ([`Expanded`],
//!   [`Claimed`], [`QueueDepth`]).
//! - `sync.rs`: sync of every conversation past the client's cursors.
//! - `presence.rs`: who may see whose presence, last seen, token floors
//!   ([`TokenFloor`]).
//! - [`partitions`]: the time-range partitions of `messages` and their expiry.
//! - `upkeep.rs`: [`UpkeepLease`], the advisory lock that elects the upkeep leader.
//! - `migrate.rs`: the numbered migrations in `sql/`, applied at start.
//!
//! SQL fragments shared by several domains (retention predicate, visible
//! conversations, unread count, message columns) are in `sql.rs`; decoding of message
//! rows, by column name, in `rows.rs`.

mod contacts;
mod conversations;
mod cursors;
mod deletion;
mod error;
mod events;
mod fold;
mod groups;
mod messages;
mod migrate;
mod notify;
pub mod partitions;
mod presence;
mod retention;
mod rows;
mod settings;
mod sql;
mod store;
mod sync;
mod upkeep;
mod users;

pub use contacts::{Answer, Changed, ContactError, DirectRules, Sent};
pub use conversations::{Held, ListCursor, Membership};
pub use cursors::ReadOutcome;
pub use deletion::{Deleted, DELETED_DISPLAY_NAME};
pub use error::StoreError;
pub use events::{record_user_event, Recorded};
pub use groups::{GroupChange, GroupOutcome, GroupRefusal};
pub use messages::{Appended, Batch, BatchOutcome, EntryWindows, NewMessage, Refusal};
pub use notify::{Claimed, Expanded, QueueDepth};
pub use presence::TokenFloor;
pub use retention::Retention;
pub use store::{Store, StoreConfig};
pub use upkeep::{UpkeepLease, UPKEEP_LOCK};
pub use users::{NewUser, UserAuth, UserRecord, VersionedAttributes};
