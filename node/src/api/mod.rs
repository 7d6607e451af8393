//! The HTTP API under `/api/v1`.

pub mod auth;
pub mod broadcasts;
pub mod contacts;
pub mod conversations;
pub mod moderation;
pub mod presence;
pub mod service;
pub mod users;

use crate::error::{extract, ApiError};
use actix_web::web;

/// `limit` within `1..=max`, or `default` when absent.
pub(crate) fn limit(value: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(_) => Err(ApiError::bad_request(format!("limit must be 1..={max}"))),
    }
}

/// A resource whose other methods answer 405 in the contract's error shape.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(extract::method_not_allowed))
}

/// Registers every `/api/v1` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .service(resource("/openapi.json").route(web::get().to(crate::openapi::document)))
            .service(resource("/auth/register").route(web::post().to(auth::register)))
            .service(resource("/auth/login").route(web::post().to(auth::login)))
            .service(
                resource("/me")
                    .route(web::get().to(auth::me))
                    .route(web::patch().to(auth::patch_me)),
            )
            .service(
                resource("/users")
                    .route(web::get().to(users::search))
                    .route(web::post().to(users::provision)),
            )
            .service(resource("/users/{id}/attributes").route(web::put().to(users::set_attributes)))
            .service(
                resource("/conversations")
                    .route(web::get().to(conversations::list))
                    .route(web::post().to(conversations::create)),
            )
            .service(resource("/conversations/{id}").route(web::patch().to(conversations::patch)))
            .service(
                resource("/conversations/{id}/messages")
                    .route(web::get().to(conversations::history))
                    .route(web::post().to(conversations::send)),
            )
            .service(
                resource("/conversations/{id}/messages/{seq}")
                    .route(web::patch().to(conversations::edit))
                    .route(web::delete().to(conversations::recall)),
            )
            .service(
                resource("/conversations/{id}/messages/{seq}/reactions/{emoji}")
                    .route(web::put().to(conversations::react))
                    .route(web::delete().to(conversations::unreact)),
            )
            .service(
                resource("/conversations/{id}/members")
                    .route(web::post().to(conversations::add_members)),
            )
            .service(
                resource("/conversations/{id}/members/{user}")
                    .route(web::delete().to(conversations::remove_member)),
            )
            .service(
                resource("/conversations/{id}/members/{user}/role")
                    .route(web::put().to(conversations::set_role)),
            )
            .service(
                resource("/conversations/{id}/leave").route(web::post().to(conversations::leave)),
            )
            .service(
                resource("/conversations/{id}/read").route(web::post().to(conversations::read)),
            )
            .service(
                resource("/conversations/{id}/settings")
                    .route(web::put().to(conversations::settings)),
            )
            .service(resource("/unread").route(web::get().to(conversations::unread)))
            .service(resource("/sync").route(web::post().to(conversations::sync)))
            .service(resource("/broadcasts").route(web::post().to(broadcasts::broadcast)))
            .service(resource("/contacts").route(web::get().to(contacts::list)))
            .service(resource("/contacts/requests").route(web::post().to(contacts::send)))
            .service(
                resource("/contacts/requests/{id}/accept").route(web::post().to(contacts::accept)),
            )
            .service(
                resource("/contacts/requests/{id}/decline")
                    .route(web::post().to(contacts::decline)),
            )
            .service(
                resource("/contacts/requests/{id}/cancel").route(web::post().to(contacts::cancel)),
            )
            .service(resource("/contacts/{user}").route(web::delete().to(contacts::unfriend)))
            .service(
                resource("/blocks/{user}")
                    .route(web::put().to(contacts::block))
                    .route(web::delete().to(contacts::unblock)),
            )
            .service(resource("/presence").route(web::post().to(presence::presence)))
            .service(
                resource("/service/users/{id}/disconnect")
                    .route(web::post().to(presence::disconnect)),
            )
            .service(resource("/service/users/{id}/revoke").route(web::post().to(presence::revoke)))
            .service(
                resource("/service/users/{id}/sessions").route(web::get().to(presence::sessions)),
            )
            .service(resource("/service/online").route(web::get().to(presence::online)))
            .service(
                resource("/conversations/{id}/members/{user}/mute")
                    .route(web::post().to(moderation::mute)),
            )
            .service(resource("/conversations/{id}/bans").route(web::get().to(moderation::bans)))
            .service(
                resource("/conversations/{id}/bans/{user}")
                    .route(web::put().to(moderation::ban))
                    .route(web::delete().to(moderation::unban)),
            )
            .service(resource("/users/{id}").route(web::get().to(users::profile)))
            .service(resource("/service/messages").route(web::post().to(service::send)))
            .service(
                resource("/service/conversations")
                    .route(web::post().to(service::create_conversation)),
            )
            .service(
                resource("/service/conversations/{id}/members")
                    .route(web::put().to(service::set_members)),
            )
            .service(
                resource("/service/conversations/{id}/members/{user}/mute")
                    .route(web::post().to(service::mute)),
            )
            .service(resource("/service/users/{id}").route(web::delete().to(service::delete_user))),
    );
}
