//! Presence: who is online, as frames and as the answer of `POST /presence`.

use crate::ids::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most users one `POST /presence` asks about.
pub const MAX_PRESENCE_QUERY: usize = 200;

/// Whether a user is online, and when they were last seen when not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceState {
    pub user: UserId,
    /// A socket of theirs is open on some node.
    pub online: bool,
    /// When their last socket closed (`null` while online, or if never seen).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<DateTime<Utc>>,
}

/// `POST /presence`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// At most 200 user ids.
    pub users: Vec<UserId>,
}

impl PresenceQuery {
    /// The distinct ids asked for, or why the query is refused.
    pub fn check(&self) -> Result<Vec<UserId>, String> {
        if self.users.len() > MAX_PRESENCE_QUERY {
            return Err(format!(
                "at most {MAX_PRESENCE_QUERY} users per call, got {}",
                self.users.len()
            ));
        }
        if let Some(bad) = self.users.iter().find(|u| u.0 <= 0) {
            return Err(format!("{} is not a user id", bad.0));
        }
        let mut users = self.users.clone();
        users.sort();
        users.dedup();
        Ok(users)
    }
}

/// The answer of `POST /presence`: one entry per user asked for that exists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceAnswer {
    pub presence: Vec<PresenceState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_and_deduplicated() {
        let q = PresenceQuery {
            users: vec![UserId(3), UserId(1), UserId(3)],
        };
        assert_eq!(q.check(), Ok(vec![UserId(1), UserId(3)]));
        let big = PresenceQuery {
            users: (1..=201).map(UserId).collect(),
        };
        assert!(big.check().is_err());
        let zero = PresenceQuery {
            users: vec![UserId(0)],
        };
        assert!(zero.check().is_err());
    }
}
