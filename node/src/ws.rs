//! `GET /ws?token=…` (or `Authorization: Bearer …`): checks the token, origin and connection limit at the handshake,
//! then hands the socket to a Session actor.

use crate::error::ApiError;
use crate::state::AppState;
use actix::{Actor, AsyncContext};
use actix_web::{web, HttpRequest, HttpResponse};
use chat_actors::messages::{Admit, Detach, Refused};
use chat_actors::session::{writer, OutQueue, Session, SessionConfig, SessionParts};
use chat_wire::ErrorCode;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Longest a socket lives on one token, whatever its `exp` says.
const MAX_TOKEN_LIFE_S: u64 = 365 * 86_400;

/// An admitted connection that has not become a Session yet: if the handshake stops
/// half-way (an error, or the request dropped), the slot goes back to the user.
struct Admission {
    registry: actix::Addr<chat_actors::registry::Registry>,
    id: chat_actors::messages::SessionId,
    user: chat_wire::UserId,
    armed: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.armed {
            self.registry.do_send(Detach {
                id: self.id,
                user: self.user,
            });
        }
    }
}

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// Per-connection settings, built once at start.
pub fn session_config(state: &crate::config::Settings) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        node: state.node.id.clone(),
        heartbeat: Duration::from_secs(state.server.heartbeat_s),
        sends_per_sec: state.limits.sends_per_sec,
        outbound_queue: state.limits.outbound_queue,
        outbound_queue_bytes: state.limits.outbound_queue_bytes,
    })
}

pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<WsQuery>,
    cfg: web::Data<SessionConfig>,
) -> Result<HttpResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::draining());
    }
    let allowed = &state.settings.server.allowed_origins;
    if !allowed.is_empty() {
        let origin = req
            .headers()
            .get(actix_web::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| allowed.iter().any(|a| a == o)) {
            return Err(ApiError::forbidden("origin not allowed"));
        }
    }
    // A header keeps the token out of URLs (and so out of proxies' logs) where the
    // client can set one; browsers cannot, and use `?token=`.
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let token = bearer
        .or(query.into_inner().token)
        .ok_or_else(|| ApiError::unauthorized("missing token"))?;
    // As on every user call: the key is valid, it is the wrong kind of caller.
    if crate::auth::is_service_key(&state, &token) {
        return Err(ApiError::forbidden(
            "a service key cannot open a socket; use a user token",
        ));
    }
    let verified = state
        .tokens
        .verify(&token)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    crate::access::note_caller(&req, crate::access::Caller::User(verified.user.0));
    let caller = state.caller(verified.user).await?;
    let floor = state.store().token_floor(verified.user).await?;
    state.floors.put(verified.user, floor);
    if !floor.admits(verified.issued_at) {
        return Err(ApiError::unauthorized("token revoked"));
    }
    let token_floor = match floor {
        chat_store::TokenFloor::Since(f) => f,
        chat_store::TokenFloor::Unknown => None,
    };
    let conversations = state.store().user_conversations(verified.user).await?;
    let id = match state
        .registry()
        .send(Admit {
            user: verified.user,
        })
        .await
    {
        Ok(Ok(id)) => id,
        Ok(Err(Refused::TooManyConnections)) => {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many open connections for this user",
            ))
        }
        Ok(Err(Refused::Draining)) | Err(_) => return Err(ApiError::draining()),
    };
    let mut admission = Admission {
        registry: state.registry().clone(),
        id,
        user: verified.user,
        armed: true,
    };
    let (response, ws, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad_request(format!("not a websocket upgrade: {e}")))?;
    let max = state.settings.limits.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // A token may say it never expires; a socket is re-checked within a year anyway.
    let left = verified
        .expires_at
        .saturating_sub(now)
        .min(MAX_TOKEN_LIFE_S);
    let token_expires = Instant::now() + Duration::from_secs(left);
    let (out_tx, out_rx) = OutQueue::new(cfg.outbound_queue, cfg.outbound_queue_bytes);
    let (kill_tx, kill_rx) = oneshot::channel();
    actix_web::rt::spawn(writer(ws, out_rx, kill_rx));
    let parts = SessionParts {
        id,
        user: verified.user,
        chat: state.chat.clone(),
        cfg: cfg.into_inner(),
        audiences: caller.audiences,
        audiences_version: caller.user.attributes_version,
        conversations,
        out: out_tx,
        kill: kill_tx,
        token_expires,
        token_issued_at: verified.issued_at,
        token_floor,
    };
    Session::create(move |ctx| {
        ctx.add_stream(stream);
        Session::new(parts)
    });
    // The Session detaches itself from now on.
    admission.armed = false;
    Ok(response)
}
