//! Wire types of the chat node.
//!
//! Everything a client, the node, the test harness and the load generator agree on:
//! ids, HTTP request and response bodies, WebSocket frames and error codes. This crate
//! has no I/O; it is the bottom layer every other crate points at.

pub mod attributes;
pub mod contacts;
pub mod entry;
pub mod error;
pub mod frames;
pub mod http;
pub mod ids;
pub mod message;
pub mod moderation;
pub mod presence;
pub mod settings;

pub use attributes::{Attributes, Audience, AudienceError, AudienceKey};
pub use contacts::{
    Contact, ContactRequest, ContactsResponse, EventEntry, NewContactRequest, PatchMe,
    ProfileChange, RequestEnvelope, RequestStatus, UserEvent,
};
pub use entry::{
    AttachLimits, Attachment, MessageKind, ReactionChange, ReactionCount, Role, SystemAction,
    SystemEntry,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use frames::{ClientFrame, CloseCode, FrameError, ServerFrame};
pub use ids::{ConvId, RequestId, Seq, UserId};
pub use message::{
    Conversation, ConversationKind, Draft, DraftError, DraftLimits, Message, MutedMember, Tier,
};
pub use presence::{PresenceAnswer, PresenceQuery, PresenceState, MAX_PRESENCE_QUERY};
pub use settings::{MemberSettings, Mute, Notification, NotificationBatch, SettingsRequest};

/// Longest accepted client id (`cid`).
pub const MAX_CID_LEN: usize = 64;

/// Whether `cid` is 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn valid_cid(cid: &str) -> bool {
    !cid.is_empty()
        && cid.len() <= MAX_CID_LEN
        && cid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether free text (a body, a title, a name) can be stored: Postgres text holds no
/// NUL character.
pub fn storable_text(text: &str) -> bool {
    !text.contains('\0')
}

/// Whether `name` is 3..=32 characters of `[a-z0-9_.-]`.
pub fn valid_username(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_rules() {
        assert!(valid_cid("a"));
        assert!(valid_cid("A-z_09"));
        assert!(valid_cid(&"x".repeat(64)));
        assert!(!valid_cid(""));
        assert!(!valid_cid(&"x".repeat(65)));
        assert!(!valid_cid("has space"));
        assert!(!valid_cid("é"));
    }

    #[test]
    fn username_rules() {
        assert!(valid_username("abc"));
        assert!(valid_username("a.b-c_9"));
        assert!(!valid_username("ab"));
        assert!(!valid_username("Abc"));
        assert!(!valid_username(&"a".repeat(33)));
    }
}
