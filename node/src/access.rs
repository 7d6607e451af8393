//! The access log and the HTTP request metrics: one line and one count per request,
//! with its method, its route pattern (never the path with its ids, never the query
//! string, which may hold a token), its status, its duration and who called.
//!
//! Lines go to the target `chat_node::access` at info (`RUST_LOG=info,chat_node::access=warn`
//! turns them off); refusals of a token or a service key and refused WebSocket
//! handshakes are warnings with their reason, answers of 500 and 503 too.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use chat_actors::metrics as m;
use std::time::Instant;

/// Who an extractor found the caller to be; put in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    User(i64),
    Service,
}

/// The contract's error an answer carries; put in the response's extensions by
/// [`crate::error::ApiError`].
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// Marks the request as made by `caller`.
pub fn note_caller(req: &actix_web::HttpRequest, caller: Caller) {
    req.extensions_mut().insert(caller);
}

/// The middleware (`App::wrap(from_fn(observe))`).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let res = next.call(req).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let request = res.request();
    let method = request.method().as_str().to_owned();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    metrics::counter!(
        m::HTTP_REQUESTS_TOTAL,
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_SECONDS, "method" => method.clone(), "route" => route.clone())
        .record(ms / 1e3);
    let caller = request.extensions().get::<Caller>().copied();
    let user = match caller {
        Some(Caller::User(id)) => id.to_string(),
        Some(Caller::Service) => "service".to_owned(),
        None => "-".to_owned(),
    };
    let refusal = res.response().extensions().get::<Refusal>().cloned();
    let ms = (ms * 100.0).round() / 100.0;
    // Probes of load balancers and scrapers come every few seconds: counted, not logged.
    let probe = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
    match refusal {
        None if probe => tracing::debug!(
            target: "chat_node::access", %method, %route, status, ms, %user, "request"
        ),
        None => tracing::info!(
            target: "chat_node::access", %method, %route, status, ms, %user, "request"
        ),
        Some(r) if status == 401 || status == 403 || route == "/ws" || status >= 500 => {
            tracing::warn!(
                target: "chat_node::access",
                %method, %route, status, ms, %user, code = r.code, reason = %r.message,
                "request refused"
            )
        }
        Some(r) => tracing::info!(
            target: "chat_node::access",
            %method, %route, status, ms, %user, code = r.code, reason = %r.message,
            "request"
        ),
    }
    Ok(res)
}
