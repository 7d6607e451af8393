//! Who is online across the cluster.
//!
//! A user is online while any of their sockets is open on any node. On a single node
//! ([`Presence::local`]) that is the node's own memory. On Redis ([`Presence::redis`])
//! every socket is a field of its user's hash, named after the node *incarnation*
//! that holds it (`<node>|<incarnation>|<session>`), and an incarnation counts only
//! while its lease key lives: a node renews its lease every third of
//! `presence.lease`, so a node killed with -9 stops counting within one lease, and
//! the next sweep of any other node removes its sockets and announces the users it
//! left with no socket as offline. A node that lost its lease (Redis unreachable, the
//! process paused) starts a new incarnation and registers its sockets again; the old
//! one is swept like a dead node's, so nothing it wrote is left behind.
//!
//! Announcements are exact transitions: a per-user flag (`chat:pa:<user>`) is set by
//! the first socket's registration and cleared only when no socket is left, so a user
//! who reconnects to another node, or flaps within the offline grace, costs nothing.
//!
//! Keys: `chat:pl:<inc>` lease, `chat:pi` set of incarnations, `chat:pn:<inc>` the
//! incarnation's sockets (`<user>|<session>`), `chat:ps:<user>` hash of a user's
//! sockets (field → since, unix ms), `chat:pa:<user>` the announced flag.

use chat_wire::UserId;
use redis::aio::ConnectionManager;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why Redis could not answer a presence call.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One socket opening or closing on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened {
        user: UserId,
        session: u64,
        /// Unix milliseconds.
        since: i64,
    },
    Closed {
        user: UserId,
        session: u64,
    },
}

/// What a [`Change`] did to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The user was not announced online: announce it.
    CameOnline,
    /// The user has no socket left anywhere: offline once the grace passes, unless
    /// one opens meanwhile ([`Presence::settle_offline`] decides).
    NoneLeft,
    /// Nothing to announce.
    Nothing,
}

/// One open socket of a user, somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub node: String,
    pub session: u64,
    /// Unix milliseconds.
    pub since: i64,
}

/// The cluster's presence. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    lease: Duration,
    backend: Backend,
}

enum Backend {
    Local(Mutex<Local>),
    Redis(Box<RedisPresence>),
}

#[derive(Default)]
struct Local {
    sessions: HashMap<UserId, HashMap<u64, i64>>,
    announced: HashSet<UserId>,
}

struct RedisPresence {
    conn: ConnectionManager,
    /// This process's incarnation: `<node>|<random>`; replaced when the lease is lost.
    incarnation: Mutex<String>,
    /// Incarnations whose lease lived at the last sweep.
    live: Mutex<HashSet<String>>,
    /// The first lease was taken.
    leased: std::sync::atomic::AtomicBool,
    /// The first word of every key (`bus.channel_prefix`).
    prefix: String,
}

/// Clears the announced flag if the user has no socket left; 1 when it was set (the
/// user goes offline now), else 0.
const SETTLE: &str = "if redis.call('HLEN', KEYS[1]) == 0 then \
    return redis.call('DEL', KEYS[2]) end return 0";

fn new_incarnation(node: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{node}|{:x}{:x}", nanos, std::process::id())
}

/// The incarnation a socket field belongs to, and its session.
fn split_field(field: &str) -> Option<(&str, u64)> {
    let (inc, session) = field.rsplit_once('|')?;
    Some((inc, session.parse().ok()?))
}

/// The node an incarnation belongs to.
fn node_of(inc: &str) -> &str {
    inc.rsplit_once('|').map_or(inc, |(node, _)| node)
}

impl Presence {
    /// Presence of a single node, in its memory.
    pub fn local(node: String) -> Presence {
        Presence {
            inner: Arc::new(Inner {
                node,
                lease: Duration::from_secs(10),
                backend: Backend::Local(Mutex::new(Local::default())),
            }),
        }
    }

    /// Presence on Redis, with leases of `lease`. Takes its first lease at once.
    pub async fn redis(
        url: &str,
        prefix: &str,
        node: String,
        lease: Duration,
    ) -> Result<Presence, PresenceError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = client.get_connection_manager_with_config(config).await?;
        let inc = new_incarnation(&node);
        let presence = Presence {
            inner: Arc::new(Inner {
                node,
                lease,
                backend: Backend::Redis(Box::new(RedisPresence {
                    conn,
                    incarnation: Mutex::new(inc.clone()),
                    live: Mutex::new(HashSet::from([inc])),
                    leased: std::sync::atomic::AtomicBool::new(false),
                    prefix: prefix.to_owned(),
                })),
            }),
        };
        presence.renew().await?;
        Ok(presence)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// How long a lease lives; renew at a third of it.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Whether this presence spans a cluster (leases to renew, dead nodes to sweep).
    pub fn is_clustered(&self) -> bool {
        matches!(self.inner.backend, Backend::Redis(_))
    }

    /// Applies sockets opening and closing here, in order; one effect per change.
    pub async fn apply(&self, changes: &[Change]) -> Result<Vec<Effect>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(local) => {
                let mut l = local.lock().unwrap_or_else(|e| e.into_inner());
                Ok(changes.iter().map(|c| l.apply(*c)).collect())
            }
            Backend::Redis(r) => r.apply(changes).await,
        }
    }

    /// Of users whose last socket closed a grace ago: those with still none anywhere,
    /// who are now offline (each is returned once per going offline).
    pub async fn settle_offline(&self, users: &[UserId]) -> Result<Vec<UserId>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(local) => {
                let mut l = local.lock().unwrap_or_else(|e| e.into_inner());
                Ok(users
                    .iter()
                    .copied()
                    .filter(|u| !l.sessions.contains_key(u) && l.announced.remove(u))
                    .collect())
            }
            Backend::Redis(r) => r.settle(users).await,
        }
    }

    /// Which of `users` have a socket open anywhere.
    pub async fn online_of(&self, users: &[UserId]) -> Result<HashSet<UserId>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(local) => {
                let l = local.lock().unwrap_or_else(|e| e.into_inner());
                Ok(users
                    .iter()
                    .copied()
                    .filter(|u| l.sessions.contains_key(u))
                    .collect())
            }
            Backend::Redis(r) => {
                let all = r.sessions_of(users).await?;
                Ok(all
                    .into_iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(u, _)| u)
                    .collect())
            }
        }
    }

    /// Which of `users` are announced online (cheaper than [`Presence::online_of`]:
    /// one read for all; used to send presence only to those who can receive it).
    pub async fn announced_of(&self, users: &[UserId]) -> Result<HashSet<UserId>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(local) => {
                let l = local.lock().unwrap_or_else(|e| e.into_inner());
                Ok(users
                    .iter()
                    .copied()
                    .filter(|u| l.announced.contains(u))
                    .collect())
            }
            Backend::Redis(r) => r.announced_of(users).await,
        }
    }

    /// The open sockets of `user` on live nodes.
    pub async fn sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(local) => {
                let l = local.lock().unwrap_or_else(|e| e.into_inner());
                let mut out: Vec<SessionInfo> = l
                    .sessions
                    .get(&user)
                    .into_iter()
                    .flatten()
                    .map(|(session, since)| SessionInfo {
                        node: self.inner.node.clone(),
                        session: *session,
                        since: *since,
                    })
                    .collect();
                out.sort_by_key(|s| (s.since, s.session));
                Ok(out)
            }
            Backend::Redis(r) => {
                let mut all = r.sessions_of(&[user]).await?;
                Ok(all.pop().map(|(_, s)| s).unwrap_or_default())
            }
        }
    }

    /// Users with a socket open on a live node, in id order.
    pub async fn online_users(&self) -> Result<Vec<UserId>, PresenceError> {
        let mut users: Vec<UserId> = match &self.inner.backend {
            Backend::Local(local) => {
                let l = local.lock().unwrap_or_else(|e| e.into_inner());
                l.sessions.keys().copied().collect()
            }
            Backend::Redis(r) => r.online_users().await?,
        };
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Renews this node's lease. `Ok(false)`: the lease had expired (other nodes may
    /// have swept its sockets), so a new incarnation took its place and the node must
    /// register all its sockets again ([`Presence::apply`] with `Opened`).
    pub async fn renew(&self) -> Result<bool, PresenceError> {
        match &self.inner.backend {
            Backend::Local(_) => Ok(true),
            Backend::Redis(r) => r.renew(&self.inner.node, self.inner.lease).await,
        }
    }

    /// Leaves this node's incarnation to be swept and takes a new one, under which the
    /// caller registers its sockets again (after Redis failed a batch half-way).
    pub async fn reincarnate(&self) -> Result<(), PresenceError> {
        match &self.inner.backend {
            Backend::Local(_) => Ok(()),
            Backend::Redis(r) => r.reincarnate(&self.inner.node, self.inner.lease).await,
        }
    }

    /// Sweeps incarnations whose lease expired: their sockets are removed, and the
    /// users left with none anywhere are returned (now offline).
    pub async fn sweep(&self) -> Result<Vec<UserId>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(_) => Ok(Vec::new()),
            Backend::Redis(r) => r.sweep(self.inner.lease).await,
        }
    }

    /// Removes this node's own sockets (a node that stops cleanly); returns the users
    /// left with none anywhere.
    pub async fn leave(&self) -> Result<Vec<UserId>, PresenceError> {
        match &self.inner.backend {
            Backend::Local(local) => {
                let mut l = local.lock().unwrap_or_else(|e| e.into_inner());
                l.sessions.clear();
                Ok(l.announced.drain().collect())
            }
            Backend::Redis(r) => {
                let inc = r.incarnation();
                r.reap(&inc).await
            }
        }
    }
}

impl Local {
    fn apply(&mut self, change: Change) -> Effect {
        match change {
            Change::Opened {
                user,
                session,
                since,
            } => {
                self.sessions
                    .entry(user)
                    .or_default()
                    .insert(session, since);
                if self.announced.insert(user) {
                    Effect::CameOnline
                } else {
                    Effect::Nothing
                }
            }
            Change::Closed { user, session } => {
                let Some(s) = self.sessions.get_mut(&user) else {
                    return Effect::Nothing;
                };
                s.remove(&session);
                if s.is_empty() {
                    self.sessions.remove(&user);
                    Effect::NoneLeft
                } else {
                    Effect::Nothing
                }
            }
        }
    }
}

impl RedisPresence {
    /// Every key of presence starts with the cluster's prefix (`bus.channel_prefix`).
    fn incarnations_key(&self) -> String {
        format!("{}:pi", self.prefix)
    }
    fn lease_key(&self, inc: &str) -> String {
        format!("{}:pl:{inc}", self.prefix)
    }
    fn node_key(&self, inc: &str) -> String {
        format!("{}:pn:{inc}", self.prefix)
    }
    fn user_key(&self, user: UserId) -> String {
        format!("{}:ps:{user}", self.prefix)
    }
    fn flag_key(&self, user: UserId) -> String {
        format!("{}:pa:{user}", self.prefix)
    }

    fn incarnation(&self) -> String {
        self.incarnation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<Effect>, PresenceError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let inc = self.incarnation();
        let node_set = self.node_key(&inc);
        let mut pipe = redis::pipe();
        for change in changes {
            match *change {
                Change::Opened {
                    user,
                    session,
                    since,
                } => {
                    pipe.cmd("HSET")
                        .arg(self.user_key(user))
                        .arg(format!("{inc}|{session}"))
                        .arg(since)
                        .ignore();
                    pipe.cmd("SADD")
                        .arg(&node_set)
                        .arg(format!("{user}|{session}"))
                        .ignore();
                    pipe.cmd("SET").arg(self.flag_key(user)).arg(1).arg("GET");
                }
                Change::Closed { user, session } => {
                    pipe.cmd("HDEL")
                        .arg(self.user_key(user))
                        .arg(format!("{inc}|{session}"))
                        .ignore();
                    pipe.cmd("SREM")
                        .arg(&node_set)
                        .arg(format!("{user}|{session}"))
                        .ignore();
                    pipe.cmd("HLEN").arg(self.user_key(user));
                }
            }
        }
        let answers: Vec<redis::Value> = pipe.query_async(&mut self.conn()).await?;
        Ok(changes
            .iter()
            .zip(answers)
            .map(|(change, answer)| match change {
                Change::Opened { .. } => match answer {
                    redis::Value::Nil => Effect::CameOnline,
                    _ => Effect::Nothing,
                },
                Change::Closed { .. } => match answer {
                    redis::Value::Int(0) => Effect::NoneLeft,
                    _ => Effect::Nothing,
                },
            })
            .collect())
    }

    async fn settle(&self, users: &[UserId]) -> Result<Vec<UserId>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("EVAL")
                .arg(SETTLE)
                .arg(2)
                .arg(self.user_key(*user))
                .arg(self.flag_key(*user));
        }
        let gone: Vec<i64> = pipe.query_async(&mut self.conn()).await?;
        Ok(users
            .iter()
            .zip(gone)
            .filter(|(_, g)| *g == 1)
            .map(|(u, _)| *u)
            .collect())
    }

    async fn announced_of(&self, users: &[UserId]) -> Result<HashSet<UserId>, PresenceError> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<String> = users.iter().map(|u| self.flag_key(*u)).collect();
        let flags: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await?;
        Ok(users
            .iter()
            .zip(flags)
            .filter(|(_, f)| f.is_some())
            .map(|(u, _)| *u)
            .collect())
    }

    /// Whether each incarnation's lease lives: from the last sweep, asking Redis for
    /// the ones it did not know (a node started since).
    async fn live_of(&self, incs: &HashSet<String>) -> Result<HashSet<String>, PresenceError> {
        let (mut live, unknown): (HashSet<String>, Vec<String>) = {
            let known = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let live = incs
                .iter()
                .filter(|i| known.contains(*i))
                .cloned()
                .collect();
            let unknown = incs
                .iter()
                .filter(|i| !known.contains(*i))
                .cloned()
                .collect();
            (live, unknown)
        };
        if !unknown.is_empty() {
            let mut pipe = redis::pipe();
            for inc in &unknown {
                pipe.cmd("EXISTS").arg(self.lease_key(inc));
            }
            let exists: Vec<i64> = pipe.query_async(&mut self.conn()).await?;
            live.extend(
                unknown
                    .into_iter()
                    .zip(exists)
                    .filter(|(_, e)| *e == 1)
                    .map(|(i, _)| i),
            );
        }
        Ok(live)
    }

    async fn sessions_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, Vec<SessionInfo>)>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("HGETALL").arg(self.user_key(*user));
        }
        let maps: Vec<HashMap<String, i64>> = pipe.query_async(&mut self.conn()).await?;
        let incs: HashSet<String> = maps
            .iter()
            .flat_map(|m| m.keys())
            .filter_map(|f| split_field(f).map(|(inc, _)| inc.to_owned()))
            .collect();
        let live = self.live_of(&incs).await?;
        Ok(users
            .iter()
            .zip(maps)
            .map(|(user, fields)| {
                let mut sessions: Vec<SessionInfo> = fields
                    .iter()
                    .filter_map(|(field, since)| {
                        let (inc, session) = split_field(field)?;
                        live.contains(inc).then(|| SessionInfo {
                            node: node_of(inc).to_owned(),
                            session,
                            since: *since,
                        })
                    })
                    .collect();
                sessions.sort_by_key(|s| (s.since, s.session));
                (*user, sessions)
            })
            .collect())
    }

    async fn online_users(&self) -> Result<Vec<UserId>, PresenceError> {
        let incs: HashSet<String> = redis::cmd("SMEMBERS")
            .arg(self.incarnations_key())
            .query_async(&mut self.conn())
            .await?;
        let live = self.live_of(&incs).await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for inc in &live {
            pipe.cmd("SMEMBERS").arg(self.node_key(inc));
        }
        let sets: Vec<Vec<String>> = pipe.query_async(&mut self.conn()).await?;
        Ok(sets
            .iter()
            .flatten()
            .filter_map(|m| m.split_once('|')?.0.parse().ok().map(UserId))
            .collect())
    }

    async fn renew(&self, node: &str, lease: Duration) -> Result<bool, PresenceError> {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let inc = self.incarnation();
        let renewed: Option<String> = redis::cmd("SET")
            .arg(self.lease_key(&inc))
            .arg(1)
            .arg("PX")
            .arg(ms)
            .arg("XX")
            .query_async(&mut self.conn())
            .await?;
        if renewed.is_some() {
            return Ok(true);
        }
        // Never taken (the first renewal), or expired: a fresh incarnation, so a sweep
        // of the old one cannot remove what is registered from now on.
        let first = !self.leased.swap(true, std::sync::atomic::Ordering::AcqRel);
        let next = if first { inc } else { new_incarnation(node) };
        self.take_lease(&next, ms).await?;
        Ok(first)
    }

    async fn reincarnate(&self, node: &str, lease: Duration) -> Result<(), PresenceError> {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        self.take_lease(&new_incarnation(node), ms).await
    }

    /// Takes a lease of `ms` for incarnation `next` and makes it this node's.
    async fn take_lease(&self, next: &str, ms: u64) -> Result<(), PresenceError> {
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(self.lease_key(next))
            .arg(1)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("SADD")
            .arg(self.incarnations_key())
            .arg(next)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        *self.incarnation.lock().unwrap_or_else(|e| e.into_inner()) = next.to_owned();
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(next.to_owned());
        Ok(())
    }

    async fn sweep(&self, lease: Duration) -> Result<Vec<UserId>, PresenceError> {
        let incs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.incarnations_key())
            .query_async(&mut self.conn())
            .await?;
        let own = self.incarnation();
        let mut pipe = redis::pipe();
        for inc in &incs {
            pipe.cmd("EXISTS").arg(self.lease_key(inc));
        }
        let exists: Vec<i64> = if incs.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut self.conn()).await?
        };
        let mut live = HashSet::from([own.clone()]);
        let mut dead = Vec::new();
        for (inc, e) in incs.into_iter().zip(exists) {
            if e == 1 || inc == own {
                live.insert(inc);
            } else {
                dead.push(inc);
            }
        }
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
        let claim_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1) * 3;
        let mut offline = Vec::new();
        for inc in dead {
            // One sweeper per dead incarnation.
            let claimed: Option<String> = redis::cmd("SET")
                .arg(format!("{}:pr:{inc}", self.prefix))
                .arg(&own)
                .arg("NX")
                .arg("PX")
                .arg(claim_ms)
                .query_async(&mut self.conn())
                .await?;
            if claimed.is_some() {
                offline.extend(self.reap(&inc).await?);
            }
        }
        Ok(offline)
    }

    /// Removes every socket of incarnation `inc`; returns the users left with none.
    async fn reap(&self, inc: &str) -> Result<Vec<UserId>, PresenceError> {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.node_key(inc))
            .query_async(&mut self.conn())
            .await?;
        let mut users = Vec::new();
        let mut pipe = redis::pipe();
        for m in &members {
            let Some((user, session)) = m.split_once('|') else {
                continue;
            };
            let Ok(user) = user.parse::<i64>() else {
                continue;
            };
            pipe.cmd("HDEL")
                .arg(self.user_key(UserId(user)))
                .arg(format!("{inc}|{session}"))
                .ignore();
            users.push(UserId(user));
        }
        pipe.cmd("DEL").arg(self.node_key(inc)).ignore();
        pipe.cmd("DEL").arg(self.lease_key(inc)).ignore();
        pipe.cmd("SREM")
            .arg(self.incarnations_key())
            .arg(inc)
            .ignore();
        let _: () = pipe.query_async(&mut self.conn()).await?;
        users.sort();
        users.dedup();
        self.settle(&users).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_their_incarnation_and_session() {
        assert_eq!(split_field("node-1|abc|42"), Some(("node-1|abc", 42)));
        assert_eq!(node_of("node-1|abc"), "node-1");
        assert_eq!(split_field("garbage"), None);
    }

    #[tokio::test]
    async fn a_local_user_is_announced_once_per_coming_online() {
        let p = Presence::local("n".into());
        let u = UserId(7);
        let open = |session| Change::Opened {
            user: u,
            session,
            since: 1,
        };
        let close = |session| Change::Closed { user: u, session };
        let effects = p.apply(&[open(1), open(2), close(1)]).await.expect("local");
        assert_eq!(
            effects,
            vec![Effect::CameOnline, Effect::Nothing, Effect::Nothing]
        );
        assert_eq!(
            p.apply(&[close(2)]).await.expect("local"),
            vec![Effect::NoneLeft]
        );
        // Back within the grace: nothing to announce either way.
        assert_eq!(
            p.apply(&[open(3)]).await.expect("local"),
            vec![Effect::Nothing]
        );
        assert!(p.settle_offline(&[u]).await.expect("local").is_empty());
        p.apply(&[close(3)]).await.expect("local");
        assert_eq!(p.settle_offline(&[u]).await.expect("local"), vec![u]);
        assert!(p.settle_offline(&[u]).await.expect("local").is_empty());
        assert!(p.online_of(&[u]).await.expect("local").is_empty());
    }
}
