//! Contacts, friend requests and blocks.
//!
//! Each call is one store transaction that also records the events of both users it
//! concerns; once it is committed, the events are pushed (`contact` frames) to their
//! sessions on this node and, over the bus, on the others.

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_store::{Answer, Changed, Sent};
use chat_wire::{
    ContactsResponse, ErrorBody, NewContactRequest, RequestEnvelope, RequestId, UserId,
};

/// Pushes what a committed change recorded and hands back its value.
fn pushed<T>(state: &AppState, changed: Changed<T>) -> T {
    state.chat.push_user_events(changed.events);
    changed.value
}

/// The caller's contacts (with their profiles), pending requests both ways, and whom
/// they blocked.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts",
    security(("bearer" = [])),
    responses((status = 200, body = ContactsResponse), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let contacts = state.store().contacts(user.0).await?;
    Ok(HttpResponse::Ok().json(contacts))
}

/// Asks `user` to become a contact. Where `user` already asked the caller, their
/// request is accepted instead and answered with 200 (the two are contacts now).
#[utoipa::path(post, path = "/api/v1/contacts/requests", tag = "contacts",
    security(("bearer" = [])), request_body = NewContactRequest,
    responses((status = 201, body = RequestEnvelope, description = "The request, pending"),
        (status = 200, body = RequestEnvelope, description = "Their request to the caller, accepted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "A block stands between the two"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already contacts, or a request is pending"),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn send(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<NewContactRequest>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let note = body.checked_note().map_err(ApiError::bad_request)?;
    let changed = state
        .store()
        .send_contact_request(user.0, body.user, note.as_deref())
        .await?;
    Ok(match pushed(&state, changed) {
        Sent::Created(request) => HttpResponse::Created().json(RequestEnvelope { request }),
        Sent::AcceptedTheirs(request) => HttpResponse::Ok().json(RequestEnvelope { request }),
    })
}

async fn answer(
    state: web::Data<AppState>,
    user: AuthUser,
    id: RequestId,
    how: Answer,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let changed = state
        .store()
        .answer_contact_request(user.0, id, how)
        .await?;
    let request = pushed(&state, changed);
    Ok(HttpResponse::Ok().json(RequestEnvelope { request }))
}

/// Accepts a request to the caller: the two become contacts.
#[utoipa::path(post, path = "/api/v1/contacts/requests/{id}/accept", tag = "contacts",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1, description = "Request id")),
    responses((status = 200, body = RequestEnvelope), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The caller is not its recipient"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already answered"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn accept(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    answer(state, user, RequestId(path.into_inner()), Answer::Accept).await
}

/// Declines a request to the caller.
#[utoipa::path(post, path = "/api/v1/contacts/requests/{id}/decline", tag = "contacts",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1, description = "Request id")),
    responses((status = 200, body = RequestEnvelope), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The caller is not its recipient"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already answered"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn decline(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    answer(state, user, RequestId(path.into_inner()), Answer::Decline).await
}

/// Withdraws a request of the caller.
#[utoipa::path(post, path = "/api/v1/contacts/requests/{id}/cancel", tag = "contacts",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1, description = "Request id")),
    responses((status = 200, body = RequestEnvelope), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The caller is not its sender"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already answered"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    answer(state, user, RequestId(path.into_inner()), Answer::Cancel).await
}

/// Ends the friendship with `user` (for both).
#[utoipa::path(delete, path = "/api/v1/contacts/{user}", tag = "contacts",
    security(("bearer" = [])), params(("user" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Not one of the caller's contacts"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unfriend(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let changed = state
        .store()
        .unfriend(user.0, UserId(path.into_inner()))
        .await?;
    pushed(&state, changed);
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// Blocks `user`: ends a friendship and a pending request between the two, and
/// refuses requests and direct conversations between them until lifted. Blocking
/// again changes nothing.
#[utoipa::path(put, path = "/api/v1/blocks/{user}", tag = "contacts",
    security(("bearer" = [])), params(("user" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn block(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let changed = state
        .store()
        .block(user.0, UserId(path.into_inner()))
        .await?;
    pushed(&state, changed);
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// Lifts the caller's block of `user`; nothing changes where there is none.
#[utoipa::path(delete, path = "/api/v1/blocks/{user}", tag = "contacts",
    security(("bearer" = [])), params(("user" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unblock(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let changed = state
        .store()
        .unblock(user.0, UserId(path.into_inner()))
        .await?;
    pushed(&state, changed);
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
