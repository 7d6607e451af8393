//! Conversations: direct, group and broadcast ones, who belongs to them, and the
//! caller's list of them with unread counts and last messages.

use crate::contacts::{are_contacts_in, blocked_between_in, DirectRules};
use crate::error::StoreError;
use crate::rows::{message_prefixed, parse_kind, parse_role, parse_tier};
use crate::sql::{
    audience_keys, ids, message_columns, retained, settings_columns, since, unread, visible,
};
use crate::store::Store;
use chat_wire::{
    AudienceKey, ConvId, Conversation, ConversationKind, MutedMember, Role, Seq, Tier, UserId,
};

const INSERT_DIRECT: &str =
    "INSERT INTO conversations (kind, direct_a, direct_b, created_by, default_tier)
     VALUES ('direct', $1, $2, $3, $4)
     ON CONFLICT (direct_a, direct_b) DO NOTHING RETURNING id";

const DIRECT_BY_PAIR: &str = "SELECT id FROM conversations WHERE direct_a = $1 AND direct_b = $2";

const INSERT_GROUP: &str = "INSERT INTO conversations (kind, title, created_by, default_tier)
     VALUES ('group', $1, $2, $3) RETURNING id";

const INSERT_MEMBERS: &str = "INSERT INTO members (conv, user_id)
     SELECT $1, u FROM unnest($2::bigint[]) AS u ON CONFLICT DO NOTHING";

/// The creator of a group owns it.
const SET_OWNER: &str = "UPDATE members SET role = 'owner' WHERE conv = $1 AND user_id = $2";

const BROADCAST_CONVERSATION: &str = "INSERT INTO conversations (kind, audience, title, created_by)
     VALUES ('broadcast', $1, $1, 0)
     ON CONFLICT (audience) DO UPDATE SET audience = EXCLUDED.audience RETURNING id";

/// Whether user `$1` (audiences `$2`) may see conversation `$3`.
const MEMBERSHIP: &str = "SELECT c.kind, c.last_seq, COALESCE(m.read_seq, 0) AS read_seq,
            COALESCE(m.joined_seq, 0) AS joined_seq, m.role,
            CASE WHEN c.kind = 'broadcast' THEN c.audience = ANY($2::text[])
                 ELSE m.user_id IS NOT NULL END AS member
       FROM conversations c
       LEFT JOIN members m ON m.conv = c.id AND m.user_id = $1
      WHERE c.id = $3";

const USER_CONVERSATIONS: &str =
    "SELECT m.conv, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv
     WHERE m.user_id = $1 AND c.kind <> 'broadcast'";

/// Memberships of the given users that began within the last `$2` seconds (by
/// `members_by_joined`: recent joins are few, however many users are online).
const JOINED_SINCE: &str =
    "SELECT m.user_id, m.conv, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv
     WHERE m.joined_at >= now() - make_interval(secs => $2::float8)
       AND m.user_id = ANY($1) AND c.kind <> 'broadcast'";

const MEMBERS: &str = "SELECT user_id FROM members WHERE conv = $1 ORDER BY user_id";

const MEMBER_ROLES: &str =
    "SELECT user_id, role, joined_seq FROM members WHERE conv = $1 ORDER BY user_id";

const CONVERSATION_KIND: &str = "SELECT kind, audience FROM conversations WHERE id = $1";

/// The entries a conversation list shows as its last message: those people wrote and
/// system entries, from the seq the caller joined at.
macro_rules! shown {
    () => {
        "x.kind NOT IN ('edit', 'recall', 'reaction') AND x.seq >= v.joined_seq AND "
    };
}

/// The prefix of the last-message columns of [`LIST_CONVERSATIONS`].
const LAST_MESSAGE: &str = "lm_";

/// The caller's conversations, newest activity first, with unread and last message
/// (its columns prefixed [`LAST_MESSAGE`]). The last message is looked for from the
/// day of `last_seq` on; only where that finds none (the newest messages have expired,
/// older important ones may not have) on every partition.
/// `$5`, `$8`: the keyset cursor (the last page's last `last_activity` and id, as it
/// was when that page was read) or NULL; `$6`: limit; `$7`: one id or NULL.
const LIST_CONVERSATIONS: &str = concat!(
    visible!(),
    "SELECT v.id, v.kind, v.title, v.audience, v.last_seq, v.read_seq, v.last_activity, ",
    unread!(),
    " AS unread, ",
    unread!(mentions),
    " AS mentions_unread, v.role, ",
    settings_columns!(),
    ",
       CASE WHEN v.kind = 'broadcast' THEN NULL
            ELSE (SELECT array_agg(user_id ORDER BY user_id) FROM members WHERE conv = v.id) END
         AS members,
       (SELECT array_agg(user_id ORDER BY user_id) FROM members
         WHERE conv = v.id AND silenced_until > now()) AS muted_users,
       (SELECT array_agg(silenced_until ORDER BY user_id) FROM members
         WHERE conv = v.id AND silenced_until > now()) AS muted_untils,
       v.default_tier,
       ",
    message_columns!("lm" AS "lm_"),
    "
  FROM vis v
  LEFT JOIN LATERAL (
       (SELECT * FROM messages x WHERE v.last_seq > 0 AND x.conv = v.id AND ",
    shown!(),
    retained!("x", "$3", "$4"),
    " AND x.created_at >= ",
    since!("v.id", "v.last_seq"),
    " ORDER BY x.seq DESC LIMIT 1)
       UNION ALL
       (SELECT * FROM messages x WHERE v.last_seq > 0 AND x.conv = v.id AND ",
    shown!(),
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq DESC LIMIT 1)
       LIMIT 1) lm ON true
 WHERE ($5::timestamptz IS NULL OR (v.last_activity, v.id) < ($5, $8::bigint))
   AND ($7::bigint IS NULL OR v.id = $7)
 ORDER BY v.last_activity DESC, v.id DESC
 LIMIT $6"
);

/// Where a page of the conversation list ended: the last conversation's activity and
/// id as they were when the page was read. The next page starts below it, so a
/// conversation that becomes active meanwhile moves to the top instead of making the
/// pages skip or repeat entries. Clients hold it as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub last_activity: chrono::DateTime<chrono::Utc>,
    pub id: ConvId,
}

impl ListCursor {
    /// The cursor as clients see it.
    pub fn encode(&self) -> String {
        format!(
            "{:x}.{:x}",
            self.last_activity.timestamp_micros(),
            self.id.0
        )
    }

    /// A cursor [`ListCursor::encode`] made, or `None`.
    pub fn parse(text: &str) -> Option<ListCursor> {
        let (micros, id) = text.split_once('.')?;
        let micros = i64::from_str_radix(micros, 16).ok()?;
        let id = i64::from_str_radix(id, 16).ok()?;
        Some(ListCursor {
            last_activity: chrono::DateTime::from_timestamp_micros(micros)?,
            id: ConvId(id),
        })
    }
}

/// A conversation of a user and the last seq it held when it was read: what a client
/// that syncs after this read has, at the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub conv: ConvId,
    pub last_seq: Seq,
}

/// Where a user stands with a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    NoSuchConversation,
    NotMember,
    Member {
        kind: ConversationKind,
        last_seq: Seq,
        read_seq: Seq,
        /// The seq the member was added at (0: from the start): they read from there.
        joined_seq: Seq,
        /// `None` for a broadcast reader.
        role: Option<Role>,
    },
}

impl Store {
    /// The one direct conversation of `a` and `b`: created now (`true`) or found.
    /// `Forbidden` where either blocked the other, or where `rules` want contacts and
    /// they are not (checked in the transaction, so a block committed before it is
    /// never missed).
    pub async fn create_direct(
        &self,
        a: UserId,
        b: UserId,
        default_tier: Tier,
        rules: DirectRules,
    ) -> Result<(ConvId, bool), StoreError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        if blocked_between_in(&tx, a, b).await? {
            return Err(StoreError::Forbidden(
                "a block stands between you and this user",
            ));
        }
        if rules.requires_friendship && !are_contacts_in(&tx, a, b).await? {
            return Err(StoreError::Forbidden(
                "a direct conversation needs the other user to be one of your contacts: send a friend request first",
            ));
        }
        let stmt = tx.prepare_cached(INSERT_DIRECT).await?;
        if let Some(row) = tx
            .query_opt(&stmt, &[&lo.0, &hi.0, &a.0, &default_tier.as_str()])
            .await?
        {
            let id: i64 = row.try_get("id")?;
            let stmt = tx.prepare_cached(INSERT_MEMBERS).await?;
            tx.execute(&stmt, &[&id, &vec![lo.0, hi.0]]).await?;
            tx.commit().await?;
            return Ok((ConvId(id), true));
        }
        let stmt = tx.prepare_cached(DIRECT_BY_PAIR).await?;
        let row = tx.query_one(&stmt, &[&lo.0, &hi.0]).await?;
        tx.commit().await?;
        Ok((ConvId(row.try_get("id")?), false))
    }

    /// A new group of `creator` and `members`.
    pub async fn create_group(
        &self,
        creator: UserId,
        title: &str,
        members: &[UserId],
        default_tier: Tier,
    ) -> Result<ConvId, StoreError> {
        let mut all = ids(members);
        all.push(creator.0);
        all.sort_unstable();
        all.dedup();
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(INSERT_GROUP).await?;
        let row = tx
            .query_one(&stmt, &[&title, &creator.0, &default_tier.as_str()])
            .await?;
        let id: i64 = row.try_get("id")?;
        let stmt = tx.prepare_cached(INSERT_MEMBERS).await?;
        tx.execute(&stmt, &[&id, &all]).await?;
        let stmt = tx.prepare_cached(SET_OWNER).await?;
        tx.execute(&stmt, &[&id, &creator.0]).await?;
        tx.commit().await?;
        Ok(ConvId(id))
    }

    /// The conversation of a broadcast audience, created on first use.
    pub async fn broadcast_conversation(
        &self,
        audience: &AudienceKey,
    ) -> Result<ConvId, StoreError> {
        let row = self
            .query_one(BROADCAST_CONVERSATION, &[&audience.as_str()])
            .await?;
        Ok(ConvId(row.try_get("id")?))
    }

    /// Where `user` (with `audiences`) stands with `conv`.
    pub async fn membership(
        &self,
        user: UserId,
        audiences: &[AudienceKey],
        conv: ConvId,
    ) -> Result<Membership, StoreError> {
        let Some(row) = self
            .query_opt(MEMBERSHIP, &[&user.0, &audience_keys(audiences), &conv.0])
            .await?
        else {
            return Ok(Membership::NoSuchConversation);
        };
        let member: Option<bool> = row.try_get("member")?;
        if member != Some(true) {
            return Ok(Membership::NotMember);
        }
        let kind: String = row.try_get("kind")?;
        let kind = parse_kind(&kind)?;
        let role: Option<String> = row.try_get("role")?;
        Ok(Membership::Member {
            kind,
            last_seq: Seq(row.try_get("last_seq")?),
            read_seq: Seq(row.try_get("read_seq")?),
            joined_seq: Seq(row.try_get("joined_seq")?),
            role: match kind {
                ConversationKind::Broadcast => None,
                _ => role.as_deref().map(parse_role).transpose()?,
            },
        })
    }

    /// The direct and group conversations `user` belongs to.
    pub async fn user_conversations(&self, user: UserId) -> Result<Vec<Held>, StoreError> {
        let rows = self.query(USER_CONVERSATIONS, &[&user.0]).await?;
        rows.iter()
            .map(|r| {
                Ok(Held {
                    conv: ConvId(r.try_get("conv")?),
                    last_seq: Seq(r.try_get("last_seq")?),
                })
            })
            .collect()
    }

    /// The conversations `users` joined within the last `window`, each with the
    /// joining user.
    pub async fn joined_since(
        &self,
        users: &[UserId],
        window: std::time::Duration,
    ) -> Result<Vec<(UserId, Held)>, StoreError> {
        let ids: Vec<i64> = users.iter().map(|u| u.0).collect();
        let rows = self
            .query(JOINED_SINCE, &[&ids, &window.as_secs_f64()])
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserId(r.try_get("user_id")?),
                    Held {
                        conv: ConvId(r.try_get("conv")?),
                        last_seq: Seq(r.try_get("last_seq")?),
                    },
                ))
            })
            .collect()
    }

    /// Member ids of a direct or group conversation.
    pub async fn members(&self, conv: ConvId) -> Result<Vec<UserId>, StoreError> {
        let rows = self.query(MEMBERS, &[&conv.0]).await?;
        rows.iter()
            .map(|r| Ok(UserId(r.try_get("user_id")?)))
            .collect()
    }

    /// Members of a direct or group conversation with their roles and the seq each
    /// joined at.
    pub async fn member_roles(&self, conv: ConvId) -> Result<Vec<(UserId, Role, Seq)>, StoreError> {
        let rows = self.query(MEMBER_ROLES, &[&conv.0]).await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok((
                    UserId(r.try_get("user_id")?),
                    parse_role(&role)?,
                    Seq(r.try_get("joined_seq")?),
                ))
            })
            .collect()
    }

    /// The kind of a conversation and, for broadcasts, its audience.
    pub async fn conversation_kind(
        &self,
        conv: ConvId,
    ) -> Result<Option<(ConversationKind, Option<AudienceKey>)>, StoreError> {
        let Some(row) = self.query_opt(CONVERSATION_KIND, &[&conv.0]).await? else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind")?;
        let audience: Option<String> = row.try_get("audience")?;
        Ok(Some((
            parse_kind(&kind)?,
            audience.map(AudienceKey::from_stored),
        )))
    }

    /// The caller's conversations, newest activity first (keyset page below `before`),
    /// or just `only` when given; with the cursor of the next page when this one is
    /// full.
    pub async fn list_conversations(
        &self,
        user: UserId,
        audiences: &[AudienceKey],
        limit: i64,
        before: Option<ListCursor>,
        only: Option<ConvId>,
    ) -> Result<(Vec<Conversation>, Option<ListCursor>), StoreError> {
        let c = self.cutoffs();
        let rows = self
            .query(
                LIST_CONVERSATIONS,
                &[
                    &user.0,
                    &audience_keys(audiences),
                    &c.normal,
                    &c.important,
                    &before.map(|b| b.last_activity),
                    &limit,
                    &only.map(|o| o.0),
                    &before.map(|b| b.id.0),
                ],
            )
            .await?;
        let next = match rows.last() {
            Some(r) if rows.len() as i64 == limit => Some(ListCursor {
                last_activity: r.try_get("last_activity")?,
                id: ConvId(r.try_get("id")?),
            }),
            _ => None,
        };
        let mut list = rows
            .iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let role: Option<String> = r.try_get("role")?;
                let members: Option<Vec<i64>> = r.try_get("members")?;
                let default_tier: String = r.try_get("default_tier")?;
                let muted_users: Option<Vec<i64>> = r.try_get("muted_users")?;
                let muted_untils: Option<Vec<chrono::DateTime<chrono::Utc>>> =
                    r.try_get("muted_untils")?;
                let muted = muted_users
                    .unwrap_or_default()
                    .into_iter()
                    .zip(muted_untils.unwrap_or_default())
                    .map(|(user, until)| MutedMember {
                        user: UserId(user),
                        until,
                    })
                    .collect();
                Ok(Conversation {
                    id: ConvId(r.try_get("id")?),
                    kind: parse_kind(&kind)?,
                    title: r.try_get("title")?,
                    audience: r
                        .try_get::<_, Option<String>>("audience")?
                        .map(AudienceKey::from_stored),
                    last_seq: Seq(r.try_get("last_seq")?),
                    read_seq: Seq(r.try_get("read_seq")?),
                    unread: r.try_get("unread")?,
                    mentions_unread: r.try_get("mentions_unread")?,
                    role: role.as_deref().map(parse_role).transpose()?,
                    members: members.map(|m| m.into_iter().map(UserId).collect()),
                    default_tier: parse_tier(&default_tier)?,
                    last_message: message_prefixed(r, LAST_MESSAGE)?,
                    preview: None,
                    muted,
                    muted_until: crate::rows::mute(r)?,
                    pinned: r.try_get("pinned")?,
                    archived: r.try_get("archived")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut last: Vec<chat_wire::Message> = list
            .iter_mut()
            .filter_map(|c| c.last_message.take())
            .collect();
        if !last.is_empty() {
            let client = self.pool().get().await?;
            crate::fold::fold(&client, user, &mut last, c).await?;
        }
        let mut last = last.into_iter().peekable();
        for conv in &mut list {
            if last.peek().is_some_and(|m| m.conv == conv.id) {
                conv.last_message = last.next();
            }
            conv.preview = conv.last_message.as_ref().map(chat_wire::Message::preview);
        }
        Ok((list, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::MESSAGE_COLUMNS;

    #[test]
    fn list_cursors_round_trip_and_refuse_anything_else() {
        let c = ListCursor {
            last_activity: chrono::DateTime::from_timestamp_micros(1_764_633_600_123_456)
                .expect("a valid time"),
            id: ConvId(42),
        };
        assert_eq!(ListCursor::parse(&c.encode()), Some(c));
        for bad in ["", "42", "x.1", "1.", ".1", "1.2.3", "zz.zz"] {
            assert_eq!(ListCursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn last_message_columns_carry_the_decoded_prefix() {
        for c in MESSAGE_COLUMNS {
            let alias = format!("lm.{c} AS {LAST_MESSAGE}{c}");
            assert!(LIST_CONVERSATIONS.contains(&alias), "{alias} missing");
        }
    }
}
