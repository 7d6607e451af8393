//! [`Store`]: the pool and one method per thing the node asks of Postgres.

use crate::error::StoreError;
use crate::queries as q;
use crate::retention::{Cutoffs, Retention};
use chat_wire::http::{SyncConversation, SyncResponse, UserSummary};
use chat_wire::{Attributes, ConvId, Conversation, ConversationKind, Message, Seq, Tier, UserId};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::{NoTls, Row};

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
}

/// The Postgres store. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    retention: Retention,
}

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
    pub attributes: Attributes,
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
    },
}

/// One send of a batch.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: UserId,
    pub cid: String,
    pub body: String,
    /// `None`: the conversation's default tier.
    pub tier: Option<Tier>,
    pub reply_to: Option<Seq>,
}

/// The outcome of one send of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Stored now.
    Stored(Message),
    /// The cid was stored before (or earlier in the batch): the stored message.
    Duplicate(Message),
    /// `reply_to` names no earlier message of the conversation; nothing stored.
    BadReply,
}

impl Appended {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Appended::Stored(m) | Appended::Duplicate(m) => Some(m),
            Appended::BadReply => None,
        }
    }
}

/// The cursor after a read, and what is left unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub read_seq: Seq,
    pub unread: i64,
}

/// Most conversations one sync answer carries; the rest come in the next round.
const SYNC_MAX_CONVERSATIONS: i64 = 200;

fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn parse_kind(s: &str) -> Result<ConversationKind, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected conversation kind {s}")))
}

fn parse_tier(s: &str) -> Result<Tier, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected tier {s}")))
}

/// Reads the columns of `message_columns!` starting at `at`.
fn message_at(row: &Row, at: usize) -> Result<Option<Message>, StoreError> {
    let conv: Option<i64> = row.try_get(at)?;
    let Some(conv) = conv else { return Ok(None) };
    let tier: String = row.try_get(at + 5)?;
    Ok(Some(Message {
        conv: ConvId(conv),
        seq: Seq(row.try_get(at + 1)?),
        sender: UserId(row.try_get(at + 2)?),
        cid: row.try_get(at + 3)?,
        body: row.try_get(at + 4)?,
        tier: parse_tier(&tier)?,
        ts: row.try_get(at + 6)?,
        reply_to: row.try_get::<_, Option<i64>>(at + 7)?.map(Seq),
    }))
}

fn message(row: &Row) -> Result<Message, StoreError> {
    message_at(row, 0)?.ok_or(StoreError::NotFound("message"))
}

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

fn ids(list: &[UserId]) -> Vec<i64> {
    list.iter().map(|u| u.0).collect()
}

impl Store {
    /// Builds the pool and checks that Postgres answers. Does not migrate.
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Unavailable(e.to_string()))?;
        let ms = config.statement_timeout.as_millis().max(1);
        pg.options(format!(
            "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
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
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(config.acquire_timeout),
                create: Some(config.acquire_timeout),
                recycle: Some(config.acquire_timeout),
            })
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = Store {
            pool,
            retention: config.retention,
        };
        store.ping().await?;
        Ok(store)
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

    fn cutoffs(&self) -> Cutoffs {
        self.retention.cutoffs(Utc::now())
    }

    /// `SELECT 1` on a pooled connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.query_one(q::PING, &[]).await?;
        Ok(())
    }

    // ---- users ----

    /// Creates a user; `Conflict` if the username is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<UserId, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::INSERT_USER).await?;
        let row = client
            .query_one(
                &stmt,
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
        Ok(UserId(row.try_get(0)?))
    }

    /// Creates a user of the company's identity system once per `external_id`.
    /// Returns the id and whether it was created now.
    pub async fn provision_user(&self, user: &NewUser) -> Result<(UserId, bool), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::PROVISION_USER).await?;
        let row = client
            .query_opt(
                &stmt,
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
            return Ok((UserId(row.try_get(0)?), true));
        }
        let stmt = client.prepare_cached(q::USER_BY_EXTERNAL_ID).await?;
        let row = client
            .query_opt(&stmt, &[&user.external_id])
            .await?
            .ok_or(StoreError::Conflict("external_id"))?;
        Ok((UserId(row.try_get(0)?), false))
    }

    pub async fn user_auth(&self, username: &str) -> Result<Option<UserAuth>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::USER_AUTH).await?;
        let Some(row) = client.query_opt(&stmt, &[&username]).await? else {
            return Ok(None);
        };
        Ok(Some(UserAuth {
            id: UserId(row.try_get(0)?),
            password_hash: row.try_get(1)?,
        }))
    }

    pub async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::USER_BY_ID).await?;
        let Some(row) = client.query_opt(&stmt, &[&id.0]).await? else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            id: UserId(row.try_get(0)?),
            username: row.try_get(1)?,
            display_name: row.try_get(2)?,
            attributes: Attributes {
                org: row.try_get(3)?,
                roles: row.try_get(4)?,
                jobs: row.try_get(5)?,
            },
        }))
    }

    /// Users whose username starts with `prefix`, by username.
    pub async fn search_users(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<UserSummary>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::SEARCH_USERS).await?;
        let rows = client.query(&stmt, &[&escape_like(prefix), &limit]).await?;
        rows.iter()
            .map(|r| {
                Ok(UserSummary {
                    id: UserId(r.try_get(0)?),
                    username: r.try_get(1)?,
                    display_name: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Replaces a user's attributes; `NotFound` for an unknown user.
    pub async fn set_attributes(&self, id: UserId, attrs: &Attributes) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::SET_ATTRIBUTES).await?;
        let n = client
            .execute(&stmt, &[&id.0, &attrs.org, &attrs.roles, &attrs.jobs])
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound("user"));
        }
        Ok(())
    }

    /// How many of `users` exist (the system user does not count).
    pub async fn count_users(&self, users: &[UserId]) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::COUNT_USERS).await?;
        let row = client.query_one(&stmt, &[&ids(users)]).await?;
        Ok(row.try_get(0)?)
    }

    // ---- conversations ----

    /// The one direct conversation of `a` and `b`: created now (`true`) or found.
    pub async fn create_direct(
        &self,
        a: UserId,
        b: UserId,
        default_tier: Tier,
    ) -> Result<(ConvId, bool), StoreError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(q::INSERT_DIRECT).await?;
        if let Some(row) = tx
            .query_opt(&stmt, &[&lo.0, &hi.0, &a.0, &default_tier.as_str()])
            .await?
        {
            let id: i64 = row.try_get(0)?;
            let stmt = tx.prepare_cached(q::INSERT_MEMBERS).await?;
            tx.execute(&stmt, &[&id, &vec![lo.0, hi.0]]).await?;
            tx.commit().await?;
            return Ok((ConvId(id), true));
        }
        let stmt = tx.prepare_cached(q::DIRECT_BY_PAIR).await?;
        let row = tx.query_one(&stmt, &[&lo.0, &hi.0]).await?;
        tx.commit().await?;
        Ok((ConvId(row.try_get(0)?), false))
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
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(q::INSERT_GROUP).await?;
        let row = tx
            .query_one(&stmt, &[&title, &creator.0, &default_tier.as_str()])
            .await?;
        let id: i64 = row.try_get(0)?;
        let stmt = tx.prepare_cached(q::INSERT_MEMBERS).await?;
        tx.execute(&stmt, &[&id, &all]).await?;
        tx.commit().await?;
        Ok(ConvId(id))
    }

    /// The conversation of a broadcast audience (canonical path), created on first use.
    pub async fn broadcast_conversation(&self, audience: &str) -> Result<ConvId, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::BROADCAST_CONVERSATION).await?;
        let row = client.query_one(&stmt, &[&audience]).await?;
        Ok(ConvId(row.try_get(0)?))
    }

    /// Where `user` (with `audiences`) stands with `conv`.
    pub async fn membership(
        &self,
        user: UserId,
        audiences: &[String],
        conv: ConvId,
    ) -> Result<Membership, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::MEMBERSHIP).await?;
        let Some(row) = client
            .query_opt(&stmt, &[&user.0, &audiences, &conv.0])
            .await?
        else {
            return Ok(Membership::NoSuchConversation);
        };
        let member: Option<bool> = row.try_get(3)?;
        if member != Some(true) {
            return Ok(Membership::NotMember);
        }
        let kind: String = row.try_get(0)?;
        Ok(Membership::Member {
            kind: parse_kind(&kind)?,
            last_seq: Seq(row.try_get(1)?),
            read_seq: Seq(row.try_get(2)?),
        })
    }

    /// The direct and group conversations `user` belongs to.
    pub async fn user_conversations(&self, user: UserId) -> Result<Vec<ConvId>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::USER_CONVERSATIONS).await?;
        let rows = client.query(&stmt, &[&user.0]).await?;
        rows.iter().map(|r| Ok(ConvId(r.try_get(0)?))).collect()
    }

    /// Member ids of a direct or group conversation.
    pub async fn members(&self, conv: ConvId) -> Result<Vec<UserId>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::MEMBERS).await?;
        let rows = client.query(&stmt, &[&conv.0]).await?;
        rows.iter().map(|r| Ok(UserId(r.try_get(0)?))).collect()
    }

    /// The kind of a conversation and, for broadcasts, its audience.
    pub async fn conversation_kind(
        &self,
        conv: ConvId,
    ) -> Result<Option<(ConversationKind, Option<String>)>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::CONVERSATION_KIND).await?;
        let Some(row) = client.query_opt(&stmt, &[&conv.0]).await? else {
            return Ok(None);
        };
        let kind: String = row.try_get(0)?;
        Ok(Some((parse_kind(&kind)?, row.try_get(1)?)))
    }

    /// The caller's conversations, newest activity first (keyset page after `before`),
    /// or just `only` when given.
    pub async fn list_conversations(
        &self,
        user: UserId,
        audiences: &[String],
        limit: i64,
        before: Option<ConvId>,
        only: Option<ConvId>,
    ) -> Result<Vec<Conversation>, StoreError> {
        let c = self.cutoffs();
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::LIST_CONVERSATIONS).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &user.0,
                    &audiences,
                    &c.normal,
                    &c.important,
                    &before.map(|b| b.0),
                    &limit,
                    &only.map(|o| o.0),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(1)?;
                let members: Option<Vec<i64>> = r.try_get(7)?;
                let default_tier: String = r.try_get(8)?;
                Ok(Conversation {
                    id: ConvId(r.try_get(0)?),
                    kind: parse_kind(&kind)?,
                    title: r.try_get(2)?,
                    audience: r.try_get(3)?,
                    last_seq: Seq(r.try_get(4)?),
                    read_seq: Seq(r.try_get(5)?),
                    unread: r.try_get(6)?,
                    members: members.map(|m| m.into_iter().map(UserId).collect()),
                    default_tier: parse_tier(&default_tier)?,
                    last_message: message_at(r, 9)?,
                })
            })
            .collect()
    }

    /// Unread per conversation (only those with any) and in total.
    pub async fn unread(
        &self,
        user: UserId,
        audiences: &[String],
    ) -> Result<(i64, BTreeMap<ConvId, i64>), StoreError> {
        let c = self.cutoffs();
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::UNREAD).await?;
        let rows = client
            .query(&stmt, &[&user.0, &audiences, &c.normal, &c.important])
            .await?;
        let mut map = BTreeMap::new();
        let mut total = 0;
        for r in &rows {
            let n: i64 = r.try_get(1)?;
            if n > 0 {
                map.insert(ConvId(r.try_get(0)?), n);
                total += n;
            }
        }
        Ok((total, map))
    }

    /// Unread of one member whose cursor is at `read_seq`.
    pub async fn unread_in(
        &self,
        user: UserId,
        conv: ConvId,
        read_seq: Seq,
    ) -> Result<i64, StoreError> {
        let c = self.cutoffs();
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::UNREAD_ONE).await?;
        let row = client
            .query_one(
                &stmt,
                &[&conv.0, &read_seq.0, &user.0, &c.normal, &c.important],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Moves the read cursor forward (never back, never past `last_seq`). The caller
    /// has checked membership; `broadcast` creates the cursor row on first read.
    pub async fn mark_read(
        &self,
        user: UserId,
        conv: ConvId,
        seq: Seq,
        broadcast: bool,
    ) -> Result<ReadOutcome, StoreError> {
        let read_seq = {
            let client = self.pool.get().await?;
            let sql = if broadcast {
                q::MARK_READ_BROADCAST
            } else {
                q::MARK_READ
            };
            let stmt = client.prepare_cached(sql).await?;
            let row = client
                .query_opt(&stmt, &[&conv.0, &user.0, &seq.0.max(0)])
                .await?
                .ok_or(StoreError::NotFound("membership"))?;
            Seq(row.try_get(0)?)
        };
        let unread = self.unread_in(user, conv, read_seq).await?;
        Ok(ReadOutcome { read_seq, unread })
    }

    // ---- messages ----

    /// Stores a batch of sends to one conversation in one transaction (group commit).
    ///
    /// Locks the conversation row, answers retried cids with their stored message,
    /// numbers the new ones from `last_seq + 1`, inserts them in one statement, moves
    /// `last_seq` and each sender's read cursor, and commits. The outcome of each send
    /// is at its index. The caller has checked membership.
    pub async fn append(
        &self,
        conv: ConvId,
        batch: &[NewMessage],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The lock and the cid lookup go out together (one round trip). Postgres runs
        // pipelined statements in order, so the lookup sees the conversation locked.
        let lock_stmt = tx.prepare_cached(q::LOCK_CONVERSATION).await?;
        let find_stmt = tx.prepare_cached(q::FIND_CIDS).await?;
        let senders: Vec<i64> = batch.iter().map(|m| m.sender.0).collect();
        let cids: Vec<&str> = batch.iter().map(|m| m.cid.as_str()).collect();
        let (row, found) = futures_util::future::try_join(
            tx.query_opt(&lock_stmt, &[&conv.0]),
            tx.query(&find_stmt, &[&conv.0, &senders, &cids]),
        )
        .await?;
        let row = row.ok_or(StoreError::NotFound("conversation"))?;
        let mut last_seq: i64 = row.try_get(0)?;
        let default_tier: String = row.try_get(1)?;
        let default_tier = parse_tier(&default_tier)?;
        let mut known: HashMap<(i64, String), Message> = HashMap::new();
        for r in found {
            let m = message(&r)?;
            known.insert((m.sender.0, m.cid.clone()), m);
        }

        let ts = now_micros();
        let mut out = Vec::with_capacity(batch.len());
        let (mut seqs, mut snd, mut cid, mut body, mut tier, mut reply) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut advanced: HashMap<i64, i64> = HashMap::new();
        for m in batch {
            if let Some(stored) = known.get(&(m.sender.0, m.cid.clone())) {
                out.push(Appended::Duplicate(stored.clone()));
                continue;
            }
            if m.reply_to.is_some_and(|r| r.0 < 1 || r.0 > last_seq) {
                out.push(Appended::BadReply);
                continue;
            }
            last_seq += 1;
            let stored = Message {
                conv,
                seq: Seq(last_seq),
                sender: m.sender,
                cid: m.cid.clone(),
                body: m.body.clone(),
                tier: m.tier.unwrap_or(default_tier),
                ts,
                reply_to: m.reply_to,
            };
            seqs.push(last_seq);
            snd.push(m.sender.0);
            cid.push(stored.cid.clone());
            body.push(stored.body.clone());
            tier.push(stored.tier.as_str());
            reply.push(m.reply_to.map(|r| r.0));
            advanced.insert(m.sender.0, last_seq);
            known.insert((m.sender.0, m.cid.clone()), stored.clone());
            out.push(Appended::Stored(stored));
        }

        if !seqs.is_empty() {
            // Three independent writes, pipelined in one round trip.
            let insert = tx.prepare_cached(q::INSERT_MESSAGES).await?;
            let advance = tx.prepare_cached(q::ADVANCE_CONVERSATION).await?;
            let senders = tx.prepare_cached(q::ADVANCE_SENDERS).await?;
            let (uids, useqs): (Vec<i64>, Vec<i64>) = advanced.into_iter().unzip();
            futures_util::future::try_join3(
                tx.execute(
                    &insert,
                    &[&conv.0, &seqs, &snd, &cid, &body, &tier, &reply, &ts],
                ),
                tx.execute(&advance, &[&conv.0, &last_seq, &ts]),
                tx.execute(&senders, &[&conv.0, &uids, &useqs]),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Up to `limit` retained messages below `before` (ascending), and the oldest
    /// retained seq of the conversation (`last_seq + 1` when none is retained).
    pub async fn history(
        &self,
        conv: ConvId,
        before: Seq,
        limit: i64,
        last_seq: Seq,
    ) -> Result<(Vec<Message>, Seq), StoreError> {
        let c = self.cutoffs();
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(q::HISTORY).await?;
        let rows = client
            .query(
                &stmt,
                &[&conv.0, &before.0, &c.normal, &c.important, &limit],
            )
            .await?;
        let mut messages = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        let stmt = client.prepare_cached(q::OLDEST_RETAINED).await?;
        let row = client
            .query_one(&stmt, &[&conv.0, &c.normal, &c.important])
            .await?;
        let oldest: Option<i64> = row.try_get(0)?;
        Ok((messages, Seq(oldest.unwrap_or(last_seq.0 + 1))))
    }

    /// Every visible conversation past its cursor, with up to `limit` messages each.
    pub async fn sync(
        &self,
        user: UserId,
        audiences: &[String],
        cursors: &BTreeMap<ConvId, Seq>,
        limit: i64,
    ) -> Result<SyncResponse, StoreError> {
        let c = self.cutoffs();
        let client = self.pool.get().await?;
        let (cur_ids, cur_seqs): (Vec<i64>, Vec<i64>) =
            cursors.iter().map(|(k, v)| (k.0, v.0.max(0))).unzip();
        let stmt = client.prepare_cached(q::SYNC_CONVERSATIONS).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &user.0,
                    &audiences,
                    &c.normal,
                    &c.important,
                    &cur_ids,
                    &cur_seqs,
                    &(SYNC_MAX_CONVERSATIONS + 1),
                ],
            )
            .await?;
        let mut more = rows.len() as i64 > SYNC_MAX_CONVERSATIONS;
        let mut convs = Vec::with_capacity(rows.len());
        let (mut ids, mut afters) = (vec![], vec![]);
        for r in rows.iter().take(SYNC_MAX_CONVERSATIONS as usize) {
            let id: i64 = r.try_get(0)?;
            ids.push(id);
            afters.push(r.try_get::<_, i64>(4)?);
            convs.push(SyncConversation {
                id: ConvId(id),
                last_seq: Seq(r.try_get(1)?),
                read_seq: Seq(r.try_get(2)?),
                unread: r.try_get(3)?,
                messages: Vec::new(),
            });
        }
        if !ids.is_empty() {
            let stmt = client.prepare_cached(q::SYNC_MESSAGES).await?;
            let rows = client
                .query(
                    &stmt,
                    &[&ids, &afters, &c.normal, &c.important, &(limit + 1)],
                )
                .await?;
            let mut by_conv: HashMap<i64, Vec<Message>> = HashMap::new();
            for r in &rows {
                let m = message(r)?;
                by_conv.entry(m.conv.0).or_default().push(m);
            }
            for conv in &mut convs {
                let mut msgs = by_conv.remove(&conv.id.0).unwrap_or_default();
                if msgs.len() as i64 > limit {
                    msgs.truncate(limit as usize);
                    more = true;
                }
                conv.messages = msgs;
            }
        }
        Ok(SyncResponse {
            conversations: convs,
            more,
        })
    }
}
