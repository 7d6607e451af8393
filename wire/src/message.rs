//! Messages and conversations as clients see them.

use crate::attributes::AudienceKey;
use crate::entry::{
    AttachError, AttachLimits, Attachment, MessageKind, ReactionChange, ReactionCount, Role,
    SystemEntry,
};
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
    /// The text; may be empty for a kind with an attachment (a caption otherwise).
    #[serde(default)]
    pub body: String,
    /// `None`: the conversation's default tier.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// The seq of an earlier message of the conversation this one answers.
    #[serde(default)]
    pub reply_to: Option<Seq>,
    /// `text` (default), `image`, `file`, `audio`, `video`, `location` or `custom`.
    #[serde(default)]
    pub kind: MessageKind,
    /// What the kind refers to (checked per kind); none for `text`.
    #[serde(default)]
    pub attach: Option<Attachment>,
    /// Members the message mentions; `0` mentions everyone (@all).
    #[serde(default)]
    pub mentions: Vec<UserId>,
    /// The message an edit, recall or reaction acts on (set by the node, never by a
    /// send).
    #[serde(skip)]
    pub target: Option<Seq>,
    /// What a reaction entry sets (set by the node).
    #[serde(skip)]
    pub reaction: Option<ReactionChange>,
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
    #[error("kind {0} cannot be sent; it is written by the server or by the edit, recall and reaction calls")]
    KindNotSendable(MessageKind),
    #[error("{0}")]
    Attach(String),
    #[error("{0}")]
    AttachTooLarge(String),
    #[error("at most {0} mentions, each a user id (0 for everyone)")]
    Mentions(usize),
    #[error("an emoji is 1..32 bytes without spaces or '/'")]
    BadEmoji,
}

impl From<AttachError> for DraftError {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Invalid(m) => DraftError::Attach(m),
            AttachError::TooLarge(m) => DraftError::AttachTooLarge(m),
        }
    }
}

/// What a draft is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftLimits {
    pub max_body_bytes: usize,
    pub attach: AttachLimits,
    pub max_mentions: usize,
}

impl Default for DraftLimits {
    fn default() -> Self {
        DraftLimits {
            max_body_bytes: 16 * 1024,
            attach: AttachLimits::default(),
            max_mentions: 50,
        }
    }
}

impl DraftError {
    /// The contract's code for the refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            DraftError::TooLarge(_) | DraftError::AttachTooLarge(_) => ErrorCode::TooLarge,
            DraftError::BadCid
            | DraftError::EmptyBody
            | DraftError::NulInBody
            | DraftError::KindNotSendable(_)
            | DraftError::Attach(_)
            | DraftError::Mentions(_)
            | DraftError::BadEmoji => ErrorCode::BadRequest,
        }
    }
}

impl Draft {
    /// A text message.
    pub fn text(cid: impl Into<String>, body: impl Into<String>) -> Draft {
        Draft {
            cid: cid.into(),
            body: body.into(),
            tier: None,
            reply_to: None,
            kind: MessageKind::Text,
            attach: None,
            mentions: Vec::new(),
            target: None,
            reaction: None,
        }
    }

    /// An edit of `target`: its new body.
    pub fn edit(cid: impl Into<String>, target: Seq, body: impl Into<String>) -> Draft {
        Draft {
            kind: MessageKind::Edit,
            target: Some(target),
            ..Draft::text(cid, body)
        }
    }

    /// The recall of `target`.
    pub fn recall(cid: impl Into<String>, target: Seq) -> Draft {
        Draft {
            kind: MessageKind::Recall,
            target: Some(target),
            ..Draft::text(cid, "")
        }
    }

    /// A reaction on `target`: `emoji` on or off.
    pub fn reaction(
        cid: impl Into<String>,
        target: Seq,
        emoji: impl Into<String>,
        on: bool,
    ) -> Draft {
        Draft {
            kind: MessageKind::Reaction,
            target: Some(target),
            reaction: Some(ReactionChange {
                emoji: emoji.into(),
                on,
            }),
            ..Draft::text(cid, "")
        }
    }

    /// Checks the shape of the send (cid, kind, body, attachment, mentions, size);
    /// membership, `reply_to` and `target` are checked by the conversation.
    pub fn check(&self, limits: &DraftLimits) -> Result<(), DraftError> {
        if !crate::valid_cid(&self.cid) {
            return Err(DraftError::BadCid);
        }
        let acts = self.kind.acts_on_target();
        if self.kind == MessageKind::System || (acts && self.target.is_none()) {
            return Err(DraftError::KindNotSendable(self.kind));
        }
        if !crate::storable_text(&self.body) {
            return Err(DraftError::NulInBody);
        }
        if self.body.len() > limits.max_body_bytes {
            return Err(DraftError::TooLarge(limits.max_body_bytes));
        }
        match self.kind {
            MessageKind::Text | MessageKind::Edit if self.body.is_empty() => {
                return Err(DraftError::EmptyBody)
            }
            MessageKind::Reaction => match &self.reaction {
                Some(r) if crate::entry::valid_emoji(&r.emoji) => {}
                _ => return Err(DraftError::BadEmoji),
            },
            _ => {}
        }
        if acts {
            if self.attach.is_some() {
                return Err(DraftError::Attach(format!(
                    "a {} entry takes no attach",
                    self.kind
                )));
            }
        } else {
            Attachment::check(self.attach.as_ref(), self.kind, &limits.attach)?;
        }
        if self.mentions.len() > limits.max_mentions || self.mentions.iter().any(|u| u.0 < 0) {
            return Err(DraftError::Mentions(limits.max_mentions));
        }
        Ok(())
    }

    /// Whether the draft mentions everyone.
    pub fn mentions_all(&self) -> bool {
        self.mentions.contains(&UserId::SYSTEM)
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
    #[serde(default)]
    pub kind: MessageKind,
    #[serde(default)]
    pub attach: Option<Attachment>,
    /// Mentioned user ids; `0` is everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
    /// The message an `edit`, `recall` or `reaction` entry acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Seq>,
    /// What a `system` entry did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemEntry>,
    /// What a `reaction` entry set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionChange>,
    /// The body is the one of its last edit (history, sync and the list fold edits in).
    #[serde(default)]
    pub edited: bool,
    /// The message was recalled: body and attachment are no longer returned.
    #[serde(default)]
    pub recalled: bool,
    /// The reactions on the message (history, sync, list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionCount>,
}

impl Message {
    /// A short text for a conversation list or a notification: the body, or what the
    /// kind is.
    pub fn preview(&self) -> String {
        const MAX_CHARS: usize = 100;
        let short = |s: &str| -> String {
            let mut out: String = s.chars().take(MAX_CHARS).collect();
            if s.chars().count() > MAX_CHARS {
                out.push('…');
            }
            out
        };
        if self.recalled {
            return "[recalled]".into();
        }
        let name = self.attach.as_ref().and_then(|a| a.name.as_deref());
        let tagged = |tag: &str, extra: Option<&str>| match extra.filter(|e| !e.is_empty()) {
            Some(e) => format!("[{tag}] {}", short(e)),
            None => format!("[{tag}]"),
        };
        match self.kind {
            MessageKind::Text | MessageKind::Edit => short(&self.body),
            MessageKind::Image | MessageKind::Audio | MessageKind::Video | MessageKind::Custom => {
                tagged(self.kind.as_str(), Some(self.body.as_str()))
            }
            MessageKind::File | MessageKind::Location => {
                tagged(self.kind.as_str(), name.or(Some(self.body.as_str())))
            }
            MessageKind::Recall => "[recalled]".into(),
            MessageKind::Reaction => match &self.reaction {
                Some(r) => format!("[reaction] {}", r.emoji),
                None => "[reaction]".into(),
            },
            MessageKind::System => match &self.system {
                Some(s) => {
                    let action = serde_json::to_value(s.action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    format!("[{}]", action.replace('_', " "))
                }
                None => "[system]".into(),
            },
        }
    }

    /// Whether this entry counts as unread for a member other than its sender.
    pub fn counts_as_unread(&self) -> bool {
        self.kind.is_content()
    }

    /// Whether the entry mentions `user` (or everyone).
    pub fn mentions_user(&self, user: UserId) -> bool {
        self.mentions
            .iter()
            .any(|m| *m == user || *m == UserId::SYSTEM)
    }
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
    /// Unread messages that mention the caller (or everyone): the "@me" mark.
    #[serde(default)]
    pub mentions_unread: i64,
    /// The caller's role (`owner`, `admin`, `member`); none in broadcasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The last message people wrote, or the last system entry, with edits, recalls
    /// and reactions folded in.
    pub last_message: Option<Message>,
    /// A short text of the last message (see `Message::preview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// The members muted by moderation, with until when; omitted when none is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub muted: Vec<MutedMember>,
    /// The caller's mute: until a time, `"forever"`, or null (not muted, or the time
    /// passed).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub muted_until: Option<crate::settings::Mute>,
    /// The caller pinned it.
    #[serde(default)]
    pub pinned: bool,
    /// The caller archived it.
    #[serde(default)]
    pub archived: bool,
}

/// A member muted by moderation: they read the group but write nothing until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MutedMember {
    pub user: UserId,
    pub until: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(cid: &str, body: &str) -> Draft {
        Draft::text(cid, body)
    }

    fn limits(max_body_bytes: usize) -> DraftLimits {
        DraftLimits {
            max_body_bytes,
            ..DraftLimits::default()
        }
    }

    #[test]
    fn drafts_are_checked_for_shape() {
        let l = limits(10);
        assert_eq!(draft("c1", "hi").check(&l), Ok(()));
        assert_eq!(draft("", "hi").check(&l), Err(DraftError::BadCid));
        assert_eq!(draft("c 1", "hi").check(&l), Err(DraftError::BadCid));
        assert_eq!(draft("c1", "").check(&l), Err(DraftError::EmptyBody));
        assert_eq!(draft("c1", "a\0b").check(&l), Err(DraftError::NulInBody));
        let big = draft("c1", "0123456789x").check(&l);
        assert_eq!(big, Err(DraftError::TooLarge(10)));
        assert_eq!(big.map_err(|e| e.code()), Err(ErrorCode::TooLarge));
    }

    #[test]
    fn kinds_and_entries_are_checked() {
        let l = limits(100);
        let mut image = draft("c1", "");
        image.kind = MessageKind::Image;
        assert!(matches!(image.check(&l), Err(DraftError::Attach(_))));
        image.attach = Some(Attachment {
            url: Some("https://cdn.example.com/x.jpg".into()),
            mime: Some("image/jpeg".into()),
            ..Default::default()
        });
        assert_eq!(image.check(&l), Ok(()));
        // Entries that act on another message come from their own calls only.
        let mut forged = draft("c2", "x");
        forged.kind = MessageKind::Recall;
        assert_eq!(
            forged.check(&l),
            Err(DraftError::KindNotSendable(MessageKind::Recall))
        );
        forged.kind = MessageKind::System;
        assert!(forged.check(&l).is_err());
        assert_eq!(Draft::recall("c3", Seq(4)).check(&l), Ok(()));
        assert_eq!(
            Draft::edit("c4", Seq(4), "").check(&l),
            Err(DraftError::EmptyBody)
        );
        assert_eq!(
            Draft::reaction("c5", Seq(4), "a b", true).check(&l),
            Err(DraftError::BadEmoji)
        );
        let mut loud = draft("c6", "hi");
        loud.mentions = (0..51).map(UserId).collect();
        assert_eq!(loud.check(&l), Err(DraftError::Mentions(50)));
        loud.mentions = vec![UserId(0)];
        assert!(loud.mentions_all());
    }

    #[test]
    fn previews_say_what_a_message_is() {
        let mut m = Message {
            conv: ConvId(1),
            seq: Seq(1),
            sender: UserId(1),
            cid: "c".into(),
            body: "x".repeat(150),
            tier: Tier::Normal,
            ts: DateTime::UNIX_EPOCH,
            reply_to: None,
            kind: MessageKind::Text,
            attach: None,
            mentions: vec![],
            target: None,
            system: None,
            reaction: None,
            edited: false,
            recalled: false,
            reactions: vec![],
        };
        assert_eq!(m.preview().chars().count(), 101);
        m.kind = MessageKind::File;
        m.attach = Some(Attachment {
            name: Some("report.pdf".into()),
            ..Default::default()
        });
        assert_eq!(m.preview(), "[file] report.pdf");
        m.recalled = true;
        assert_eq!(m.preview(), "[recalled]");
    }
}
