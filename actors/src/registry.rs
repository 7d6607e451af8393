//! The Registry actor: who is connected here, which Conversation actors run here, and
//! which bus channels this node listens to.
//!
//! Interest decides subscriptions: a conversation's channel is subscribed while a
//! member is online on this node, a user's channel while the user is, an audience's
//! while a user of it is. It keeps the node's [`Directory`] of sessions, which the
//! Conversation actors read to fan their frames out themselves.

use crate::conversation::Conversation;
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

/// What the registry knows of one online user.
#[derive(Default)]
struct Online {
    sessions: HashMap<SessionId, Addr<Session>>,
    conversations: HashSet<ConvId>,
    audiences: Vec<AudienceKey>,
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
}

impl Registry {
    pub fn new(
        store: Store,
        writer: Writer,
        directory: Directory,
        bus: Arc<dyn Bus>,
        max_connections_per_user: usize,
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
            conv_interest: HashMap::new(),
            push_from: HashMap::new(),
            audience_users: HashMap::new(),
            by_sessions: [0; 4],
            open_sessions: 0,
            draining: false,
        }
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
        let push_from = self.push_from.get(&conv).copied();
        let make = move |_: &mut Context<Conversation>| {
            Conversation::new(conv, push_from, store, writer, directory, registry, bus)
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
            // The list was read at the handshake; a conversation created since then
            // (announced before this node listened to the user's channel) is picked up
            // by reading it once more, now that the user's channel is subscribed.
            let (store, user) = (self.store.clone(), msg.user);
            let fut = async move { store.user_conversations(user).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let Ok(convs) = res else { return };
                    let known = act.users.get(&user).map(|o| o.conversations.clone());
                    for held in convs {
                        if known.as_ref().is_some_and(|k| !k.contains(&held.conv)) {
                            act.push_from
                                .entry(held.conv)
                                .or_insert(held.last_seq.0 + 1);
                            ctx.notify(Joined {
                                users: vec![user],
                                conv: held.conv,
                            });
                        }
                    }
                });
            ctx.spawn(fut);
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
            self.directory.attach(msg.user, msg.id, msg.addr, msg.out);
            self.count_sessions(before, after);
        }
        self.update_gauges();
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
        if self.conversations.get(&msg.conv) == Some(&msg.addr) {
            self.conversations.remove(&msg.conv);
            // Its successor pushes from where it stopped.
            if let (Some(next), true) = (msg.next_push, self.conv_interest.contains_key(&msg.conv))
            {
                self.push_from.insert(msg.conv, next);
            }
            metrics::gauge!(m::CONVERSATION_ACTORS).set(self.conversations.len() as f64);
        }
        msg.addr.do_send(StopConversation);
    }
}

impl Handler<Joined> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Joined, _ctx: &mut Self::Context) {
        for user in msg.users {
            let added = self
                .users
                .get_mut(&user)
                .is_some_and(|o| o.conversations.insert(msg.conv));
            if added {
                self.add_interest(msg.conv, None);
            }
        }
        if let Some(addr) = self.conversations.get(&msg.conv) {
            addr.do_send(RefreshMembers);
        }
    }
}

impl Handler<AudiencesChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: AudiencesChanged, _ctx: &mut Self::Context) {
        let Some(old) = self.users.get(&msg.user).map(|o| o.audiences.clone()) else {
            return;
        };
        self.leave_audiences(msg.user, &old);
        self.join_audiences(msg.user, &msg.audiences);
        if let Some(online) = self.users.get_mut(&msg.user) {
            online.audiences = msg.audiences.clone();
            let shared = Arc::new(msg.audiences);
            for addr in online.sessions.values() {
                addr.do_send(NewAudiences {
                    audiences: shared.clone(),
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

impl Handler<FromBus> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FromBus, ctx: &mut Self::Context) {
        match msg.0 {
            BusNotice::Event { channel, event } => self.bus_event(channel, event, ctx),
            BusNotice::Reconnected => {
                let frame: bytestring::ByteString = ServerFrame::Resync.to_text().into();
                for online in self.users.values() {
                    for addr in online.sessions.values() {
                        addr.do_send(Push {
                            frame: frame.clone(),
                        });
                    }
                }
            }
            BusNotice::Down => {}
        }
    }
}

impl Registry {
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
                    self.conversation(conv, ctx).do_send(Remote { event });
                }
            }
            // Audience channels carry messages only.
            (
                Channel::Audience(_),
                Event::Read { .. }
                | Event::Typing { .. }
                | Event::Unread { .. }
                | Event::Joined { .. }
                | Event::AttributesChanged { .. },
            ) => {}
            (
                Channel::Conversation(conv),
                event @ (Event::Message { .. } | Event::Read { .. } | Event::Typing { .. }),
            ) => {
                if self.conv_interest.contains_key(&conv) {
                    self.conversation(conv, ctx).do_send(Remote { event });
                }
            }
            // User events travel on user channels.
            (
                Channel::Conversation(_),
                Event::Unread { .. } | Event::Joined { .. } | Event::AttributesChanged { .. },
            ) => {}
            (
                Channel::User(_),
                Event::Unread {
                    user,
                    conv,
                    unread,
                    total,
                },
            ) => {
                let frame = ServerFrame::Unread {
                    conv,
                    unread,
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
            (Channel::User(_), Event::AttributesChanged { user }) => {
                let store = self.store.clone();
                let fut = async move { store.user(user).await }.into_actor(self).map(
                    move |res, _act, ctx| {
                        if let Ok(Some(record)) = res {
                            ctx.notify(AudiencesChanged {
                                user,
                                audiences: record.attributes.audiences(),
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
