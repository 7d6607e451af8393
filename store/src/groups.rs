//! Group management: adding, removing, leaving, renaming, roles and moderation (mutes
//! and bans), and the company's backend setting a group's members. Each change is a
//! `system` entry of the group's seq stream, written under the same row lock as the
//! sends, so every member and device learns it through push and sync, in order.

use crate::error::StoreError;
use crate::events::{lock_users, record_user_event};
use crate::messages::{day_of, now_micros, RECORD_DAYS};
use crate::rows::{parse_kind, parse_role};
use crate::store::Store;
use chat_wire::moderation::Ban;
use chat_wire::{
    ConvId, ConversationKind, Message, MessageKind, Role, Seq, SystemAction, SystemEntry, Tier,
    UserEvent, UserId,
};
use chrono::{DateTime, Utc};

/// Waits for the group's row lock (a group commit holds it for milliseconds).
const LOCK_GROUP: &str = "SELECT kind, last_seq FROM conversations WHERE id = $1 FOR NO KEY UPDATE";

/// Members, longest-standing first: the order an owner who leaves hands over in.
const GROUP_MEMBERS: &str =
    "SELECT user_id, role, silenced_until AS muted_until FROM members WHERE conv = $1
     ORDER BY joined_at, user_id";

const EXISTING_USERS: &str =
    "SELECT id FROM users WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL";

/// Which of `$2` are banned from group `$1`.
const BANNED_AMONG: &str =
    "SELECT user_id FROM bans WHERE conv = $1 AND user_id = ANY($2::bigint[])";

const INSERT_BAN: &str = "INSERT INTO bans (conv, user_id, banned_by) VALUES ($1, $2, $3)
     ON CONFLICT DO NOTHING";

const DELETE_BAN: &str = "DELETE FROM bans WHERE conv = $1 AND user_id = $2";

const SET_MUTE: &str = "UPDATE members SET silenced_until = $3 WHERE conv = $1 AND user_id = $2";

/// The group's bans, oldest first, and where the viewer `$2` stands with it.
const BANS: &str = "SELECT user_id, banned_by, created_at FROM bans WHERE conv = $1
     ORDER BY created_at, user_id";

const VIEWER: &str = "SELECT c.kind, m.role FROM conversations c
     LEFT JOIN members m ON m.conv = c.id AND m.user_id = $2 WHERE c.id = $1";

/// Members added at `$3` read from that seq on; their cursor starts there.
const ADD_MEMBERS: &str = "INSERT INTO members (conv, user_id, read_seq, joined_seq, role)
     SELECT $1, u, $3, $3, 'member' FROM unnest($2::bigint[]) AS u ON CONFLICT DO NOTHING";

const REMOVE_MEMBER: &str = "DELETE FROM members WHERE conv = $1 AND user_id = $2";

const SET_ROLE: &str = "UPDATE members SET role = $3 WHERE conv = $1 AND user_id = $2";

const RENAME: &str = "UPDATE conversations SET title = $2 WHERE id = $1";

const INSERT_ENTRY: &str =
    "INSERT INTO messages (conv, seq, sender, cid, body, tier, kind, meta, created_at)
     VALUES ($1, $2, $3, $4, '', 'important', 'system', $5, $6)";

const ADVANCE: &str = "UPDATE conversations SET last_seq = $2, last_activity = $3 WHERE id = $1";

/// What to change in a group, and who asks.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupChange {
    /// Admins and the owner add users (members already there are skipped).
    Add(Vec<UserId>),
    /// Admins remove members; the owner removes anyone.
    Remove(UserId),
    /// A member leaves; an owner who leaves hands over to the longest-standing admin,
    /// else the longest-standing member.
    Leave,
    /// Admins and the owner change the title.
    Rename(String),
    /// The owner makes a member an admin, or an admin a member.
    SetRole(UserId, Role),
    /// A moderator mutes a member until then (`None` lifts it): admins mute members,
    /// the owner anyone but themself, the system anyone.
    Mute(UserId, Option<DateTime<Utc>>),
    /// A moderator bans a user: removed if a member (by the rules of `Mute`), and
    /// refused by every later add until unbanned.
    Ban(UserId),
    /// Admins and the owner lift a ban.
    Unban(UserId),
    /// The system (the company's backend) sets the members to exactly these users.
    SetMembers(Vec<UserId>),
}

/// Why a change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupRefusal {
    #[error("conversation not found")]
    NoSuchConversation,
    #[error("only groups have members to manage")]
    NotGroup,
    #[error("not a member of this conversation")]
    NotMember,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("unknown user id {0}")]
    UnknownUser(UserId),
    #[error("user {0} is not a member of this group")]
    NotInGroup(UserId),
    #[error("a group has at most {0} members")]
    TooMany(usize),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("user {0} is banned from this group")]
    Banned(UserId),
    #[error("user {0} is not banned from this group")]
    NotBanned(UserId),
}

/// Whether a member of role `actor` may mute or ban one of role `target` (the system
/// moderates anyone; nobody else the owner).
fn moderates(actor: Role, system: bool, target: Role) -> bool {
    system
        || (actor == Role::Owner && target != Role::Owner)
        || (actor.manages() && target == Role::Member)
}

const MODERATION_RULES: &str =
    "admins moderate members; the owner moderates admins too; nobody moderates the owner";

/// A change that was made: its entries (none when there was nothing to change) and
/// who joined or left.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupOutcome {
    pub entries: Vec<Message>,
    pub added: Vec<UserId>,
    pub removed: Vec<UserId>,
}

impl Store {
    /// Makes one change to group `conv` as `actor`, in one transaction under the
    /// group's row lock. `max_members` bounds additions.
    pub async fn change_group(
        &self,
        conv: ConvId,
        actor: UserId,
        change: GroupChange,
        max_members: usize,
    ) -> Result<Result<GroupOutcome, GroupRefusal>, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(LOCK_GROUP).await?;
        let Some(row) = tx.query_opt(&stmt, &[&conv.0]).await? else {
            return Ok(Err(GroupRefusal::NoSuchConversation));
        };
        let kind: String = row.try_get("kind")?;
        let mut last_seq: i64 = row.try_get("last_seq")?;
        let stmt = tx.prepare_cached(GROUP_MEMBERS).await?;
        let mut members: Vec<(UserId, Role)> = Vec::new();
        let mut muted: Vec<(UserId, DateTime<Utc>)> = Vec::new();
        let ts = now_micros();
        for r in tx.query(&stmt, &[&conv.0]).await? {
            let role: String = r.try_get("role")?;
            let user = UserId(r.try_get("user_id")?);
            members.push((user, parse_role(&role)?));
            let until: Option<DateTime<Utc>> = r.try_get("muted_until")?;
            if let Some(until) = until.filter(|u| *u > ts) {
                muted.push((user, until));
            }
        }
        let role_of = |u: UserId| members.iter().find(|(m, _)| *m == u).map(|(_, r)| *r);
        // The system (the company's backend, user 0) acts on any group as its owner
        // would, and moderates the owner too.
        let system = actor == UserId::SYSTEM;
        let Some(actor_role) = role_of(actor).or(system.then_some(Role::Owner)) else {
            return Ok(Err(match parse_kind(&kind)? {
                ConversationKind::Group => GroupRefusal::NotMember,
                _ => GroupRefusal::NotGroup,
            }));
        };
        if parse_kind(&kind)? != ConversationKind::Group {
            return Ok(Err(GroupRefusal::NotGroup));
        }
        let mut out = GroupOutcome::default();
        let mut entries: Vec<SystemEntry> = Vec::new();
        let entry = |action, users: Vec<UserId>| SystemEntry {
            action,
            actor,
            users,
            role: None,
            title: None,
            until: None,
        };
        match change {
            GroupChange::Add(users) => {
                if !actor_role.manages() {
                    return Ok(Err(GroupRefusal::Forbidden(
                        "only admins and the owner add members",
                    )));
                }
                let mut new: Vec<UserId> = users
                    .into_iter()
                    .filter(|u| role_of(*u).is_none())
                    .collect();
                new.sort_unstable();
                new.dedup();
                if new.is_empty() {
                    tx.commit().await?;
                    return Ok(Ok(out));
                }
                let ids: Vec<i64> = new.iter().map(|u| u.0).collect();
                if let Some(refused) = refuse_newcomers(&tx, conv, &new).await? {
                    return Ok(Err(refused));
                }
                if members.len() + new.len() > max_members {
                    return Ok(Err(GroupRefusal::TooMany(max_members)));
                }
                let stmt = tx.prepare_cached(ADD_MEMBERS).await?;
                tx.execute(&stmt, &[&conv.0, &ids, &(last_seq + 1)]).await?;
                out.added.clone_from(&new);
                entries.push(entry(SystemAction::Added, new));
            }
            GroupChange::Remove(user) => {
                if user == actor {
                    return Ok(Err(GroupRefusal::Invalid(
                        "to remove yourself, leave the group",
                    )));
                }
                let Some(role) = role_of(user) else {
                    return Ok(Err(GroupRefusal::NotInGroup(user)));
                };
                let allowed =
                    actor_role == Role::Owner || (actor_role.manages() && role == Role::Member);
                if !allowed {
                    return Ok(Err(GroupRefusal::Forbidden(
                        "admins remove members; only the owner removes admins",
                    )));
                }
                let stmt = tx.prepare_cached(REMOVE_MEMBER).await?;
                tx.execute(&stmt, &[&conv.0, &user.0]).await?;
                out.removed.push(user);
                entries.push(entry(SystemAction::Removed, vec![user]));
            }
            GroupChange::Leave => {
                let stmt = tx.prepare_cached(REMOVE_MEMBER).await?;
                tx.execute(&stmt, &[&conv.0, &actor.0]).await?;
                out.removed.push(actor);
                entries.push(entry(SystemAction::Left, vec![actor]));
                if actor_role == Role::Owner {
                    let rest = members.iter().filter(|(u, _)| *u != actor);
                    let heir = rest
                        .clone()
                        .find(|(_, r)| *r == Role::Admin)
                        .or_else(|| rest.clone().next());
                    if let Some((heir, _)) = heir {
                        let stmt = tx.prepare_cached(SET_ROLE).await?;
                        tx.execute(&stmt, &[&conv.0, &heir.0, &Role::Owner.as_str()])
                            .await?;
                        entries.push(SystemEntry {
                            role: Some(Role::Owner),
                            ..entry(SystemAction::RoleChanged, vec![*heir])
                        });
                    }
                }
            }
            GroupChange::Rename(title) => {
                if !actor_role.manages() {
                    return Ok(Err(GroupRefusal::Forbidden(
                        "only admins and the owner rename the group",
                    )));
                }
                let stmt = tx.prepare_cached(RENAME).await?;
                tx.execute(&stmt, &[&conv.0, &title]).await?;
                entries.push(SystemEntry {
                    title: Some(title),
                    ..entry(SystemAction::Renamed, Vec::new())
                });
            }
            GroupChange::SetRole(user, role) => {
                if actor_role != Role::Owner {
                    return Ok(Err(GroupRefusal::Forbidden("only the owner changes roles")));
                }
                if role == Role::Owner {
                    return Ok(Err(GroupRefusal::Invalid(
                        "role must be admin or member; the owner hands over by leaving",
                    )));
                }
                match role_of(user) {
                    None => return Ok(Err(GroupRefusal::NotInGroup(user))),
                    Some(Role::Owner) => {
                        return Ok(Err(GroupRefusal::Invalid("the owner's role is owner")))
                    }
                    Some(current) if current == role => {
                        tx.commit().await?;
                        return Ok(Ok(out));
                    }
                    Some(_) => {}
                }
                let stmt = tx.prepare_cached(SET_ROLE).await?;
                tx.execute(&stmt, &[&conv.0, &user.0, &role.as_str()])
                    .await?;
                entries.push(SystemEntry {
                    role: Some(role),
                    ..entry(SystemAction::RoleChanged, vec![user])
                });
            }
            GroupChange::Mute(user, until) => {
                if user == actor {
                    return Ok(Err(GroupRefusal::Invalid("you cannot mute yourself")));
                }
                let Some(role) = role_of(user) else {
                    return Ok(Err(GroupRefusal::NotInGroup(user)));
                };
                if !moderates(actor_role, system, role) {
                    return Ok(Err(GroupRefusal::Forbidden(MODERATION_RULES)));
                }
                if until.is_some_and(|u| u <= ts) {
                    return Ok(Err(GroupRefusal::Invalid(
                        "until must lie in the future; null lifts the mute",
                    )));
                }
                let was_muted = muted.iter().any(|(u, _)| *u == user);
                if until.is_none() && !was_muted {
                    tx.commit().await?;
                    return Ok(Ok(out));
                }
                let stmt = tx.prepare_cached(SET_MUTE).await?;
                tx.execute(&stmt, &[&conv.0, &user.0, &until]).await?;
                entries.push(match until {
                    Some(until) => SystemEntry {
                        until: Some(until),
                        ..entry(SystemAction::Muted, vec![user])
                    },
                    None => entry(SystemAction::Unmuted, vec![user]),
                });
            }
            GroupChange::Ban(user) => {
                if user == actor {
                    return Ok(Err(GroupRefusal::Invalid("you cannot ban yourself")));
                }
                if !actor_role.manages() {
                    return Ok(Err(GroupRefusal::Forbidden(MODERATION_RULES)));
                }
                if !banned_among(&tx, conv, &[user.0]).await?.is_empty() {
                    tx.commit().await?;
                    return Ok(Ok(out));
                }
                match role_of(user) {
                    Some(role) => {
                        if !moderates(actor_role, system, role) {
                            return Ok(Err(GroupRefusal::Forbidden(MODERATION_RULES)));
                        }
                        let stmt = tx.prepare_cached(REMOVE_MEMBER).await?;
                        tx.execute(&stmt, &[&conv.0, &user.0]).await?;
                        out.removed.push(user);
                    }
                    None => {
                        let stmt = tx.prepare_cached(EXISTING_USERS).await?;
                        if user.0 <= 0 || tx.query(&stmt, &[&vec![user.0]]).await?.is_empty() {
                            return Ok(Err(GroupRefusal::UnknownUser(user)));
                        }
                    }
                }
                let stmt = tx.prepare_cached(INSERT_BAN).await?;
                tx.execute(&stmt, &[&conv.0, &user.0, &actor.0]).await?;
                entries.push(entry(SystemAction::Banned, vec![user]));
            }
            GroupChange::Unban(user) => {
                if !actor_role.manages() {
                    return Ok(Err(GroupRefusal::Forbidden(
                        "only admins and the owner lift bans",
                    )));
                }
                let stmt = tx.prepare_cached(DELETE_BAN).await?;
                if tx.execute(&stmt, &[&conv.0, &user.0]).await? == 0 {
                    return Ok(Err(GroupRefusal::NotBanned(user)));
                }
                entries.push(entry(SystemAction::Unbanned, vec![user]));
            }
            GroupChange::SetMembers(users) => {
                if !system {
                    return Ok(Err(GroupRefusal::Forbidden(
                        "only the company's backend sets a group's members",
                    )));
                }
                let mut wanted = users;
                wanted.sort_unstable();
                wanted.dedup();
                if wanted.is_empty() {
                    return Ok(Err(GroupRefusal::Invalid(
                        "a group keeps at least one member",
                    )));
                }
                if wanted.len() > max_members {
                    return Ok(Err(GroupRefusal::TooMany(max_members)));
                }
                let new: Vec<UserId> = wanted
                    .iter()
                    .copied()
                    .filter(|u| role_of(*u).is_none())
                    .collect();
                let gone: Vec<(UserId, Role)> = members
                    .iter()
                    .copied()
                    .filter(|(u, _)| !wanted.contains(u))
                    .collect();
                if !new.is_empty() {
                    let ids: Vec<i64> = new.iter().map(|u| u.0).collect();
                    if let Some(refused) = refuse_newcomers(&tx, conv, &new).await? {
                        return Ok(Err(refused));
                    }
                    let stmt = tx.prepare_cached(ADD_MEMBERS).await?;
                    tx.execute(&stmt, &[&conv.0, &ids, &(last_seq + 1)]).await?;
                    out.added.clone_from(&new);
                    entries.push(entry(SystemAction::Added, new.clone()));
                }
                if !gone.is_empty() {
                    let stmt = tx.prepare_cached(REMOVE_MEMBER).await?;
                    for (u, _) in &gone {
                        tx.execute(&stmt, &[&conv.0, &u.0]).await?;
                        out.removed.push(*u);
                    }
                    entries.push(entry(
                        SystemAction::Removed,
                        gone.iter().map(|(u, _)| *u).collect(),
                    ));
                    // A group without its owner is handed to the longest-standing admin
                    // who stays, else the longest-standing member, else a new one.
                    if gone.iter().any(|(_, r)| *r == Role::Owner) {
                        let stay = members.iter().filter(|(u, _)| wanted.contains(u));
                        let heir = stay
                            .clone()
                            .find(|(_, r)| *r == Role::Admin)
                            .or_else(|| stay.clone().next())
                            .map(|(u, _)| *u)
                            .or_else(|| new.first().copied());
                        if let Some(heir) = heir {
                            let stmt = tx.prepare_cached(SET_ROLE).await?;
                            tx.execute(&stmt, &[&conv.0, &heir.0, &Role::Owner.as_str()])
                                .await?;
                            entries.push(SystemEntry {
                                role: Some(Role::Owner),
                                ..entry(SystemAction::RoleChanged, vec![heir])
                            });
                        }
                    }
                }
                if entries.is_empty() {
                    tx.commit().await?;
                    return Ok(Ok(out));
                }
            }
        }
        // The members who came and went learn it in their own streams too, so a client
        // that was away finds it in sync.
        let concerned: Vec<UserId> = out.added.iter().chain(&out.removed).copied().collect();
        if !concerned.is_empty() {
            lock_users(&tx, &concerned).await?;
            for u in &out.added {
                record_user_event(&tx, *u, &UserEvent::Joined { conv }).await?;
            }
            for u in &out.removed {
                record_user_event(&tx, *u, &UserEvent::Left { conv }).await?;
            }
        }
        let insert = tx.prepare_cached(INSERT_ENTRY).await?;
        let first = last_seq + 1;
        for e in entries {
            last_seq += 1;
            let cid = format!("system:{last_seq}");
            let meta = serde_json::to_value(&e)
                .map_err(|err| StoreError::Unavailable(format!("system entry: {err}")))?;
            tx.execute(&insert, &[&conv.0, &last_seq, &actor.0, &cid, &meta, &ts])
                .await?;
            out.entries.push(Message {
                conv,
                seq: Seq(last_seq),
                sender: actor,
                cid,
                body: String::new(),
                tier: Tier::Important,
                ts,
                reply_to: None,
                kind: MessageKind::System,
                attach: None,
                mentions: Vec::new(),
                target: None,
                system: Some(e),
                reaction: None,
                edited: false,
                recalled: false,
                reactions: Vec::new(),
            });
        }
        let stmt = tx.prepare_cached(ADVANCE).await?;
        tx.execute(&stmt, &[&conv.0, &last_seq, &ts]).await?;
        let stmt = tx.prepare_cached(RECORD_DAYS).await?;
        tx.execute(&stmt, &[&vec![conv.0], &vec![day_of(ts)], &vec![first]])
            .await?;
        tx.commit().await?;
        Ok(Ok(out))
    }
}

/// Why users about to be added cannot be: one does not exist, or is banned.
async fn refuse_newcomers(
    tx: &deadpool_postgres::Transaction<'_>,
    conv: ConvId,
    new: &[UserId],
) -> Result<Option<GroupRefusal>, StoreError> {
    let ids: Vec<i64> = new.iter().map(|u| u.0).collect();
    let stmt = tx.prepare_cached(EXISTING_USERS).await?;
    let found: Vec<i64> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    if let Some(missing) = new.iter().find(|u| !found.contains(&u.0) || u.0 <= 0) {
        return Ok(Some(GroupRefusal::UnknownUser(*missing)));
    }
    Ok(banned_among(tx, conv, &ids)
        .await?
        .first()
        .map(|b| GroupRefusal::Banned(*b)))
}

/// Which of `users` are banned from `conv`, in the caller's transaction.
async fn banned_among(
    tx: &deadpool_postgres::Transaction<'_>,
    conv: ConvId,
    users: &[i64],
) -> Result<Vec<UserId>, StoreError> {
    let stmt = tx.prepare_cached(BANNED_AMONG).await?;
    let ids = users.to_vec();
    tx.query(&stmt, &[&conv.0, &ids])
        .await?
        .iter()
        .map(|r| Ok(UserId(r.try_get("user_id")?)))
        .collect()
}

impl Store {
    /// The bans of group `conv`, for its admins and owner.
    pub async fn bans(
        &self,
        conv: ConvId,
        viewer: UserId,
    ) -> Result<Result<Vec<Ban>, GroupRefusal>, StoreError> {
        let client = self.pool().get().await?;
        let stmt = client.prepare_cached(VIEWER).await?;
        let Some(row) = client.query_opt(&stmt, &[&conv.0, &viewer.0]).await? else {
            return Ok(Err(GroupRefusal::NoSuchConversation));
        };
        let kind: String = row.try_get("kind")?;
        let role: Option<String> = row.try_get("role")?;
        let kind = parse_kind(&kind)?;
        let Some(role) = role.as_deref().map(parse_role).transpose()? else {
            return Ok(Err(match kind {
                ConversationKind::Group => GroupRefusal::NotMember,
                _ => GroupRefusal::NotGroup,
            }));
        };
        if kind != ConversationKind::Group {
            return Ok(Err(GroupRefusal::NotGroup));
        }
        if !role.manages() {
            return Ok(Err(GroupRefusal::Forbidden(
                "only admins and the owner see the bans",
            )));
        }
        let stmt = client.prepare_cached(BANS).await?;
        client
            .query(&stmt, &[&conv.0])
            .await?
            .iter()
            .map(|r| {
                Ok(Ok(Ban {
                    user: UserId(r.try_get("user_id")?),
                    by: UserId(r.try_get("banned_by")?),
                    since: r.try_get("created_at")?,
                }))
            })
            .collect::<Result<Result<Vec<Ban>, GroupRefusal>, StoreError>>()
    }
}
