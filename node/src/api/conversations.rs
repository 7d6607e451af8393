//! Conversations, messages, read cursors, unread and sync.

use crate::api::limit;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::{AppState, Caller};
use actix_web::{web, HttpResponse};
use chat_actors::service::SendCommand;
use chat_store::{DirectRules, GroupChange, ListCursor, Membership, NewMessage};
use chat_wire::http::{
    AddMembers, CidQuery, ConversationEnvelope, ConversationList, CreateConversation, EditRequest,
    History, HistoryQuery, ListQuery, PatchConversation, ReadRequest, ReadResponse, SendRequest,
    SendResponse, SetRole, SyncRequest, SyncResponse, UnreadResponse,
};
use chat_wire::ConversationKind;
use chat_wire::{
    storable_text, ConvId, Conversation, Draft, ErrorBody, Seq, SettingsRequest, UserId,
};

/// Longest group title, in characters.
const MAX_TITLE: usize = 200;

pub(crate) async fn view(
    state: &AppState,
    caller: &Caller,
    conv: ConvId,
) -> Result<Conversation, ApiError> {
    state
        .store()
        .list_conversations(caller.user.id, &caller.audiences, 1, None, Some(conv))
        .await?
        .0
        .into_iter()
        .next()
        .ok_or_else(ApiError::conversation_not_found)
}

/// Opens the direct conversation with `peer` (200 with the existing one), or creates a
/// group of the caller and `members`.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "conversations",
    security(("bearer" = [])), request_body = CreateConversation,
    responses((status = 201, body = ConversationEnvelope), (status = 200, body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateConversation>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let caller = state.caller(user.0).await?;
    let me = caller.user.id;
    let (conv, created) = match body.into_inner() {
        CreateConversation::Direct { peer, default_tier } => {
            if peer == me {
                return Err(ApiError::bad_request("peer must be another user"));
            }
            if state.store().count_users(&[peer]).await? != 1 {
                return Err(ApiError::not_found("peer not found"));
            }
            let tier = default_tier.unwrap_or_default();
            let rules = DirectRules {
                requires_friendship: state.settings.chat.direct_requires_friendship,
            };
            let (conv, created) = state.store().create_direct(me, peer, tier, rules).await?;
            if created {
                state.chat.announce_join(conv, vec![me, peer]);
            }
            (conv, created)
        }
        CreateConversation::Group {
            title,
            members,
            default_tier,
        } => {
            let title = checked_title(&title)?;
            let mut others: Vec<UserId> = members.into_iter().filter(|m| *m != me).collect();
            others.sort_unstable();
            others.dedup();
            if others.is_empty() {
                return Err(ApiError::bad_request(
                    "a group needs at least one member besides its creator",
                ));
            }
            if others.len() + 1 > state.settings.limits.max_group_members {
                return Err(ApiError::new(
                    chat_wire::ErrorCode::Conflict,
                    format!(
                        "a group has at most {} members",
                        state.settings.limits.max_group_members
                    ),
                ));
            }
            if state.store().count_users(&others).await? != others.len() as i64 {
                return Err(ApiError::not_found("a member is not a known user"));
            }
            let tier = default_tier.unwrap_or_default();
            let conv = state
                .store()
                .create_group(me, &title, &others, tier)
                .await?;
            others.push(me);
            state.chat.announce_join(conv, others);
            (conv, true)
        }
    };
    let conversation = view(&state, &caller, conv).await?;
    let body = ConversationEnvelope { conversation };
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// The caller's conversations, newest activity first, with unread and last message.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations",
    security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = ConversationList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = limit(q.limit, 50, 100)?;
    let before = match q.before.as_deref() {
        None => None,
        Some(text) => Some(ListCursor::parse(text).ok_or_else(|| {
            ApiError::bad_request("before must be the next_before of an earlier page")
        })?),
    };
    let caller = state.caller(user.0).await?;
    let (conversations, next) = state
        .store()
        .list_conversations(caller.user.id, &caller.audiences, limit, before, None)
        .await?;
    let (total_unread, _) = state
        .store()
        .unread(caller.user.id, &caller.audiences)
        .await?;
    Ok(HttpResponse::Ok().json(ConversationList {
        conversations,
        total_unread,
        next_before: next.map(|c| c.encode()),
    }))
}

/// A title as stored: trimmed, 1..200 characters.
pub(crate) fn checked_title(title: &str) -> Result<String, ApiError> {
    let title = title.trim().to_string();
    if title.is_empty() || title.chars().count() > MAX_TITLE || !storable_text(&title) {
        return Err(ApiError::bad_request("title must be 1..200 characters"));
    }
    Ok(title)
}

/// The caller's last seq and the seq they joined at, or why they cannot read `conv`.
async fn member(state: &AppState, caller: &Caller, conv: ConvId) -> Result<(Seq, Seq), ApiError> {
    match state
        .store()
        .membership(caller.user.id, &caller.audiences, conv)
        .await?
    {
        Membership::NoSuchConversation => Err(ApiError::conversation_not_found()),
        Membership::NotMember => Err(ApiError::not_member()),
        Membership::Member {
            last_seq,
            joined_seq,
            ..
        } => Ok((last_seq, joined_seq)),
    }
}

/// A page of history: retained messages below `before_seq`, ascending.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Conversation id"), HistoryQuery),
    responses((status = 200, body = History), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn history(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let conv = ConvId(path.into_inner());
    let q = query.into_inner();
    let limit = limit(q.limit, 50, 200)?;
    if q.before_seq.is_some_and(|b| b < 1) {
        return Err(ApiError::bad_request("before_seq must be >= 1"));
    }
    let caller = state.caller(user.0).await?;
    let (last_seq, joined_seq) = member(&state, &caller, conv).await?;
    let before = Seq(q.before_seq.unwrap_or(i64::MAX).min(last_seq.0 + 1));
    let (messages, oldest_retained_seq) = state
        .store()
        .history(caller.user.id, conv, before, limit, last_seq, joined_seq)
        .await?;
    Ok(HttpResponse::Ok().json(History {
        messages,
        oldest_retained_seq,
    }))
}

/// Sends a message. 201 once committed; the same `cid` again answers 200 with the
/// same seq and stores nothing.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])), request_body = SendRequest,
    params(("id" = i64, Path, minimum = 1, description = "Conversation id")),
    responses((status = 201, body = SendResponse), (status = 200, body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn send(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    store_entry(&state, user.0, ConvId(path.into_inner()), body.into_inner()).await
}

/// Stores one entry as `sender` through the conversation's actor: 201 with its seq, or
/// 200 with the seq stored the first time for a cid sent again.
async fn store_entry(
    state: &AppState,
    sender: UserId,
    conv: ConvId,
    draft: Draft,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(sender)?;
    send_entry(state, sender, conv, draft).await
}

/// Stores one entry as `sender` through the conversation's actor, without the HTTP
/// write limit (the service's sends): 201 with its seq, or 200 with the seq stored the
/// first time for a cid sent again.
pub(crate) async fn send_entry(
    state: &AppState,
    sender: UserId,
    conv: ConvId,
    draft: Draft,
) -> Result<HttpResponse, ApiError> {
    let cmd = SendCommand {
        conv,
        session: None,
        message: NewMessage { sender, draft },
    };
    let accepted = state.chat.send(cmd).await?;
    let body = SendResponse {
        seq: accepted.message.seq,
        ts: accepted.message.ts,
    };
    Ok(if accepted.duplicate {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Created().json(body)
    })
}

/// Edits a message of the caller's: a new `edit` entry with the new body. History,
/// sync and the list show the message with it; it never counts as unread.
#[utoipa::path(patch, path = "/api/v1/conversations/{id}/messages/{seq}", tag = "conversations",
    security(("bearer" = [])), request_body = EditRequest,
    params(("id" = i64, Path, minimum = 1, description = "Conversation id"), ("seq" = i64, Path, minimum = 1, description = "The message to edit")),
    responses((status = 201, description = "The edit entry", body = SendResponse),
        (status = 200, description = "This cid was stored before", body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn edit(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
    body: web::Json<EditRequest>,
) -> Result<HttpResponse, ApiError> {
    let (conv, seq) = path.into_inner();
    let EditRequest { cid, body } = body.into_inner();
    store_entry(
        &state,
        user.0,
        ConvId(conv),
        Draft::edit(cid, Seq(seq), body),
    )
    .await
}

/// Recalls a message: a new `recall` entry. The sender recalls within
/// `chat.recall_window`, group admins any message; its body is no longer returned.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/messages/{seq}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Conversation id"), ("seq" = i64, Path, minimum = 1, description = "The message to recall"), CidQuery),
    responses((status = 201, description = "The recall entry", body = SendResponse),
        (status = 200, description = "This cid was stored before", body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn recall(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
    query: web::Query<CidQuery>,
) -> Result<HttpResponse, ApiError> {
    let (conv, seq) = path.into_inner();
    let draft = Draft::recall(query.into_inner().cid, Seq(seq));
    store_entry(&state, user.0, ConvId(conv), draft).await
}

/// Adds the caller's reaction `emoji` to a message: a new `reaction` entry.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/messages/{seq}/reactions/{emoji}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Conversation id"), ("seq" = i64, Path, minimum = 1, description = "The message"),
        ("emoji" = String, Path, min_length = 1, max_length = 8, pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f/]+$", description = "The reaction, URL-encoded: 1..32 bytes without spaces, control characters or `/`"), CidQuery),
    responses((status = 201, description = "The reaction entry", body = SendResponse),
        (status = 200, description = "This cid was stored before", body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn react(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64, String)>,
    query: web::Query<CidQuery>,
) -> Result<HttpResponse, ApiError> {
    let (conv, seq, emoji) = path.into_inner();
    let draft = Draft::reaction(query.into_inner().cid, Seq(seq), emoji, true);
    store_entry(&state, user.0, ConvId(conv), draft).await
}

/// Takes the caller's reaction `emoji` off a message: a new `reaction` entry.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/messages/{seq}/reactions/{emoji}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Conversation id"), ("seq" = i64, Path, minimum = 1, description = "The message"),
        ("emoji" = String, Path, min_length = 1, max_length = 8, pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f/]+$", description = "The reaction, URL-encoded: 1..32 bytes without spaces, control characters or `/`"), CidQuery),
    responses((status = 201, description = "The reaction entry", body = SendResponse),
        (status = 200, description = "This cid was stored before", body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unreact(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64, String)>,
    query: web::Query<CidQuery>,
) -> Result<HttpResponse, ApiError> {
    let (conv, seq, emoji) = path.into_inner();
    let draft = Draft::reaction(query.into_inner().cid, Seq(seq), emoji, false);
    store_entry(&state, user.0, ConvId(conv), draft).await
}

/// Makes one change to a group and answers with the group as the caller sees it.
pub(crate) async fn change(
    state: &AppState,
    user: UserId,
    conv: ConvId,
    change: GroupChange,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user)?;
    let leaving = change == GroupChange::Leave;
    state.chat.change_group(user, conv, change).await?;
    if leaving {
        return Ok(HttpResponse::Ok().json(serde_json::json!({})));
    }
    let caller = state.caller(user).await?;
    let conversation = view(state, &caller, conv).await?;
    Ok(HttpResponse::Ok().json(ConversationEnvelope { conversation }))
}

/// Adds users to a group (admins and the owner): one `system` entry `added`. The new
/// members read the group from that entry on.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/members", tag = "groups",
    security(("bearer" = [])), request_body = AddMembers,
    params(("id" = i64, Path, minimum = 1, description = "Group id")),
    responses((status = 200, description = "The group after the change", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The group would grow past limits.max_group_members", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn add_members(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: web::Json<AddMembers>,
) -> Result<HttpResponse, ApiError> {
    let users = body.into_inner().users;
    if users.is_empty() || users.len() > 100 {
        return Err(ApiError::bad_request("users must hold 1..=100 ids"));
    }
    let conv = ConvId(path.into_inner());
    change(&state, user.0, conv, GroupChange::Add(users)).await
}

/// Removes a member (admins remove members, the owner anyone): one `system` entry
/// `removed`. The removed member stops receiving the group at once, on every node.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/members/{user}", tag = "groups",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Group id"), ("user" = i64, Path, minimum = 1, description = "The member to remove")),
    responses((status = 200, description = "The group after the change", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn remove_member(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (conv, member) = path.into_inner();
    change(
        &state,
        user.0,
        ConvId(conv),
        GroupChange::Remove(UserId(member)),
    )
    .await
}

/// Leaves a group: one `system` entry `left` (and `role_changed` when the owner
/// leaves and hands over).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/leave", tag = "groups",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Group id")),
    responses((status = 200, description = "Left", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn leave(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    change(
        &state,
        user.0,
        ConvId(path.into_inner()),
        GroupChange::Leave,
    )
    .await
}

/// Renames a group (admins and the owner): one `system` entry `renamed`.
#[utoipa::path(patch, path = "/api/v1/conversations/{id}", tag = "groups",
    security(("bearer" = [])), request_body = PatchConversation,
    params(("id" = i64, Path, minimum = 1, description = "Group id")),
    responses((status = 200, description = "The group after the change", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn patch(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: web::Json<PatchConversation>,
) -> Result<HttpResponse, ApiError> {
    let conv = ConvId(path.into_inner());
    let Some(title) = body.into_inner().title else {
        let caller = state.caller(user.0).await?;
        member(&state, &caller, conv).await?;
        let conversation = view(&state, &caller, conv).await?;
        return Ok(HttpResponse::Ok().json(ConversationEnvelope { conversation }));
    };
    let title = checked_title(&title)?;
    change(&state, user.0, conv, GroupChange::Rename(title)).await
}

/// Makes a member an admin, or an admin a member (the owner only): one `system`
/// entry `role_changed`.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/members/{user}/role", tag = "groups",
    security(("bearer" = [])), request_body = SetRole,
    params(("id" = i64, Path, minimum = 1, description = "Group id"), ("user" = i64, Path, minimum = 1, description = "The member")),
    responses((status = 200, description = "The group after the change", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_role(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
    body: web::Json<SetRole>,
) -> Result<HttpResponse, ApiError> {
    let (conv, member) = path.into_inner();
    let role = body.into_inner().role;
    change(
        &state,
        user.0,
        ConvId(conv),
        GroupChange::SetRole(UserId(member), role),
    )
    .await
}

/// Changes the caller's own settings of a conversation (muted, pinned, archived):
/// the fields given change, the others stay. No entry of the conversation's stream:
/// a `settings` event of the caller's own stream, pushed to their other devices.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/settings", tag = "conversations",
    security(("bearer" = [])), request_body = SettingsRequest,
    params(("id" = i64, Path, minimum = 1, description = "Conversation id")),
    responses((status = 200, description = "The conversation as the caller now sees it", body = ConversationEnvelope),
        (status = 400, description = "A bad value, an unknown field, or nothing to change", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn settings(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: web::Json<SettingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let change = body.into_inner();
    if change.is_empty() {
        return Err(ApiError::bad_request(
            "give at least one of muted_until, pinned, archived",
        ));
    }
    state.writes.check(user.0)?;
    let conv = ConvId(path.into_inner());
    let caller = state.caller(user.0).await?;
    let broadcast = match state
        .store()
        .membership(caller.user.id, &caller.audiences, conv)
        .await?
    {
        Membership::NoSuchConversation => return Err(ApiError::conversation_not_found()),
        Membership::NotMember => return Err(ApiError::not_member()),
        Membership::Member { kind, .. } => kind == ConversationKind::Broadcast,
    };
    let changed = state
        .store()
        .set_settings(caller.user.id, conv, broadcast, &change)
        .await?
        .ok_or_else(ApiError::not_member)?;
    state.chat.push_user_events(changed.events);
    let conversation = view(&state, &caller, conv).await?;
    Ok(HttpResponse::Ok().json(ConversationEnvelope { conversation }))
}

/// Moves the caller's read cursor forward (never back).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/read", tag = "conversations",
    security(("bearer" = [])), request_body = ReadRequest,
    params(("id" = i64, Path, minimum = 1, description = "Conversation id")),
    responses((status = 200, body = ReadResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn read(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: web::Json<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let conv = ConvId(path.into_inner());
    let caller = state.caller(user.0).await?;
    let r = state
        .chat
        .read(caller.user.id, &caller.audiences, conv, body.seq)
        .await?;
    Ok(HttpResponse::Ok().json(r))
}

/// Unread per conversation and in total.
#[utoipa::path(get, path = "/api/v1/unread", tag = "conversations",
    security(("bearer" = [])),
    responses((status = 200, body = UnreadResponse), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unread(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(user.0).await?;
    let (total, map) = state
        .store()
        .unread(caller.user.id, &caller.audiences)
        .await?;
    Ok(HttpResponse::Ok().json(UnreadResponse {
        total,
        conversations: map.into_iter().map(|(k, v)| (k.0.to_string(), v)).collect(),
    }))
}

/// Everything after the client's cursors; repeat while `more`.
#[utoipa::path(post, path = "/api/v1/sync", tag = "conversations",
    security(("bearer" = [])), request_body = SyncRequest,
    responses((status = 200, body = SyncResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn sync(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<SyncRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let caller = state.caller(user.0).await?;
    let r = state
        .chat
        .sync(
            caller.user.id,
            &caller.audiences,
            &req.cursors,
            req.limit,
            req.events_cursor,
        )
        .await?;
    Ok(HttpResponse::Ok().json(r))
}
