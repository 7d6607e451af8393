//! User search, and the service calls that provision users and set attributes.

use crate::api::auth::display_name;
use crate::auth::{AuthService, AuthUser};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_actors::messages::AudiencesChanged;
use chat_bus::{Channel, Event};
use chat_store::NewUser;
use chat_wire::http::{ProvisionResponse, ProvisionUser, UserList, UserSearchQuery, UserSummary};
use chat_wire::{valid_username, Attributes, ErrorBody, UserId};

/// Most users one search returns.
const SEARCH_LIMIT: i64 = 20;

/// Users whose username starts with `q`.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    security(("bearer" = [])), params(UserSearchQuery),
    responses((status = 200, body = UserList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn search(
    state: web::Data<AppState>,
    _user: AuthUser,
    query: web::Query<UserSearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner().q;
    if q.is_empty() || q.chars().count() > 32 || !chat_wire::storable_text(&q) {
        return Err(ApiError::bad_request(
            "q must be 1..32 characters, without NUL",
        ));
    }
    let users = state.store().search_users(&q, SEARCH_LIMIT).await?;
    Ok(HttpResponse::Ok().json(UserList { users }))
}

/// Provisions a user of the company's own identity system (service key). The same
/// `external_id` again answers 200 with the same id.
#[utoipa::path(post, path = "/api/v1/users", tag = "service",
    security(("bearer" = [])), request_body = ProvisionUser,
    responses((status = 201, body = ProvisionResponse), (status = 200, body = ProvisionResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn provision(
    state: web::Data<AppState>,
    _service: AuthService,
    body: web::Json<ProvisionUser>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    if req.external_id.is_empty()
        || req.external_id.len() > 128
        || !chat_wire::storable_text(&req.external_id)
    {
        return Err(ApiError::bad_request(
            "external_id must be 1..128 bytes, without NUL",
        ));
    }
    if !valid_username(&req.username) {
        return Err(ApiError::bad_request(
            "username must be 3..32 of [a-z0-9_.-]",
        ));
    }
    let attributes = req.attributes.unwrap_or_default();
    attributes.validate().map_err(ApiError::bad_request)?;
    let display_name = display_name(req.display_name, &req.username)?;
    let (id, created) = state
        .store()
        .provision_user(&NewUser {
            username: req.username,
            display_name,
            password_hash: None,
            external_id: Some(req.external_id),
            attributes,
        })
        .await?;
    let body = ProvisionResponse { user_id: id };
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Replaces a user's attributes (service key). Their broadcast audiences change from
/// their next request, and their open sessions follow at once.
#[utoipa::path(put, path = "/api/v1/users/{id}/attributes", tag = "service",
    security(("bearer" = [])), request_body = Attributes,
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200, body = Attributes), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_attributes(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<i64>,
    body: web::Json<Attributes>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId(path.into_inner());
    let attrs = body.into_inner();
    attrs.validate().map_err(ApiError::bad_request)?;
    let version = state.store().set_attributes(user, &attrs).await?;
    state.registry().do_send(AudiencesChanged {
        user,
        audiences: attrs.audiences(),
        version,
    });
    state
        .chat
        .bus
        .publish(&Channel::User(user), &Event::AttributesChanged { user });
    Ok(HttpResponse::Ok().json(attrs))
}

/// One user's profile, a deleted user's (`deleted: true`, "Deleted user") or the
/// system's (id 0, the sender of system messages) too: how a client names the sender
/// of a message.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200, body = UserSummary), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn profile(
    state: web::Data<AppState>,
    _user: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .store()
        .user_summary(UserId(path.into_inner()))
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(HttpResponse::Ok().json(user))
}
