//! Offline notifications: the worker every node runs while `notify.url` is set.
//!
//! The group commit that stores a message people write also queues it
//! (`notify_queue`, in the same transaction), and wakes this worker; nothing else of a
//! send waits for notifications, so a slow or dead endpoint never slows or fails one.
//! The worker, on any node (rows are claimed with `SKIP LOCKED`):
//!
//! 1. expands queued messages into notifications (`notify_outbox`): one per member to
//!    tell, that is not the sender, not a member who read it or muted the
//!    conversation, and not one with a socket open anywhere in the cluster (asked of
//!    presence); with `notify.delay`, those are looked at again that long after, and
//!    told then if they still have not read it;
//! 2. POSTs due notifications in batches of `notify.batch`, signed with
//!    `X-Chat-Signature: sha256=<hex HMAC-SHA256 of the body>`; a 2xx answer deletes
//!    them, anything else moves each by a backoff (doubling from 1 s with jitter, up
//!    to `notify.max_backoff`) and ends the round, so a dead endpoint gets one POST
//!    per `notify.poll` while notifications that were never tried go out the moment
//!    it answers again;
//! 3. drops what is older than `notify.max_age`, and the oldest notifications past
//!    `notify.max_pending`, so an endpoint down for long fills Postgres no further;
//!    reports the queue's depth.
//!
//! Delivery is at least once: a node that dies between the endpoint's answer and the
//! delete, or mid-POST, leaves its claimed notifications to be POSTed again when their
//! hold runs out. The `id` of a notification is the same on every try.

use crate::config::NotifySettings;
use chat_actors::metrics as m;
use chat_actors::online::OnlineUsers;
use chat_store::{Claimed, Store};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Chat-Signature";

/// The worker drops old work and reads the queue's depth every this many polls.
const UPKEEP_EVERY_POLLS: u32 = 15;

/// Why a POST did not take its batch.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("endpoint answered {0}")]
    Status(u16),
    #[error("{0}")]
    Send(String),
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under the key `mac` was made with.
pub fn signature(mac: &Hmac<Sha256>, body: &[u8]) -> String {
    let mut mac = mac.clone();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The wait before the next try of a notification whose `attempts`-th POST failed:
/// a second doubled per failed try, at most `max`, then a random point of its upper
/// half (so the notifications of one outage do not all come back at once).
pub fn backoff(attempts: i32, max: Duration) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = Duration::from_secs(1u64 << doublings).min(max);
    let half = full / 2;
    half + full
        .saturating_sub(half)
        .mul_f64(rand::rng().random::<f64>())
}

/// The worker of one node; [`Notifier::run`] runs it until the node stops.
pub struct Notifier {
    store: Store,
    online: Arc<dyn OnlineUsers>,
    wake: Arc<Notify>,
    cfg: NotifySettings,
    mac: Hmac<Sha256>,
    client: awc::Client,
    node: String,
    /// Since when POSTs fail (one warning per outage, not one per POST).
    failing_since: std::cell::Cell<Option<Instant>>,
}

impl Notifier {
    /// A worker that POSTs to `cfg.url`; `wake` is the store's handle from
    /// [`Store::queue_notifications`].
    pub fn new(
        store: Store,
        online: Arc<dyn OnlineUsers>,
        wake: Arc<Notify>,
        cfg: NotifySettings,
        node: String,
    ) -> Result<Notifier, hmac::digest::InvalidLength> {
        let mac = Hmac::<Sha256>::new_from_slice(cfg.secret.as_bytes())?;
        let client = awc::Client::builder()
            .timeout(cfg.timeout)
            .disable_redirects()
            .finish();
        Ok(Notifier {
            store,
            online,
            wake,
            cfg,
            mac,
            client,
            node,
            failing_since: std::cell::Cell::new(None),
        })
    }

    /// Works until the node stops: a round at each wake-up of the store (a commit
    /// queued messages) and at least every `notify.poll`.
    pub async fn run(self) {
        tracing::info!(url = %self.cfg.url, "offline notifications on");
        let mut last_upkeep: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll) => {}
            }
            self.expand().await;
            self.send().await;
            if last_upkeep.is_none_or(|t| t.elapsed() >= self.cfg.poll * UPKEEP_EVERY_POLLS) {
                last_upkeep = Some(Instant::now());
                self.upkeep().await;
            }
        }
    }

    /// Turns every due queued message into notifications.
    async fn expand(&self) {
        let limit = i64::try_from(self.cfg.batch).unwrap_or(100);
        loop {
            let online = self.online.clone();
            let round = self
                .store
                .expand_notifications(limit, self.cfg.delay, move |users| async move {
                    online.online_of(&users).await
                })
                .await;
            match round {
                Ok(e) => {
                    metrics::counter!(m::NOTIFY_QUEUED_TOTAL).increment(e.queued as u64);
                    if e.claimed < self.cfg.batch {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expanding queued notifications failed");
                    return;
                }
            }
        }
    }

    /// POSTs due notifications, a batch at a time, until none is due or one fails.
    async fn send(&self) {
        // Longer than a POST may take: a node that dies mid-POST leaves its batch due
        // again after this.
        let hold = self.cfg.timeout * 2 + Duration::from_secs(1);
        let limit = i64::try_from(self.cfg.batch).unwrap_or(100);
        loop {
            let batch = match self.store.claim_notifications(limit, hold).await {
                Ok(b) if b.is_empty() => return,
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming notifications failed");
                    return;
                }
            };
            let full = batch.len() == self.cfg.batch;
            let ids: Vec<String> = batch.iter().map(|c| c.id.clone()).collect();
            match self.post(&batch).await {
                Ok(()) => {
                    if let Some(since) = self.failing_since.take() {
                        tracing::info!(
                            down_for = ?since.elapsed(),
                            "notification endpoint takes POSTs again"
                        );
                    }
                    let now = chrono::Utc::now();
                    for c in &batch {
                        let waited = (now - c.stored_at).num_microseconds().unwrap_or(0);
                        metrics::histogram!(m::NOTIFY_DELIVERY_SECONDS)
                            .record(waited.max(0) as f64 / 1e6);
                    }
                    metrics::counter!(m::NOTIFY_DELIVERED_TOTAL).increment(ids.len() as u64);
                    if let Err(e) = self.store.notifications_delivered(&ids).await {
                        // They are POSTed again when their hold ends: at least once.
                        tracing::warn!(error = %e, "recording delivered notifications failed");
                        return;
                    }
                }
                Err(why) => {
                    metrics::counter!(m::NOTIFY_FAILED_POSTS_TOTAL).increment(1);
                    if self.failing_since.get().is_none() {
                        self.failing_since.set(Some(Instant::now()));
                        tracing::warn!(
                            error = %why,
                            url = %self.cfg.url,
                            "notification endpoint fails; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(error = %why, notifications = batch.len(), "POST failed");
                    }
                    let waits: Vec<(String, Duration)> = batch
                        .iter()
                        .map(|c| (c.id.clone(), backoff(c.attempts, self.cfg.max_backoff)))
                        .collect();
                    if let Err(e) = self.store.retry_notifications(&waits).await {
                        tracing::warn!(error = %e, "rescheduling notifications failed");
                    }
                    return;
                }
            }
            if !full {
                return;
            }
        }
    }

    /// One POST of `batch`.
    async fn post(&self, batch: &[Claimed]) -> Result<(), PostError> {
        let bodies: Vec<&serde_json::Value> = batch.iter().map(|c| &c.body).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "notifications": bodies }))
            .map_err(|e| PostError::Send(format!("encoding: {e}")))?;
        let mut resp = self
            .client
            .post(self.cfg.url.trim())
            .insert_header(("Content-Type", "application/json"))
            .insert_header((SIGNATURE_HEADER, signature(&self.mac, &body)))
            .insert_header(("X-Chat-Node", self.node.as_str()))
            .send_body(body)
            .await
            .map_err(|e| PostError::Send(e.to_string()))?;
        // Read the answer, so the connection can carry the next POST.
        let _ = resp.body().limit(64 * 1024).await;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(PostError::Status(resp.status().as_u16()))
        }
    }

    /// Drops what waited past `notify.max_age` and the oldest past
    /// `notify.max_pending`; reads the queue's depth.
    async fn upkeep(&self) {
        match self.store.drop_old_notifications(self.cfg.max_age).await {
            Ok((notifications, messages)) if notifications + messages > 0 => {
                metrics::counter!(m::NOTIFY_DROPPED_TOTAL)
                    .increment((notifications + messages) as u64);
                tracing::warn!(
                    notifications,
                    messages,
                    "dropped notifications older than notify.max_age"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dropping old notifications failed"),
        }
        // One reading of the depth serves the cap and the gauges.
        let mut depth = match self.store.notify_depth().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading the notification queue failed");
                return;
            }
        };
        let over = depth.notifications - self.cfg.max_pending;
        match self.store.drop_oldest_notifications(over).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!(m::NOTIFY_DROPPED_TOTAL).increment(n);
                depth.notifications -= i64::try_from(n).unwrap_or(0);
                tracing::warn!(
                    dropped = n,
                    max_pending = self.cfg.max_pending,
                    "dropped the oldest notifications past notify.max_pending"
                );
            }
            Err(e) => tracing::warn!(error = %e, "capping the notification queue failed"),
        }
        let [msgs, notes] = m::NOTIFY_STAGES;
        metrics::gauge!(m::NOTIFY_PENDING, "stage" => msgs).set(depth.messages as f64);
        metrics::gauge!(m::NOTIFY_PENDING, "stage" => notes).set(depth.notifications as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_of_the_body() -> Result<(), hmac::digest::InvalidLength> {
        // RFC 4231, test case 2.
        let mac = Hmac::<Sha256>::new_from_slice(b"Jefe")?;
        assert_eq!(
            signature(&mac, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        Ok(())
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let max = Duration::from_secs(60);
        for _ in 0..50 {
            let first = backoff(1, max);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let fourth = backoff(4, max);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8));
            let late = backoff(40, max);
            assert!(late >= Duration::from_secs(30) && late <= max);
        }
    }
}
