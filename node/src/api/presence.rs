//! Presence (`POST /presence`) and the service calls on a user's sockets and tokens:
//! disconnect, revoke, sessions, online users.

use crate::auth::{AuthService, AuthUser};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_actors::messages::{DisconnectUser, RevokeUser};
use chat_bus::presence::PresenceError;
use chat_store::TokenFloor;
use chat_wire::{ErrorBody, PresenceAnswer, PresenceQuery, PresenceState, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn unavailable(e: PresenceError) -> ApiError {
    tracing::warn!(error = %e, "presence: redis did not answer");
    ApiError::unavailable("presence is unavailable; retry shortly")
}

/// Whether each of up to 200 users is online, and when they were last seen. Users that
/// do not exist are left out of the answer.
#[utoipa::path(post, path = "/api/v1/presence", tag = "presence",
    security(("bearer" = [])), request_body = PresenceQuery,
    responses((status = 200, description = "One entry per user that exists", body = PresenceAnswer),
        (status = 400, description = "More than 200 users, or an id that is not one", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A service key", body = ErrorBody),
        (status = 503, description = "Redis or Postgres did not answer", body = ErrorBody)))]
pub async fn presence(
    state: web::Data<AppState>,
    _user: AuthUser,
    body: web::Json<PresenceQuery>,
) -> Result<HttpResponse, ApiError> {
    let users = body.check().map_err(ApiError::bad_request)?;
    let known = state.store().last_seen(&users).await?;
    let ids: Vec<UserId> = known.iter().map(|(u, _)| *u).collect();
    let mut online = state
        .chat
        .presence
        .online_of(&ids)
        .await
        .map_err(unavailable)?;
    // A socket that opened here in the last 100 ms is in presence from the hub's next
    // tick; this node knows it already.
    online.extend(state.chat.directory.here_of(&ids));
    let presence = known
        .into_iter()
        .map(|(user, last_seen)| {
            let on = online.contains(&user);
            PresenceState {
                user,
                online: on,
                last_seen: if on { None } else { last_seen },
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(PresenceAnswer { presence }))
}

/// `POST /service/users/{id}/disconnect`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    /// The close code: 1000, 1008 or 4000–4999 (default 4003).
    #[schema(minimum = 4000, maximum = 4999)]
    pub code: Option<u16>,
}

/// The default close code of a disconnect.
pub const DISCONNECT_CODE: u16 = 4003;

fn valid_close_code(code: u16) -> bool {
    code == 1000 || code == 1008 || (4000..=4999).contains(&code)
}

async fn existing(state: &AppState, user: UserId) -> Result<(), ApiError> {
    match state.store().token_floor(user).await? {
        TokenFloor::Unknown => Err(ApiError::not_found(format!("no user {}", user.0))),
        TokenFloor::Since(_) => Ok(()),
    }
}

/// Closes every socket of a user, on every node, with `code` (for a ban, say). Their
/// tokens stay valid: revoke them as well to keep them out.
#[utoipa::path(post, path = "/api/v1/service/users/{id}/disconnect", tag = "service",
    security(("bearer" = [])), request_body(content = DisconnectBody, description = "May be empty"),
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200, description = "Their sockets are closing on every node"),
        (status = 400, description = "A close code that is not 1000, 1008 or 4000-4999", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A user token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "Postgres did not answer", body = ErrorBody)))]
pub async fn disconnect(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<i64>,
    body: Option<web::Json<DisconnectBody>>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId(path.into_inner());
    let code = body
        .and_then(|b| b.into_inner().code)
        .unwrap_or(DISCONNECT_CODE);
    if !valid_close_code(code) {
        return Err(ApiError::bad_request(format!(
            "close code {code} is not 1000, 1008 or 4000-4999"
        )));
    }
    existing(&state, user).await?;
    state.registry().do_send(DisconnectUser { user, code });
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// The answer of a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Tokens issued at or before this second are refused from now on.
    #[schema(value_type = String, format = DateTime)]
    pub not_before: DateTime<Utc>,
}

/// Refuses every token of a user issued up to now, on every call and every frame:
/// their open sockets close with 1008 on every node. A token minted after this second
/// works.
#[utoipa::path(post, path = "/api/v1/service/users/{id}/revoke", tag = "service",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200, body = Revoked),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A user token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "Postgres did not answer", body = ErrorBody)))]
pub async fn revoke(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId(path.into_inner());
    let not_before = state.store().revoke_tokens(user).await?;
    let floor = not_before.timestamp();
    state.floors.put(user, TokenFloor::Since(Some(floor)));
    state.registry().do_send(RevokeUser { user, floor });
    Ok(HttpResponse::Ok().json(Revoked { not_before }))
}

/// One open socket.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionEntry {
    /// The node that holds it (`node.id`).
    pub node: String,
    /// Since when it is open.
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
}

/// `GET /service/users/{id}/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionEntry>,
}

/// A user's open sockets on live nodes, oldest first.
#[utoipa::path(get, path = "/api/v1/service/users/{id}/sessions", tag = "service",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses((status = 200, body = SessionList),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A user token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "Redis or Postgres did not answer", body = ErrorBody)))]
pub async fn sessions(
    state: web::Data<AppState>,
    _service: AuthService,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId(path.into_inner());
    existing(&state, user).await?;
    let sessions = state
        .chat
        .presence
        .sessions(user)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|s| SessionEntry {
            node: s.node,
            since: DateTime::from_timestamp_millis(s.since).unwrap_or_default(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SessionList { sessions }))
}

/// `GET /service/online`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineList {
    /// Users with a socket open on a live node, in id order.
    pub users: Vec<UserId>,
    pub count: usize,
}

/// Every user online in the cluster. It reads every live node's socket set: meant for
/// an admin page, not for polling.
#[utoipa::path(get, path = "/api/v1/service/online", tag = "service",
    security(("bearer" = [])),
    responses((status = 200, body = OnlineList),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A user token", body = ErrorBody),
        (status = 503, description = "Redis did not answer", body = ErrorBody)))]
pub async fn online(
    state: web::Data<AppState>,
    _service: AuthService,
) -> Result<HttpResponse, ApiError> {
    let users = state
        .chat
        .presence
        .online_users()
        .await
        .map_err(unavailable)?;
    let count = users.len();
    Ok(HttpResponse::Ok().json(OnlineList { users, count }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_the_allowed_ones() {
        for ok in [1000, 1008, 4000, 4003, 4999] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [0, 1001, 1011, 3000, 5000] {
            assert!(!valid_close_code(bad), "{bad}");
        }
    }
}
