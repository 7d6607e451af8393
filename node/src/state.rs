//! What every handler shares.

use crate::auth::Tokens;
use crate::config::Settings;
use crate::error::ApiError;
use chat_actors::registry::Registry;
use chat_actors::Chat;
use chat_store::{Store, UserRecord};
use chat_wire::{AudienceKey, UserId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared by all workers: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub tokens: Arc<Tokens>,
    pub chat: Chat,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Set when a drain begins: `/readyz` answers 503 and `/ws` refuses new sockets.
    pub draining: Arc<AtomicBool>,
}

/// The caller's record and the broadcast audiences it belongs to right now.
pub struct Caller {
    pub user: UserRecord,
    pub audiences: Vec<AudienceKey>,
}

impl AppState {
    /// The Postgres store (shared with the actors).
    pub fn store(&self) -> &Store {
        &self.chat.store
    }

    /// This node's Registry actor.
    pub fn registry(&self) -> &actix::Addr<Registry> {
        &self.chat.registry
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Loads the caller. A valid token for a user that does not exist is refused.
    pub async fn caller(&self, id: UserId) -> Result<Caller, ApiError> {
        let user = self
            .store()
            .user(id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown user"))?;
        let audiences = user.attributes.audiences();
        Ok(Caller { user, audiences })
    }
}
