//! What presence and revocation keep in Postgres: who may see whose presence, when a
//! user was last seen, and each user's token not-before.

use crate::{Store, StoreError};
use chat_wire::UserId;
use chrono::{DateTime, Utc};

/// For each given user, who may see their presence: their contacts, the peers of
/// their direct conversations, and the members of their groups of at most `$2`
/// members; never someone they blocked.
const WATCHERS: &str = "
    WITH subject AS (SELECT unnest($1::bigint[]) AS id)
    SELECT DISTINCT s.id AS subject, w.watcher
      FROM subject s
      CROSS JOIN LATERAL (
            SELECT c.peer AS watcher FROM contacts c WHERE c.user_id = s.id
            UNION
            SELECT o.user_id FROM members m
              JOIN conversations cv ON cv.id = m.conv AND cv.kind IN ('direct', 'group')
              JOIN members o ON o.conv = m.conv AND o.user_id <> s.id
             WHERE m.user_id = s.id
               AND (cv.kind = 'direct'
                    OR (SELECT count(*) FROM members n WHERE n.conv = cv.id) <= $2)
      ) w
     WHERE w.watcher <> 0
       AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = s.id AND b.blocked = w.watcher)";

const SET_LAST_SEEN: &str = "
    UPDATE users u SET last_seen = GREATEST(u.last_seen, $2)
      FROM unnest($1::bigint[]) AS g(id) WHERE u.id = g.id";

const LAST_SEEN: &str =
    "SELECT id, last_seen FROM users WHERE id = ANY($1) AND id <> 0 AND deleted_at IS NULL";

const REVOKE: &str = "
    UPDATE users SET tokens_not_before = GREATEST(tokens_not_before, now())
     WHERE id = $1 AND id <> 0 RETURNING tokens_not_before";

const NOT_BEFORE: &str =
    "SELECT tokens_not_before FROM users WHERE id = $1 AND id <> 0 AND deleted_at IS NULL";

const NOT_BEFORE_OF: &str = "
    SELECT id, tokens_not_before FROM users
     WHERE id = ANY($1) AND tokens_not_before IS NOT NULL";

/// Whether a user exists and the instant before which their tokens are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFloor {
    /// No such user.
    Unknown,
    /// Tokens issued at or before this unix second are refused (`None`: none is).
    Since(Option<i64>),
}

impl TokenFloor {
    /// Whether a token issued at `iat` (unix seconds) is still good.
    pub fn admits(self, iat: i64) -> bool {
        match self {
            TokenFloor::Unknown => false,
            TokenFloor::Since(None) => true,
            TokenFloor::Since(Some(floor)) => iat > floor,
        }
    }
}

fn ids(users: &[UserId]) -> Vec<i64> {
    users.iter().map(|u| u.0).collect()
}

impl Store {
    /// `(subject, watcher)` pairs: who may see the presence of each of `users`.
    pub async fn presence_watchers(
        &self,
        users: &[UserId],
        group_max_members: i64,
    ) -> Result<Vec<(UserId, UserId)>, StoreError> {
        let rows = self
            .query(WATCHERS, &[&ids(users), &group_max_members])
            .await?;
        rows.iter()
            .map(|r| Ok((UserId(r.try_get("subject")?), UserId(r.try_get("watcher")?))))
            .collect()
    }

    /// Records that `users` went offline at `at` (a later record is kept).
    pub async fn set_last_seen(
        &self,
        users: &[UserId],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        self.query(SET_LAST_SEEN, &[&ids(users), &at]).await?;
        Ok(())
    }

    /// When each of `users` that exists was last seen online (`None`: never).
    pub async fn last_seen(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, Option<DateTime<Utc>>)>, StoreError> {
        let rows = self.query(LAST_SEEN, &[&ids(users)]).await?;
        rows.iter()
            .map(|r| Ok((UserId(r.try_get("id")?), r.try_get("last_seen")?)))
            .collect()
    }

    /// Refuses every token of `user` issued up to now; returns the new floor, or
    /// `NotFound`.
    pub async fn revoke_tokens(&self, user: UserId) -> Result<DateTime<Utc>, StoreError> {
        let row = self
            .query_opt(REVOKE, &[&user.0])
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        Ok(row.try_get("tokens_not_before")?)
    }

    /// The token floor of `user`.
    pub async fn token_floor(&self, user: UserId) -> Result<TokenFloor, StoreError> {
        let Some(row) = self.query_opt(NOT_BEFORE, &[&user.0]).await? else {
            return Ok(TokenFloor::Unknown);
        };
        let at: Option<DateTime<Utc>> = row.try_get("tokens_not_before")?;
        Ok(TokenFloor::Since(at.map(|t| t.timestamp())))
    }

    /// The token floors (unix seconds) of those of `users` who have one.
    pub async fn token_floors(&self, users: &[UserId]) -> Result<Vec<(UserId, i64)>, StoreError> {
        let rows = self.query(NOT_BEFORE_OF, &[&ids(users)]).await?;
        rows.iter()
            .map(|r| {
                let at: DateTime<Utc> = r.try_get("tokens_not_before")?;
                Ok((UserId(r.try_get("id")?), at.timestamp()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_refuses_tokens_of_its_second_and_before() {
        let floor = TokenFloor::Since(Some(100));
        assert!(!floor.admits(99));
        assert!(!floor.admits(100));
        assert!(floor.admits(101));
        assert!(TokenFloor::Since(None).admits(0));
        assert!(!TokenFloor::Unknown.admits(i64::MAX));
    }
}
