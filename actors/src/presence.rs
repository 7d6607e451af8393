//! The PresenceHub actor: this node's part of the cluster's presence.
//!
//! The Registry tells it every socket that opens or closes here. Changes are applied
//! to [`Presence`] in batches (one Redis round trip per tick, however many sockets
//! came and went), and only real transitions are announced: a user's first socket
//! anywhere (online) and, a grace after their last one closed, none anywhere
//! (offline). A reconnect within the grace, on this node or another, announces
//! nothing, so a reconnect storm costs socket registrations only.
//!
//! An announcement goes to the user's watchers (contacts, direct peers, members of
//! small groups: [`Store::presence_watchers`]): this node's sessions of them get the
//! frame directly, and one bus event per watcher announced online carries the
//! tick's updates to the nodes where that watcher is (their user channel).
//!
//! The hub also keeps the node's lease (renewed at a third of its length) and sweeps
//! the incarnations of dead nodes, announcing offline the users they left with no
//! socket, so a node killed with -9 leaves no ghost online past one lease and one
//! sweep. Should Redis fail a batch, the hub re-registers every socket it holds under
//! a new incarnation: what Redis missed is swept with the old one.

use crate::directory::Directory;
use crate::metrics as m;
use actix::prelude::*;
use chat_bus::presence::{Change, Effect, Presence};
use chat_bus::{Bus, Channel, Event};
use chat_store::Store;
use chat_wire::{PresenceState, ServerFrame, UserId};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often queued socket changes go to Redis, and graces are checked.
const TICK: Duration = Duration::from_millis(100);

/// What the hub is set up with.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// How long after a user's last socket closed they are announced offline.
    pub offline_grace: Duration,
    /// Groups up to this many members see their members' presence pushed.
    pub group_max_members: i64,
}

/// The PresenceHub actor. See the module documentation.
pub struct PresenceHub {
    presence: Presence,
    store: Store,
    bus: Arc<dyn Bus>,
    directory: Directory,
    cfg: PresenceConfig,
    /// Sockets open here: user → session → since (unix ms). What is registered again
    /// under a new incarnation.
    local: HashMap<UserId, HashMap<u64, i64>>,
    queue: Vec<Change>,
    /// Users whose last socket closed, with when the grace ends.
    going: HashMap<UserId, Instant>,
    /// A batch is with Redis.
    busy: bool,
    /// Redis failed: register everything again once it answers.
    reregister: bool,
}

impl PresenceHub {
    pub fn new(
        presence: Presence,
        store: Store,
        bus: Arc<dyn Bus>,
        directory: Directory,
        cfg: PresenceConfig,
    ) -> Self {
        PresenceHub {
            presence,
            store,
            bus,
            directory,
            cfg,
            local: HashMap::new(),
            queue: Vec::new(),
            going: HashMap::new(),
            busy: false,
            reregister: false,
        }
    }

    /// Every socket held here, as changes that register them.
    fn all_opened(&self) -> Vec<Change> {
        self.local
            .iter()
            .flat_map(|(user, sessions)| {
                sessions.iter().map(|(session, since)| Change::Opened {
                    user: *user,
                    session: *session,
                    since: *since,
                })
            })
            .collect()
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.reregister {
            self.queue = self.all_opened();
        }
        let now = Instant::now();
        let due: Vec<UserId> = self
            .going
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(u, _)| *u)
            .collect();
        if self.queue.is_empty() && due.is_empty() {
            return;
        }
        for u in &due {
            self.going.remove(u);
        }
        let changes = std::mem::take(&mut self.queue);
        let presence = self.presence.clone();
        let reregister = self.reregister;
        self.busy = true;
        let work = async move {
            let done = async {
                if reregister {
                    // A fresh incarnation: what a failed batch left half-done in Redis
                    // belongs to the old one, which is swept when its lease ends.
                    presence.reincarnate().await?;
                }
                let effects = presence.apply(&changes).await?;
                let offline = presence.settle_offline(&due).await?;
                Ok::<_, chat_bus::presence::PresenceError>((changes, effects, offline))
            }
            .await;
            (due, done)
        };
        ctx.spawn(work.into_actor(self).map(move |(due, res), act, ctx| {
            act.busy = false;
            match res {
                Ok((changes, effects, offline)) => {
                    act.reregister = false;
                    metrics::counter!(m::PRESENCE_CHANGES_TOTAL).increment(changes.len() as u64);
                    let mut online = Vec::new();
                    for (change, effect) in changes.iter().zip(effects) {
                        match (change, effect) {
                            (Change::Opened { user, .. }, Effect::CameOnline) => {
                                act.going.remove(user);
                                online.push(*user);
                            }
                            (Change::Opened { user, .. }, _) => {
                                act.going.remove(user);
                            }
                            (Change::Closed { user, .. }, Effect::NoneLeft) => {
                                if !act.local.contains_key(user) {
                                    let at = Instant::now() + act.cfg.offline_grace;
                                    act.going.insert(*user, at);
                                }
                            }
                            (Change::Closed { .. }, _) => {}
                        }
                    }
                    act.announce(online, offline, ctx);
                }
                Err(e) => {
                    metrics::counter!(m::PRESENCE_ERRORS_TOTAL).increment(1);
                    tracing::warn!(error = %e, "presence: redis failed a batch; registering again");
                    act.reregister = true;
                    // Checked again once Redis answers.
                    for u in due {
                        act.going.entry(u).or_insert_with(Instant::now);
                    }
                }
            }
        }));
    }

    /// Tells the watchers of `online` and `offline`.
    fn announce(&mut self, online: Vec<UserId>, offline: Vec<UserId>, ctx: &mut Context<Self>) {
        if online.is_empty() && offline.is_empty() {
            return;
        }
        metrics::counter!(m::PRESENCE_ANNOUNCEMENTS_TOTAL, "state" => "online")
            .increment(online.len() as u64);
        metrics::counter!(m::PRESENCE_ANNOUNCEMENTS_TOTAL, "state" => "offline")
            .increment(offline.len() as u64);
        let now = Utc::now();
        let mut states: HashMap<UserId, PresenceState> = HashMap::new();
        for user in online {
            states.insert(
                user,
                PresenceState {
                    user,
                    online: true,
                    last_seen: None,
                },
            );
        }
        for user in &offline {
            states.insert(
                *user,
                PresenceState {
                    user: *user,
                    online: false,
                    last_seen: Some(now),
                },
            );
        }
        let subjects: Vec<UserId> = states.keys().copied().collect();
        let store = self.store.clone();
        let presence = self.presence.clone();
        let group_max = self.cfg.group_max_members;
        let work = async move {
            if let Err(e) = store.set_last_seen(&offline, now).await {
                tracing::warn!(error = %e, "presence: last seen not stored");
            }
            let pairs = store.presence_watchers(&subjects, group_max).await?;
            let mut watchers: Vec<UserId> = pairs.iter().map(|(_, w)| *w).collect();
            watchers.sort();
            watchers.dedup();
            // Only watchers announced online can take a frame; the others ask with
            // `POST /presence` when they connect.
            let reachable = presence.announced_of(&watchers).await.unwrap_or_default();
            Ok::<_, chat_store::StoreError>((pairs, reachable))
        };
        ctx.spawn(work.into_actor(self).map(move |res, act, _ctx| {
            let (pairs, reachable) = match res {
                Ok(r) => r,
                Err(e) => {
                    metrics::counter!(m::PRESENCE_ERRORS_TOTAL).increment(1);
                    tracing::warn!(error = %e, "presence: watchers not read; announcement lost");
                    return;
                }
            };
            let mut by_watcher: HashMap<UserId, Vec<PresenceState>> = HashMap::new();
            for (subject, watcher) in pairs {
                if let Some(state) = states.get(&subject) {
                    by_watcher.entry(watcher).or_default().push(state.clone());
                }
            }
            let mut frames = 0u64;
            let mut published = 0u64;
            for (watcher, updates) in by_watcher {
                for update in &updates {
                    let frame = ServerFrame::Presence(update.clone()).to_text().into();
                    frames += act.directory.to_users(&[watcher], &frame, None, None);
                }
                if reachable.contains(&watcher) {
                    act.bus.publish(
                        &Channel::User(watcher),
                        &Event::Presence {
                            user: watcher,
                            updates,
                        },
                    );
                    published += 1;
                }
            }
            metrics::counter!(m::PRESENCE_FRAMES_TOTAL).increment(frames);
            metrics::counter!(m::PRESENCE_PUBLISHES_TOTAL).increment(published);
        }));
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let presence = self.presence.clone();
        let work = async move {
            let kept = presence.renew().await?;
            let offline = presence.sweep().await?;
            Ok::<_, chat_bus::presence::PresenceError>((kept, offline))
        };
        ctx.spawn(work.into_actor(self).map(|res, act, ctx| match res {
            Ok((kept, offline)) => {
                if !kept {
                    tracing::warn!("presence: lease lost; registering this node's sockets again");
                    act.reregister = true;
                }
                // A user swept offline may have a socket here that Redis lost.
                let offline: Vec<UserId> = offline
                    .into_iter()
                    .filter(|u| !act.local.contains_key(u))
                    .collect();
                act.announce(Vec::new(), offline, ctx);
            }
            Err(e) => {
                metrics::counter!(m::PRESENCE_ERRORS_TOTAL).increment(1);
                tracing::warn!(error = %e, "presence: lease not renewed");
            }
        }));
    }
}

impl Actor for PresenceHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        if self.presence.is_clustered() {
            let every = self.presence.lease() / 3;
            ctx.run_interval(every.max(Duration::from_millis(100)), |act, ctx| {
                act.heartbeat(ctx)
            });
        }
    }
}

/// A socket opened here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketOpened {
    pub user: UserId,
    pub session: u64,
}

/// A socket here closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketClosed {
    pub user: UserId,
    pub session: u64,
}

impl Handler<SocketOpened> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: SocketOpened, _ctx: &mut Self::Context) {
        let since = Utc::now().timestamp_millis();
        self.local
            .entry(msg.user)
            .or_default()
            .insert(msg.session, since);
        self.going.remove(&msg.user);
        self.queue.push(Change::Opened {
            user: msg.user,
            session: msg.session,
            since,
        });
    }
}

impl Handler<SocketClosed> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: SocketClosed, _ctx: &mut Self::Context) {
        if let Some(sessions) = self.local.get_mut(&msg.user) {
            sessions.remove(&msg.session);
            if sessions.is_empty() {
                self.local.remove(&msg.user);
            }
        }
        self.queue.push(Change::Closed {
            user: msg.user,
            session: msg.session,
        });
    }
}

/// The node stops: its sockets leave presence at once, and the users left with none
/// anywhere are announced offline (without waiting for the lease to end). Answers
/// when done, or when Redis fails.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeavePresence;

impl Handler<LeavePresence> for PresenceHub {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: LeavePresence, _ctx: &mut Self::Context) -> Self::Result {
        self.local.clear();
        self.queue.clear();
        self.going.clear();
        let presence = self.presence.clone();
        Box::pin(
            async move { presence.leave().await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(offline) => act.announce(Vec::new(), offline, ctx),
                    Err(e) => tracing::warn!(error = %e, "presence: not left; the lease will end"),
                }),
        )
    }
}
