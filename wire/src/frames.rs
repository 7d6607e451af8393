//! WebSocket frames: one JSON object per text frame, tagged by `type`.

use crate::contacts::{EventEntry, UserEvent};
use crate::error::ErrorCode;
use crate::http::{SyncConversation, SyncResponse};
use crate::ids::{ConvId, Seq, UserId};
use crate::message::{Conversation, Draft, Message};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a client can say. A frame is parsed and acted on at once, never kept in a
/// collection, so its size is of no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Store and fan out; answered by `ack` or `error` with `ref: cid`.
    Send {
        conv: ConvId,
        #[serde(flatten)]
        draft: Draft,
    },
    /// Move the read cursor; answered by `unread`.
    Read { conv: ConvId, seq: Seq },
    /// As HTTP sync; answered by `sync`.
    Sync {
        #[serde(default)]
        cursors: BTreeMap<String, i64>,
        #[serde(default)]
        limit: Option<i64>,
        /// The `events_cursor` of the last `sync` answer.
        #[serde(default)]
        events_cursor: Option<i64>,
    },
    /// Edit a message of one's own (`target`): a new entry with the new body; answered
    /// by `ack` or `error` with `ref: cid`.
    Edit {
        conv: ConvId,
        target: Seq,
        cid: String,
        body: String,
    },
    /// Recall a message (one's own within the recall window, any as a group admin).
    Recall {
        conv: ConvId,
        target: Seq,
        cid: String,
    },
    /// Set (`on: true`) or take back a reaction on a message.
    React {
        conv: ConvId,
        target: Seq,
        cid: String,
        emoji: String,
        #[serde(default = "yes")]
        on: bool,
    },
    /// Ephemeral, never stored.
    Typing { conv: ConvId },
    /// Answered by `pong`.
    Ping,
}

fn yes() -> bool {
    true
}

impl ClientFrame {
    /// The draft of a frame that stores an entry (`send`, `edit`, `recall`, `react`),
    /// with its conversation; any other frame comes back as it was (moved, not copied).
    #[allow(clippy::result_large_err)]
    pub fn into_draft(self) -> Result<(ConvId, Draft), ClientFrame> {
        match self {
            ClientFrame::Send { conv, draft } => Ok((conv, draft)),
            ClientFrame::Edit {
                conv,
                target,
                cid,
                body,
            } => Ok((conv, Draft::edit(cid, target, body))),
            ClientFrame::Recall { conv, target, cid } => Ok((conv, Draft::recall(cid, target))),
            ClientFrame::React {
                conv,
                target,
                cid,
                emoji,
                on,
            } => Ok((conv, Draft::reaction(cid, target, emoji, on))),
            other => Err(other),
        }
    }
}

/// A text frame that is not a valid client frame: what to answer, and to what.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub message: String,
    /// The cid (for a send) or the frame type, when they could be read.
    pub reference: Option<String>,
}

impl ClientFrame {
    /// Decodes one text frame. On failure, says which frame it answers when the JSON
    /// was readable enough to tell.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FrameError {
            message: format!("malformed JSON: {e}"),
            reference: None,
        })?;
        let reference = value
            .get("cid")
            .and_then(|c| c.as_str())
            .or_else(|| value.get("type").and_then(|t| t.as_str()))
            .map(|s| s.chars().take(crate::MAX_CID_LEN).collect::<String>());
        if !value.is_object() {
            return Err(FrameError {
                message: "a frame is a JSON object".into(),
                reference,
            });
        }
        serde_json::from_value(value).map_err(|e| FrameError {
            message: format!("invalid frame: {e}"),
            reference,
        })
    }
}

/// The close codes of the contract: why the server ended a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1001: the client fell silent for two heartbeats.
    GoingAway,
    /// 1002: not a valid WebSocket exchange.
    Protocol,
    /// 1008: the token expired, or the rate limit was abused.
    Policy,
    /// 1009: a frame (or its fragments together) is over `limits.max_frame_bytes`.
    TooBig,
    /// 1012: the node is draining; reconnect (another node will take it).
    Draining,
    /// 4001: the client did not read its frames fast enough.
    SlowConsumer,
    /// A code the company's backend chose when it disconnected the user (1000, 1008
    /// or 4000–4999; 4003 unless it named one).
    Service(u16),
}

impl CloseCode {
    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Draining => 1012,
            CloseCode::SlowConsumer => 4001,
            CloseCode::Service(code) => code,
        }
    }
}

/// What the server says. A frame is encoded at once, never kept in a collection, so
/// its size is of no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame after connect.
    Hello {
        user: UserId,
        node: String,
        heartbeat_s: u64,
    },
    /// The send with this cid is durable.
    Ack {
        cid: String,
        conv: ConvId,
        seq: Seq,
        ts: DateTime<Utc>,
    },
    /// A new message in a conversation the user belongs to.
    Msg(Message),
    /// A member's read cursor moved.
    Read {
        conv: ConvId,
        user: UserId,
        seq: Seq,
    },
    /// The user's unread changed.
    Unread {
        conv: ConvId,
        unread: i64,
        /// Of them, those that mention the user (or everyone).
        #[serde(default)]
        mentions_unread: i64,
        total: i64,
    },
    /// A member is typing.
    Typing {
        conv: ConvId,
        user: UserId,
    },
    /// The answer to `sync`.
    Sync {
        conversations: Vec<SyncConversation>,
        more: bool,
        /// The user's own events after the cursor sent (see `SyncResponse`).
        events: Vec<EventEntry>,
        events_cursor: i64,
    },
    /// The node may have missed pushes: call sync.
    Resync,
    /// A user this one may see came online or went offline.
    Presence(crate::presence::PresenceState),
    /// The user was added to a conversation (or it was created with them): here it
    /// is, as the conversation list shows it. Its pushes follow from now on; what
    /// came before is in `sync`.
    Joined {
        conv: ConvId,
        conversation: Box<Conversation>,
    },
    /// The user is no longer a member (removed, or left on another device): no more
    /// pushes of the conversation; what the client holds of it stays its own.
    Left {
        conv: ConvId,
    },
    /// A new event of the user's own stream (a friend request, its answer, an
    /// unfriend, a block from another device). A client that sees a gap in their seq
    /// calls `sync` with its `events_cursor`.
    Contact {
        event: EventEntry,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Pong,
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            reference,
        }
    }

    /// The JSON text of the frame.
    pub fn to_text(&self) -> String {
        // Serialising these types cannot fail: every map key is a string and no
        // Serialize impl here returns an error.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(r#"{"type":"error","code":"unavailable","message":"encoding failed"}"#)
        })
    }
}

impl From<SyncResponse> for ServerFrame {
    fn from(r: SyncResponse) -> Self {
        ServerFrame::Sync {
            conversations: r.conversations,
            more: r.more,
            events: r.events,
            events_cursor: r.events_cursor,
        }
    }
}

impl ServerFrame {
    /// The frame that pushes an event of a user's stream to their sessions, or `None`
    /// for a kind that is not pushed (one this node does not know). Every kind is
    /// named: a new one does not compile until it is given its frame here.
    pub fn for_user_event(entry: &EventEntry) -> Option<ServerFrame> {
        match entry.event {
            UserEvent::Request { .. }
            | UserEvent::RequestAnswered { .. }
            | UserEvent::Unfriended { .. }
            | UserEvent::Blocked { .. }
            | UserEvent::Unblocked { .. }
            | UserEvent::Settings { .. } => Some(ServerFrame::Contact {
                event: entry.clone(),
            }),
            // Pushed live as `joined` and `left` by the conversation's own path.
            UserEvent::Joined { .. } | UserEvent::Left { .. } | UserEvent::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_send() {
        let f = ClientFrame::parse(r#"{"type":"send","conv":3,"cid":"a1","body":"hi"}"#);
        assert_eq!(
            f,
            Ok(ClientFrame::Send {
                conv: ConvId(3),
                draft: Draft::text("a1", "hi")
            })
        );
    }

    #[test]
    fn entry_frames_become_drafts() {
        let f =
            ClientFrame::parse(r#"{"type":"react","conv":3,"target":2,"cid":"r1","emoji":"👍"}"#)
                .expect("a react frame");
        let (conv, d) = f.into_draft().expect("a draft");
        assert_eq!(conv, ConvId(3));
        assert_eq!(d.kind, crate::MessageKind::Reaction);
        assert_eq!(d.target, Some(Seq(2)));
        assert_eq!(d.reaction.map(|r| r.on), Some(true));
        // A send cannot forge what the node sets.
        let f = ClientFrame::parse(
            r#"{"type":"send","conv":3,"cid":"s1","body":"x","target":2,"kind":"recall"}"#,
        )
        .expect("parses");
        let (_, d) = f.into_draft().expect("a draft");
        assert_eq!(d.target, None);
        assert!(d.check(&crate::DraftLimits::default()).is_err());
    }

    #[test]
    fn errors_carry_a_reference() {
        let e = ClientFrame::parse(r#"{"type":"send","conv":"x","cid":"c9","body":"hi"}"#)
            .expect_err("wrong type");
        assert_eq!(e.reference.as_deref(), Some("c9"));
        let e = ClientFrame::parse(r#"{"type":"dance"}"#).expect_err("unknown type");
        assert_eq!(e.reference.as_deref(), Some("dance"));
        let e = ClientFrame::parse("{nope").expect_err("malformed");
        assert_eq!(e.reference, None);
        assert!(ClientFrame::parse("[1]").is_err());
    }

    #[test]
    fn sync_takes_an_events_cursor() {
        let f = ClientFrame::parse(r#"{"type":"sync","cursors":{},"events_cursor":7}"#);
        assert!(
            matches!(
                f,
                Ok(ClientFrame::Sync {
                    events_cursor: Some(7),
                    ..
                })
            ),
            "{f:?}"
        );
        let f = ClientFrame::parse(r#"{"type":"sync"}"#);
        assert!(
            matches!(
                f,
                Ok(ClientFrame::Sync {
                    events_cursor: None,
                    ..
                })
            ),
            "{f:?}"
        );
    }

    #[test]
    fn contact_frames_carry_the_entry() {
        let entry = EventEntry {
            seq: 3,
            ts: DateTime::from_timestamp(1_764_633_600, 0).unwrap_or_default(),
            event: UserEvent::Unfriended { user: UserId(5) },
        };
        let text = ServerFrame::for_user_event(&entry)
            .map(|f| f.to_text())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["type"], "contact");
        assert_eq!(v["event"]["seq"], 3);
        assert_eq!(v["event"]["event"]["kind"], "unfriended");
        let unknown = EventEntry {
            event: UserEvent::Unknown,
            ..entry
        };
        assert_eq!(ServerFrame::for_user_event(&unknown), None);
    }

    #[test]
    fn server_frames_are_tagged() {
        let text = ServerFrame::Pong.to_text();
        assert_eq!(text, r#"{"type":"pong"}"#);
        let text = ServerFrame::error(ErrorCode::NotMember, "no", Some("c".into())).to_text();
        assert!(text.contains(r#""ref":"c""#), "{text}");
        assert!(text.contains(r#""code":"not_member""#), "{text}");
    }
}
