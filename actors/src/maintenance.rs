//! Partition upkeep, run by whichever node holds a Postgres advisory lock.

use chat_store::Store;
use std::time::Duration;

/// What upkeep needs to know.
#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    pub interval: Duration,
    pub partition_width: Duration,
}

/// How many partition ranges are kept created ahead of now.
pub const PARTITIONS_AHEAD: u32 = 3;

/// Runs upkeep forever on the current runtime: every `interval`, create partitions
/// ahead. (The advisory-lock leader and partition drops come with retention.)
pub async fn run(store: Store, cfg: UpkeepConfig) {
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tick.tick().await;
        if let Err(e) = store
            .ensure_partitions(chrono::Utc::now(), cfg.partition_width, PARTITIONS_AHEAD)
            .await
        {
            tracing::warn!(error = %e, "partition upkeep failed");
        }
    }
}
