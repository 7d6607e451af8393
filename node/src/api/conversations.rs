//! Conversations, messages, read cursors, unread and sync.

use crate::api::limit;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::{AppState, Caller};
use actix_web::{web, HttpResponse};
use chat_actors::messages::Joined;
use chat_actors::service::SendCommand;
use chat_bus::{Channel, Event};
use chat_store::{DirectRules, ListCursor, Membership, NewMessage};
use chat_wire::http::{
    ConversationEnvelope, ConversationList, CreateConversation, History, HistoryQuery, ListQuery,
    ReadRequest, ReadResponse, SendRequest, SendResponse, SyncRequest, SyncResponse,
    UnreadResponse,
};
use chat_wire::{storable_text, ConvId, Conversation, ErrorBody, Seq, UserId};

/// Longest group title, in characters.
const MAX_TITLE: usize = 200;

async fn view(state: &AppState, caller: &Caller, conv: ConvId) -> Result<Conversation, ApiError> {
    state
        .store()
        .list_conversations(caller.user.id, &caller.audiences, 1, None, Some(conv))
        .await?
        .0
        .into_iter()
        .next()
        .ok_or_else(ApiError::conversation_not_found)
}

/// Tells this node and the others that `members` joined `conv`.
fn announce_join(state: &AppState, conv: ConvId, members: Vec<UserId>) {
    for user in &members {
        state
            .chat
            .bus
            .publish(&Channel::User(*user), &Event::Joined { user: *user, conv });
    }
    state.registry().do_send(Joined {
        users: members,
        conv,
    });
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
                announce_join(&state, conv, vec![me, peer]);
            }
            (conv, created)
        }
        CreateConversation::Group {
            title,
            members,
            default_tier,
        } => {
            let title = title.trim().to_string();
            if title.is_empty() || title.chars().count() > MAX_TITLE || !storable_text(&title) {
                return Err(ApiError::bad_request("title must be 1..200 characters"));
            }
            let mut others: Vec<UserId> = members.into_iter().filter(|m| *m != me).collect();
            others.sort_unstable();
            others.dedup();
            if others.is_empty() {
                return Err(ApiError::bad_request(
                    "a group needs at least one member besides its creator",
                ));
            }
            if others.len() + 1 > state.settings.limits.max_group_members {
                return Err(ApiError::bad_request(format!(
                    "a group has at most {} members",
                    state.settings.limits.max_group_members
                )));
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
            announce_join(&state, conv, others);
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

async fn member(state: &AppState, caller: &Caller, conv: ConvId) -> Result<Seq, ApiError> {
    match state
        .store()
        .membership(caller.user.id, &caller.audiences, conv)
        .await?
    {
        Membership::NoSuchConversation => Err(ApiError::conversation_not_found()),
        Membership::NotMember => Err(ApiError::not_member()),
        Membership::Member { last_seq, .. } => Ok(last_seq),
    }
}

/// A page of history: retained messages below `before_seq`, ascending.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Conversation id"), HistoryQuery),
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
    let last_seq = member(&state, &caller, conv).await?;
    let before = Seq(q.before_seq.unwrap_or(i64::MAX).min(last_seq.0 + 1));
    let (messages, oldest_retained_seq) =
        state.store().history(conv, before, limit, last_seq).await?;
    Ok(HttpResponse::Ok().json(History {
        messages,
        oldest_retained_seq,
    }))
}

/// Sends a message. 201 once committed; the same `cid` again answers 200 with the
/// same seq and stores nothing.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])), request_body = SendRequest,
    params(("id" = i64, Path, description = "Conversation id")),
    responses((status = 201, body = SendResponse), (status = 200, body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn send(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let cmd = SendCommand {
        conv: ConvId(path.into_inner()),
        session: None,
        message: NewMessage {
            sender: user.0,
            draft: body.into_inner(),
        },
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

/// Moves the caller's read cursor forward (never back).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/read", tag = "conversations",
    security(("bearer" = [])), request_body = ReadRequest,
    params(("id" = i64, Path, description = "Conversation id")),
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
