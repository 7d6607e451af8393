//! Contacts, friend requests, blocks, profiles and each user's own event stream.
//!
//! A user's event stream is to the user what a conversation's seq stream is to a
//! conversation: every change that concerns them outside any conversation is an
//! [`EventEntry`] with the next seq of their own cursor, pushed as a `contact` frame
//! and found again by `sync` with `events_cursor`.

use crate::ids::{RequestId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Longest note of a friend request, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest avatar URL, in bytes.
pub const MAX_AVATAR_URL_BYTES: usize = 1024;

/// Where a friend request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for the recipient.
    Pending,
    Accepted,
    Declined,
    /// Withdrawn by its sender, or ended by a block.
    Cancelled,
}

impl RequestStatus {
    /// The status as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Accepted => "accepted",
            RequestStatus::Declined => "declined",
            RequestStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(RequestStatus::Pending),
            "accepted" => Ok(RequestStatus::Accepted),
            "declined" => Ok(RequestStatus::Declined),
            "cancelled" => Ok(RequestStatus::Cancelled),
            other => Err(format!("unknown request status {other:?}")),
        }
    }
}

/// A friend request, as the contract names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContactRequest {
    pub id: RequestId,
    pub from: UserId,
    pub to: UserId,
    pub note: Option<String>,
    pub status: RequestStatus,
    /// When it was sent.
    pub ts: DateTime<Utc>,
    /// When it was accepted, declined or cancelled; absent while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
}

/// One of the caller's contacts, with the profile a client shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub user: UserId,
    /// When the two became contacts.
    pub since: DateTime<Utc>,
    pub username: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
}

/// `GET /contacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContactsResponse {
    /// By username.
    pub contacts: Vec<Contact>,
    /// Pending requests to the caller, oldest first.
    pub incoming: Vec<ContactRequest>,
    /// Pending requests of the caller, oldest first.
    pub outgoing: Vec<ContactRequest>,
    /// Users the caller blocked.
    pub blocked: Vec<UserId>,
}

/// `POST /contacts/requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewContactRequest {
    /// Whom to ask.
    pub user: UserId,
    /// Up to 500 characters, without NUL.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

impl NewContactRequest {
    /// The note as stored (trimmed; empty is none), or why it cannot be.
    pub fn checked_note(&self) -> Result<Option<String>, String> {
        let Some(note) = self.note.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if note.chars().count() > MAX_NOTE_CHARS || !crate::storable_text(note) {
            return Err(format!(
                "note must be at most {MAX_NOTE_CHARS} characters, without NUL"
            ));
        }
        Ok((!note.is_empty()).then(|| note.to_string()))
    }
}

/// `{request}`: the answer of the request calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestEnvelope {
    pub request: ContactRequest,
}

/// What a user's event stream holds. Tagged by `kind`; more kinds will come (a
/// client skips the kinds it does not know, and moves its cursor past them all the
/// same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserEvent {
    /// A new friend request to or from the user (from: another device of theirs).
    Request { request: ContactRequest },
    /// A request to or from the user was accepted, declined or cancelled: here it is
    /// as it ended. An accepted one makes the two contacts.
    RequestAnswered { request: ContactRequest },
    /// The user and `user` are no longer contacts (either of them ended it, or
    /// blocked the other).
    Unfriended { user: UserId },
    /// The user blocked `user` (from another of their devices, or this one).
    Blocked { user: UserId },
    /// The user lifted their block of `user`.
    Unblocked { user: UserId },
    /// The user was added to group `conv` (live: the `joined` frame).
    Joined { conv: crate::ids::ConvId },
    /// The user was removed from group `conv`, or left it (live: the `left` frame). A
    /// client that was away learns here to stop showing it as theirs.
    Left { conv: crate::ids::ConvId },
    /// The user changed their own settings of `conv` (from this device or another):
    /// the settings as they now are.
    Settings {
        conv: crate::ids::ConvId,
        #[schema(value_type = Option<String>)]
        muted_until: Option<crate::settings::Mute>,
        pinned: bool,
        archived: bool,
    },
    /// An event of a kind this node does not know (a newer node wrote it).
    #[serde(other)]
    Unknown,
}

/// One event of a user's stream, at its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventEntry {
    /// 1, 2, 3, … per user, without gaps.
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub event: UserEvent,
}

/// `PATCH /me`: the fields given change, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PatchMe {
    /// 1..64 characters (trimmed), without NUL.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: Option<String>,
    /// An http or https URL of at most 1024 bytes; `null` or `""` removes it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub avatar_url: Option<Option<String>>,
}

/// Tells a field that is present (`Some`, whether `null` or a value) from one that is
/// absent (`None`, through `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A checked [`PatchMe`]: what to store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileChange {
    pub display_name: Option<String>,
    /// `Some(None)`: remove the avatar.
    pub avatar_url: Option<Option<String>>,
}

impl PatchMe {
    /// The change to store, or why it is refused.
    pub fn check(&self) -> Result<ProfileChange, String> {
        let display_name = match self.display_name.as_deref().map(str::trim) {
            None => None,
            Some(name) => {
                let n = name.chars().count();
                if n == 0 || n > MAX_DISPLAY_NAME_CHARS || !crate::storable_text(name) {
                    return Err(format!(
                        "display_name must be 1..{MAX_DISPLAY_NAME_CHARS} characters, without NUL"
                    ));
                }
                Some(name.to_string())
            }
        };
        let avatar_url = match &self.avatar_url {
            None => None,
            Some(None) => Some(None),
            Some(Some(text)) if text.is_empty() => Some(None),
            Some(Some(text)) => Some(Some(checked_avatar_url(text)?)),
        };
        if display_name.is_none() && avatar_url.is_none() {
            return Err("nothing to change: give display_name or avatar_url".into());
        }
        Ok(ProfileChange {
            display_name,
            avatar_url,
        })
    }
}

/// An avatar URL as stored: absolute http(s) with a host, at most 1024 bytes.
fn checked_avatar_url(text: &str) -> Result<String, String> {
    let refuse = || {
        Err(format!(
            "avatar_url must be an http or https URL of at most {MAX_AVATAR_URL_BYTES} bytes"
        ))
    };
    if text.len() > MAX_AVATAR_URL_BYTES || !crate::storable_text(text) {
        return refuse();
    }
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            // As the client wrote it (the parsed form may differ, and both are valid).
            Ok(text.to_string())
        }
        _ => refuse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_tagged_by_kind_and_unknown_kinds_still_read() {
        let e = UserEvent::Unfriended { user: UserId(4) };
        assert_eq!(
            serde_json::to_value(&e).expect("serialises"),
            json!({"kind": "unfriended", "user": 4})
        );
        let later: UserEvent =
            serde_json::from_value(json!({"kind": "pinned", "conv": 9})).expect("reads");
        assert_eq!(later, UserEvent::Unknown);
        let joined: UserEvent =
            serde_json::from_value(json!({"kind": "joined", "conv": 9})).expect("reads");
        assert_eq!(
            joined,
            UserEvent::Joined {
                conv: crate::ids::ConvId(9)
            }
        );
        let back: UserEvent =
            serde_json::from_value(json!({"kind": "blocked", "user": 2})).expect("reads");
        assert_eq!(back, UserEvent::Blocked { user: UserId(2) });
    }

    #[test]
    fn patch_me_tells_absent_from_null() {
        let absent: PatchMe = serde_json::from_value(json!({"display_name": "Al"})).expect("ok");
        assert_eq!(absent.avatar_url, None);
        let null: PatchMe = serde_json::from_value(json!({"avatar_url": null})).expect("ok");
        assert_eq!(null.avatar_url, Some(None));
        assert_eq!(null.check().map(|c| c.avatar_url), Ok(Some(None)));
        let empty: PatchMe = serde_json::from_value(json!({"avatar_url": ""})).expect("ok");
        assert_eq!(empty.check().map(|c| c.avatar_url), Ok(Some(None)));
        assert!(PatchMe::default().check().is_err(), "nothing to change");
    }

    #[test]
    fn avatar_urls_are_http_and_bounded() {
        for ok in [
            "https://cdn.example.com/a.png",
            "http://10.0.0.1:8080/x?y=1",
        ] {
            assert_eq!(checked_avatar_url(ok).as_deref(), Ok(ok), "{ok}");
        }
        let long = format!("https://example.com/{}", "a".repeat(1024));
        for bad in [
            "ftp://example.com/a.png",
            "javascript:alert(1)",
            "not a url",
            "/relative/path.png",
            "https://",
            long.as_str(),
        ] {
            assert!(checked_avatar_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names_and_notes_are_checked() {
        let p = |name: &str| PatchMe {
            display_name: Some(name.into()),
            avatar_url: None,
        };
        assert_eq!(
            p("  Alice  ").check().map(|c| c.display_name),
            Ok(Some("Alice".to_string()))
        );
        assert!(p("   ").check().is_err());
        assert!(p(&"x".repeat(65)).check().is_err());
        assert!(p("a\0b").check().is_err());
        let r = |note: &str| NewContactRequest {
            user: UserId(1),
            note: Some(note.into()),
        };
        assert_eq!(r(" hi ").checked_note(), Ok(Some("hi".into())));
        assert_eq!(r("").checked_note(), Ok(None));
        assert!(r(&"é".repeat(500)).checked_note().is_ok());
        assert!(r(&"é".repeat(501)).checked_note().is_err());
        assert!(r("a\0").checked_note().is_err());
    }
}
