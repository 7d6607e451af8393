//! Moderation of groups: muting members and banning users. Each change is a `system`
//! entry of the group's stream, made under the group's lock like every group change;
//! the mute is checked under the same lock by every send, edit and reaction.

use crate::api::conversations::change;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_actors::ChatError;
use chat_store::GroupChange;
use chat_wire::http::ConversationEnvelope;
use chat_wire::moderation::{BanList, MuteRequest};
use chat_wire::{ConvId, ErrorBody, UserId};
use chrono::{DateTime, Utc};

/// The `until` of a mute body: required, `null` lifts the mute.
pub(crate) fn until_of(body: MuteRequest) -> Result<Option<DateTime<Utc>>, ApiError> {
    body.until.ok_or_else(|| {
        ApiError::bad_request("until is required: an RFC 3339 time, or null to lift the mute")
    })
}

/// Mutes a member until `until` (`null` lifts it): a `system` entry `muted` (with
/// `until`) or `unmuted`. Admins mute members; the owner anyone but themself.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/members/{user}/mute", tag = "groups",
    security(("bearer" = [])), request_body = MuteRequest,
    params(("id" = i64, Path, minimum = 1, description = "Group id"), ("user" = i64, Path, minimum = 1, description = "The member")),
    responses((status = 200, description = "The group after the change (`muted` lists who is muted until when)", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn mute(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
    body: web::Json<MuteRequest>,
) -> Result<HttpResponse, ApiError> {
    let (conv, member) = path.into_inner();
    let until = until_of(body.into_inner())?;
    change(
        &state,
        user.0,
        ConvId(conv),
        GroupChange::Mute(UserId(member), until),
    )
    .await
}

/// Bans a user from a group: a `system` entry `banned`. A member is removed by it
/// (they get `left`, on every node); any later add of them is refused until unbanned.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/bans/{user}", tag = "groups",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Group id"), ("user" = i64, Path, minimum = 1, description = "The user to ban")),
    responses((status = 200, description = "The group after the change", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn ban(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (conv, banned) = path.into_inner();
    change(
        &state,
        user.0,
        ConvId(conv),
        GroupChange::Ban(UserId(banned)),
    )
    .await
}

/// Lifts a ban (admins and the owner): a `system` entry `unbanned`. The user is not
/// added back; they may be added again.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/bans/{user}", tag = "groups",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Group id"), ("user" = i64, Path, minimum = 1, description = "The banned user")),
    responses((status = 200, description = "The group after the change", body = ConversationEnvelope),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unban(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (conv, banned) = path.into_inner();
    change(
        &state,
        user.0,
        ConvId(conv),
        GroupChange::Unban(UserId(banned)),
    )
    .await
}

/// The group's bans, oldest first (admins and the owner).
#[utoipa::path(get, path = "/api/v1/conversations/{id}/bans", tag = "groups",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Group id")),
    responses((status = 200, body = BanList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn bans(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let bans = state
        .store()
        .bans(ConvId(path.into_inner()), user.0)
        .await?
        .map_err(ChatError::from)?;
    Ok(HttpResponse::Ok().json(BanList { bans }))
}
