//! A member's own settings of a conversation (muted, pinned, archived) and the offline
//! notifications a node POSTs to the company's endpoint.
//!
//! Settings belong to the member, not the conversation: a change of them is an event
//! of the member's own stream (`settings`), never an entry of the conversation's seq
//! stream.

use crate::entry::MessageKind;
use crate::ids::{ConvId, Seq, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// How long a conversation is muted: until a time, or until unmuted. On the wire an
/// RFC 3339 timestamp or the string `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mute {
    Until(DateTime<Utc>),
    Forever,
}

impl Mute {
    /// The word for a mute without end.
    pub const FOREVER: &'static str = "forever";

    /// Whether the mute still holds at `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        match self {
            Mute::Until(t) => *t > now,
            Mute::Forever => true,
        }
    }
}

impl Serialize for Mute {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mute::Until(t) => {
                s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            }
            Mute::Forever => s.serialize_str(Mute::FOREVER),
        }
    }
}

impl<'de> Deserialize<'de> for Mute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == Mute::FOREVER {
            return Ok(Mute::Forever);
        }
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Mute::Until(t.with_timezone(&Utc)))
            .map_err(|_| {
                serde::de::Error::custom(
                    "muted_until must be an RFC 3339 time, \"forever\" or null",
                )
            })
    }
}

/// `PUT /conversations/{id}/settings`: the fields given change, the others stay. At
/// least one is needed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct SettingsRequest {
    /// An RFC 3339 time (muted until then), `"forever"`, or `null` (unmute).
    #[serde(
        default,
        deserialize_with = "present_mute",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "2026-12-24T18:00:00Z")]
    pub muted_until: Option<Option<Mute>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

impl SettingsRequest {
    /// Whether the request changes anything.
    pub fn is_empty(&self) -> bool {
        self.muted_until.is_none() && self.pinned.is_none() && self.archived.is_none()
    }
}

/// Tells `muted_until: null` (unmute: `Some(None)`) from an absent field (`None`).
fn present_mute<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Mute>>, D::Error> {
    Option::<Mute>::deserialize(d).map(Some)
}

/// A member's settings of a conversation, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberSettings {
    /// As set (a time in the past reads as not muted).
    #[schema(value_type = Option<String>)]
    pub muted_until: Option<Mute>,
    pub pinned: bool,
    pub archived: bool,
}

/// One offline notification, as POSTed to `notify.url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// `"<conv>:<seq>:<user>"`: the same on every retry, for the receiver to drop
    /// duplicates by.
    pub id: String,
    /// Whom to tell.
    pub user: UserId,
    pub conv: ConvId,
    pub seq: Seq,
    pub sender: UserId,
    pub kind: MessageKind,
    /// A short text of the message (see `Message::preview`).
    pub preview: String,
    /// The message mentions the user, or everyone.
    pub mention: bool,
}

impl Notification {
    /// The stable id of the notification of `seq` in `conv` to `user`.
    pub fn id_of(conv: ConvId, seq: Seq, user: UserId) -> String {
        format!("{}:{}:{}", conv.0, seq.0, user.0)
    }
}

/// The body of one POST to `notify.url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationBatch {
    pub notifications: Vec<Notification>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutes_read_a_time_forever_or_null_and_refuse_anything_else() {
        let r: SettingsRequest =
            serde_json::from_str(r#"{"muted_until":"forever"}"#).unwrap_or_default();
        assert_eq!(r.muted_until, Some(Some(Mute::Forever)));
        let r: SettingsRequest =
            serde_json::from_str(r#"{"muted_until":null,"pinned":true}"#).unwrap_or_default();
        assert_eq!(r.muted_until, Some(None));
        assert_eq!(r.pinned, Some(true));
        let r: SettingsRequest =
            serde_json::from_str(r#"{"muted_until":"2026-01-02T03:04:05+01:00"}"#)
                .unwrap_or_default();
        let Some(Some(Mute::Until(t))) = r.muted_until else {
            panic!("a time: {r:?}");
        };
        assert_eq!(t.to_rfc3339(), "2026-01-02T02:04:05+00:00");
        let r: SettingsRequest = serde_json::from_str(r#"{"archived":false}"#).unwrap_or_default();
        assert_eq!(r.muted_until, None, "absent stays absent");
        for bad in [
            r#"{"muted_until":"tomorrow"}"#,
            r#"{"muted_until":5}"#,
            r#"{"pinned":"yes"}"#,
            r#"{"colour":"red"}"#,
        ] {
            assert!(
                serde_json::from_str::<SettingsRequest>(bad).is_err(),
                "{bad}"
            );
        }
        assert!(SettingsRequest::default().is_empty());
    }

    #[test]
    fn a_mute_holds_until_its_time() {
        let now = Utc::now();
        assert!(Mute::Forever.holds_at(now));
        assert!(Mute::Until(now + chrono::Duration::seconds(1)).holds_at(now));
        assert!(!Mute::Until(now).holds_at(now));
        assert_eq!(
            serde_json::to_value(Mute::Forever).unwrap_or_default(),
            serde_json::json!("forever")
        );
    }

    #[test]
    fn ids_are_conv_seq_user() {
        assert_eq!(Notification::id_of(ConvId(3), Seq(9), UserId(12)), "3:9:12");
    }
}
