//! The server API (`/service/...`, service key only): the company's backend sends
//! messages as a member or as the system, creates conversations, sets a group's
//! members, mutes members and deletes users. Every call takes the path a member's own
//! call takes (the conversation's actor for sends, one group change per change), so
//! ordering, pushes and dedupe are the same; the system acts as user 0.

use crate::api::conversations::{checked_title, view};
use crate::api::moderation::until_of;
use crate::auth::AuthService;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_store::{DirectRules, GroupChange};
use chat_wire::http::{ConversationEnvelope, SendResponse};
use chat_wire::moderation::{
    DeleteMode, DeletedUser, MuteRequest, ServiceConversationKind, ServiceCreateConversation,
    ServiceSend, SetMembers,
};
use chat_wire::{ConvId, ErrorBody, ErrorCode, Role, UserId};

/// The group as its owner sees it (any member if it has none).
async fn owner_view(state: &AppState, conv: ConvId) -> Result<HttpResponse, ApiError> {
    let roles = state.store().member_roles(conv).await?;
    let viewer = roles
        .iter()
        .find(|(_, r, _)| *r == Role::Owner)
        .or(roles.first())
        .map(|(u, _, _)| *u)
        .ok_or_else(ApiError::conversation_not_found)?;
    let caller = state.caller(viewer).await?;
    let conversation = view(state, &caller, conv).await?;
    Ok(HttpResponse::Ok().json(ConversationEnvelope { conversation }))
}

/// Sends a message as member `as_user`, or as the system (`as_user` 0, into any
/// conversation), through the conversation's actor like a member's own send: same
/// ordering, pushes and dedupe by (`as_user`, `cid`).
#[utoipa::path(post, path = "/api/v1/service/messages", tag = "service",
    security(("bearer" = [])), request_body = ServiceSend,
    responses((status = 201, body = SendResponse), (status = 200, description = "This cid was stored before", body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`not_member`: as_user is not a member; `forbidden`: a user token, or the member is muted", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn send(
    state: web::Data<AppState>,
    _service: AuthService,
    body: web::Json<ServiceSend>,
) -> Result<HttpResponse, ApiError> {
    let ServiceSend {
        conv,
        as_user,
        draft,
    } = body.into_inner();
    if as_user.0 < 0 {
        return Err(ApiError::bad_request(
            "as_user must be a user id, or 0 for the system",
        ));
    }
    crate::api::conversations::send_entry(&state, as_user, conv, draft).await
}

/// Creates a conversation: a direct one of two users (200 with the existing one of the
/// pair), or a group of `users` owned by `owner` (default: the first of them). The
/// answer is the conversation as its first user (direct) or its owner sees it.
#[utoipa::path(post, path = "/api/v1/service/conversations", tag = "service",
    security(("bearer" = [])), request_body = ServiceCreateConversation,
    responses((status = 201, body = ConversationEnvelope), (status = 200, body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_conversation(
    state: web::Data<AppState>,
    _service: AuthService,
    body: web::Json<ServiceCreateConversation>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let tier = req.default_tier.unwrap_or_default();
    let (conv, viewer, created) = match req.kind {
        ServiceConversationKind::Direct => {
            let [a, b] = req.users[..] else {
                return Err(ApiError::bad_request(
                    "a direct conversation has exactly two users",
                ));
            };
            if a == b {
                return Err(ApiError::bad_request(
                    "a direct conversation has two different users",
                ));
            }
            if req.title.is_some() || req.owner.is_some() {
                return Err(ApiError::bad_request(
                    "a direct conversation has no title and no owner",
                ));
            }
            if state.store().count_users(&[a, b]).await? != 2 {
                return Err(ApiError::not_found("a user is not a known user"));
            }
            // The backend decides who talks to whom; a block between them still holds.
            let rules = DirectRules {
                requires_friendship: false,
            };
            let (conv, created) = state.store().create_direct(a, b, tier, rules).await?;
            if created {
                state.chat.announce_join(conv, vec![a, b]);
            }
            (conv, a, created)
        }
        ServiceConversationKind::Group => {
            let owner = match (req.owner, req.users.first()) {
                (Some(o), _) => o,
                (None, Some(first)) => *first,
                (None, None) => {
                    return Err(ApiError::bad_request("users must name the group's members"))
                }
            };
            let title = checked_title(req.title.as_deref().unwrap_or("Group"))?;
            let mut others: Vec<UserId> = req.users.into_iter().filter(|u| *u != owner).collect();
            others.sort_unstable();
            others.dedup();
            let max = state.settings.limits.max_group_members;
            if others.len() + 1 > max {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("a group has at most {max} members"),
                ));
            }
            let mut all = others.clone();
            all.push(owner);
            if state.store().count_users(&all).await? != all.len() as i64 {
                return Err(ApiError::not_found("a member is not a known user"));
            }
            let conv = state
                .store()
                .create_group(owner, &title, &others, tier)
                .await?;
            state.chat.announce_join(conv, all);
            (conv, owner, true)
        }
    };
    let caller = state.caller(viewer).await?;
    let conversation = view(&state, &caller, conv).await?;
    let body = ConversationEnvelope { conversation };
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Sets a group's members to exactly `users`: one `added` entry for the new ones and
/// one `removed` entry for those gone (actor 0), and `role_changed` when the owner
/// goes (to the longest-standing admin who stays, else member). The group size limit
/// holds; banned users are refused.
#[utoipa::path(put, path = "/api/v1/service/conversations/{id}/members", tag = "service",
    security(("bearer" = [])), request_body = SetMembers,
    params(("id" = i64, Path, minimum = 1, description = "Group id")),
    responses((status = 200, description = "The group as its owner sees it", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_members(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<i64>,
    body: web::Json<SetMembers>,
) -> Result<HttpResponse, ApiError> {
    let conv = ConvId(path.into_inner());
    let users = body.into_inner().users;
    if users.is_empty() {
        return Err(ApiError::bad_request("users must name at least one member"));
    }
    state
        .chat
        .change_group(UserId::SYSTEM, conv, GroupChange::SetMembers(users))
        .await?;
    owner_view(&state, conv).await
}

/// Mutes a member of a group as the system (actor 0): like the members' own call, and
/// the owner may be muted too.
#[utoipa::path(post, path = "/api/v1/service/conversations/{id}/members/{user}/mute", tag = "service",
    security(("bearer" = [])), request_body = MuteRequest,
    params(("id" = i64, Path, minimum = 1, description = "Group id"), ("user" = i64, Path, minimum = 1, description = "The member")),
    responses((status = 200, description = "The group as its owner sees it", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn mute(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<(i64, i64)>,
    body: web::Json<MuteRequest>,
) -> Result<HttpResponse, ApiError> {
    let (conv, member) = path.into_inner();
    let conv = ConvId(conv);
    let until = until_of(body.into_inner())?;
    state
        .chat
        .change_group(
            UserId::SYSTEM,
            conv,
            GroupChange::Mute(UserId(member), until),
        )
        .await?;
    owner_view(&state, conv).await
}

/// Deletes a user (`service.delete_user`): they can no longer log in, their profile
/// becomes a deleted user's, their contacts, requests and blocks go, they leave every
/// group; their messages stay (`keep`) or are blanked (`erase`).
#[utoipa::path(delete, path = "/api/v1/service/users/{id}", tag = "service",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200, body = DeletedUser),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_user(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId(path.into_inner());
    if user.0 <= 0 {
        return Err(ApiError::bad_request("id must be a user's id"));
    }
    let mode = state.settings.service.delete_user;
    let deleted = state
        .store()
        .delete_user(user, mode == DeleteMode::Erase)
        .await?;
    state.chat.push_user_events(deleted.events);
    // Deleted, the user is added nowhere any more; now they leave each group they
    // are in, one `left` entry each (an owner hands over as on leaving).
    let mut groups_left = Vec::new();
    for conv in state.store().groups_of(user).await? {
        match state
            .chat
            .change_group(user, conv, GroupChange::Leave)
            .await
        {
            Ok(_) => groups_left.push(conv),
            // Removed meanwhile.
            Err(e) if e.code == ErrorCode::NotMember => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Their tokens are refused from now on, on every node, and their open sockets
    // close with 1008.
    let floor = state.store().revoke_tokens(user).await?.timestamp();
    state.floors.put(user, chat_store::TokenFloor::Unknown);
    state
        .registry()
        .do_send(chat_actors::messages::RevokeUser { user, floor });
    Ok(HttpResponse::Ok().json(DeletedUser {
        user_id: user,
        mode,
        groups_left,
        messages_erased: deleted.erased,
    }))
}
