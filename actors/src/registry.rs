//! The Registry actor: who is connected here, which Conversation actors run here, and
//! which bus channels this node listens to.
//!
//! Interest decides subscriptions: a conversation's channel is subscribed while a
//! member is online on this node, a user's channel while the user is, an audience's
//! while a user of it is. It keeps the node's [`Directory`] of sessions, which the
//! Conversation actors read to fan their frames out themselves.

use crate::conversation::{Conversation, Rules, Start};
use crate::directory::Directory;
use crate::messages::*;
use crate::metrics as m;
use crate::session::Session;
use crate::writer::Writer;
use actix::prelude::*;
use chat_bus::{Bus, BusNotice, Channel, Event};
use chat_store::{Held, Store};
use chat_wire::{AudienceKey, CloseCode, ConvId, Seq, ServerFrame, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How often the registry checks Postgres for recent joins of its online users that it
/// did not hear of (an announcement lost on the bus): such a join is healed within this
/// long. Each check reads the joins of the last [`RECONCILE_WINDOW`].
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
const RECONCILE_WINDOW: Duration = Duration::from_secs(60);

/// How often the registry compares its online users' audiences with Postgres, so a
/// lost or late `AttributesChanged` stops pushes of an audience a user left within
/// this long (reads and syncs check on every call).
const AUDIENCE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// What the registry knows of one online user.
#[derive(Default)]
struct Online {
    sessions: HashMap<SessionId, Addr<Session>>,
    conversations: HashSet<ConvId>,
    audiences: Vec<AudienceKey>,
    /// The attributes version `audiences` come from: an older read is ignored.
    audiences_version: i64,
}

/// The Registry actor. See the module documentation.
pub struct Registry {
    store: Store,
    writer: Writer,
    /// Sessions and audience members, shared with the Conversation actors.
    directory: Directory,
    bus: Arc<dyn Bus>,
    max_connections_per_user: usize,
    /// Arbiters Conversation actors are spread over (round-robin): the HTTP workers',
    /// each announced by `UseArbiter`.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    next_session: u64,
    /// Connections admitted but not yet attached, per user.
    admitted: HashMap<UserId, usize>,
    users: HashMap<UserId, Online>,
    conversations: HashMap<ConvId, Addr<Conversation>>,
    /// Conversation actors told to stop that have not stopped yet, with the end their
    /// successor waits on (taken by the successor, if one starts meanwhile).
    retiring: HashMap<ConvId, (Addr<Conversation>, Option<Predecessor>)>,
    /// After how long without activity a Conversation actor offers to stop.
    conversation_idle: Duration,
    /// A check for missed joins is running.
    reconciling: bool,
    /// Online users per conversation / audience: the bus interest.
    conv_interest: HashMap<ConvId, usize>,
    /// Per conversation with interest: the next seq to push to its members here, so a
    /// Conversation actor started by a remote event does not let that event fix where
    /// pushing starts. Set from what the members' clients had at their handshake,
    /// then from where each actor stopped; forgotten with the interest.
    push_from: HashMap<ConvId, i64>,
    audience_users: HashMap<AudienceKey, HashSet<UserId>>,
    /// Online users with 1, 2, 3 and 4+ sessions here (a metric).
    by_sessions: [u64; 4],
    /// Sessions attached here, kept as they come and go (not counted on each change:
    /// a connect must not cost a walk over every online user).
    open_sessions: usize,
    draining: bool,
    /// What the Conversation actors check of a send beyond its shape.
    rules: Rules,
}

impl Registry {
    pub fn new(
        store: Store,
        writer: Writer,
        directory: Directory,
        bus: Arc<dyn Bus>,
        max_connections_per_user: usize,
        conversation_idle: Duration,
    ) -> Self {
        Registry {
            store,
            writer,
            directory,
            bus,
            max_connections_per_user,
            arbiters: Vec::new(),
            next_arbiter: 0,
            next_session: 1,
            admitted: HashMap::new(),
            users: HashMap::new(),
            conversations: HashMap::new(),
            retiring: HashMap::new(),
            conversation_idle,
            reconciling: false,
            conv_interest: HashMap::new(),
            push_from: HashMap::new(),
            audience_users: HashMap::new(),
            by_sessions: [0; 4],
            open_sessions: 0,
            draining: false,
            rules: Rules::default(),
        }
    }

    /// The rules the Conversation actors check sends against.
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    fn conversation(&mut self, conv: ConvId, ctx: &mut Context<Self>) -> Addr<Conversation> {
        if let Some(addr) = self.conversations.get(&conv) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let (store, writer) = (self.store.clone(), self.writer.clone());
        let directory = self.directory.clone();
        let (registry, bus) = (ctx.address(), self.bus.clone());
        let start = Start {
            push_from: self.push_from.get(&conv).copied(),
            predecessor: self.retiring.get_mut(&conv).and_then(|(_, p)| p.take()),
            idle_after: self.conversation_idle,
            rules: self.rules,
        };
        let make = move |_: &mut Context<Conversation>| {
            Conversation::new(conv, start, store, writer, directory, registry, bus)
        };
        let addr = match self.next_arbiter() {
            Some(arbiter) => Conversation::start_in_arbiter(&arbiter, make),
            None => Conversation::create(make),
        };
        self.conversations.insert(conv, addr.clone());
        metrics::gauge!(m::CONVERSATION_ACTORS).set(self.conversations.len() as f64);
        addr
    }

    /// The next live arbiter for a Conversation actor, round-robin; one that has
    /// stopped (a worker that went away) is forgotten. None: run on the registry's.
    fn next_arbiter(&mut self) -> Option<ArbiterHandle> {
        while !self.arbiters.is_empty() {
            let i = self.next_arbiter % self.arbiters.len();
            self.next_arbiter = self.next_arbiter.wrapping_add(1);
            if self.arbiters[i].spawn(std::future::ready(())) {
                return Some(self.arbiters[i].clone());
            }
            self.arbiters.swap_remove(i);
        }
        None
    }

    /// One admitted connection of `user` attached or went away before attaching.
    fn unadmit(&mut self, user: UserId) {
        if let Some(n) = self.admitted.get_mut(&user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.admitted.remove(&user);
            }
        }
    }

    /// One more online user here needs `conv`; `held` is the last seq their client
    /// had (pushes to them start after it), when known.
    fn add_interest(&mut self, conv: ConvId, held: Option<Seq>) {
        if let Some(held) = held {
            self.push_from.entry(conv).or_insert(held.0 + 1);
        }
        let n = self.conv_interest.entry(conv).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.bus.subscribe(&Channel::Conversation(conv));
        }
    }

    fn drop_interest(&mut self, conv: ConvId) {
        if let Some(n) = self.conv_interest.get_mut(&conv) {
            *n -= 1;
            if *n == 0 {
                self.conv_interest.remove(&conv);
                self.push_from.remove(&conv);
                self.bus.unsubscribe(&Channel::Conversation(conv));
            }
        }
    }

    fn join_audiences(&mut self, user: UserId, audiences: &[AudienceKey]) {
        for a in audiences {
            self.directory.join_audience(a, user);
            let set = self.audience_users.entry(a.clone()).or_default();
            if set.insert(user) && set.len() == 1 {
                self.bus.subscribe(&Channel::Audience(a.clone()));
            }
        }
    }

    fn leave_audiences(&mut self, user: UserId, audiences: &[AudienceKey]) {
        for a in audiences {
            self.directory.leave_audience(a, user);
            if let Some(set) = self.audience_users.get_mut(a) {
                set.remove(&user);
                if set.is_empty() {
                    self.audience_users.remove(a);
                    self.bus.unsubscribe(&Channel::Audience(a.clone()));
                }
            }
        }
    }

    fn to_users(
        &self,
        users: &[UserId],
        frame: &bytestring::ByteString,
        skip: Option<SessionId>,
        skip_user: Option<UserId>,
    ) {
        self.directory.to_users(users, frame, skip, skip_user);
    }

    /// `user` is online here and this node did not know they are in `held.conv`: they
    /// join it (`Joined`), with pushes from after what Postgres held. Returns whether so.
    fn join_if_missed(&mut self, user: UserId, held: Held, ctx: &mut Context<Self>) -> bool {
        let missed = self
            .users
            .get(&user)
            .is_some_and(|o| !o.conversations.contains(&held.conv));
        if missed {
            self.push_from
                .entry(held.conv)
                .or_insert(held.last_seq.0 + 1);
            ctx.notify(Joined {
                users: vec![user],
                conv: held.conv,
            });
        }
        missed
    }

    /// Listens to the conversations its online users joined lately that it missed.
    fn reconcile_recent(&mut self, ctx: &mut Context<Self>) {
        if self.reconciling || self.users.is_empty() {
            return;
        }
        self.reconciling = true;
        let store = self.store.clone();
        let users: Vec<UserId> = self.users.keys().copied().collect();
        let fut = async move { store.joined_since(&users, RECONCILE_WINDOW).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.reconciling = false;
            let Ok(found) = res else { return };
            for (user, held) in found {
                if act.join_if_missed(user, held, ctx) {
                    tracing::info!(%user, conv = %held.conv, "join found by reconciling");
                    metrics::counter!(m::JOINS_RECONCILED_TOTAL).increment(1);
                }
            }
        }));
    }

    /// Moves online users whose audiences in Postgres differ from what this node
    /// holds (an attribute change it did not hear of).
    fn reconcile_audiences(&mut self, ctx: &mut Context<Self>) {
        let users: Vec<UserId> = self.users.keys().copied().collect();
        if users.is_empty() {
            return;
        }
        let store = self.store.clone();
        let fut = async move { store.attributes_of(&users).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let Ok(found) = res else { return };
            for found in found {
                let (user, version) = (found.user, found.version);
                let stale = act
                    .users
                    .get(&user)
                    .is_some_and(|o| o.audiences_version < version);
                if stale {
                    tracing::info!(%user, "audiences found changed by reconciling");
                    let audiences = found.attributes.audiences();
                    ctx.notify(AudiencesChanged {
                        user,
                        audiences,
                        version,
                    });
                }
            }
        }));
    }

    /// Runs `then` once every subscription asked for so far is in force.
    fn when_confirmed(
        &self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.bus.confirm(tx);
        ctx.spawn(
            async move { rx.await.is_ok() }
                .into_actor(self)
                .map(move |ok, act, ctx| {
                    if ok {
                        then(act, ctx);
                    }
                }),
        );
    }

    /// Tells `users` (their sessions here) that they are in `conv` now, with the
    /// conversation as each of them sees it.
    fn announce_joined(&self, users: Vec<UserId>, conv: ConvId, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let fut = async move {
            let mut found = Vec::new();
            for user in users {
                let read = store
                    .list_conversations(user, &[], 1, None, Some(conv))
                    .await;
                found.push((user, read.ok().and_then(|(mut list, _)| list.pop())));
            }
            found
        };
        ctx.spawn(fut.into_actor(self).map(move |found, act, _ctx| {
            for (user, c) in found {
                // A read that failed still tells the client: `resync` instead.
                let frame = match c {
                    Some(c) => ServerFrame::Joined {
                        conv,
                        conversation: Box::new(c),
                    },
                    None => ServerFrame::Resync,
                };
                act.directory
                    .to_users(&[user], &frame.to_text().into(), None, None);
            }
        }));
    }

    /// Reads the conversations of `users` (online here) again and listens to those
    /// it did not know of: their announcement came before this node listened, or was
    /// lost on the bus. One user at a time, so a long list does not take the pool.
    fn reconcile(&mut self, users: Vec<UserId>, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let fut = async move {
            let mut found = Vec::new();
            for user in users {
                if let Ok(convs) = store.user_conversations(user).await {
                    found.push((user, convs));
                }
            }
            found
        }
        .into_actor(self)
        .map(move |found, act, ctx| {
            for (user, convs) in found {
                for held in convs {
                    act.join_if_missed(user, held, ctx);
                }
            }
        });
        ctx.spawn(fut);
    }

    /// Events of `channels` (`None`: of any) may have been missed: the sessions they
    /// concern are told to `resync`, the actors of those conversations forget where
    /// their pushes stood (the sessions sync what is missing), and users whose own
    /// channel was concerned have their conversations read again (a `Joined` may be
    /// among what was lost).
    fn missed(&mut self, channels: Option<Vec<Channel>>, ctx: &mut Context<Self>) {
        let resync: bytestring::ByteString = ServerFrame::Resync.to_text().into();
        let Some(channels) = channels else {
            self.directory.to_all(&resync);
            self.push_from.clear();
            for addr in self.conversations.values() {
                addr.do_send(Rebase);
            }
            let users = self.users.keys().copied().collect();
            self.reconcile(users, ctx);
            return;
        };
        let mut users: HashSet<UserId> = HashSet::new();
        let mut convs: HashSet<ConvId> = HashSet::new();
        let mut own = Vec::new();
        for ch in channels {
            match ch {
                Channel::Conversation(c) => {
                    if let Some(addr) = self.conversations.get(&c) {
                        addr.do_send(Rebase);
                    }
                    self.push_from.remove(&c);
                    convs.insert(c);
                }
                Channel::User(u) if self.users.contains_key(&u) => {
                    users.insert(u);
                    own.push(u);
                }
                Channel::User(_) => {}
                Channel::Audience(a) => {
                    users.extend(self.audience_users.get(&a).into_iter().flatten());
                }
            }
        }
        if !convs.is_empty() {
            users.extend(
                self.users
                    .iter()
                    .filter(|(_, o)| o.conversations.iter().any(|c| convs.contains(c)))
                    .map(|(u, _)| *u),
            );
        }
        let users: Vec<UserId> = users.into_iter().collect();
        self.directory.to_users(&users, &resync, None, None);
        if !own.is_empty() {
            self.reconcile(own, ctx);
        }
    }

    fn session_count(&self) -> usize {
        self.open_sessions
    }

    fn update_gauges(&self) {
        metrics::gauge!(m::OPEN_CONNECTIONS).set(self.session_count() as f64);
        metrics::gauge!(m::ONLINE_USERS).set(self.users.len() as f64);
        for (label, n) in m::SESSION_BUCKETS.iter().zip(self.by_sessions) {
            metrics::gauge!(m::USERS_BY_SESSIONS, "sessions" => *label).set(n as f64);
        }
    }

    /// A user went from `before` to `after` sessions here: moves them between the
    /// session-count buckets (0 = not online) and keeps the session total.
    fn count_sessions(&mut self, before: usize, after: usize) {
        self.open_sessions = (self.open_sessions + after).saturating_sub(before);
        if before > 0 {
            self.by_sessions[before.min(4) - 1] -= 1;
        }
        if after > 0 {
            self.by_sessions[after.min(4) - 1] += 1;
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        ctx.run_interval(RECONCILE_EVERY, |act, ctx| act.reconcile_recent(ctx));
        ctx.run_interval(AUDIENCE_CHECK_EVERY, |act, ctx| {
            act.reconcile_audiences(ctx)
        });
    }
}

impl Handler<Admit> for Registry {
    type Result = Result<SessionId, Refused>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Err(Refused::Draining);
        }
        let open = self.users.get(&msg.user).map_or(0, |o| o.sessions.len());
        let pending = self.admitted.get(&msg.user).copied().unwrap_or(0);
        if open + pending >= self.max_connections_per_user {
            return Err(Refused::TooManyConnections);
        }
        *self.admitted.entry(msg.user).or_insert(0) += 1;
        let id = SessionId(self.next_session);
        self.next_session += 1;
        Ok(id)
    }
}

impl Handler<Attach> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        self.unadmit(msg.user);
        let first = !self.users.contains_key(&msg.user);
        if first {
            self.bus.subscribe(&Channel::User(msg.user));
            for held in &msg.conversations {
                self.add_interest(held.conv, Some(held.last_seq));
            }
            self.join_audiences(msg.user, &msg.audiences);
            let online = self.users.entry(msg.user).or_default();
            online.conversations = msg.conversations.iter().map(|h| h.conv).collect();
            online.audiences = msg.audiences;
            online.audiences_version = msg.audiences_version;
            // The list was read at the handshake; a conversation created since then
            // (announced before this node listened to the user's channel) is picked up
            // by reading it once more, once the user's channel is in force.
            let user = msg.user;
            self.when_confirmed(ctx, move |act, ctx| act.reconcile(vec![user], ctx));
        } else {
            let newer = self
                .users
                .get(&msg.user)
                .is_some_and(|o| o.audiences_version < msg.audiences_version);
            if newer {
                // This socket's handshake read newer attributes than the registry holds.
                ctx.notify(AudiencesChanged {
                    user: msg.user,
                    audiences: msg.audiences,
                    version: msg.audiences_version,
                });
            }
        }
        if !first {
            // A later socket may know of conversations the first did not.
            let new: Vec<Held> = self.users.get_mut(&msg.user).map_or_else(Vec::new, |o| {
                msg.conversations
                    .iter()
                    .copied()
                    .filter(|h| o.conversations.insert(h.conv))
                    .collect()
            });
            for held in new {
                self.add_interest(held.conv, Some(held.last_seq));
            }
        }
        if self.draining {
            msg.addr.do_send(CloseWith {
                code: CloseCode::Draining,
                reason: "node draining",
            });
        }
        let counts = self.users.get_mut(&msg.user).map(|online| {
            let before = online.sessions.len();
            online.sessions.insert(msg.id, msg.addr.clone());
            (before, online.sessions.len())
        });
        if let Some((before, after)) = counts {
            self.directory
                .attach(msg.user, msg.id, msg.addr.clone().recipient(), msg.out);
            self.count_sessions(before, after);
        }
        self.update_gauges();
        let addr = msg.addr;
        self.when_confirmed(ctx, move |_, _| addr.do_send(Live));
    }
}

impl Handler<Detach> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Detach, _ctx: &mut Self::Context) {
        let Some(online) = self.users.get_mut(&msg.user) else {
            self.unadmit(msg.user);
            return;
        };
        let before = online.sessions.len();
        let removed = online.sessions.remove(&msg.id).is_some();
        let after = online.sessions.len();
        if removed {
            self.directory.detach(msg.user, msg.id);
        }
        if !removed {
            // Admitted, but its upgrade failed before it attached.
            self.unadmit(msg.user);
        }
        self.count_sessions(before, after);
        if after == 0 {
            if let Some(online) = self.users.remove(&msg.user) {
                self.bus.unsubscribe(&Channel::User(msg.user));
                for conv in online.conversations {
                    self.drop_interest(conv);
                }
                self.leave_audiences(msg.user, &online.audiences);
            }
        }
        self.update_gauges();
    }
}

impl Handler<ConversationFor> for Registry {
    type Result = MessageResult<ConversationFor>;

    fn handle(&mut self, msg: ConversationFor, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.conversation(msg.conv, ctx))
    }
}

impl Handler<ConversationIdle> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ConversationIdle, _ctx: &mut Self::Context) {
        if self.conversations.get(&msg.conv) != Some(&msg.addr) {
            msg.addr.do_send(StopConversation { handover: None });
            return;
        }
        self.conversations.remove(&msg.conv);
        metrics::gauge!(m::CONVERSATION_ACTORS).set(self.conversations.len() as f64);
        // A successor started before this one has stopped waits for its last pushes
        // (it may still hold messages for a gap) and pushes from where they ended.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.retiring.insert(msg.conv, (msg.addr.clone(), Some(rx)));
        msg.addr.do_send(StopConversation { handover: Some(tx) });
    }
}

impl Handler<ConversationStopped> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ConversationStopped, _ctx: &mut Self::Context) {
        let retired = self
            .retiring
            .get(&msg.conv)
            .is_some_and(|(addr, _)| *addr == msg.addr);
        if retired {
            // No successor took its place meanwhile: the next one pushes from where
            // this one ended.
            let waited_on = self
                .retiring
                .remove(&msg.conv)
                .is_some_and(|(_, p)| p.is_none());
            if let (Some(next), false, true) = (
                msg.next_push,
                waited_on,
                self.conv_interest.contains_key(&msg.conv),
            ) {
                self.push_from.insert(msg.conv, next);
            }
        } else if self.conversations.get(&msg.conv) == Some(&msg.addr) {
            // Stopped without being asked (its arbiter went away).
            self.conversations.remove(&msg.conv);
            metrics::gauge!(m::CONVERSATION_ACTORS).set(self.conversations.len() as f64);
        }
    }
}

impl Handler<Joined> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Joined, ctx: &mut Self::Context) {
        let mut added = Vec::new();
        for user in msg.users {
            let new = self
                .users
                .get_mut(&user)
                .is_some_and(|o| o.conversations.insert(msg.conv));
            if new {
                self.add_interest(msg.conv, None);
                added.push(user);
            }
        }
        if let Some(addr) = self.conversations.get(&msg.conv) {
            addr.do_send(RefreshMembers);
        }
        if !added.is_empty() {
            // Once the conversation's channel is in force, nothing of it is missed:
            // the `joined` frame tells the clients to show it (and sync what came
            // before).
            let conv = msg.conv;
            self.when_confirmed(ctx, move |act, ctx| act.announce_joined(added, conv, ctx));
        }
    }
}

impl Handler<Left> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Left, _ctx: &mut Self::Context) {
        let mut gone = Vec::new();
        for user in msg.users {
            let was = self
                .users
                .get_mut(&user)
                .is_some_and(|o| o.conversations.remove(&msg.conv));
            if was {
                self.drop_interest(msg.conv);
                gone.push(user);
            }
        }
        if let Some(addr) = self.conversations.get(&msg.conv) {
            addr.do_send(RefreshMembers);
        }
        if !gone.is_empty() {
            let frame = ServerFrame::Left { conv: msg.conv }.to_text().into();
            self.to_users(&gone, &frame, None, None);
        }
    }
}

impl Handler<AudiencesChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: AudiencesChanged, ctx: &mut Self::Context) {
        let Some(old) = self
            .users
            .get(&msg.user)
            .filter(|o| o.audiences_version < msg.version)
            .map(|o| o.audiences.clone())
        else {
            // Not online here, or what is held was read from the same or newer
            // attributes (reads of them can answer out of order).
            return;
        };
        // Only what changed: an audience the user keeps stays subscribed and listed
        // throughout, so none of its broadcasts is missed in between.
        let left: Vec<AudienceKey> = old
            .iter()
            .filter(|a| !msg.audiences.contains(a))
            .cloned()
            .collect();
        let joined: Vec<AudienceKey> = msg
            .audiences
            .iter()
            .filter(|a| !old.contains(a))
            .cloned()
            .collect();
        self.leave_audiences(msg.user, &left);
        self.join_audiences(msg.user, &joined);
        if !joined.is_empty() {
            // A broadcast published before the new audience's channel is in force is
            // not pushed: once it is, the user's sessions sync.
            let user = msg.user;
            self.when_confirmed(ctx, move |act, _| {
                act.directory
                    .to_users(&[user], &ServerFrame::Resync.to_text().into(), None, None);
            });
        }
        if let Some(online) = self.users.get_mut(&msg.user) {
            online.audiences = msg.audiences.clone();
            online.audiences_version = msg.version;
            let shared = Arc::new(msg.audiences);
            for addr in online.sessions.values() {
                addr.do_send(NewAudiences {
                    audiences: shared.clone(),
                    version: msg.version,
                });
            }
        }
    }
}

impl Handler<Drain> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) -> usize {
        self.draining = true;
        let mut n = 0;
        for online in self.users.values() {
            for addr in online.sessions.values() {
                addr.do_send(CloseWith {
                    code: msg.code,
                    reason: "node draining",
                });
                n += 1;
            }
        }
        n
    }
}

impl Handler<UseArbiter> for Registry {
    type Result = ();

    fn handle(&mut self, msg: UseArbiter, _ctx: &mut Self::Context) {
        self.arbiters.push(msg.0);
    }
}

impl Handler<OpenSessions> for Registry {
    type Result = usize;

    fn handle(&mut self, _msg: OpenSessions, _ctx: &mut Self::Context) -> usize {
        self.session_count()
    }
}

impl Handler<OnlineOf> for Registry {
    type Result = MessageResult<OnlineOf>;

    fn handle(&mut self, msg: OnlineOf, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            msg.users
                .into_iter()
                .filter(|u| self.users.get(u).is_some_and(|o| !o.sessions.is_empty()))
                .collect(),
        )
    }
}

impl Handler<FromBus> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FromBus, ctx: &mut Self::Context) {
        match msg.0 {
            BusNotice::Event { channel, event } => self.bus_event(channel, event, ctx),
            // Every session syncs what it missed; the actors must not push it as well
            // (up to a gap's worth each, a burst that would close healthy clients as
            // slow), and a `Joined` lost meanwhile is found by reading again.
            BusNotice::Reconnected => self.missed(None, ctx),
            BusNotice::Missed { channels } => self.missed(channels, ctx),
            BusNotice::Down => {}
        }
    }
}

impl Registry {
    /// Hands an event of another node to the conversation's actor. One whose mailbox
    /// is full (it is loading, or waiting for its predecessor, under a flood) does not
    /// take it: the sessions concerned are told to `resync` instead (typing aside).
    fn remote(&mut self, conv: ConvId, channel: Channel, event: Event, ctx: &mut Context<Self>) {
        let tell = event.must_be_told_if_lost();
        self.conversation(conv, ctx);
        // Through the address the registry keeps, not a clone: actix bounds a mailbox
        // per sending address (each clone may put one more in), so only one address
        // used for every event sees it full.
        let Some(addr) = self.conversations.get(&conv) else {
            return;
        };
        if let Err(SendError::Full(_)) = addr.try_send(Remote { event }) {
            metrics::counter!(m::REMOTE_EVENTS_REFUSED_TOTAL).increment(1);
            if tell {
                self.missed(Some(vec![channel]), ctx);
            }
        }
    }

    /// An event of another node, by the channel it came on. Every pair is named: a new
    /// kind of event does not compile until it is routed (or dropped on purpose) here.
    fn bus_event(&mut self, channel: Channel, event: Event, ctx: &mut Context<Self>) {
        match (channel, event) {
            // Through the broadcast conversation's actor, like any conversation, so
            // pushes stay in seq order and gaps are filled once.
            (Channel::Audience(audience), Event::Message { message }) => {
                if self.audience_users.contains_key(&audience) {
                    let conv = message.conv;
                    let event = Event::Message { message };
                    self.remote(conv, Channel::Audience(audience), event, ctx);
                }
            }
            // Audience channels carry messages only.
            (
                Channel::Audience(_),
                Event::Read { .. }
                | Event::Typing { .. }
                | Event::Unread { .. }
                | Event::Joined { .. }
                | Event::Left { .. }
                | Event::AttributesChanged { .. }
                | Event::UserEvent { .. },
            ) => {}
            (
                Channel::Conversation(conv),
                event @ (Event::Message { .. } | Event::Read { .. } | Event::Typing { .. }),
            ) => {
                if self.conv_interest.contains_key(&conv) {
                    self.remote(conv, Channel::Conversation(conv), event, ctx);
                }
            }
            // User events travel on user channels.
            (
                Channel::Conversation(_),
                Event::Unread { .. }
                | Event::Joined { .. }
                | Event::Left { .. }
                | Event::AttributesChanged { .. }
                | Event::UserEvent { .. },
            ) => {}
            (Channel::User(_), Event::UserEvent { user, entry }) => {
                if let Some(frame) = ServerFrame::for_user_event(&entry) {
                    self.to_users(&[user], &frame.to_text().into(), None, None);
                }
            }
            (
                Channel::User(_),
                Event::Unread {
                    user,
                    conv,
                    unread,
                    mentions_unread,
                    total,
                },
            ) => {
                let frame = ServerFrame::Unread {
                    conv,
                    unread,
                    mentions_unread,
                    total,
                }
                .to_text()
                .into();
                self.to_users(&[user], &frame, None, None);
            }
            (Channel::User(_), Event::Joined { user, conv }) => {
                ctx.notify(Joined {
                    users: vec![user],
                    conv,
                });
            }
            (Channel::User(_), Event::Left { user, conv }) => {
                ctx.notify(Left {
                    users: vec![user],
                    conv,
                });
            }
            (Channel::User(_), Event::AttributesChanged { user }) => {
                let store = self.store.clone();
                let fut = async move { store.user(user).await }.into_actor(self).map(
                    move |res, _act, ctx| {
                        if let Ok(Some(record)) = res {
                            ctx.notify(AudiencesChanged {
                                user,
                                audiences: record.attributes.audiences(),
                                version: record.attributes_version,
                            });
                        }
                    },
                );
                ctx.spawn(fut);
            }
            // Conversation events travel on conversation channels.
            (
                Channel::User(_),
                Event::Message { .. } | Event::Read { .. } | Event::Typing { .. },
            ) => {}
        }
    }
}
