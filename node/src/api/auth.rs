//! Register, login, and who am I.

use crate::auth::{hash_password, verify_password, AuthUser};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_store::{NewUser, UserRecord};
use chat_wire::http::{AuthResponse, LoginRequest, Me, MeEnvelope, RegisterRequest};
use chat_wire::{valid_username, Attributes, ErrorBody, PatchMe};

/// Longest accepted password, so hashing cost stays bounded.
const MAX_PASSWORD_LEN: usize = 256;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 64;

pub(crate) fn display_name(given: Option<String>, username: &str) -> Result<String, ApiError> {
    let name = given.map(|d| d.trim().to_string()).unwrap_or_default();
    if name.chars().count() > MAX_DISPLAY_NAME || !chat_wire::storable_text(&name) {
        return Err(ApiError::bad_request(format!(
            "display_name must be at most {MAX_DISPLAY_NAME} characters, without NUL"
        )));
    }
    Ok(if name.is_empty() {
        username.to_string()
    } else {
        name
    })
}

/// Creates an account with a password.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = AuthResponse),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn register(
    state: web::Data<AppState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    if !valid_username(&req.username) {
        return Err(ApiError::bad_request(
            "username must be 3..32 of [a-z0-9_.-]",
        ));
    }
    let chars = req.password.chars().count();
    if !(8..=MAX_PASSWORD_LEN).contains(&chars) {
        return Err(ApiError::bad_request("password must be 8..256 characters"));
    }
    let display_name = display_name(req.display_name, &req.username)?;
    let hash = hash_password(req.password).await?;
    let id = state
        .store()
        .create_user(&NewUser {
            username: req.username,
            display_name,
            password_hash: Some(hash),
            external_id: None,
            attributes: Attributes::default(),
        })
        .await?;
    let token = state.tokens.issue(id)?;
    Ok(HttpResponse::Created().json(AuthResponse { user_id: id, token }))
}

/// Exchanges username and password for a token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = AuthResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    if req.password.chars().count() > MAX_PASSWORD_LEN {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let found = state.store().user_auth(&req.username).await?;
    let (id, hash) = match found {
        Some(u) => (Some(u.id), u.password_hash),
        None => (None, None),
    };
    // Verified even for an unknown name, so timing does not tell which names exist.
    let ok = verify_password(req.password, hash).await?;
    match (ok, id) {
        (true, Some(id)) => Ok(HttpResponse::Ok().json(AuthResponse {
            user_id: id,
            token: state.tokens.issue(id)?,
        })),
        _ => Err(ApiError::unauthorized("wrong username or password")),
    }
}

/// The caller's own record.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn me(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(user.0).await?;
    Ok(HttpResponse::Ok().json(me_of(caller.user)))
}

/// The caller as `GET /me` and `PATCH /me` show them.
fn me_of(user: UserRecord) -> Me {
    Me {
        id: user.id,
        username: user.username,
        display_name: user.display_name,
        attributes: user.attributes,
        avatar_url: user.avatar_url,
    }
}

/// Changes the caller's display name or avatar (the fields given; `avatar_url`
/// `null` or `""` removes it). Contacts and user search show the change at once.
#[utoipa::path(patch, path = "/api/v1/me", tag = "auth",
    security(("bearer" = [])), request_body = PatchMe,
    responses((status = 200, body = MeEnvelope), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn patch_me(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<PatchMe>,
) -> Result<HttpResponse, ApiError> {
    state.writes.check(user.0)?;
    let change = body.check().map_err(ApiError::bad_request)?;
    let record = match state.store().update_profile(user.0, &change).await {
        Err(chat_store::StoreError::NotFound(_)) => {
            return Err(ApiError::unauthorized("unknown user"))
        }
        other => other?,
    };
    Ok(HttpResponse::Ok().json(MeEnvelope {
        user: me_of(record),
    }))
}
