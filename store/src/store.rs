//! [`Store`]: the pool, migrations and retention settings. The methods of each domain
//! live in their own files (`users.rs`, `conversations.rs`, `messages.rs`, `cursors.rs`,
//! `sync.rs`, `partitions.rs`), each with the statements it runs.

use crate::error::StoreError;
use crate::retention::{Cutoffs, Retention};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::time::Duration;
use tokio_postgres::{NoTls, Row};

const PING: &str = "SELECT 1";

/// Server options of every pooled connection beyond the timeouts (see
/// [`Store::connect`]).
const GENERIC_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

/// How to reach Postgres and what to keep.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub pool_size: usize,
    /// Longest wait for a pooled connection before a call fails with `Unavailable`.
    pub acquire_timeout: Duration,
    /// Longest a statement may run, and a transaction sit idle, on the server: a node
    /// that stalls mid-transaction cannot hold a conversation's row lock for long.
    pub statement_timeout: Duration,
    pub retention: Retention,
    /// Connections of the pool group commits run on (apart from `pool_size`).
    pub write_pool_size: usize,
    /// How long a send's cid is remembered: a resend within it is answered with the
    /// stored message and never stored twice.
    pub dedupe_window: Duration,
    /// How long senders may edit and recall their messages.
    pub entry_windows: crate::messages::EntryWindows,
}

/// A statement parameter.
pub(crate) type Param<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

/// The Postgres store. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    write_pool: Pool,
    retention: Retention,
    dedupe_window: Duration,
    entry_windows: crate::messages::EntryWindows,
    /// Set while messages are queued for offline notifications: woken after each
    /// group commit that queued some.
    notify: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// Builds one pool of `size` connections with the server settings `options`.
fn build_pool(config: &StoreConfig, size: usize, options: &str) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Unavailable(e.to_string()))?;
    let ms = config.statement_timeout.as_millis().max(1);
    pg.options(format!(
        "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms} {options}"
    ))
    .keepalives(true)
    .keepalives_idle(Duration::from_secs(30))
    .tcp_user_timeout(config.statement_timeout)
    .connect_timeout(config.acquire_timeout);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(config.acquire_timeout),
            create: Some(config.acquire_timeout),
            recycle: Some(config.acquire_timeout),
        })
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl Store {
    /// Builds the pools and checks that Postgres answers. Does not migrate.
    ///
    /// Group commits run on a pool of their own (`write_pool_size` connections), so
    /// reads never wait behind writes for a connection. Every connection keeps
    /// generic plans (`plan_cache_mode = force_generic_plan`): a statement is planned
    /// once per connection and its partitions are pruned when it runs. Left to
    /// itself, Postgres plans a statement over a partitioned table afresh at every
    /// call (a custom plan over every partition of `messages`), which costs about
    /// 150 ms a call at 400 partitions per tier against 1 to 5 ms for the generic
    /// plan.
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let pool = build_pool(config, config.pool_size, GENERIC_PLANS)?;
        let write_pool = build_pool(config, config.write_pool_size, GENERIC_PLANS)?;
        let store = Store {
            pool,
            write_pool,
            retention: config.retention,
            dedupe_window: config.dedupe_window,
            entry_windows: config.entry_windows,
            notify: None,
        };
        store.ping().await?;
        Ok(store)
    }

    /// From now on, group commits queue the messages people write for offline
    /// notifications (`notify_queue`), in their own transaction; the returned handle
    /// is woken after each commit that queued some. Call before the store is cloned
    /// into the writer.
    pub fn queue_notifications(&mut self) -> std::sync::Arc<tokio::sync::Notify> {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        self.notify = Some(wake.clone());
        wake
    }

    /// The wake-up of the notification worker, while messages are queued.
    pub(crate) fn notify_wake(&self) -> Option<&std::sync::Arc<tokio::sync::Notify>> {
        self.notify.as_ref()
    }

    /// The connections group commits run on.
    pub(crate) fn write_pool(&self) -> &Pool {
        &self.write_pool
    }

    /// Sends stored after this instant are found again by their cid.
    pub(crate) fn dedupe_since(&self) -> DateTime<Utc> {
        chrono::Duration::from_std(self.dedupe_window)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .unwrap_or_default()
    }

    /// How long a cid is remembered.
    pub(crate) fn entry_windows(&self) -> crate::messages::EntryWindows {
        self.entry_windows
    }

    pub fn dedupe_window(&self) -> Duration {
        self.dedupe_window
    }

    /// Tables of another application in the database (see
    /// [`crate::migrate::foreign_tables`]).
    pub async fn foreign_tables(&self) -> Result<Option<Vec<String>>, StoreError> {
        crate::migrate::foreign_tables(&self.pool).await
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        crate::migrate::migrate(&self.pool).await
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The retention cutoffs as of now, for the statements that read messages.
    pub(crate) fn cutoffs(&self) -> Cutoffs {
        self.retention.cutoffs(Utc::now())
    }

    /// Runs one statement (prepared once per connection, then cached) on a pooled
    /// connection and returns its rows. Calls of several statements on one connection
    /// (a transaction, a pipeline) take the connection themselves.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }

    /// [`Store::query`] for a statement that returns exactly one row.
    pub(crate) async fn query_one(
        &self,
        sql: &str,
        params: &[&Param<'_>],
    ) -> Result<Row, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_one(&stmt, params).await?)
    }

    /// [`Store::query`] for a statement that returns at most one row.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&Param<'_>],
    ) -> Result<Option<Row>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }

    /// `SELECT 1` on a pooled connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.query_one(PING, &[]).await?;
        Ok(())
    }
}
