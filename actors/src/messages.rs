//! Messages between actors. Each is a documented type with named fields.

use crate::conversation::Conversation;
use crate::error::ChatError;
use crate::service::{Accepted, SendCommand};
use crate::session::{OutQueue, Session};
use actix::prelude::*;
use chat_bus::{BusNotice, Event};
use chat_store::Held;
use chat_wire::{AudienceKey, CloseCode, ConvId, Seq, UserId};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A connection's id, unique within this node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Asks the registry to admit one more connection of `user` (refused past
/// `limits.max_connections_per_user`). Answered with the new session's id.
#[derive(Message)]
#[rtype(result = "Result<SessionId, Refused>")]
pub struct Admit {
    pub user: UserId,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyConnections,
    Draining,
}

/// A started session announces itself, with what it listens to.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub id: SessionId,
    pub user: UserId,
    pub addr: Addr<Session>,
    /// The session's outbound queue, which pushes are written to directly.
    pub out: OutQueue,
    /// Direct and group conversations of the user (bus interest), each with the last
    /// seq it held at the handshake (where pushes to this user must start).
    pub conversations: Vec<Held>,
    /// Broadcast audiences of the user, and the version of the attributes they were
    /// read from.
    pub audiences: Vec<AudienceKey>,
    pub audiences_version: i64,
}

/// Every bus channel a session's user listens to here is subscribed and confirmed:
/// from now on it misses no event (a `sync` it ran before may have).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Live;

/// A session is gone (or its upgrade failed after `Admit`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub id: SessionId,
    pub user: UserId,
}

/// Which of `users` have a session open on this node.
#[derive(Message)]
#[rtype(result = "std::collections::HashSet<UserId>")]
pub struct OnlineOf {
    pub users: Vec<UserId>,
}

/// Finds or starts the Conversation actor of `conv`.
#[derive(Message)]
#[rtype(result = "Addr<Conversation>")]
pub struct ConversationFor {
    pub conv: ConvId,
}

/// A Conversation actor has been idle and offers to stop; the registry forgets it
/// (if it is still the registered one) and tells it to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConversationIdle {
    pub conv: ConvId,
    pub addr: Addr<Conversation>,
}

/// Tells a Conversation actor to stop (after the registry forgot it). It stops once
/// nothing is held or in flight, and then hands where its pushes stopped to
/// `handover`: a successor started meanwhile waits for that before it pushes, so two
/// actors of one conversation never push at the same time.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopConversation {
    pub handover: Option<Handover>,
}

/// Where a stopped Conversation actor's pushes ended (its next seq to push, if it saw
/// a message), for its successor.
pub type Handover = oneshot::Sender<Option<i64>>;
/// The successor's end of a [`Handover`].
pub type Predecessor = oneshot::Receiver<Option<i64>>;

/// A Conversation actor that the registry told to stop has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConversationStopped {
    pub conv: ConvId,
    pub addr: Addr<Conversation>,
    pub next_push: Option<i64>,
}

/// A user joined a conversation: listen to it while the user is online here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Joined {
    pub users: Vec<UserId>,
    pub conv: ConvId,
}

/// A user's attributes changed: their sessions take the new audiences, unless what
/// the registry holds was read from a newer `version` (reads can answer out of order).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AudiencesChanged {
    pub user: UserId,
    pub audiences: Vec<AudienceKey>,
    pub version: i64,
}

/// Begins a graceful drain: every session closes with `code` once its in-flight sends
/// are answered. Answered with the number of sessions told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    pub code: CloseCode,
}

/// Start Conversation actors on this arbiter too (an HTTP worker's, sent from the
/// worker as it starts).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UseArbiter(pub actix::dev::ArbiterHandle);

/// How many sessions are open on this node.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct OpenSessions;

/// What the bus reported (events of other nodes, reconnects).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromBus(pub BusNotice);

/// The bus is back after an outage and every session here was told to `resync`: a
/// Conversation actor forgets where its pushes stood instead of filling the gap.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rebase;

/// A push found the session's outbound queue full: the client is not reading.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlowConsumer;

/// Close the session with `code` once in-flight sends are answered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseWith {
    pub code: CloseCode,
    pub reason: &'static str,
}

/// The session's user has new audiences.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NewAudiences {
    pub audiences: Arc<Vec<AudienceKey>>,
    pub version: i64,
}

/// A send for a Conversation actor: stored with the next group commit, then answered
/// on `reply` and fanned out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitSend {
    pub cmd: SendCommand,
    pub reply: oneshot::Sender<Result<Accepted, ChatError>>,
}

/// A member's read cursor moved: tell the members.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Receipt {
    pub user: UserId,
    pub seq: Seq,
}

/// A member is typing.
#[derive(Message)]
#[rtype(result = "Result<(), ChatError>")]
pub struct Typing {
    pub user: UserId,
}

/// An event of another node for this conversation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote {
    pub event: Event,
}

/// Entries another path committed (a group change): publish them on the bus and
/// push them in seq order, as the actor's own.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub messages: Vec<chat_wire::Message>,
}

/// Users are no longer members of a conversation (removed, or left): stop listening
/// to it for them, and tell their sessions (`left`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Left {
    pub users: Vec<UserId>,
    pub conv: ConvId,
}

/// Reload the member list (someone joined).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefreshMembers;
