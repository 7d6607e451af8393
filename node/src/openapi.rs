//! The OpenAPI 3 document of the HTTP API, generated from the handlers and wire types.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-node", description = "HTTP API of the chat node. Bearer tokens are HS256 JWTs (user calls) or service keys (service calls)."),
    paths(
        crate::api::auth::register,
        crate::api::auth::login,
        crate::api::auth::me,
        crate::api::auth::patch_me,
        crate::api::users::search,
        crate::api::users::provision,
        crate::api::users::set_attributes,
        crate::api::conversations::create,
        crate::api::conversations::list,
        crate::api::conversations::history,
        crate::api::conversations::send,
        crate::api::conversations::read,
        crate::api::conversations::unread,
        crate::api::conversations::sync,
        crate::api::conversations::edit,
        crate::api::conversations::recall,
        crate::api::conversations::react,
        crate::api::conversations::unreact,
        crate::api::conversations::add_members,
        crate::api::conversations::remove_member,
        crate::api::conversations::leave,
        crate::api::conversations::patch,
        crate::api::conversations::set_role,
        crate::api::conversations::settings,
        crate::api::broadcasts::broadcast,
        crate::api::contacts::list,
        crate::api::contacts::send,
        crate::api::contacts::accept,
        crate::api::contacts::decline,
        crate::api::contacts::cancel,
        crate::api::contacts::unfriend,
        crate::api::contacts::block,
        crate::api::contacts::unblock,
        crate::api::presence::presence,
        crate::api::presence::disconnect,
        crate::api::presence::revoke,
        crate::api::presence::sessions,
        crate::api::presence::online,
        crate::api::moderation::mute,
        crate::api::moderation::ban,
        crate::api::moderation::unban,
        crate::api::moderation::bans,
        crate::api::users::profile,
        crate::api::service::send,
        crate::api::service::create_conversation,
        crate::api::service::set_members,
        crate::api::service::mute,
        crate::api::service::delete_user,
        crate::ops::healthz,
        crate::ops::readyz,
    ),
    components(schemas(chat_wire::NotificationBatch, chat_wire::Notification)),
    modifiers(&BearerAuth, &NotifyWebhook, &Describe),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "users", description = "Finding users"),
        (name = "conversations", description = "Conversations, messages, edits, recalls, reactions, unread and sync"),
        (name = "groups", description = "Group members, roles, title and moderation (mutes, bans): each change is a system entry of the group's stream"),
        (name = "contacts", description = "Contacts, friend requests and blocks"),
        (name = "presence", description = "Who is online, across the cluster"),
        (name = "service", description = "Calls of the company's backend, with a service key"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The POST the node makes to `notify.url` (docs/PROTOCOL.md section 15), as an
/// OpenAPI 3.1 webhook, for the company's receiver.
struct NotifyWebhook;

impl Modify for NotifyWebhook {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, HttpMethod, PathItem, Ref, Required, Response};
        let header = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let op = OperationBuilder::new()
            .operation_id(Some("offline_notifications"))
            .tag("service")
            .summary(Some(
                "Offline notifications, POSTed by the node to notify.url",
            ))
            .description(Some(
                "Sent by every node while notify.url is set, for members with no open socket \
                 (or who did not read within notify.delay). At least once: drop repeats by \
                 `id`. Any 2xx takes the whole batch; anything else is retried with backoff.",
            ))
            .parameter(header(
                "X-Chat-Signature",
                "sha256=<hex HMAC-SHA256 of the body bytes under notify.secret>",
            ))
            .parameter(header("X-Chat-Node", "the id of the node that sent it"))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("NotificationBatch")))
                            .build(),
                    )
                    .build(),
            ))
            .response("200", Response::new("Taken (any 2xx)"))
            .response(
                "default",
                Response::new("Not taken: the batch is tried again later"),
            )
            .build();
        let mut hooks = openapi.webhooks.take().unwrap_or_default();
        hooks.paths.insert(
            "offline_notifications".into(),
            PathItem::new(HttpMethod::Post, op),
        );
        openapi.webhooks = Some(hooks);
    }
}

/// What standard validators ask of the document: every response object has a
/// `description` (one declared without gets its status's name, and for errors the
/// contract's codes), and operation ids are unique (the tag in front of the handler's
/// name).
struct Describe;

fn described(status: &str) -> String {
    let name = status
        .parse::<u16>()
        .ok()
        .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Answer");
    match status {
        "400" => {
            format!("{name}: malformed JSON, wrong types, a value outside its rule (`bad_request`)")
        }
        "401" => format!("{name}: no token, or a token refused (`unauthorized`)"),
        "403" => format!("{name}: not allowed to the caller (`forbidden`, `not_member`)"),
        "404" => format!("{name}: no such thing (`not_found`)"),
        "409" => format!("{name}: taken or over a limit (`conflict`)"),
        "413" => format!("{name}: over a size limit (`too_large`)"),
        "429" => format!("{name}: over a rate limit (`rate_limited`)"),
        "503" => format!("{name}: the node cannot answer now; retry (`unavailable`)"),
        _ => name.to_owned(),
    }
}

impl Modify for Describe {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
            ];
            for op in ops.into_iter().flatten() {
                // Handlers of different modules share names (`list`, `send`, `mute`):
                // ids are unique with the operation's tag in front.
                if let (Some(id), Some(tag)) = (
                    op.operation_id.as_mut(),
                    op.tags.as_ref().and_then(|t| t.first()),
                ) {
                    if !id.starts_with(&format!("{tag}_")) {
                        *id = format!("{tag}_{id}");
                    }
                }
                for (status, resp) in op.responses.responses.iter_mut() {
                    if let RefOr::T(r) = resp {
                        if r.description.trim().is_empty() {
                            r.description = described(status);
                        }
                    }
                }
            }
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
