//! What every handler shares.

use crate::auth::Tokens;
use crate::auth::Verified;
use crate::config::Settings;
use crate::error::ApiError;
use chat_actors::registry::Registry;
use chat_actors::session::Bucket;
use chat_actors::Chat;
use chat_store::{Store, TokenFloor, UserRecord};
use chat_wire::{AudienceKey, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared by all workers: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub tokens: Arc<Tokens>,
    pub chat: Chat,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Set when a drain begins: `/readyz` answers 503 and `/ws` refuses new sockets.
    pub draining: Arc<AtomicBool>,
    /// Users' writes over HTTP (sends, reads, new conversations), per second.
    pub writes: Arc<WriteLimiter>,
    /// Users' token floors (revocations), as lately read.
    pub floors: Arc<TokenFloors>,
}

/// How long a user's token floor, once read, is trusted on this node. A revocation
/// made on this node is seen at once; one made on another node refuses this node's
/// HTTP calls within this long (open sockets close at once, through the bus).
pub const FLOOR_FRESH: Duration = Duration::from_secs(2);

/// The token floor of each user lately seen on HTTP: one read of Postgres per user
/// every [`FLOOR_FRESH`], not one per request.
#[derive(Default)]
pub struct TokenFloors {
    by_user: Mutex<HashMap<UserId, (TokenFloor, Instant)>>,
    /// The map is swept of stale floors when it grows to this (as the write limiter's).
    sweep_at: std::sync::atomic::AtomicUsize,
}

impl TokenFloors {
    /// Refuses a token that was revoked (401 `token revoked`) or whose user does not
    /// exist (401 `unknown user`).
    pub async fn admit(&self, store: &Store, token: Verified) -> Result<(), ApiError> {
        let now = Instant::now();
        let cached = {
            let map = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&token.user)
                .filter(|(_, at)| now.saturating_duration_since(*at) < FLOOR_FRESH)
                .map(|(f, _)| *f)
        };
        let floor = match cached {
            Some(f) => f,
            None => {
                let f = store.token_floor(token.user).await?;
                self.put(token.user, f);
                f
            }
        };
        match floor {
            TokenFloor::Unknown => Err(ApiError::unauthorized("unknown user")),
            f if f.admits(token.issued_at) => Ok(()),
            _ => Err(ApiError::unauthorized("token revoked")),
        }
    }

    /// Records a floor just read or set.
    pub fn put(&self, user: UserId, floor: TokenFloor) {
        let now = Instant::now();
        let mut map = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
        let sweep_at = self.sweep_at.load(Ordering::Relaxed).max(SWEEP_AT);
        if map.len() >= sweep_at {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < FLOOR_FRESH);
            self.sweep_at
                .store((map.len() * 2).max(SWEEP_AT), Ordering::Relaxed);
        }
        map.insert(user, (floor, now));
    }
}

/// A token bucket per user for writes over HTTP, at `limits.http_writes_per_sec`: a
/// user with a token cannot write without bound through HTTP any more than through a
/// socket. Service calls are not limited (the company's backend).
pub struct WriteLimiter {
    rate: u32,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_user: HashMap<UserId, Bucket>,
    /// The map is swept when it grows to this many users: twice what the last sweep
    /// left (at least [`SWEEP_AT`]), so sweeping costs O(1) per write however many
    /// users write at once.
    sweep_at: usize,
    /// Sweeps so far.
    sweeps: u64,
}

/// Buckets idle this long are full again, and forgotten when the map is swept.
const IDLE_BUCKET: Duration = Duration::from_secs(10);
/// The least number of users before the map is swept.
const SWEEP_AT: usize = 10_000;

impl WriteLimiter {
    pub fn new(rate: u32) -> Self {
        WriteLimiter {
            rate,
            buckets: Mutex::new(Buckets {
                by_user: HashMap::new(),
                sweep_at: SWEEP_AT,
                sweeps: 0,
            }),
        }
    }

    /// One write of `user`, or `rate_limited`.
    pub fn check(&self, user: UserId) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.by_user.len() >= buckets.sweep_at {
            buckets
                .by_user
                .retain(|_, b| now.saturating_duration_since(b.last_used()) < IDLE_BUCKET);
            buckets.sweep_at = (buckets.by_user.len() * 2).max(SWEEP_AT);
            buckets.sweeps += 1;
        }
        let ok = buckets
            .by_user
            .entry(user)
            .or_insert_with(|| Bucket::new(self.rate, now))
            .take(now);
        if ok {
            Ok(())
        } else {
            Err(ApiError::rate_limited(
                "too many writes; slow down (limits.http_writes_per_sec)",
            ))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_users_writing_at_once_sweep_the_limiter_rarely() {
        let limiter = WriteLimiter::new(10);
        for id in 0..50_000 {
            assert!(limiter.check(UserId(id)).is_ok());
        }
        let buckets = limiter.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // All are fresh, so nothing is forgotten; each sweep doubles the next bound.
        assert_eq!(buckets.by_user.len(), 50_000);
        assert!(buckets.sweeps <= 3, "swept {} times", buckets.sweeps);
    }

    #[test]
    fn a_user_past_the_rate_is_refused() {
        let limiter = WriteLimiter::new(5);
        let ok = (0..20).filter(|_| limiter.check(UserId(7)).is_ok()).count();
        assert!((5..=6).contains(&ok), "{ok} writes passed");
        assert!(
            limiter.check(UserId(8)).is_ok(),
            "another user is not limited"
        );
    }
}
