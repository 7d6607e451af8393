//! The event bus between chat nodes.
//!
//! Each node delivers to its own sessions directly; the bus only carries events to
//! *other* nodes. [`LocalBus`] is the single-node bus (nothing to carry), [`RedisBus`]
//! is Redis pub/sub with one channel per conversation, per user and per broadcast
//! audience. Events carry their origin node so a node ignores its own echo.

mod local;
pub mod presence;
mod redis_bus;

/// Names of the bus's Prometheus metrics (registered at start by the node).
pub mod metrics {
    /// Events handed to Redis.
    pub const PUBLISHES_TOTAL: &str = "chat_bus_publishes_total";
    /// Events not published: the queue was full or the publish failed.
    pub const PUBLISH_DROPPED_TOTAL: &str = "chat_bus_publish_dropped_total";
    /// Events of other nodes received.
    pub const RECEIVES_TOTAL: &str = "chat_bus_receives_total";
    /// Drop notices this node published, and those of other nodes it received.
    pub const DROP_NOTICES_SENT_TOTAL: &str = "chat_bus_drop_notices_sent_total";
    pub const DROP_NOTICES_RECEIVED_TOTAL: &str = "chat_bus_drop_notices_received_total";
    /// Subscriber reconnections after a lost Redis connection.
    pub const RECONNECTS_TOTAL: &str = "chat_bus_reconnects_total";
    /// 1 while the bus reaches the other nodes (always 1 on the local bus).
    pub const UP: &str = "chat_bus_up";
}

pub use local::LocalBus;
pub use redis_bus::RedisBus;

use chat_wire::{AudienceKey, ConvId, EventEntry, Message, PresenceState, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A bus channel. Its Redis name is `chat:c:<id>`, `chat:u:<id>` or `chat:a:<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Conversation(ConvId),
    User(UserId),
    Audience(AudienceKey),
}

/// The default first word of every Redis name (`bus.channel_prefix`).
pub const DEFAULT_PREFIX: &str = "chat";

impl Channel {
    /// Its Redis name with the default prefix.
    pub fn name(&self) -> String {
        self.name_in(DEFAULT_PREFIX)
    }

    /// Its Redis name in the cluster whose names start with `prefix`.
    pub fn name_in(&self, prefix: &str) -> String {
        match self {
            Channel::Conversation(c) => format!("{prefix}:c:{c}"),
            Channel::User(u) => format!("{prefix}:u:{u}"),
            Channel::Audience(a) => format!("{prefix}:a:{a}"),
        }
    }

    /// The channel of a Redis channel name with the default prefix.
    pub fn parse(name: &str) -> Option<Channel> {
        Self::parse_in(DEFAULT_PREFIX, name)
    }

    /// The channel of a Redis channel name, if it is one of the cluster of `prefix`.
    pub fn parse_in(prefix: &str, name: &str) -> Option<Channel> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(':')?;
        let (kind, id) = rest.split_once(':')?;
        match kind {
            "c" => id.parse().ok().map(|i| Channel::Conversation(ConvId(i))),
            "u" => id.parse().ok().map(|i| Channel::User(UserId(i))),
            "a" => chat_wire::Audience::parse(id)
                .ok()
                .map(|a| Channel::Audience(a.key())),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What nodes tell each other. Published once per event, after commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Event {
    /// A message was committed (conversation or audience channel).
    Message { message: Box<Message> },
    /// A member's read cursor moved (conversation channel).
    Read {
        conv: ConvId,
        user: UserId,
        seq: Seq,
    },
    /// A user's unread changed (user channel: the reader's other devices).
    Unread {
        user: UserId,
        conv: ConvId,
        unread: i64,
        #[serde(default)]
        mentions_unread: i64,
        total: i64,
    },
    /// A member is typing (conversation channel).
    Typing { conv: ConvId, user: UserId },
    /// A user joined a conversation (user channel): nodes with that user online start
    /// listening to it.
    Joined { user: UserId, conv: ConvId },
    /// A user is no longer a member of a conversation (user channel): nodes with that
    /// user online stop pushing it to them.
    Left { user: UserId, conv: ConvId },
    /// A user's attributes changed (user channel): their audiences change.
    AttributesChanged { user: UserId },
    /// An event of a user's own stream was committed (user channel): the user's
    /// sessions get it as a `contact` frame. Lost, it is found by `sync`.
    UserEvent { user: UserId, entry: EventEntry },
    /// Users `user` may see came online or went offline (user channel: `user`'s
    /// sessions get one `presence` frame each). Lost, it is found by `POST /presence`.
    Presence {
        user: UserId,
        updates: Vec<PresenceState>,
    },
    /// Close every socket of `user` with `code` (user channel; the company's backend
    /// asked).
    Disconnect { user: UserId, code: u16 },
    /// Tokens of `user` issued at or before `floor` (unix seconds) are refused: the
    /// sockets opened with one close (user channel).
    Revoked { user: UserId, floor: i64 },
}

impl Event {
    /// Whether a node that loses this event must say so (the sessions concerned
    /// `resync`): every event but typing, which nobody syncs, and presence, which is
    /// asked for again (`POST /presence`) rather than synced.
    pub fn must_be_told_if_lost(&self) -> bool {
        !matches!(self, Event::Typing { .. } | Event::Presence { .. })
    }
}

/// An event as it travels: with the node it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: String,
    #[serde(flatten)]
    pub event: Event,
}

/// What the bus tells its node.
#[derive(Debug, Clone, PartialEq)]
pub enum BusNotice {
    /// An event from another node.
    Event { channel: Channel, event: Event },
    /// The bus connection was lost and is back, subscriptions restored; pushes may
    /// have been missed meanwhile, so sessions must `resync`.
    Reconnected,
    /// The bus connection was lost.
    Down,
    /// Another node could not publish some of its events (its queue was full, or
    /// Redis failed the publish): the events of these channels may have been missed
    /// here (`None`: of any channel), so the sessions they concern must `resync`.
    Missed { channels: Option<Vec<Channel>> },
}

/// What a node tells the others on [`nodes_channel`] when it could not publish events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropNotice {
    pub origin: String,
    /// Redis names of the channels whose events were dropped; `None`: too many to
    /// list, treat every channel as concerned.
    pub channels: Option<Vec<String>>,
}

/// The channel every node of the cluster of `prefix` listens to for [`DropNotice`]s.
pub fn nodes_channel(prefix: &str) -> String {
    format!("{prefix}:n")
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A bus. Calls never block: work is queued to the bus's own task, and a lost
/// connection loses pushes only (the store is the truth; clients `sync`).
pub trait Bus: Send + Sync + 'static {
    /// Sends an event to the other nodes listening on `channel`.
    fn publish(&self, channel: &Channel, event: &Event);
    /// Starts receiving events of `channel`.
    fn subscribe(&self, channel: &Channel);
    /// Stops receiving events of `channel`.
    fn unsubscribe(&self, channel: &Channel);
    /// Answers on `done` once every subscription asked for before this call is in
    /// force (Redis has acknowledged it): from then on no event of those channels is
    /// missed. While the bus is down, that is after it has resubscribed.
    fn confirm(&self, done: tokio::sync::oneshot::Sender<()>);
    /// Answers on `done` once every event published before this call has been handed
    /// to Redis (or told as dropped): a draining node waits for it before it exits.
    fn flush(&self, done: tokio::sync::oneshot::Sender<()>);
    /// Whether the bus is connected (for `/readyz`).
    fn is_up(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for ch in [
            Channel::Conversation(ConvId(7)),
            Channel::User(UserId(3)),
            Channel::Audience(
                chat_wire::Audience::parse("role/2/org/1")
                    .expect("valid audience")
                    .key(),
            ),
        ] {
            assert_eq!(Channel::parse(&ch.name()), Some(ch.clone()));
        }
        assert_eq!(Channel::parse("other:c:1"), None);
        assert_eq!(Channel::parse("chat:c:x"), None);
    }

    #[test]
    fn user_events_must_be_told_if_lost() {
        let event = Event::UserEvent {
            user: UserId(3),
            entry: EventEntry {
                seq: 1,
                ts: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
                event: chat_wire::UserEvent::Unfriended { user: UserId(4) },
            },
        };
        assert!(event.must_be_told_if_lost());
        let text = serde_json::to_string(&event).expect("serialises");
        assert!(text.contains(r#""e":"user_event""#), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).ok(), Some(event));
    }

    #[test]
    fn envelope_json_carries_origin() {
        let env = Envelope {
            origin: "node-1".into(),
            event: Event::Typing {
                conv: ConvId(1),
                user: UserId(2),
            },
        };
        let text = serde_json::to_string(&env).expect("serialises");
        assert!(text.contains(r#""origin":"node-1""#), "{text}");
        let back: Envelope = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, env);
    }
}
