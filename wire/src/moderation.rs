//! Bodies of group moderation (mutes and bans) and of the server API's conversation
//! and user calls (`/service/...`, service key).

use crate::ids::{ConvId, UserId};
use crate::message::{Draft, Tier};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A field that must be present but may be null: `Some(None)` for `null`, `None` when
/// the field is missing.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /conversations/{id}/members/{user}/mute` (and its `/service` twin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MuteRequest {
    /// Until when the member may not write (RFC 3339, in the future); `null` lifts the
    /// mute. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, required = true, min_length = 20)]
    pub until: Option<Option<DateTime<Utc>>>,
}

/// One ban of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ban {
    pub user: UserId,
    /// Who banned them (`0`: the company's backend).
    pub by: UserId,
    pub since: DateTime<Utc>,
}

/// `GET /conversations/{id}/bans`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BanList {
    /// Oldest first.
    pub bans: Vec<Ban>,
}

/// `POST /service/messages`: a message sent as a member, or as the system (`as_user`
/// 0), through the same path as a member's own send.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceSend {
    pub conv: ConvId,
    /// The member it is sent as; `0` is the system.
    pub as_user: UserId,
    /// The message: `cid` (unique per `as_user`), `body`, and optionally `kind`,
    /// `attach`, `mentions`, `tier`, `reply_to`.
    #[serde(flatten)]
    pub draft: Draft,
}

/// The kinds of conversation the server API creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceConversationKind {
    Direct,
    Group,
}

/// `POST /service/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceCreateConversation {
    pub kind: ServiceConversationKind,
    /// Direct: the two users. Group: its members (the owner among them or not).
    #[schema(min_items = 1, value_type = Vec<crate::ids::MemberId>)]
    pub users: Vec<UserId>,
    /// A group's title (default "Group").
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    #[serde(default)]
    pub title: Option<String>,
    /// A group's owner (default: the first of `users`).
    #[serde(default)]
    pub owner: Option<UserId>,
    #[serde(default)]
    pub default_tier: Option<Tier>,
}

/// `PUT /service/conversations/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetMembers {
    /// Exactly the group's members after the call (1..=`limits.max_group_members`).
    #[schema(min_items = 1, value_type = Vec<crate::ids::MemberId>)]
    pub users: Vec<UserId>,
}

/// How a deleted user's messages were left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Messages stay as they were, shown as from the deleted user.
    Keep,
    /// Messages stay in the stream with body, attachment and mentions blanked.
    Erase,
}

/// `DELETE /service/users/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeletedUser {
    pub user_id: UserId,
    pub mode: DeleteMode,
    /// The groups the user was taken out of.
    pub groups_left: Vec<ConvId>,
    /// Messages whose content was blanked (`erase`; 0 in `keep`).
    pub messages_erased: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_required_but_may_be_null() {
        let lifted: MuteRequest =
            serde_json::from_str(r#"{"until": null}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lifted.until, Some(None));
        let missing: MuteRequest = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(missing.until, None);
        let set: MuteRequest = serde_json::from_str(r#"{"until": "2030-01-02T03:04:05Z"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(set.until, Some(Some(_))));
        assert!(serde_json::from_str::<MuteRequest>(r#"{"until": "tomorrow"}"#).is_err());
    }

    #[test]
    fn a_service_send_carries_a_draft() {
        let s: ServiceSend = serde_json::from_str(
            r#"{"conv": 3, "as_user": 0, "cid": "a1", "body": "hi", "mentions": [0]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.conv, s.as_user), (ConvId(3), UserId(0)));
        assert_eq!(s.draft.cid, "a1");
        assert_eq!(s.draft.mentions, vec![UserId(0)]);
    }
}
