//! What an entry of a conversation's seq stream is: a message people wrote (of a kind,
//! with an attachment), an entry that acts on another message (edit, recall,
//! reaction), or a system entry the server wrote when the group changed.

use crate::ids::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// The kind of an entry. `text` … `custom` are written by people and count as unread;
/// `edit`, `recall` and `reaction` act on the message in `target`; `system` is written
/// by the server when a group changes. Only the first seven are accepted in a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    #[default]
    Text,
    Image,
    File,
    Audio,
    Video,
    Location,
    Custom,
    System,
    Edit,
    Recall,
    Reaction,
}

impl MessageKind {
    pub const ALL: [MessageKind; 11] = [
        MessageKind::Text,
        MessageKind::Image,
        MessageKind::File,
        MessageKind::Audio,
        MessageKind::Video,
        MessageKind::Location,
        MessageKind::Custom,
        MessageKind::System,
        MessageKind::Edit,
        MessageKind::Recall,
        MessageKind::Reaction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::File => "file",
            MessageKind::Audio => "audio",
            MessageKind::Video => "video",
            MessageKind::Location => "location",
            MessageKind::Custom => "custom",
            MessageKind::System => "system",
            MessageKind::Edit => "edit",
            MessageKind::Recall => "recall",
            MessageKind::Reaction => "reaction",
        }
    }

    /// A message people wrote: counts as unread, can be edited, recalled, reacted to.
    pub fn is_content(self) -> bool {
        !matches!(
            self,
            MessageKind::System | MessageKind::Edit | MessageKind::Recall | MessageKind::Reaction
        )
    }

    /// An entry that acts on the message in its `target`.
    pub fn acts_on_target(self) -> bool {
        matches!(
            self,
            MessageKind::Edit | MessageKind::Recall | MessageKind::Reaction
        )
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown message kind {s:?}"))
    }
}

/// A reference to a file in the company's own storage (the server keeps the reference,
/// never the file), or a place, or an application's own payload. Which fields a kind
/// needs is checked by [`Attachment::check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// `http(s)://` address of the file (image, file, audio, video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = "^https?://[^\\s\\x00-\\x1f\\x7f-\\x9f]{2,}$"
    )]
    pub url: Option<String>,
    /// MIME type: `image/*` for an image, `audio/*`, `video/*`; any for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048, pattern = "^[^/\\s\\u0000]+/[^\\s\\u0000]+$")]
    pub mime: Option<String>,
    /// Size of the file in bytes (at most `limits.max_file_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub size: Option<i64>,
    /// File name (required for a file), or the name of a place: 1..2048 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 2048, pattern = "^[^\\u0000]+$")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub height: Option<i64>,
    /// Length of an audio or video, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = "^https?://[^\\s\\x00-\\x1f\\x7f-\\x9f]{2,}$"
    )]
    pub thumbnail_url: Option<String>,
    /// Latitude and longitude of a location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -90, maximum = 90)]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -180, maximum = 180)]
    pub lon: Option<f64>,
    /// The application's own JSON of a `custom` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

/// The limits an attachment is checked against (`limits.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachLimits {
    /// Largest file an attachment may name, in bytes.
    pub max_file_bytes: i64,
    /// Largest attachment object, as JSON, in bytes.
    pub max_json_bytes: usize,
}

impl Default for AttachLimits {
    fn default() -> Self {
        AttachLimits {
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            max_json_bytes: 4096,
        }
    }
}

/// Longest URL, MIME type or name of an attachment.
const MAX_FIELD_LEN: usize = 2048;

fn web_url(field: &str, url: &Option<String>, required: bool) -> Result<(), String> {
    match url {
        None if required => Err(format!("attach.{field} is required")),
        None => Ok(()),
        Some(u) => {
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && u.len() > "https://".len()
                && u.len() <= MAX_FIELD_LEN
                && !u.chars().any(|c| c.is_whitespace() || c.is_control());
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "attach.{field} must be an http(s) URL of at most {MAX_FIELD_LEN} characters"
                ))
            }
        }
    }
}

fn positive(field: &str, v: Option<i64>, required: bool) -> Result<(), String> {
    match v {
        None if required => Err(format!("attach.{field} is required")),
        Some(n) if n <= 0 => Err(format!("attach.{field} must be positive")),
        _ => Ok(()),
    }
}

fn text_field(field: &str, v: &Option<String>, required: bool) -> Result<(), String> {
    match v {
        None if required => Err(format!("attach.{field} is required")),
        Some(s) if s.is_empty() || s.len() > MAX_FIELD_LEN || !crate::storable_text(s) => Err(
            format!("attach.{field} must be 1..{MAX_FIELD_LEN} characters"),
        ),
        _ => Ok(()),
    }
}

fn mime_of(v: &Option<String>, family: Option<&str>, required: bool) -> Result<(), String> {
    text_field("mime", v, required)?;
    let Some(m) = v else { return Ok(()) };
    let Some((top, sub)) = m.split_once('/') else {
        return Err("attach.mime must be a MIME type like image/png".into());
    };
    if top.is_empty() || sub.is_empty() || m.contains(char::is_whitespace) {
        return Err("attach.mime must be a MIME type like image/png".into());
    }
    match family {
        Some(f) if !top.eq_ignore_ascii_case(f) => {
            Err(format!("attach.mime of this kind must be {f}/*"))
        }
        _ => Ok(()),
    }
}

/// Why an attachment was refused: too large, or not what its kind needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
}

impl Attachment {
    /// Checks that the attachment fits `kind` and the limits. `text` takes none; every
    /// other kind people write needs one.
    pub fn check(
        attach: Option<&Attachment>,
        kind: MessageKind,
        limits: &AttachLimits,
    ) -> Result<(), AttachError> {
        use AttachError::Invalid;
        let a = match (kind, attach) {
            (MessageKind::Text, None) => return Ok(()),
            (MessageKind::Text, Some(_)) => {
                return Err(Invalid("a text message takes no attach".into()))
            }
            (_, None) => return Err(Invalid(format!("a {kind} message needs attach"))),
            (_, Some(a)) => a,
        };
        let json_len = serde_json::to_string(a)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if json_len > limits.max_json_bytes {
            return Err(AttachError::TooLarge(format!(
                "attach is larger than {} bytes of JSON",
                limits.max_json_bytes
            )));
        }
        if let Some(size) = a.size {
            if size > limits.max_file_bytes {
                return Err(AttachError::TooLarge(format!(
                    "attach.size is over the limit of {} bytes",
                    limits.max_file_bytes
                )));
            }
        }
        let media = |family: &str, duration: bool| -> Result<(), String> {
            web_url("url", &a.url, true)?;
            mime_of(&a.mime, Some(family), true)?;
            positive("size", a.size, false)?;
            positive("duration_ms", a.duration_ms, duration)?;
            Ok(())
        };
        let checked = match kind {
            MessageKind::Image => media("image", false).and_then(|_| {
                positive("width", a.width, false)?;
                positive("height", a.height, false)
            }),
            MessageKind::Audio => media("audio", true),
            MessageKind::Video => media("video", true).and_then(|_| {
                positive("width", a.width, false)?;
                positive("height", a.height, false)
            }),
            MessageKind::File => web_url("url", &a.url, true)
                .and_then(|_| text_field("name", &a.name, true))
                .and_then(|_| mime_of(&a.mime, None, false))
                .and_then(|_| positive("size", a.size, true)),
            MessageKind::Location => match (a.lat, a.lon) {
                (Some(lat), Some(lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    text_field("name", &a.name, false)
                }
                _ => Err("attach.lat must be -90..90 and attach.lon -180..180".into()),
            },
            MessageKind::Custom => match &a.data {
                Some(_) => Ok(()),
                None => Err("attach.data is required for a custom message".into()),
            },
            _ => Err(format!("a {kind} entry takes no attach")),
        };
        checked
            .and_then(|_| web_url("thumbnail_url", &a.thumbnail_url, false))
            .map_err(Invalid)
    }
}

/// What a system entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemAction {
    Created,
    Added,
    Removed,
    Left,
    Renamed,
    RoleChanged,
    /// A member may not write until `until` (moderation).
    Muted,
    /// A member's mute was lifted.
    Unmuted,
    /// A user was banned: removed if a member, and not to be added again.
    Banned,
    /// A ban was lifted.
    Unbanned,
}

/// A member's role in a group. Direct conversations have members only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Admins and the owner add, remove, rename, recall any message and mention @all.
    pub fn manages(self) -> bool {
        self >= Role::Admin
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// Who did what to whom: the content of a `system` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemEntry {
    pub action: SystemAction,
    /// Who made the change.
    pub actor: UserId,
    /// Whom it concerns (added, removed, the one who left, whose role changed).
    #[serde(default)]
    pub users: Vec<UserId>,
    /// The new role (`role_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The new title (`renamed`, `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Until when the member is muted (`muted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a `reaction` entry set: `emoji` on or off for its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReactionChange {
    pub emoji: String,
    pub on: bool,
}

/// The reactions of one emoji on a message, as one viewer sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    /// Whether the viewer is among them.
    pub me: bool,
}

/// Whether `emoji` can be a reaction: 1..=32 bytes, no whitespace, controls or `/`.
pub fn valid_emoji(emoji: &str) -> bool {
    !emoji.is_empty()
        && emoji.len() <= 32
        && !emoji
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AttachLimits {
        AttachLimits {
            max_file_bytes: 1000,
            max_json_bytes: 512,
        }
    }

    fn image() -> Attachment {
        Attachment {
            url: Some("https://cdn.example.com/a.png".into()),
            mime: Some("image/png".into()),
            width: Some(10),
            height: Some(20),
            ..Default::default()
        }
    }

    #[test]
    fn kinds_round_trip_and_split() {
        for k in MessageKind::ALL {
            assert_eq!(k.as_str().parse::<MessageKind>(), Ok(k));
            assert_ne!(
                k.is_content(),
                k.acts_on_target() || k == MessageKind::System
            );
        }
        assert!("sticker".parse::<MessageKind>().is_err());
    }

    #[test]
    fn each_kind_checks_its_attachment() {
        let l = limits();
        let check = |a: Option<&Attachment>, k| Attachment::check(a, k, &l);
        assert_eq!(check(None, MessageKind::Text), Ok(()));
        assert!(check(Some(&image()), MessageKind::Text).is_err());
        assert_eq!(check(Some(&image()), MessageKind::Image), Ok(()));
        assert!(check(None, MessageKind::Image).is_err());
        // An image that says it is audio.
        assert!(check(Some(&image()), MessageKind::Audio).is_err());
        let mut bad = image();
        bad.url = Some("javascript:alert(1)".into());
        assert!(check(Some(&bad), MessageKind::Image).is_err());
        let mut bad = image();
        bad.width = Some(-1);
        assert!(check(Some(&bad), MessageKind::Image).is_err());
        let file = Attachment {
            url: Some("https://f.example.com/r.pdf".into()),
            name: Some("r.pdf".into()),
            size: Some(999),
            ..Default::default()
        };
        assert_eq!(check(Some(&file), MessageKind::File), Ok(()));
        let big = Attachment {
            size: Some(1001),
            ..file.clone()
        };
        assert!(matches!(
            check(Some(&big), MessageKind::File),
            Err(AttachError::TooLarge(_))
        ));
        let unnamed = Attachment { name: None, ..file };
        assert!(check(Some(&unnamed), MessageKind::File).is_err());
        let audio = Attachment {
            url: Some("https://a.example.com/v.ogg".into()),
            mime: Some("audio/ogg".into()),
            duration_ms: Some(3000),
            ..Default::default()
        };
        assert_eq!(check(Some(&audio), MessageKind::Audio), Ok(()));
        let silent = Attachment {
            duration_ms: None,
            ..audio
        };
        assert!(check(Some(&silent), MessageKind::Audio).is_err());
        let place = Attachment {
            lat: Some(52.5),
            lon: Some(13.4),
            name: Some("Berlin".into()),
            ..Default::default()
        };
        assert_eq!(check(Some(&place), MessageKind::Location), Ok(()));
        let nowhere = Attachment {
            lat: Some(91.0),
            ..place
        };
        assert!(check(Some(&nowhere), MessageKind::Location).is_err());
        let custom = Attachment {
            data: Some(serde_json::json!({"card": 1})),
            ..Default::default()
        };
        assert_eq!(check(Some(&custom), MessageKind::Custom), Ok(()));
        assert!(check(Some(&Attachment::default()), MessageKind::Custom).is_err());
        let huge = Attachment {
            data: Some(serde_json::json!({"x": "y".repeat(600)})),
            ..Default::default()
        };
        assert!(matches!(
            check(Some(&huge), MessageKind::Custom),
            Err(AttachError::TooLarge(_))
        ));
    }

    #[test]
    fn unknown_attachment_fields_are_refused() {
        let r: Result<Attachment, _> = serde_json::from_str(r#"{"url":"https://x.y/z","evil":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn roles_order_and_emoji() {
        assert!(Role::Owner.manages() && Role::Admin.manages() && !Role::Member.manages());
        assert!(valid_emoji("👍") && valid_emoji(":tada:"));
        assert!(!valid_emoji("") && !valid_emoji("a b") && !valid_emoji(&"x".repeat(33)));
    }
}
