//! The upkeep-leader lease: a session-level Postgres advisory lock held on a connection
//! of its own (not a pooled one), so that exactly one node runs retention upkeep. When
//! the leader dies, Postgres ends its session, the lock is free, and the next node to
//! try takes over.

use crate::error::StoreError;
use std::time::Duration;
use tokio_postgres::NoTls;

/// Advisory lock key of the upkeep leader.
pub const UPKEEP_LOCK: i64 = 0x0063_6861_7475_706b; // "chatupk"

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1) AS locked";

/// Longest wait for the lease's own connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Leadership of upkeep, held as long as this value (and its connection) lives. The
/// connection's `application_name` is `chat-upkeep:<node>`, so the holder can be read
/// from `pg_locks` joined with `pg_stat_activity`.
pub struct UpkeepLease {
    client: tokio_postgres::Client,
}

impl std::fmt::Debug for UpkeepLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpkeepLease")
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl UpkeepLease {
    /// Connects on behalf of `node` and tries the lock: `Some` when this node now leads,
    /// `None` when another session holds it. The connection's task runs on the current
    /// runtime.
    pub async fn try_acquire(
        database_url: &str,
        node: &str,
    ) -> Result<Option<UpkeepLease>, StoreError> {
        let mut pg: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Unavailable(e.to_string()))?;
        pg.application_name(format!("chat-upkeep:{node}"));
        pg.connect_timeout(CONNECT_TIMEOUT);
        let (client, conn) = pg.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client.query_one(TRY_LOCK, &[&UPKEEP_LOCK]).await?;
        let locked: bool = row.try_get("locked")?;
        Ok(locked.then_some(UpkeepLease { client }))
    }

    /// Whether the connection, and with it the lock, is gone.
    pub fn is_lost(&self) -> bool {
        self.client.is_closed()
    }
}
