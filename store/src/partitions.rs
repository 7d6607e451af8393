//! Time-range partitions of `messages`, created ahead of time.

use crate::error::StoreError;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The tiers, each a LIST partition of `messages` split by RANGE of `created_at`.
pub const TIERS: [&str; 2] = ["normal", "important"];

/// Start of the range of width `width` that holds `t`.
pub fn range_start(t: DateTime<Utc>, width: Duration) -> i64 {
    let w = width.as_secs().max(1) as i64;
    t.timestamp().div_euclid(w) * w
}

/// The name of a tier's partition starting at `start` (unix seconds).
pub fn partition_name(tier: &str, start: i64) -> String {
    format!("messages_{tier}_p{start}")
}

impl Store {
    /// Creates, for each tier, the partitions covering `now` and `ahead` ranges after it,
    /// where missing. Returns how many it created.
    pub async fn ensure_partitions(
        &self,
        now: DateTime<Utc>,
        width: Duration,
        ahead: u32,
    ) -> Result<usize, StoreError> {
        let w = width.as_secs().max(1) as i64;
        let first = range_start(now, width);
        let client = self.pool().get().await?;
        let mut created = 0;
        for tier in TIERS {
            for i in 0..=i64::from(ahead) {
                let start = first + i * w;
                let name = partition_name(tier, start);
                let exists = client
                    .query_opt("SELECT 1 FROM pg_class WHERE relname = $1", &[&name])
                    .await?
                    .is_some();
                if exists {
                    continue;
                }
                // Names and bounds are built from integers only: nothing from input.
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF messages_{tier} \
                     FOR VALUES FROM (to_timestamp({start})) TO (to_timestamp({end}))",
                    end = start + w
                );
                match client.batch_execute(&sql).await {
                    Ok(()) => created += 1,
                    // Another node created it (or rows for the range sit in the default
                    // partition): not fatal, the default partition keeps them.
                    Err(e) => {
                        tracing::warn!(partition = %name, error = %e, "partition not created")
                    }
                }
            }
        }
        Ok(created)
    }
}
