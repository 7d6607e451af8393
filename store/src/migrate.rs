//! Migrations from `sql/`, embedded at compile time and applied at start.

use crate::error::StoreError;
use deadpool_postgres::Pool;

refinery::embed_migrations!("../sql");

/// Advisory lock key held while migrating, so nodes starting together take turns.
const MIGRATION_LOCK: i64 = 0x0063_6861_746d_6967; // "chatmig"

/// Applies every migration not yet recorded in `refinery_schema_history`. A second
/// run applies nothing. Nodes that start at once serialise on an advisory lock.
pub async fn migrate(pool: &Pool) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    // The runner creates its history table with IF NOT EXISTS; every start after the
    // first would log Postgres' notice that it already exists. Set outside the lock, so
    // no failure here can leave the lock held.
    client
        .batch_execute("SET client_min_messages = warning")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrations::runner()
        .run_async(&mut **client)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()));
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    client.batch_execute("RESET client_min_messages").await?;
    Ok(result?.applied_migrations().len())
}

/// Tables of the `public` schema when the database holds some but no record of the
/// node's migrations (another application's database); `None` for an empty database
/// or one the node migrated before.
pub async fn foreign_tables(pool: &Pool) -> Result<Option<Vec<String>>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables
                             WHERE schemaname = 'public' AND tablename = 'refinery_schema_history')
                    AS migrated,
                    ARRAY(SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
                           ORDER BY tablename LIMIT 5) AS tables",
            &[],
        )
        .await?;
    let migrated: bool = row.try_get("migrated")?;
    let tables: Vec<String> = row.try_get("tables")?;
    Ok((!migrated && !tables.is_empty()).then_some(tables))
}
