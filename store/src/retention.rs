//! Retention by tier: how long `normal` and `important` messages are kept.

use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

/// The TTL of each tier. `important: None` keeps important messages forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub normal: Duration,
    pub important: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            normal: Duration::from_secs(30 * 24 * 3600),
            important: None,
        }
    }
}

/// The creation times before which messages of each tier have expired, at one instant.
/// Every read filters by these, so a TTL holds to the second before any partition is
/// dropped.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub normal: DateTime<Utc>,
    pub important: DateTime<Utc>,
}

fn before(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or_else(epoch)
}

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

impl Retention {
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Cutoffs {
        Cutoffs {
            normal: before(now, self.normal),
            important: self.important.map_or_else(epoch, |ttl| before(now, ttl)),
        }
    }
}
