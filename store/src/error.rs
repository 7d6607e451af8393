use thiserror::Error;

/// What can go wrong in the store. Callers act on the variants: `Conflict` and
/// `NotFound` are the caller's fault, `Unavailable` means retry later.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A unique key is taken: the field that collided (username, external id).
    #[error("conflict: {0} is taken")]
    Conflict(&'static str),
    /// Postgres refused a value as such (a character it cannot store): the caller's
    /// input, not an outage.
    #[error("invalid value: {0}")]
    Invalid(&'static str),
    /// The caller may not do this (a block stands between two users, a direct
    /// conversation needs friendship): the reason, in the API's words.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A row the call needs does not exist.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// Postgres could not be reached or answered with an error; nothing was committed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed at start.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The server answers but has no database of the configured name.
    #[error("{0}")]
    NoDatabase(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict(match db.constraint() {
                    Some("users_username_key") => "username",
                    Some("users_external_id_key") => "external_id",
                    _ => "a unique value",
                });
            }
            if db.code() == &tokio_postgres::error::SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || db.code() == &tokio_postgres::error::SqlState::UNTRANSLATABLE_CHARACTER
            {
                return StoreError::Invalid("text holds a character that cannot be stored");
            }
            if db.code() == &tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION {
                return StoreError::NotFound("referenced row");
            }
            if db.code() == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME {
                return StoreError::NoDatabase(db.message().to_string());
            }
            // tokio-postgres says only "db error": name what the server said.
            return StoreError::Unavailable(format!(
                "{} ({}): {}",
                db.message(),
                db.code().code(),
                db.detail().unwrap_or("")
            ));
        }
        StoreError::Unavailable(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        if let deadpool_postgres::PoolError::Backend(e) = e {
            return StoreError::from(e);
        }
        StoreError::Unavailable(e.to_string())
    }
}
