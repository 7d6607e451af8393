//! Messages: appending a batch of sends (group commit) and reading history.

use crate::error::StoreError;
use crate::rows::{message, parse_kind, parse_message_kind, parse_role, parse_tier};
use crate::sql::{message_columns, retained, since};
use crate::store::Store;
use chat_wire::{ConvId, ConversationKind, Draft, Message, MessageKind, Role, Seq, Tier, UserId};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// Locks the conversation rows of a group commit in id order, so that two writers of
/// overlapping sets never deadlock, and skips the rows another transaction holds: a
/// group commit never waits for another writer (another node, usually); the
/// conversations it could not lock go to the next one. Every writer of a
/// conversation, on any node, takes this lock before it numbers messages: that is
/// what keeps (conv, seq) and (conv, sender, cid) unique, and what makes the checks of
/// membership and targets below exact (group changes take the same lock).
/// `NO KEY UPDATE` conflicts with itself but not with the key-share locks of
/// foreign-key checks (a first read of a broadcast inserting its cursor row does not
/// wait for a commit).
const LOCK_CONVERSATIONS: &str = "SELECT id, kind, last_seq, default_tier FROM conversations
     WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED";

/// Which of `$1` exist: tells a conversation another writer holds from one that is gone.
const EXISTING: &str = "SELECT id FROM conversations WHERE id = ANY($1::bigint[])";

/// The sends of the group commit already stored (a retried cid) within the dedupe
/// window (`created_at > $4`): one index probe per send, on the partitions the window
/// overlaps only, however many partitions there are.
const FIND_CIDS: &str = concat!(
    "SELECT ",
    message_columns!("m"),
    " FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS k(conv, sender, cid)
  CROSS JOIN LATERAL (
       SELECT * FROM messages x
        WHERE x.conv = k.conv AND x.sender = k.sender AND x.cid = k.cid AND x.created_at > $4
        LIMIT 1) m"
);

/// Where each sender (`$1` convs, `$2` senders) stands with the conversation, read
/// under the lock: member or not, role, from which seq they read, until when they are
/// muted, and whether the other member of a direct conversation blocked them.
const SENDERS: &str = "SELECT k.conv, k.sender, m.role, m.joined_seq, m.silenced_until AS muted_until,
       EXISTS (SELECT 1 FROM conversations c JOIN blocks b
                   ON b.blocked = k.sender
                  AND b.blocker = CASE WHEN c.direct_a = k.sender THEN c.direct_b ELSE c.direct_a END
                WHERE c.id = k.conv AND c.kind = 'direct') AS blocked
  FROM unnest($1::bigint[], $2::bigint[]) AS k(conv, sender)
  LEFT JOIN members m ON m.conv = k.conv AND m.user_id = k.sender";

/// The messages that edits, recalls and reactions of the commit act on (`$1` convs,
/// `$2` seqs; cutoffs `$3`, `$4`), read under the lock: who wrote them, their kind,
/// tier and time, and whether they were recalled.
const TARGETS: &str = concat!(
    "SELECT k.conv, k.seq, t.sender, t.kind, t.tier, t.created_at,
       EXISTS (SELECT 1 FROM messages r
                WHERE r.conv = k.conv AND r.target = k.seq AND r.kind = 'recall') AS recalled
  FROM unnest($1::bigint[], $2::bigint[]) AS k(conv, seq)
 CROSS JOIN LATERAL (
       SELECT x.sender, x.kind, x.tier, x.created_at FROM messages x
        WHERE x.conv = k.conv AND x.seq = k.seq AND x.created_at >= ",
    since!("k.conv", "k.seq"),
    " AND ",
    retained!("x", "$3", "$4"),
    " LIMIT 1) t"
);

const INSERT_MESSAGES: &str = "INSERT INTO messages (conv, seq, sender, cid, body, tier, reply_to,
                          kind, attach, mentions, target, meta, created_at)
     SELECT k.conv, k.seq, k.sender, k.cid, k.body, k.tier, k.reply_to, k.kind, k.attach,
            NULLIF(k.mentions, '')::bigint[], k.target, k.meta, $13
       FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                   $6::text[], $7::bigint[], $8::text[], $9::jsonb[], $10::text[],
                   $11::bigint[], $12::jsonb[])
         AS k(conv, seq, sender, cid, body, tier, reply_to, kind, attach, mentions, target, meta)";

/// Moves `last_seq`; `last_activity` only where a message people write (or a system
/// entry) was stored: an edit or a reaction does not lift a conversation in the list.
const ADVANCE_CONVERSATIONS: &str = "UPDATE conversations c SET last_seq = k.last_seq,
            last_activity = CASE WHEN k.active THEN $3 ELSE c.last_activity END
      FROM unnest($1::bigint[], $2::bigint[], $4::bool[]) AS k(id, last_seq, active)
     WHERE c.id = k.id";

/// The first seq a conversation stored on a day (see `sql/V2__conversation_days.sql`).
pub(crate) const RECORD_DAYS: &str = "INSERT INTO conversation_days (conv, day, first_seq)
     SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[])
     ON CONFLICT DO NOTHING";

/// Sending a message moves the sender's read cursor to it (edits, recalls and
/// reactions move no cursor).
const ADVANCE_SENDERS: &str = "UPDATE members m SET read_seq = GREATEST(m.read_seq, k.seq)
      FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS k(conv, uid, seq)
     WHERE m.conv = k.conv AND m.user_id = k.uid";

/// The day of the conversation's seq `$2` (the last day that began at or before it),
/// and its first day.
const DAYS: &str =
    "SELECT max(day) FILTER (WHERE first_seq <= $2) AS seq_day, min(day) AS first_day
       FROM conversation_days WHERE conv = $1";

/// A page of history, on the partitions from `$6` on.
const HISTORY: &str = concat!(
    "SELECT ",
    message_columns!("x"),
    " FROM messages x WHERE x.conv = $1 AND x.seq < $2 AND x.seq >= $7 AND x.created_at >= $6 AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq DESC LIMIT $5"
);

/// The oldest retained seq from `$5` on, on the partitions from the conversation's
/// first day (`$4`).
const OLDEST_RETAINED: &str = concat!(
    "SELECT min(x.seq) AS oldest FROM messages x WHERE x.conv = $1 AND x.seq >= $5
        AND x.created_at >= $4 AND ",
    retained!("x", "$2", "$3")
);

/// One send of a batch.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: UserId,
    /// What was sent; `tier: None` is the conversation's default tier.
    pub draft: Draft,
}

/// Why one send of a batch was refused under the conversation's lock; nothing of it
/// was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("reply_to names no earlier message of this conversation")]
    BadReply,
    #[error("not a member of this conversation")]
    NotMember,
    #[error("the other member of this direct conversation blocked you")]
    Blocked,
    #[error("target names no retained message of this conversation")]
    NoTarget,
    #[error("target is not a message people wrote (an edit, recall, reaction or system entry)")]
    WrongTarget,
    #[error("only the sender may edit a message, and recall it unless a group admin")]
    NotSender,
    #[error("the edit window of this message has passed")]
    EditWindowPassed,
    #[error("the recall window of this message has passed")]
    RecallWindowPassed,
    #[error("the message was recalled")]
    Recalled,
    #[error("broadcast conversations are written by the system only")]
    SystemOnly,
    /// A moderator muted the sender; sends, edits and reactions wait until then.
    #[error("you are muted in this group until {}", .0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    Muted(DateTime<Utc>),
}

/// The outcome of one send of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Stored now.
    Stored(Message),
    /// The cid was stored before (or earlier in the batch): the stored message.
    Duplicate(Message),
    /// Refused under the lock; nothing stored.
    Refused(Refusal),
}

impl Appended {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Appended::Stored(m) | Appended::Duplicate(m) => Some(m),
            Appended::Refused(_) => None,
        }
    }
}

/// How long after a message its sender may still edit or recall it (`None`: no
/// limit). Group admins recall any message at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryWindows {
    pub edit: Option<std::time::Duration>,
    pub recall: Option<std::time::Duration>,
}

impl Default for EntryWindows {
    fn default() -> Self {
        EntryWindows {
            edit: None,
            recall: Some(std::time::Duration::from_secs(120)),
        }
    }
}

/// What the lock found of a sender.
struct SenderState {
    member: bool,
    role: Option<Role>,
    joined_seq: i64,
    blocked: bool,
    /// Set by moderation: no writes before it has passed.
    muted_until: Option<DateTime<Utc>>,
}

/// What the lock found of a target.
struct TargetState {
    sender: UserId,
    kind: MessageKind,
    tier: Tier,
    ts: DateTime<Utc>,
    recalled: bool,
}

/// Whether `at` lies more than `window` after `since`.
fn passed(window: Option<std::time::Duration>, since: DateTime<Utc>, at: DateTime<Utc>) -> bool {
    match window.and_then(|w| chrono::Duration::from_std(w).ok()) {
        Some(w) => at > since + w,
        None => false,
    }
}

/// The sends to one conversation within a group commit.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub conv: ConvId,
    pub messages: &'a [NewMessage],
}

/// What became of one conversation's batch in a group commit.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// Committed: the outcome of each send, at its index.
    Appended(Vec<Appended>),
    /// Another transaction holds the conversation: nothing was done; write it again.
    Busy,
    /// The conversation does not exist.
    NotFound,
}

/// Now, at the microsecond precision Postgres stores, so the returned message equals
/// the one read back later.
pub(crate) fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// How far a message's `created_at` may lie before the day its seq was recorded on:
/// nodes stamp messages with their own clocks, which may disagree a little.
const CLOCK_MARGIN: chrono::Duration = chrono::Duration::hours(6);

/// The start of the UTC day of `t`.
pub(crate) fn day_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(86_400) * 86_400;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// The `created_at` bound of reads from a recorded day: the day less the clock margin,
/// or the epoch (no bound) when no day is recorded.
pub(crate) fn lower_bound(day: Option<DateTime<Utc>>) -> DateTime<Utc> {
    day.and_then(|d| d.checked_sub_signed(CLOCK_MARGIN))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A locked conversation's numbering during a group commit.
struct Numbering {
    kind: ConversationKind,
    last_seq: i64,
    default_tier: Tier,
    /// A message people write, or a system entry, was stored: the conversation moves
    /// up the lists.
    active: bool,
}

/// The columns of the one insert of a group commit. They borrow from the batches:
/// nothing of a send is copied for them.
#[derive(Default)]
struct Columns<'a> {
    conv: Vec<i64>,
    seq: Vec<i64>,
    sender: Vec<i64>,
    cid: Vec<&'a str>,
    body: Vec<&'a str>,
    tier: Vec<&'static str>,
    reply_to: Vec<Option<i64>>,
    kind: Vec<&'static str>,
    attach: Vec<Option<serde_json::Value>>,
    mentions: Vec<String>,
    target: Vec<Option<i64>>,
    meta: Vec<Option<serde_json::Value>>,
}

/// A `bigint[]` literal of `ids` (`""` for none: stored NULL), so a row of arrays of
/// any length fits one `text[]` parameter.
fn id_array(ids: &[UserId]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = ids.iter().map(|u| u.0.to_string()).collect();
    format!("{{{}}}", inner.join(","))
}

/// Whether one send may be stored, by what the lock found: its sender, its target.
fn admit(
    num: &Numbering,
    m: &NewMessage,
    sender: Option<&SenderState>,
    target: Option<&TargetState>,
    windows: &EntryWindows,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let d = &m.draft;
    let role = if num.kind == ConversationKind::Broadcast {
        if m.sender != UserId::SYSTEM {
            return Err(Refusal::SystemOnly);
        }
        Role::Owner
    } else if m.sender == UserId::SYSTEM {
        // The company's backend writes as the system (`POST /service/messages`) into
        // any conversation; no user's token ever names user 0.
        Role::Owner
    } else {
        match sender {
            Some(s) if s.member => {
                if s.blocked {
                    return Err(Refusal::Blocked);
                }
                // A muted member may still take back a message of theirs.
                if let Some(until) = s.muted_until.filter(|u| *u > now) {
                    if d.kind != MessageKind::Recall {
                        return Err(Refusal::Muted(until));
                    }
                }
                s.role.unwrap_or(Role::Member)
            }
            _ => return Err(Refusal::NotMember),
        }
    };
    if d.reply_to.is_some_and(|r| r.0 < 1 || r.0 > num.last_seq) {
        return Err(Refusal::BadReply);
    }
    let Some(seq) = d.target else { return Ok(()) };
    let joined = sender.map_or(0, |s| s.joined_seq);
    let Some(t) = target.filter(|_| seq.0 >= joined) else {
        return Err(Refusal::NoTarget);
    };
    if !t.kind.is_content() {
        return Err(Refusal::WrongTarget);
    }
    match d.kind {
        MessageKind::Edit => {
            if t.sender != m.sender {
                return Err(Refusal::NotSender);
            }
            if t.recalled {
                return Err(Refusal::Recalled);
            }
            if passed(windows.edit, t.ts, now) {
                return Err(Refusal::EditWindowPassed);
            }
        }
        MessageKind::Recall => {
            if t.recalled {
                return Err(Refusal::Recalled);
            }
            let moderates = num.kind == ConversationKind::Group && role.manages();
            if !moderates {
                if t.sender != m.sender {
                    return Err(Refusal::NotSender);
                }
                if passed(windows.recall, t.ts, now) {
                    return Err(Refusal::RecallWindowPassed);
                }
            }
        }
        _ => {
            if t.recalled {
                return Err(Refusal::Recalled);
            }
        }
    }
    Ok(())
}

impl Store {
    /// Stores the batches of many conversations in one transaction (group commit
    /// across conversations), on a connection of the write pool.
    ///
    /// Locks the conversation rows in id order, skipping those another transaction
    /// holds (they come back `Busy`, untouched); answers retried cids found within the
    /// dedupe window with their stored message; checks under the lock that each
    /// sender is a member (and not blocked in a direct conversation) and that each
    /// edit, recall and reaction acts on a retained message it may act on; numbers each
    /// conversation's new entries from its `last_seq + 1`; inserts every row in one
    /// statement, moves every `last_seq` in one, and the senders' read cursors in one;
    /// and commits. The outcome of each batch is at its index. An error means nothing
    /// was committed.
    pub async fn append_many(
        &self,
        batches: &[Batch<'_>],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let mut client = self.write_pool().get().await?;
        let tx = client.transaction().await?;
        let convs: Vec<i64> = batches.iter().map(|b| b.conv.0).collect();
        let (mut k_conv, mut k_sender, mut k_cid) = (vec![], vec![], vec![]);
        let (mut t_conv, mut t_seq) = (vec![], vec![]);
        let mut pairs: HashSet<(i64, i64)> = HashSet::new();
        let (mut p_conv, mut p_sender) = (vec![], vec![]);
        for b in batches {
            for m in b.messages {
                k_conv.push(b.conv.0);
                k_sender.push(m.sender.0);
                k_cid.push(m.draft.cid.as_str());
                if pairs.insert((b.conv.0, m.sender.0)) {
                    p_conv.push(b.conv.0);
                    p_sender.push(m.sender.0);
                }
                if let Some(t) = m.draft.target {
                    t_conv.push(b.conv.0);
                    t_seq.push(t.0);
                }
            }
        }
        let since = self.dedupe_since();
        let c = self.cutoffs();
        // The lock and the lookups go out together (one round trip). Postgres runs
        // pipelined statements in order, so the lookups see the rows locked.
        let lock_stmt = tx.prepare_cached(LOCK_CONVERSATIONS).await?;
        let find_stmt = tx.prepare_cached(FIND_CIDS).await?;
        let senders_stmt = tx.prepare_cached(SENDERS).await?;
        let (locked, found, sender_rows, target_rows) = if t_conv.is_empty() {
            let (l, f, s) = futures_util::future::try_join3(
                tx.query(&lock_stmt, &[&convs]),
                tx.query(&find_stmt, &[&k_conv, &k_sender, &k_cid, &since]),
                tx.query(&senders_stmt, &[&p_conv, &p_sender]),
            )
            .await?;
            (l, f, s, Vec::new())
        } else {
            let targets_stmt = tx.prepare_cached(TARGETS).await?;
            futures_util::future::try_join4(
                tx.query(&lock_stmt, &[&convs]),
                tx.query(&find_stmt, &[&k_conv, &k_sender, &k_cid, &since]),
                tx.query(&senders_stmt, &[&p_conv, &p_sender]),
                tx.query(&targets_stmt, &[&t_conv, &t_seq, &c.normal, &c.important]),
            )
            .await?
        };
        let mut numbering: HashMap<i64, Numbering> = HashMap::with_capacity(locked.len());
        for r in &locked {
            let tier: String = r.try_get("default_tier")?;
            let kind: String = r.try_get("kind")?;
            numbering.insert(
                r.try_get("id")?,
                Numbering {
                    kind: parse_kind(&kind)?,
                    last_seq: r.try_get("last_seq")?,
                    default_tier: parse_tier(&tier)?,
                    active: false,
                },
            );
        }
        let mut sender_state: HashMap<(i64, i64), SenderState> = HashMap::new();
        for r in &sender_rows {
            let role: Option<String> = r.try_get("role")?;
            let joined: Option<i64> = r.try_get("joined_seq")?;
            sender_state.insert(
                (r.try_get("conv")?, r.try_get("sender")?),
                SenderState {
                    member: joined.is_some(),
                    role: role.as_deref().map(parse_role).transpose()?,
                    joined_seq: joined.unwrap_or(0),
                    blocked: r.try_get("blocked")?,
                    muted_until: r.try_get("muted_until")?,
                },
            );
        }
        let mut targets: HashMap<(i64, i64), TargetState> = HashMap::new();
        for r in &target_rows {
            let kind: String = r.try_get("kind")?;
            let tier: String = r.try_get("tier")?;
            targets.insert(
                (r.try_get("conv")?, r.try_get("seq")?),
                TargetState {
                    sender: UserId(r.try_get("sender")?),
                    kind: parse_message_kind(&kind)?,
                    tier: parse_tier(&tier)?,
                    ts: r.try_get("created_at")?,
                    recalled: r.try_get("recalled")?,
                },
            );
        }
        let skipped: Vec<i64> = convs
            .iter()
            .copied()
            .filter(|c| !numbering.contains_key(c))
            .collect();
        let existing: HashSet<i64> = if skipped.is_empty() {
            HashSet::new()
        } else {
            let stmt = tx.prepare_cached(EXISTING).await?;
            let rows = tx.query(&stmt, &[&skipped]).await?;
            rows.iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?
        };
        // Only what was found under the lock counts.
        let found: Vec<Message> = found
            .iter()
            .map(message)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|m| numbering.contains_key(&m.conv.0))
            .collect();
        // Keys borrow their cid (from `found`, then from the batches): nothing is
        // copied to look a send up.
        let mut known: HashMap<(i64, i64, &str), Message> = HashMap::new();
        for m in &found {
            known.insert((m.conv.0, m.sender.0, m.cid.as_str()), m.clone());
        }

        let ts = now_micros();
        let windows = self.entry_windows();
        let mut cols = Columns::default();
        let mut senders: HashMap<(i64, i64), i64> = HashMap::new();
        // Messages people write, outside broadcasts, for offline notifications.
        let queue = self.notify_wake().is_some();
        let (mut q_conv, mut q_seq) = (Vec::new(), Vec::new());
        let mut outcomes = Vec::with_capacity(batches.len());
        for b in batches {
            let conv = b.conv.0;
            let Some(num) = numbering.get_mut(&conv) else {
                outcomes.push(if existing.contains(&conv) {
                    BatchOutcome::Busy
                } else {
                    BatchOutcome::NotFound
                });
                continue;
            };
            let mut out = Vec::with_capacity(b.messages.len());
            for m in b.messages {
                let d = &m.draft;
                if let Some(stored) = known.get(&(conv, m.sender.0, d.cid.as_str())) {
                    out.push(Appended::Duplicate(stored.clone()));
                    continue;
                }
                let state = sender_state.get(&(conv, m.sender.0));
                let target = d.target.and_then(|t| targets.get(&(conv, t.0)));
                if let Err(refusal) = admit(num, m, state, target, &windows, ts) {
                    out.push(Appended::Refused(refusal));
                    continue;
                }
                num.last_seq += 1;
                // An entry acting on a message expires with it.
                let tier = match target {
                    Some(t) => t.tier,
                    None => d.tier.unwrap_or(num.default_tier),
                };
                let stored = Message {
                    conv: b.conv,
                    seq: Seq(num.last_seq),
                    sender: m.sender,
                    cid: d.cid.clone(),
                    body: d.body.clone(),
                    tier,
                    ts,
                    reply_to: d.reply_to,
                    kind: d.kind,
                    attach: d.attach.clone(),
                    mentions: d.mentions.clone(),
                    target: d.target,
                    system: None,
                    reaction: d.reaction.clone(),
                    edited: false,
                    recalled: false,
                    reactions: Vec::new(),
                };
                cols.conv.push(conv);
                cols.seq.push(num.last_seq);
                cols.sender.push(m.sender.0);
                cols.cid.push(d.cid.as_str());
                cols.body.push(d.body.as_str());
                cols.tier.push(tier.as_str());
                cols.reply_to.push(d.reply_to.map(|r| r.0));
                cols.kind.push(d.kind.as_str());
                cols.attach
                    .push(d.attach.as_ref().and_then(|a| serde_json::to_value(a).ok()));
                cols.mentions.push(id_array(&d.mentions));
                cols.target.push(d.target.map(|t| t.0));
                cols.meta.push(
                    d.reaction
                        .as_ref()
                        .and_then(|r| serde_json::to_value(r).ok()),
                );
                if d.kind.is_content() {
                    num.active = true;
                    senders.insert((conv, m.sender.0), num.last_seq);
                    if queue && num.kind != ConversationKind::Broadcast {
                        q_conv.push(conv);
                        q_seq.push(num.last_seq);
                    }
                }
                known.insert((conv, m.sender.0, d.cid.as_str()), stored.clone());
                out.push(Appended::Stored(stored));
            }
            outcomes.push(BatchOutcome::Appended(out));
        }

        if !cols.seq.is_empty() {
            // The first new seq of each conversation, on the day of this commit.
            let day = day_of(ts);
            let mut first: Vec<(i64, i64)> = Vec::new();
            for (conv, seq) in cols.conv.iter().zip(&cols.seq) {
                if !first.iter().any(|(c, _)| c == conv) {
                    first.push((*conv, *seq));
                }
            }
            let (d_conv, d_seq): (Vec<i64>, Vec<i64>) = first.into_iter().unzip();
            let d_day = vec![day; d_conv.len()];
            let mut advanced: Vec<(i64, i64, bool)> = batches
                .iter()
                .filter_map(|b| {
                    numbering
                        .get(&b.conv.0)
                        .map(|n| (b.conv.0, n.last_seq, n.active))
                })
                .collect();
            advanced.sort_unstable();
            advanced.dedup();
            let (mut a_conv, mut a_seq, mut a_active) = (vec![], vec![], vec![]);
            for (conv, seq, active) in advanced {
                a_conv.push(conv);
                a_seq.push(seq);
                a_active.push(active);
            }
            let (mut s_conv, mut s_uid, mut s_seq) = (vec![], vec![], vec![]);
            for ((conv, uid), seq) in senders {
                s_conv.push(conv);
                s_uid.push(uid);
                s_seq.push(seq);
            }
            // Independent writes, pipelined in one round trip.
            let insert = tx.prepare_cached(INSERT_MESSAGES).await?;
            let advance = tx.prepare_cached(ADVANCE_CONVERSATIONS).await?;
            let cursors = tx.prepare_cached(ADVANCE_SENDERS).await?;
            let days = tx.prepare_cached(RECORD_DAYS).await?;
            let queued = async {
                if q_conv.is_empty() {
                    return Ok(0);
                }
                let stmt = tx.prepare_cached(crate::notify::QUEUE_MESSAGES).await?;
                tx.execute(&stmt, &[&q_conv, &q_seq, &ts]).await
            };
            futures_util::future::try_join5(
                tx.execute(
                    &insert,
                    &[
                        &cols.conv,
                        &cols.seq,
                        &cols.sender,
                        &cols.cid,
                        &cols.body,
                        &cols.tier,
                        &cols.reply_to,
                        &cols.kind,
                        &cols.attach,
                        &cols.mentions,
                        &cols.target,
                        &cols.meta,
                        &ts,
                    ],
                ),
                tx.execute(&advance, &[&a_conv, &a_seq, &ts, &a_active]),
                tx.execute(&cursors, &[&s_conv, &s_uid, &s_seq]),
                tx.execute(&days, &[&d_conv, &d_day, &d_seq]),
                queued,
            )
            .await?;
        }
        tx.commit().await?;
        if !q_conv.is_empty() {
            if let Some(wake) = self.notify_wake() {
                wake.notify_one();
            }
        }
        Ok(outcomes)
    }

    /// Up to `limit` retained entries below `before` (ascending), as stored, and the
    /// oldest retained seq of the conversation (`last_seq + 1` when none is retained).
    pub async fn entries(
        &self,
        conv: ConvId,
        before: Seq,
        limit: i64,
        last_seq: Seq,
    ) -> Result<(Vec<Message>, Seq), StoreError> {
        let client = self.pool().get().await?;
        self.page(&client, conv, before, limit, last_seq, Seq(0))
            .await
    }

    /// A page of history as `viewer` sees it: up to `limit` retained entries below
    /// `before` and from `from` on (the seq the viewer joined at), ascending, with the
    /// edits, recalls and reactions of each message folded in; and the oldest retained
    /// seq the viewer can read (`last_seq + 1` when none).
    pub async fn history(
        &self,
        viewer: UserId,
        conv: ConvId,
        before: Seq,
        limit: i64,
        last_seq: Seq,
        from: Seq,
    ) -> Result<(Vec<Message>, Seq), StoreError> {
        let client = self.pool().get().await?;
        let (mut messages, oldest) = self
            .page(&client, conv, before, limit, last_seq, from)
            .await?;
        crate::fold::fold(&client, viewer, &mut messages, self.cutoffs()).await?;
        Ok((messages, oldest))
    }

    async fn page(
        &self,
        client: &deadpool_postgres::Object,
        conv: ConvId,
        before: Seq,
        limit: i64,
        last_seq: Seq,
        from: Seq,
    ) -> Result<(Vec<Message>, Seq), StoreError> {
        let c = self.cutoffs();
        let days = client.prepare_cached(DAYS).await?;
        let page = client.prepare_cached(HISTORY).await?;
        let oldest = client.prepare_cached(OLDEST_RETAINED).await?;
        // The page wants seqs from `before - limit` on (fewer if some expired), so
        // nothing older than that seq's day (less the clock margin) is read.
        let lowest = (before.0 - limit).max(from.0).max(1);
        let row = client.query_one(&days, &[&conv.0, &lowest]).await?;
        let seq_day: Option<DateTime<Utc>> = row.try_get("seq_day")?;
        let first_day: Option<DateTime<Utc>> = row.try_get("first_day")?;
        let (since, first) = (lower_bound(seq_day), lower_bound(first_day));
        let (n, i) = (c.normal, c.important);
        // Independent reads: pipelined, one round trip.
        let (mut rows, row) = futures_util::future::try_join(
            client.query(
                &page,
                &[&conv.0, &before.0, &n, &i, &limit, &since, &from.0],
            ),
            client.query_one(&oldest, &[&conv.0, &n, &i, &first, &from.0]),
        )
        .await?;
        if (rows.len() as i64) < limit && since > first {
            // Short: messages of the page's range expired, and older retained ones
            // (important, say) lie before the bound. Read from the first day.
            rows = client
                .query(
                    &page,
                    &[&conv.0, &before.0, &n, &i, &limit, &first, &from.0],
                )
                .await?;
        }
        let mut messages = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((messages, Seq(oldest.unwrap_or(last_seq.0 + 1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_utc_midnight() {
        let t = DateTime::from_timestamp(86_400 * 3 + 5_000, 7).unwrap_or_default();
        assert_eq!(day_of(t).timestamp(), 86_400 * 3);
        let midnight = DateTime::from_timestamp(86_400 * 3, 0).unwrap_or_default();
        assert_eq!(day_of(midnight), midnight);
    }

    #[test]
    fn the_bound_leaves_a_clock_margin_or_none() {
        let day = DateTime::from_timestamp(86_400 * 10, 0).unwrap_or_default();
        assert_eq!(lower_bound(Some(day)), day - CLOCK_MARGIN);
        // The SQL form of the same bound spells the margin out.
        let hours = CLOCK_MARGIN.num_hours();
        assert!(crate::sql::since!("c", "s").contains(&format!("interval '{hours} hours'")));
        assert_eq!(lower_bound(None), DateTime::UNIX_EPOCH);
    }
}
