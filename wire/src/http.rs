//! Bodies of the HTTP API (`/api/v1`).

use crate::attributes::Attributes;
use crate::contacts::EventEntry;
use crate::ids::{ConvId, Seq, UserId};
use crate::message::{Conversation, Message, Tier};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 3..32 of `[a-z0-9_.-]`.
    #[schema(min_length = 3, max_length = 32, pattern = "^[a-z0-9_.-]+$")]
    pub username: String,
    /// 8..256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    #[schema(max_length = 64)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    pub user_id: UserId,
    /// HS256 JWT for `Authorization: Bearer` and `/ws?token=`.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub attributes: Attributes,
    /// An http(s) URL the user set with `PATCH /me`.
    pub avatar_url: Option<String>,
}

/// `PATCH /me`: the caller as it is now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeEnvelope {
    pub user: Me,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserSummary {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    /// The user was deleted (`DELETE /service/users/{id}`): their messages stay, shown
    /// as from "Deleted user".
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserSummary>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct UserSearchQuery {
    /// Username prefix.
    #[param(min_length = 1, max_length = 32, pattern = "^[^\\u0000]+$")]
    pub q: String,
}

/// `POST /conversations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CreateConversation {
    /// The one conversation between the caller and `peer` (created once).
    Direct {
        peer: UserId,
        /// Tier of sends that name none (`normal` when absent); only when created.
        #[serde(default)]
        default_tier: Option<Tier>,
    },
    /// A new group of the caller and `members`.
    Group {
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
        )]
        title: String,
        /// The other members (at least one; the caller is added as owner).
        #[schema(min_items = 1, value_type = Vec<crate::ids::MemberId>)]
        members: Vec<UserId>,
        /// Tier of sends that name none (`normal` when absent).
        #[serde(default)]
        default_tier: Option<Tier>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationEnvelope {
    pub conversation: Conversation,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct ListQuery {
    /// At most this many conversations (1..=100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_before` of the previous page (an opaque cursor).
    pub before: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// Newest activity first.
    pub conversations: Vec<Conversation>,
    pub total_unread: i64,
    /// The `before` of the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Messages with a seq below this (default: the newest).
    #[param(minimum = 1)]
    pub before_seq: Option<i64>,
    /// At most this many messages (1..=200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// Ascending by seq.
    pub messages: Vec<Message>,
    /// The lowest seq still retained; seqs below it have expired. `last_seq + 1` when
    /// nothing is retained.
    pub oldest_retained_seq: Seq,
}

/// `POST /conversations/{id}/messages`: the draft itself.
pub type SendRequest = crate::message::Draft;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    pub seq: Seq,
    pub ts: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadRequest {
    pub seq: Seq,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadResponse {
    pub read_seq: Seq,
    pub unread: i64,
    /// Of them, those that mention the caller (or everyone).
    #[serde(default)]
    pub mentions_unread: i64,
    pub total_unread: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnreadResponse {
    pub total: i64,
    /// Unread per conversation id (only conversations with unread messages).
    pub conversations: BTreeMap<String, i64>,
}

/// `POST /sync` and the `sync` frame.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SyncRequest {
    /// The highest seq the client has per conversation id; missing ones count as 0.
    #[serde(default)]
    pub cursors: BTreeMap<String, i64>,
    /// Messages per conversation per round (1..=500, default 100).
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `events_cursor` of the last answer: the caller's own events after it come
    /// back (all of them from the start when absent).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub events_cursor: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncConversation {
    pub id: ConvId,
    pub last_seq: Seq,
    pub read_seq: Seq,
    pub unread: i64,
    #[serde(default)]
    pub mentions_unread: i64,
    /// The caller's own settings (as in the conversation object).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub muted_until: Option<crate::settings::Mute>,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub archived: bool,
    /// Retained entries after the cursor, ascending, with edits, recalls and
    /// reactions folded into the messages they act on (the entries come as well).
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncResponse {
    pub conversations: Vec<SyncConversation>,
    /// True while any conversation had more messages than `limit`, or the caller's
    /// stream more events than one answer holds: call again with the new cursors.
    pub more: bool,
    /// The caller's own events after the `events_cursor` sent, ascending by seq (at
    /// most 500 per answer).
    #[serde(default)]
    pub events: Vec<EventEntry>,
    /// Where the caller's stream stands after these events: send it back as
    /// `events_cursor`.
    #[serde(default)]
    pub events_cursor: i64,
}

/// `POST /users` (service key): provision a user of the company's own identity system.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvisionUser {
    #[schema(min_length = 1, max_length = 128)]
    pub external_id: String,
    #[schema(min_length = 3, max_length = 32, pattern = "^[a-z0-9_.-]+$")]
    pub username: String,
    #[schema(max_length = 64)]
    pub display_name: Option<String>,
    pub attributes: Option<Attributes>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvisionResponse {
    pub user_id: UserId,
}

/// `POST /broadcasts` (service key).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BroadcastRequest {
    /// `all`, `org/1`, `role/3`, `job/2`, `org/1/role/3`, …
    #[schema(
        example = "org/1/role/3",
        pattern = "^(all|org/[A-Za-z0-9_.-]{1,64}(/(role|job)/[A-Za-z0-9_.-]{1,64})?|(role|job)/[A-Za-z0-9_.-]{1,64}(/org/[A-Za-z0-9_.-]{1,64})?)$"
    )]
    pub audience: String,
    #[schema(min_length = 1, pattern = "^[^\\u0000]+$")]
    pub body: String,
    pub tier: Option<Tier>,
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub cid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BroadcastResponse {
    pub conversation_id: ConvId,
    pub seq: Seq,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub node: String,
    /// Why the node is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// `POST /conversations/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMembers {
    /// 1..=100 user ids to add; members already there are left as they are.
    #[schema(min_items = 1, max_items = 100, value_type = Vec<crate::ids::MemberId>)]
    pub users: Vec<UserId>,
}

/// `PATCH /conversations/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PatchConversation {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub title: Option<String>,
}

/// `PUT /conversations/{id}/members/{user}/role`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetRole {
    /// `admin` or `member` (the owner hands over by leaving).
    #[schema(value_type = AssignableRole)]
    pub role: crate::entry::Role,
}

/// The roles `PUT /conversations/{id}/members/{user}/role` gives (its schema only:
/// the body is read as a [`crate::entry::Role`] and `owner` refused).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
pub enum AssignableRole {
    Admin,
    Member,
}

/// `PATCH /conversations/{id}/messages/{seq}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EditRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub cid: String,
    #[schema(min_length = 1, pattern = "^[^\\u0000]+$")]
    pub body: String,
}

/// The `cid` of a recall or a reaction (`?cid=`): a retry with the same cid is
/// answered with the entry stored the first time.
#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct CidQuery {
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub cid: String,
}
