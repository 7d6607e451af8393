//! Users: registration, provisioning, login lookup, search and attributes.

use crate::error::StoreError;
use crate::sql::ids;
use crate::store::Store;
use chat_wire::http::UserSummary;
use chat_wire::{Attributes, ProfileChange, UserId};

const INSERT_USER: &str =
    "INSERT INTO users (username, display_name, password_hash, external_id, org, roles, jobs)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

const PROVISION_USER: &str =
    "INSERT INTO users (username, display_name, external_id, org, roles, jobs)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (external_id) DO NOTHING RETURNING id";

const USER_BY_EXTERNAL_ID: &str = "SELECT id FROM users WHERE external_id = $1";

const USER_AUTH: &str = "SELECT id, password_hash FROM users
     WHERE username = $1 AND id <> 0 AND deleted_at IS NULL";

const USER_BY_ID: &str =
    "SELECT id, username, display_name, avatar_url, org, roles, jobs, attributes_version
     FROM users WHERE id = $1 AND id <> 0 AND deleted_at IS NULL";

/// `$2`: the new display name or NULL (kept); `$3`: whether to set the avatar to `$4`
/// (NULL removes it).
const UPDATE_PROFILE: &str = "UPDATE users
        SET display_name = COALESCE($2, display_name),
            avatar_url = CASE WHEN $3 THEN $4 ELSE avatar_url END
      WHERE id = $1 AND id <> 0
  RETURNING id, username, display_name, avatar_url, org, roles, jobs, attributes_version";

const SEARCH_USERS: &str = "SELECT id, username, display_name, avatar_url FROM users
     WHERE username LIKE $1 ESCAPE '\\' AND id <> 0 AND deleted_at IS NULL
     ORDER BY username LIMIT $2";

/// The version is counted by a trigger (sql/V4) when the attributes change.
const SET_ATTRIBUTES: &str = "UPDATE users SET org = $2, roles = $3, jobs = $4
     WHERE id = $1 AND id <> 0 RETURNING attributes_version";

const ATTRIBUTES_OF: &str =
    "SELECT id, org, roles, jobs, attributes_version FROM users WHERE id = ANY($1::bigint[]) AND id <> 0";

/// Any user, deleted or not (the system user 0 too: the sender of system entries).
const USER_SUMMARY: &str = "SELECT id, username, display_name, avatar_url,
       deleted_at IS NOT NULL AS deleted FROM users WHERE id = $1";

const COUNT_USERS: &str =
    "SELECT count(*) AS n FROM users WHERE id = ANY($1::bigint[]) AND id <> 0 AND deleted_at IS NULL";

/// A user to create with a password (register) or without (provisioned).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub external_id: Option<String>,
    pub attributes: Attributes,
}

/// What login needs.
#[derive(Debug, Clone)]
pub struct UserAuth {
    pub id: UserId,
    pub password_hash: Option<String>,
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    /// Set by the user (`PATCH /me`); `None` when they have none.
    pub avatar_url: Option<String>,
    pub attributes: Attributes,
    /// Counts every change of `attributes`: of two reads, the higher is the newer.
    pub attributes_version: i64,
}

/// A user's attributes with their version (see [`UserRecord::attributes_version`]).
#[derive(Debug, Clone)]
pub struct VersionedAttributes {
    pub user: UserId,
    pub attributes: Attributes,
    pub version: i64,
}

/// The attributes of a row that selected `org`, `roles` and `jobs`.
fn attributes(row: &tokio_postgres::Row) -> Result<Attributes, StoreError> {
    Ok(Attributes {
        org: row.try_get("org")?,
        roles: row.try_get("roles")?,
        jobs: row.try_get("jobs")?,
    })
}

/// The user in a row of the columns of [`USER_BY_ID`].
fn record(row: &tokio_postgres::Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId(row.try_get("id")?),
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        avatar_url: row.try_get("avatar_url")?,
        attributes: attributes(row)?,
        attributes_version: row.try_get("attributes_version")?,
    })
}

/// The `LIKE` pattern (escape `\`) of the strings that start with `prefix`.
fn escape_like(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// Creates a user; `Conflict` if the username is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<UserId, StoreError> {
        let row = self
            .query_one(
                INSERT_USER,
                &[
                    &user.username,
                    &user.display_name,
                    &user.password_hash,
                    &user.external_id,
                    &user.attributes.org,
                    &user.attributes.roles,
                    &user.attributes.jobs,
                ],
            )
            .await?;
        Ok(UserId(row.try_get("id")?))
    }

    /// Creates a user of the company's identity system once per `external_id`.
    /// Returns the id and whether it was created now.
    pub async fn provision_user(&self, user: &NewUser) -> Result<(UserId, bool), StoreError> {
        let row = self
            .query_opt(
                PROVISION_USER,
                &[
                    &user.username,
                    &user.display_name,
                    &user.external_id,
                    &user.attributes.org,
                    &user.attributes.roles,
                    &user.attributes.jobs,
                ],
            )
            .await?;
        if let Some(row) = row {
            return Ok((UserId(row.try_get("id")?), true));
        }
        let row = self
            .query_opt(USER_BY_EXTERNAL_ID, &[&user.external_id])
            .await?
            .ok_or(StoreError::Conflict("external_id"))?;
        Ok((UserId(row.try_get("id")?), false))
    }

    pub async fn user_auth(&self, username: &str) -> Result<Option<UserAuth>, StoreError> {
        let Some(row) = self.query_opt(USER_AUTH, &[&username]).await? else {
            return Ok(None);
        };
        Ok(Some(UserAuth {
            id: UserId(row.try_get("id")?),
            password_hash: row.try_get("password_hash")?,
        }))
    }

    pub async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let Some(row) = self.query_opt(USER_BY_ID, &[&id.0]).await? else {
            return Ok(None);
        };
        Ok(Some(record(&row)?))
    }

    /// Changes the user's display name and avatar as `change` says; returns the user
    /// as now stored, or `NotFound`.
    pub async fn update_profile(
        &self,
        id: UserId,
        change: &ProfileChange,
    ) -> Result<UserRecord, StoreError> {
        let (set_avatar, avatar) = match &change.avatar_url {
            None => (false, None),
            Some(url) => (true, url.as_deref()),
        };
        let row = self
            .query_opt(
                UPDATE_PROFILE,
                &[&id.0, &change.display_name, &set_avatar, &avatar],
            )
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        record(&row)
    }

    /// The attributes of each of `users` that exists.
    pub async fn attributes_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<VersionedAttributes>, StoreError> {
        let rows = self.query(ATTRIBUTES_OF, &[&ids(users)]).await?;
        rows.iter()
            .map(|row| {
                Ok(VersionedAttributes {
                    user: UserId(row.try_get("id")?),
                    attributes: attributes(row)?,
                    version: row.try_get("attributes_version")?,
                })
            })
            .collect()
    }

    /// Users whose username starts with `prefix`, by username.
    pub async fn search_users(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<UserSummary>, StoreError> {
        let rows = self
            .query(SEARCH_USERS, &[&escape_like(prefix), &limit])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UserSummary {
                    id: UserId(r.try_get("id")?),
                    username: r.try_get("username")?,
                    display_name: r.try_get("display_name")?,
                    avatar_url: r.try_get("avatar_url")?,
                    deleted: false,
                })
            })
            .collect()
    }

    /// Replaces a user's attributes and returns their new version; `NotFound` for an
    /// unknown user.
    pub async fn set_attributes(&self, id: UserId, attrs: &Attributes) -> Result<i64, StoreError> {
        let row = self
            .query_opt(
                SET_ATTRIBUTES,
                &[&id.0, &attrs.org, &attrs.roles, &attrs.jobs],
            )
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        Ok(row.try_get("attributes_version")?)
    }

    /// The profile of any user, a deleted one or the system (user 0) too: what a
    /// client shows as the sender of a message.
    pub async fn user_summary(&self, id: UserId) -> Result<Option<UserSummary>, StoreError> {
        let Some(r) = self.query_opt(USER_SUMMARY, &[&id.0]).await? else {
            return Ok(None);
        };
        Ok(Some(UserSummary {
            id: UserId(r.try_get("id")?),
            username: r.try_get("username")?,
            display_name: r.try_get("display_name")?,
            avatar_url: r.try_get("avatar_url")?,
            deleted: r.try_get("deleted")?,
        }))
    }

    /// How many of `users` exist (the system user does not count).
    pub async fn count_users(&self, users: &[UserId]) -> Result<i64, StoreError> {
        let row = self.query_one(COUNT_USERS, &[&ids(users)]).await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefix_is_escaped() {
        assert_eq!(escape_like(""), "%");
        assert_eq!(escape_like("ali"), "ali%");
        assert_eq!(escape_like("a_b%c"), "a\\_b\\%c%");
        assert_eq!(escape_like("back\\slash"), "back\\\\slash%");
        assert_eq!(escape_like("ünï_"), "ünï\\_%");
    }
}
