//! Operations endpoints: liveness, readiness, metrics.

use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chat_wire::http::Health;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        node: state.settings.node.id.clone(),
        reasons: vec![],
    })
}

/// Ready for traffic: Postgres and the bus answer, and the node is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut reasons = Vec::new();
    if state.is_draining() {
        reasons.push("draining".to_string());
    }
    if let Err(e) = state.store().ping().await {
        tracing::warn!(error = %e, "readiness: postgres does not answer");
        reasons.push("postgres unavailable".to_string());
    }
    if !state.chat.bus.is_up() {
        reasons.push("bus unavailable".to_string());
    }
    let ready = reasons.is_empty();
    let body = Health {
        status: if ready { "ready" } else { "not ready" }.into(),
        node: state.settings.node.id.clone(),
        reasons,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
