//! In-site notices to whole audiences, stored once (fan-out on read).

use crate::auth::AuthService;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_actors::service::SendCommand;
use chat_store::NewMessage;
use chat_wire::http::{BroadcastRequest, BroadcastResponse};
use chat_wire::{Audience, Draft, ErrorBody, UserId};

/// Posts one message to an audience's conversation (service key), whatever the
/// audience's size. The same `cid` again answers 200 with the same seq.
#[utoipa::path(post, path = "/api/v1/broadcasts", tag = "service",
    security(("bearer" = [])), request_body = BroadcastRequest,
    responses((status = 201, body = BroadcastResponse), (status = 200, body = BroadcastResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn broadcast(
    state: web::Data<AppState>,
    _service: AuthService,
    body: web::Json<BroadcastRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let audience = Audience::parse(&req.audience)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .key();
    let draft = Draft {
        tier: req.tier,
        ..Draft::text(req.cid, req.body)
    };
    // Refused before the audience's conversation is created for nothing.
    state.chat.send_shape(&draft)?;
    let conv = state.store().broadcast_conversation(&audience).await?;
    let cmd = SendCommand {
        conv,
        session: None,
        message: NewMessage {
            sender: UserId::SYSTEM,
            draft,
        },
    };
    let accepted = state.chat.send(cmd).await?;
    let body = BroadcastResponse {
        conversation_id: conv,
        seq: accepted.message.seq,
    };
    Ok(if accepted.duplicate {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Created().json(body)
    })
}
