//! Messages and conversations as clients see them.

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
    pub audience: Option<String>,
    /// The tier of sends that name none.
    pub default_tier: Tier,
    pub last_seq: Seq,
    pub read_seq: Seq,
    pub unread: i64,
    pub last_message: Option<Message>,
}
