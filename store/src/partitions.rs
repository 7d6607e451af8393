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

/// The name of a tier's partition covering `[start, end)` (unix seconds). Both bounds
/// are in the name, so upkeep knows when a partition has wholly expired without
/// parsing the catalog's bound expressions.
pub fn partition_name(tier: &str, start: i64, end: i64) -> String {
    format!("messages_{tier}_p{start}_{end}")
}

/// The `[start, end)` bounds of one of our partition names.
pub fn parse_partition_name(tier: &str, name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix(&format!("messages_{tier}_p"))?;
    let (start, end) = rest.split_once('_')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

/// A partition dropped by upkeep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub name: String,
    pub took: Duration,
}

impl Store {
    /// Whether messages of `tier` expire (its rows are kept in range partitions that
    /// upkeep drops).
    pub fn expires(&self, tier: &str) -> bool {
        match tier {
            "important" => self.retention().important.is_some(),
            _ => true,
        }
    }

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
            // A tier that never expires has nothing to drop: its rows stay in its
            // DEFAULT partition, one table, instead of a partition a day for ever
            // (every statement over `messages` pays for each partition).
            if !self.expires(tier) {
                continue;
            }
            // Creating a partition scans the tier's DEFAULT partition under an exclusive
            // lock. A range that has already begun is only created while the default
            // is empty (a fresh database); later ones are created ahead, before any row
            // can fall into the default.
            let default_empty: bool = client
                .query_one(
                    &format!("SELECT NOT EXISTS (SELECT 1 FROM messages_{tier}_default) AS empty"),
                    &[],
                )
                .await?
                .try_get("empty")?;
            for i in 0..=i64::from(ahead) {
                let start = first + i * w;
                if start <= now.timestamp() && !default_empty {
                    continue;
                }
                let name = partition_name(tier, start, start + w);
                let exists = client
                    .query_opt("SELECT 1 FROM pg_class WHERE relname = $1", &[&name])
                    .await?
                    .is_some();
                if exists {
                    continue;
                }
                // Names and bounds are built from integers only: nothing from input.
                // Creating a partition locks the parent exclusively for a moment; a
                // short lock_timeout keeps writers from queueing behind a wait for it.
                let sql = format!(
                    "SET lock_timeout = '100ms'; \
                     CREATE TABLE IF NOT EXISTS {name} PARTITION OF messages_{tier} \
                     FOR VALUES FROM (to_timestamp({start})) TO (to_timestamp({end})); \
                     RESET lock_timeout",
                    end = start + w
                );
                match client.batch_execute(&sql).await {
                    Ok(()) => created += 1,
                    // Another node created it (or rows for the range sit in the default
                    // partition): not fatal, the default partition keeps them.
                    Err(e) => {
                        let _ = client.batch_execute("RESET lock_timeout").await;
                        tracing::warn!(partition = %name, error = %e, "partition not created")
                    }
                }
            }
        }
        Ok(created)
    }

    /// Drops every range partition of `tier` whose rows have all expired: its upper
    /// bound is at or before `now - ttl`. A drop needs an exclusive lock on the tier's
    /// parent table for a moment. While it waits for that lock, every writer queues
    /// behind it, so the wait is cut short (`lock_timeout` 100 ms) and the drop is
    /// retried at the next upkeep instead.
    pub async fn drop_expired_partitions(
        &self,
        tier: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Dropped>, StoreError> {
        let cutoff = now.timestamp() - ttl.as_secs() as i64;
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT c.relname::text AS name FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid
                   JOIN pg_class p ON p.oid = i.inhparent
                  WHERE p.relname = $1",
                &[&format!("messages_{tier}")],
            )
            .await?;
        let mut dropped = Vec::new();
        for row in rows {
            let name: String = row.try_get("name")?;
            let Some((_, end)) = parse_partition_name(tier, &name) else {
                continue;
            };
            if end > cutoff {
                continue;
            }
            let started = std::time::Instant::now();
            // The name was parsed back into integers above: nothing from input.
            let sql = format!(
                "SET lock_timeout = '100ms'; DROP TABLE IF EXISTS {name}; RESET lock_timeout"
            );
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    let took = started.elapsed();
                    tracing::info!(partition = %name, took_ms = took.as_millis() as u64, "expired partition dropped");
                    dropped.push(Dropped { name, took });
                }
                Err(e) => {
                    let _ = client.batch_execute("RESET lock_timeout").await;
                    tracing::warn!(partition = %name, error = %e, "expired partition not dropped yet");
                }
            }
        }
        Ok(dropped)
    }

    /// Deletes expired rows from a tier's DEFAULT partition, `batch` at a time. The
    /// default only holds rows that arrived before their range partition existed (an
    /// upkeep outage); everything else expires by whole partitions.
    pub async fn reclaim_default(
        &self,
        tier: &str,
        ttl: Duration,
        now: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        // A TTL too long to subtract expires nothing (the epoch as cutoff).
        let cutoff = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or_default();
        let client = self.pool().get().await?;
        let sql = format!(
            "DELETE FROM messages_{tier}_default WHERE ctid IN \
             (SELECT ctid FROM messages_{tier}_default WHERE created_at <= $1 LIMIT $2)"
        );
        Ok(client.execute(&sql, &[&cutoff, &batch]).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = partition_name("normal", 100, 200);
        assert_eq!(n, "messages_normal_p100_200");
        assert_eq!(parse_partition_name("normal", &n), Some((100, 200)));
        assert_eq!(parse_partition_name("important", &n), None);
        assert_eq!(
            parse_partition_name("normal", "messages_normal_default"),
            None
        );
    }

    #[test]
    fn ranges_align() {
        let t = DateTime::from_timestamp(1_000_005, 0).unwrap_or_default();
        assert_eq!(range_start(t, Duration::from_secs(10)), 1_000_000);
    }
}
