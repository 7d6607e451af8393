//! Messages and conversations as clients see them.

use crate::attributes::AudienceKey;
use crate::error::ErrorCode;
use crate::ids::{ConvId, Seq, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// How long a message is kept: `normal` expires after `retention.normal_ttl`,
/// `important` after `retention.important_ttl` (unlimited by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Normal,
    Important,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Normal => "normal",
            Tier::Important => "important",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Tier::Normal),
            "important" => Ok(Tier::Important),
            other => Err(format!("unknown tier {other:?}")),
        }
    }
}

/// The kind of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Direct,
    Group,
    /// The conversation of a broadcast audience: written by the system, read by everyone
    /// whose attributes match.
    Broadcast,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
            ConversationKind::Broadcast => "broadcast",
        }
    }
}

impl FromStr for ConversationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(ConversationKind::Direct),
            "group" => Ok(ConversationKind::Group),
            "broadcast" => Ok(ConversationKind::Broadcast),
            other => Err(format!("unknown conversation kind {other:?}")),
        }
    }
}

/// A message as its sender wrote it, before it has a seq: the body of
/// `POST /conversations/{id}/messages` and the content of a `send` frame.
///
/// It is parsed once at the edge and travels unchanged to the store, so a new field of
/// a send is added here, where it is stored, and where it is shown ([`Message`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SendRequest)]
pub struct Draft {
    /// Client-chosen id, 1..64 of `[A-Za-z0-9_-]`, unique per sender.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub cid: String,
    #[schema(min_length = 1)]
    pub body: String,
    /// `None`: the conversation's default tier.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// The seq of an earlier message of the conversation this one answers.
    #[serde(default)]
    pub reply_to: Option<Seq>,
}

/// Why a [`Draft`] was refused before it reached a conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DraftError {
    #[error("cid must be 1..64 of [A-Za-z0-9_-]")]
    BadCid,
    #[error("body must not be empty")]
    EmptyBody,
    #[error("body must not contain NUL characters")]
    NulInBody,
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
}

impl DraftError {
    /// The contract's code for the refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            DraftError::TooLarge(_) => ErrorCode::TooLarge,
            DraftError::BadCid | DraftError::EmptyBody | DraftError::NulInBody => {
                ErrorCode::BadRequest
            }
        }
    }
}

impl Draft {
    /// Checks the shape of the send (cid, body, size); membership and `reply_to` are
    /// checked by the conversation.
    pub fn check(&self, max_body_bytes: usize) -> Result<(), DraftError> {
        if !crate::valid_cid(&self.cid) {
            return Err(DraftError::BadCid);
        }
        if self.body.is_empty() {
            return Err(DraftError::EmptyBody);
        }
        if !crate::storable_text(&self.body) {
            return Err(DraftError::NulInBody);
        }
        if self.body.len() > max_body_bytes {
            return Err(DraftError::TooLarge(max_body_bytes));
        }
        Ok(())
    }
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub conv: ConvId,
    pub seq: Seq,
    pub sender: UserId,
    pub cid: String,
    pub body: String,
    pub tier: Tier,
    /// When the message was committed (RFC 3339, UTC).
    pub ts: DateTime<Utc>,
    pub reply_to: Option<Seq>,
}

/// A conversation as one member sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    pub id: ConvId,
    pub kind: ConversationKind,
    pub title: Option<String>,
    /// Member ids; omitted for broadcast conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<UserId>>,
    /// The broadcast audience (`org/1/role/3`); only for broadcast conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<AudienceKey>,
    /// The tier of sends that name none.
    pub default_tier: Tier,
    pub last_seq: Seq,
    pub read_seq: Seq,
    pub unread: i64,
    pub last_message: Option<Message>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(cid: &str, body: &str) -> Draft {
        Draft {
            cid: cid.into(),
            body: body.into(),
            tier: None,
            reply_to: None,
        }
    }

    #[test]
    fn drafts_are_checked_for_shape() {
        assert_eq!(draft("c1", "hi").check(10), Ok(()));
        assert_eq!(draft("", "hi").check(10), Err(DraftError::BadCid));
        assert_eq!(draft("c 1", "hi").check(10), Err(DraftError::BadCid));
        assert_eq!(draft("c1", "").check(10), Err(DraftError::EmptyBody));
        assert_eq!(draft("c1", "a\0b").check(10), Err(DraftError::NulInBody));
        let big = draft("c1", "0123456789x").check(10);
        assert_eq!(big, Err(DraftError::TooLarge(10)));
        assert_eq!(big.map_err(|e| e.code()), Err(ErrorCode::TooLarge));
    }
}
