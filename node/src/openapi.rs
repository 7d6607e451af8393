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
    modifiers(&BearerAuth, &NotifyWebhook, &Describe, &SendShapes, &ServiceConversationShapes),
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

/// A send's shape depends on its kind, which the derived schema cannot say: `text` (the
/// default) needs a non-empty body and takes no `attach`; every other sendable kind
/// needs `attach` with the fields of that kind (its body is an optional caption).
/// `SendRequest` and `ServiceSend` become a `oneOf` with one object per kind, so
/// clients and fuzzers built from the document send what the node accepts.
/// `ServiceSend`'s `allOf` is folded into each object, with `conv` and `as_user`.
struct SendShapes;

/// Each kind a send may carry besides `text`: the `attach` fields it requires, and the
/// MIME family its `mime` must have.
const ATTACHED_KINDS: [(&str, &[&str], Option<&str>); 6] = [
    ("image", &["url", "mime"], Some("image")),
    ("file", &["url", "name", "size"], None),
    ("audio", &["url", "mime", "duration_ms"], Some("audio")),
    ("video", &["url", "mime", "duration_ms"], Some("video")),
    ("location", &["lat", "lon"], None),
    ("custom", &["data"], None),
];

/// `base` as one variant of a `oneOf`: titled `kind`, its `kind` property holding only
/// that value, without the description (the `oneOf` carries it).
fn variant(base: &utoipa::openapi::schema::Object, kind: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let mut o = base.clone();
    o.title = Some(kind.to_owned());
    o.description = None;
    o.properties.insert(
        "kind".into(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([kind]))
            .into(),
    );
    o
}

fn send_shapes(
    base: &utoipa::openapi::schema::Object,
    attachment: &utoipa::openapi::schema::Object,
    extra: &[(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )],
) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOf, Schema, Type};
    use utoipa::openapi::RefOr;
    let string = |min: Option<usize>, pattern: &str, description: &str| -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(min)
            .pattern(Some(pattern))
            .description(Some(description))
            .into()
    };
    let shape = |name: &str| {
        let mut o = variant(base, name);
        for (field, schema) in extra {
            o.properties.insert(field.clone(), schema.clone());
            o.required.push(field.clone());
        }
        o
    };
    let mut items: Vec<RefOr<Schema>> = Vec::new();
    let mut text = shape("text");
    text.properties.insert(
        "body".into(),
        string(
            Some(1),
            "^[^\\u0000]+$",
            "The text: not empty, without NUL.",
        ),
    );
    text.properties.remove("attach");
    text.required.push("body".into());
    text.required.sort();
    text.required.dedup();
    items.push(Schema::Object(text).into());
    for (name, required, family) in ATTACHED_KINDS {
        let mut o = shape(name);
        o.properties.insert(
            "body".into(),
            string(None, "^[^\\u0000]*$", "An optional caption, without NUL."),
        );
        let mut attach = attachment.clone();
        attach.required = required.iter().map(|f| (*f).to_owned()).collect();
        if let Some(family) = family {
            attach.properties.insert(
                "mime".into(),
                string(
                    Some(family.len() + 2),
                    &format!("^{family}/[^\\s\\u0000]+$"),
                    &format!("`{family}/*`"),
                ),
            );
        }
        o.properties
            .insert("attach".into(), Schema::Object(attach).into());
        o.required.extend(["kind".to_owned(), "attach".to_owned()]);
        o.required.sort();
        o.required.dedup();
        items.push(Schema::Object(o).into());
    }
    let mut one_of = OneOf::new();
    one_of.items = items;
    one_of.description = base.description.clone();
    Schema::OneOf(one_of)
}

impl Modify for SendShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let object = |name: &str| match components.schemas.get(name) {
            Some(RefOr::T(Schema::Object(o))) => Some(o.clone()),
            _ => None,
        };
        let (Some(send), Some(attachment)) = (object("SendRequest"), object("Attachment")) else {
            return;
        };
        // ServiceSend is allOf [SendRequest, {conv, as_user}]: the second part's
        // properties join each shape.
        let service = match components.schemas.get("ServiceSend") {
            Some(RefOr::T(Schema::AllOf(all))) => Some((
                all.description.clone(),
                all.items
                    .iter()
                    .filter_map(|item| match item {
                        RefOr::T(Schema::Object(o)) => Some(o.properties.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        };
        components.schemas.insert(
            "SendRequest".into(),
            send_shapes(&send, &attachment, &[]).into(),
        );
        if let Some((description, extra)) = service {
            let mut shapes = send_shapes(&send, &attachment, &extra);
            if let Schema::OneOf(one_of) = &mut shapes {
                one_of.description = description;
            }
            components
                .schemas
                .insert("ServiceSend".into(), shapes.into());
        }
    }
}

/// `POST /service/conversations` takes two shapes: `direct` with exactly two users and
/// neither title nor owner, and `group` with at least one user.
struct ServiceConversationShapes;

impl Modify for ServiceConversationShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayBuilder, OneOf, Schema};
        use utoipa::openapi::{Ref, RefOr};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(base))) =
            components.schemas.get("ServiceCreateConversation").cloned()
        else {
            return;
        };
        let shape = |kind: &str, min: usize, max: Option<usize>, description: &str| {
            let mut o = variant(&base, kind);
            o.properties.insert(
                "users".into(),
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("MemberId"))
                    .min_items(Some(min))
                    .max_items(max)
                    .description(Some(description))
                    .into(),
            );
            o
        };
        let mut direct = shape("direct", 2, Some(2), "The two users (different ones).");
        direct.properties.remove("title");
        direct.properties.remove("owner");
        let group = shape(
            "group",
            1,
            None,
            "Its members (the owner among them or not).",
        );
        let mut one_of = OneOf::new();
        one_of.items = vec![Schema::Object(direct).into(), Schema::Object(group).into()];
        one_of.description = base.description.clone();
        components.schemas.insert(
            "ServiceCreateConversation".into(),
            Schema::OneOf(one_of).into(),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
