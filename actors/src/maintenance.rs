//! Retention upkeep: creates message partitions ahead of time and drops the ones whose
//! messages have all expired. Every node creates partitions ahead (creating one that
//! exists is a no-op), so a leader that is paused (SIGSTOP: it keeps its lock and its
//! sockets) never lets rows fall into a DEFAULT partition. Dropping and reclaiming are
//! done by one node at a time: whichever holds the store's [`UpkeepLease`] (a
//! session-level Postgres advisory lock on its own connection). When that node dies,
//! Postgres ends its session, the lock is free, and the next node to try takes over;
//! while it is only paused, expired partitions are dropped late, which costs space,
//! not correctness (every read filters by retention).

use chat_store::{Retention, UpkeepLease};
use std::time::Duration;

/// What upkeep needs to know.
#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    pub node: String,
    pub database_url: String,
    pub interval: Duration,
    pub partition_width: Duration,
    pub retention: Retention,
}

/// How many partition ranges to keep created ahead of now: enough to cover two upkeep
/// intervals, and at least three.
pub fn partitions_ahead(width: Duration, interval: Duration) -> u32 {
    let w = width.as_secs_f64().max(1.0);
    ((2.0 * interval.as_secs_f64() / w).ceil() as u32 + 1).max(3)
}

/// Runs forever on the current runtime.
pub async fn run(store: chat_store::Store, cfg: UpkeepConfig) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease: Option<UpkeepLease> = None;
    loop {
        tick.tick().await;
        if lease.as_ref().is_some_and(UpkeepLease::is_lost) {
            lease = None;
            metrics::gauge!(crate::metrics::UPKEEP_LEADER).set(0.0);
            tracing::warn!("upkeep leadership lost with its connection");
        }
        if lease.is_none() {
            lease = try_lead(&cfg).await;
            if lease.is_some() {
                metrics::gauge!(crate::metrics::UPKEEP_LEADER).set(1.0);
                tracing::info!(node = %cfg.node, "this node now runs retention upkeep");
            }
        }
        create_ahead(&store, &cfg).await;
        if lease.is_none() {
            continue;
        }
        upkeep(&store, &cfg).await;
    }
}

/// Creates the partitions of the next two upkeep intervals that do not exist yet.
async fn create_ahead(store: &chat_store::Store, cfg: &UpkeepConfig) {
    let ahead = partitions_ahead(cfg.partition_width, cfg.interval);
    if let Err(e) = store
        .ensure_partitions(chrono::Utc::now(), cfg.partition_width, ahead)
        .await
    {
        tracing::warn!(error = %e, "creating partitions failed");
    }
}

/// Tries to become the leader; the lease (and so the lock) is kept while leading.
async fn try_lead(cfg: &UpkeepConfig) -> Option<UpkeepLease> {
    match UpkeepLease::try_acquire(&cfg.database_url, &cfg.node).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(error = %e, "upkeep cannot reach postgres");
            None
        }
    }
}

/// The leader's part: expired rows and partitions go.
async fn upkeep(store: &chat_store::Store, cfg: &UpkeepConfig) {
    let now = chrono::Utc::now();
    let tiers = [
        ("normal", Some(cfg.retention.normal)),
        ("important", cfg.retention.important),
    ];
    for (tier, ttl) in tiers {
        let Some(ttl) = ttl else { continue };
        match store.reclaim_default(tier, ttl, now, 10_000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                tier,
                rows = n,
                "expired rows deleted from the default partition"
            ),
            Err(e) => tracing::warn!(error = %e, tier, "reclaiming the default partition failed"),
        }
        match store.drop_expired_partitions(tier, ttl, now).await {
            Ok(dropped) => {
                for d in dropped {
                    metrics::counter!(crate::metrics::PARTITIONS_DROPPED_TOTAL, "tier" => tier)
                        .increment(1);
                    metrics::histogram!(crate::metrics::PARTITION_DROP_SECONDS)
                        .record(d.took.as_secs_f64());
                }
            }
            Err(e) => tracing::warn!(error = %e, tier, "dropping expired partitions failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ahead_covers_two_intervals() {
        assert_eq!(
            partitions_ahead(Duration::from_secs(86_400), Duration::from_secs(3600)),
            3
        );
        assert_eq!(
            partitions_ahead(Duration::from_secs(1), Duration::from_secs(2)),
            5
        );
    }
}
