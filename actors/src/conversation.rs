//! The Conversation actor: this node's single writer for one conversation.
//!
//! Sends that arrive while a write is in flight wait in its [`GroupCommit`] queue and go to Postgres
//! together in the next transaction (group commit). Only after commit does the actor
//! answer the senders, publish each message once on the bus, and push it to the local
//! member sessions. Pushes leave in seq order: a message that overtakes an earlier one
//! (committed by another node and not yet heard of) waits briefly, then the gap is
//! filled from Postgres.

use crate::batch::GroupCommit;
use crate::directory::Directory;
use crate::error::ChatError;
use crate::messages::{
    Committed, ConversationIdle, ConversationStopped, Handover, Predecessor, Rebase, Receipt,
    RefreshMembers, Remote, SessionId, StopConversation, SubmitSend, Typing,
};
use crate::metrics as m;
use crate::ordering::{GapRead, PushOrder, Step, Timer};
use crate::registry::Registry;
use crate::service::Accepted;
use crate::writer::Writer;
use actix::prelude::*;
use bytestring::ByteString;
use chat_bus::{Bus, Channel, Event};
use chat_store::{Appended, NewMessage, Store, StoreError};
use chat_wire::{
    AudienceKey, ConvId, ConversationKind, ErrorCode, Message, MessageKind, Role, Seq, ServerFrame,
    SystemAction, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest one group commit may take before its senders are told `unavailable`.
const APPEND_TIMEOUT: Duration = Duration::from_secs(35);
/// Most sends stored in one transaction.
const MAX_BATCH: usize = 512;
/// Most sends waiting for the next transaction of one conversation; past it a send is
/// refused with `rate_limited` (nothing stored; retry after a pause), so one busy
/// conversation cannot hold an unbounded queue.
pub const MAX_PENDING_SENDS: usize = 4 * MAX_BATCH;
/// How long an overtaking message waits for the one before it before the gap is
/// filled from Postgres.
const GAP_WAIT: Duration = Duration::from_millis(300);
/// How long an actor whose conversation could not be loaded keeps answering with the
/// error before it leaves.
const LOAD_FAILED_LINGER: Duration = Duration::from_millis(500);
/// Longest a successor waits for its predecessor's last pushes (bounded by the
/// predecessor's append timeout and gap reads) before it pushes on its own. A
/// predecessor still running then pushes nothing more, and the members here are told
/// to `resync` (what it held is not pushed by anyone).
const PREDECESSOR_WAIT: Duration = Duration::from_secs(40);
/// Longest loading the conversation (kind, members) may take; then every send waiting
/// is answered `unavailable`, and the actor leaves.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages waiting in an actor's mailbox (sends, events of other nodes) while it
/// loads or waits for its predecessor: past it a send is refused with `rate_limited`,
/// and an event of another node is dropped and its members told to `resync`.
pub const MAILBOX: usize = MAX_PENDING_SENDS + 2048;

/// Where the answer of one send of a batch goes: its session (skipped by the push) and
/// its caller.
type Waiter = (
    Option<SessionId>,
    tokio::sync::oneshot::Sender<Result<Accepted, ChatError>>,
);

/// What the actor knows of its conversation once loaded. The members are what pushes
/// go to; the store checks membership again under the lock of each write, so a list
/// that is a moment old never lets a removed member write.
#[derive(Clone)]
struct Loaded {
    kind: ConversationKind,
    audience: Option<AudienceKey>,
    members: Arc<[UserId]>,
    roles: HashMap<UserId, Role>,
}

impl Loaded {
    /// Takes in what a system entry changed, as its push goes out: members added
    /// get it and what follows, members removed get it and nothing after.
    fn apply(&mut self, m: &Message) {
        let Some(e) = m.system.as_ref() else { return };
        match e.action {
            SystemAction::Added | SystemAction::Created => {
                for u in &e.users {
                    self.roles.entry(*u).or_insert(Role::Member);
                }
            }
            SystemAction::Removed | SystemAction::Left | SystemAction::Banned => {
                for u in &e.users {
                    self.roles.remove(u);
                }
            }
            SystemAction::RoleChanged => {
                for u in &e.users {
                    if let (Some(r), Some(role)) = (self.roles.get_mut(u), e.role) {
                        *r = role;
                    }
                }
            }
            SystemAction::Renamed
            | SystemAction::Muted
            | SystemAction::Unmuted
            | SystemAction::Unbanned => {}
        }
        let mut members: Vec<UserId> = self.roles.keys().copied().collect();
        members.sort_unstable();
        self.members = Arc::from(members);
    }
}

/// What a Conversation actor checks of a send beyond its shape (the store checks
/// membership, blocks and targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// In groups of more members than this, only admins mention @all.
    pub mention_all_max_members: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            mention_all_max_members: 20,
        }
    }
}

/// The Conversation actor. See the module documentation.
pub struct Conversation {
    id: ConvId,
    store: Store,
    writer: Writer,
    directory: Directory,
    registry: Addr<Registry>,
    bus: Arc<dyn Bus>,
    /// `Ok` once loaded; the error every send gets when the conversation could not be
    /// loaded (it does not exist, or Postgres is down).
    loaded: Result<Loaded, ChatError>,
    commits: GroupCommit<SubmitSend>,
    stop_requested: bool,
    last_activity: Instant,
    /// Committed messages in seq order, each with the session to skip (its sender's).
    order: PushOrder<(Message, Option<SessionId>)>,
    gap_timer: Option<SpawnHandle>,
    /// After how long without activity the actor offers to stop.
    idle_after: Duration,
    /// The actor before this one, still finishing its pushes when this one started.
    predecessor: Option<Predecessor>,
    /// Where to tell a successor that this actor's pushes ended, once stopped.
    handover: Option<Handover>,
    /// The predecessor did not finish in time: once loaded, the members here are told
    /// to `resync`.
    resync_members: bool,
    rules: Rules,
}

/// How the registry starts a Conversation actor.
pub struct Start {
    /// Where pushing starts, when known (see [`PushOrder::starting_at`]).
    pub push_from: Option<i64>,
    /// The stopping actor of the same conversation, if any: this one pushes nothing
    /// until it has finished.
    pub predecessor: Option<Predecessor>,
    pub idle_after: Duration,
    pub rules: Rules,
}

impl Conversation {
    /// An actor for `id`, started as `start` says.
    pub fn new(
        id: ConvId,
        start: Start,
        store: Store,
        writer: Writer,
        directory: Directory,
        registry: Addr<Registry>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        Conversation {
            id,
            store,
            writer,
            directory,
            registry,
            bus,
            loaded: Err(ChatError::unavailable()),
            commits: GroupCommit::new(MAX_BATCH),
            stop_requested: false,
            last_activity: Instant::now(),
            order: PushOrder::starting_at(start.push_from),
            gap_timer: None,
            idle_after: start.idle_after,
            predecessor: start.predecessor,
            handover: None,
            resync_members: false,
            rules: start.rules,
        }
    }

    /// Waits for the predecessor to stop, and pushes from where it ended.
    fn follow(&mut self, predecessor: Predecessor) -> impl ActorFuture<Self, Output = ()> {
        async move { tokio::time::timeout(PREDECESSOR_WAIT, predecessor).await }
            .into_actor(self)
            .map(|res, act, _ctx| match res {
                Ok(Ok(Some(next))) => act.order.advance_to(next),
                Ok(Ok(None)) | Ok(Err(_)) => {}
                Err(_) => {
                    // Dropping the receiver tells the predecessor to push nothing more.
                    tracing::warn!(conv = %act.id, "predecessor did not stop in time");
                    act.resync_members = true;
                }
            })
    }

    fn load(&self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let store = self.store.clone();
        let id = self.id;
        let read = async move {
            let Some((kind, audience)) = store.conversation_kind(id).await? else {
                return Err(ChatError::conversation_not_found());
            };
            let members = if kind == ConversationKind::Broadcast {
                Vec::new()
            } else {
                store.member_roles(id).await?
            };
            Ok(Loaded {
                kind,
                audience,
                members: members.iter().map(|(u, _, _)| *u).collect(),
                roles: members.into_iter().map(|(u, r, _)| (u, r)).collect(),
            })
        };
        async move {
            tokio::time::timeout(LOAD_TIMEOUT, read)
                .await
                .unwrap_or_else(|_| Err(ChatError::unavailable()))
        }
        .into_actor(self)
        .map(|res: Result<Loaded, ChatError>, act, ctx| {
            if res.is_err() && act.loaded.is_ok() {
                // A failed reload keeps what was known: pushes and the channel of a
                // write in flight still need it.
                tracing::warn!(conv = %act.id, "member reload failed; keeping the old list");
                return;
            }
            if let Err(e) = &res {
                // Whatever waits, or arrives in the next moment, gets the error; then
                // the actor leaves, so a later request loads afresh (the conversation
                // may exist by then, or Postgres be back). Leaving at once would let
                // a send that was on its way find the actor gone, again and again.
                tracing::debug!(conv = %act.id, error = %e, "conversation not loaded");
                ctx.run_later(LOAD_FAILED_LINGER, |act, ctx| {
                    act.registry.do_send(ConversationIdle {
                        conv: act.id,
                        addr: ctx.address(),
                    });
                });
            }
            act.loaded = res;
            if std::mem::take(&mut act.resync_members) {
                act.push(ServerFrame::Resync, None, None);
            }
        })
    }

    /// A write in flight, sends waiting, or messages held for an earlier seq.
    fn busy(&self) -> bool {
        self.commits.is_busy() || self.order.is_holding()
    }

    /// Stops now if a stop was asked for and nothing is held.
    fn stop_if_asked(&self, ctx: &mut Context<Self>) {
        if self.stop_requested && !self.busy() {
            ctx.stop();
        }
    }

    /// Whether `sender` may post this here, by what the actor knows: broadcasts are
    /// the system's; mentions name members, and @all in a large group is an admin's.
    /// Membership itself is checked by the store, under the conversation's lock.
    fn check_sender(&self, msg: &chat_store::NewMessage) -> Result<&Loaded, ChatError> {
        let loaded = self.loaded.as_ref().map_err(Clone::clone)?;
        let sender = msg.sender;
        if loaded.kind == ConversationKind::Broadcast {
            if sender != UserId::SYSTEM {
                return Err(ChatError::new(
                    ErrorCode::Forbidden,
                    "broadcast conversations are written by the system only",
                ));
            }
            return Ok(loaded);
        }
        let d = &msg.draft;
        if let Some(u) = d
            .mentions
            .iter()
            .find(|u| **u != UserId::SYSTEM && !loaded.roles.contains_key(u))
        {
            return Err(ChatError::bad_request(format!(
                "mentions name user {u}, who is not a member of this conversation"
            )));
        }
        if d.mentions_all()
            && loaded.kind == ConversationKind::Group
            && loaded.roles.len() > self.rules.mention_all_max_members
            && sender != UserId::SYSTEM
            && !loaded.roles.get(&sender).is_some_and(|r| r.manages())
        {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                format!(
                    "in groups of more than {} members only admins mention everyone",
                    self.rules.mention_all_max_members
                ),
            ));
        }
        Ok(loaded)
    }

    /// Stores what is pending in one transaction, unless a write is in flight.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(batch) = self.commits.start() else {
            return;
        };
        // The rows move into the write and the answers stay here: nothing is copied.
        let (rows, waiters): (Vec<NewMessage>, Vec<Waiter>) = batch
            .into_iter()
            .map(|s| (s.cmd.message, (s.cmd.session, s.reply)))
            .unzip();
        metrics::histogram!(m::GROUP_COMMIT_BATCH_SIZE).record(rows.len() as f64);
        let writer = self.writer.clone();
        let conv = self.id;
        let started = Instant::now();
        // Bounded even if Postgres stops answering: the senders hear `unavailable`
        // (and retry with their cids) instead of waiting for ever.
        let fut = async move {
            match tokio::time::timeout(APPEND_TIMEOUT, writer.append(conv, rows)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("append timed out".into())),
            }
        }
        .into_actor(self)
        .map(move |result, act, ctx| {
            metrics::histogram!(m::STORE_APPEND_SECONDS).record(started.elapsed().as_secs_f64());
            act.commits.finished();
            act.committed(waiters, result, ctx);
            act.stop_if_asked(ctx);
            act.flush(ctx);
        });
        ctx.spawn(fut);
    }

    /// Answers the senders of a written batch, then publishes and pushes what is new.
    fn committed(
        &mut self,
        waiters: Vec<Waiter>,
        result: Result<Vec<Appended>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let outcomes = match result {
            Ok(o) => o,
            Err(e) => {
                let err = ChatError::from(e);
                for (_, reply) in waiters {
                    let _ = reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let mut fresh = Vec::new();
        let mut resent = Vec::new();
        for ((session, reply), outcome) in waiters.into_iter().zip(outcomes) {
            let answer = match outcome {
                Appended::Stored(m) => {
                    fresh.push((m.clone(), session));
                    Ok(Accepted {
                        message: m,
                        duplicate: false,
                    })
                }
                Appended::Duplicate(m) => {
                    // Stored by an earlier write whose answer was lost (the commit
                    // went through but the connection did not), so perhaps never
                    // published or pushed: publish and push it now, unless this
                    // actor has pushed past it already. An actor that has pushed
                    // nothing yet pushes it aside from the order (it may be older
                    // than what the members' clients have: they drop a seq they
                    // hold), so it does not fix where the order starts.
                    if self.order.is_ahead(m.seq.0) {
                        fresh.push((m.clone(), session));
                    } else if self.order.next().is_none() {
                        resent.push((m.clone(), session));
                    }
                    Ok(Accepted {
                        message: m,
                        duplicate: true,
                    })
                }
                Appended::Refused(r) => Err(ChatError::from(r)),
            };
            if answer.is_ok() {
                metrics::counter!(m::SENDS_ACKED_TOTAL).increment(1);
            }
            let _ = reply.send(answer);
        }
        let channel = self.channel();
        for (m, session) in resent {
            self.bus.publish(
                &channel,
                &Event::Message {
                    message: Box::new(m.clone()),
                },
            );
            self.push(ServerFrame::Msg(m), session, None);
        }
        for (m, session) in fresh {
            self.bus.publish(
                &channel,
                &Event::Message {
                    message: Box::new(m.clone()),
                },
            );
            self.deliver(m, session, ctx);
        }
    }

    fn channel(&self) -> Channel {
        match &self.loaded {
            Ok(Loaded {
                audience: Some(a), ..
            }) => Channel::Audience(a.clone()),
            _ => Channel::Conversation(self.id),
        }
    }

    /// Queues a committed message for an in-order push.
    fn deliver(&mut self, m: Message, skip: Option<SessionId>, ctx: &mut Context<Self>) {
        let step = self.order.arrived(m.seq.0, (m, skip));
        self.apply(step, ctx);
    }

    /// Carries out what the push order decided: pushes, the gap timer, a gap read.
    fn apply(&mut self, step: Step<(Message, Option<SessionId>)>, ctx: &mut Context<Self>) {
        for (m, skip) in step.push {
            self.push_message(m, skip);
        }
        match step.timer {
            Timer::Keep => {}
            Timer::Arm => {
                self.gap_timer = Some(ctx.run_later(GAP_WAIT, |act, ctx| {
                    act.gap_timer = None;
                    let step = act.order.timer_fired();
                    act.apply(step, ctx);
                }));
            }
            Timer::Cancel => {
                if let Some(h) = self.gap_timer.take() {
                    ctx.cancel_future(h);
                }
            }
        }
        if let Some(read) = step.read {
            self.read_gap(read, ctx);
        }
        self.stop_if_asked(ctx);
    }

    /// Reads the messages of a gap from Postgres and hands them to the push order.
    fn read_gap(&mut self, read: GapRead, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let conv = self.id;
        let GapRead { upto, want, .. } = read;
        let fut = async move { store.entries(conv, Seq(upto), want, Seq(upto)).await }
            .into_actor(self)
            .map(move |res, act, ctx| {
                let found = res.ok().map(|(messages, _)| {
                    messages
                        .into_iter()
                        .map(|m| (m.seq.0, (m, None)))
                        .collect::<Vec<_>>()
                });
                let step = act.order.filled(found);
                act.apply(step, ctx);
            });
        ctx.spawn(fut);
    }

    /// A message to the local member sessions, in its turn. A system entry changes the
    /// members as it goes: one added receives it, one removed receives it last.
    fn push_message(&mut self, m: Message, skip: Option<SessionId>) {
        if m.kind != MessageKind::System {
            self.push(ServerFrame::Msg(m), skip, None);
            return;
        }
        let adds = m
            .system
            .as_ref()
            .is_some_and(|e| matches!(e.action, SystemAction::Added | SystemAction::Created));
        if adds {
            if let Ok(l) = &mut self.loaded {
                l.apply(&m);
            }
        }
        let copy = (!adds).then(|| m.clone());
        self.push(ServerFrame::Msg(m), skip, None);
        if let (Some(m), Ok(l)) = (copy, &mut self.loaded) {
            l.apply(&m);
        }
    }

    /// One frame to the local member sessions (or the audience's).
    fn push(&self, frame: ServerFrame, skip: Option<SessionId>, skip_user: Option<UserId>) {
        let Ok(loaded) = &self.loaded else { return };
        if self.handover.as_ref().is_some_and(|h| h.is_closed()) {
            // Stopping, and the successor stopped waiting for this actor: it pushes
            // now (and had the members resync), so this one must not.
            return;
        }
        let frame: ByteString = frame.to_text().into();
        match &loaded.audience {
            Some(audience) => {
                self.directory.to_audience(audience, &frame);
            }
            None => {
                self.directory
                    .to_users(&loaded.members, &frame, skip, skip_user);
            }
        }
    }
}

impl Actor for Conversation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        // Nothing else is handled until the predecessor has pushed its last and the
        // conversation is loaded.
        if let Some(p) = self.predecessor.take() {
            ctx.wait(self.follow(p));
        }
        ctx.wait(self.load());
        let check = (self.idle_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(15));
        ctx.run_interval(check, |act, ctx| {
            if !act.busy() && act.last_activity.elapsed() >= act.idle_after {
                act.registry.do_send(ConversationIdle {
                    conv: act.id,
                    addr: ctx.address(),
                });
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let next_push = self.order.next();
        if let Some(h) = self.handover.take() {
            let _ = h.send(next_push);
        }
        self.registry.do_send(ConversationStopped {
            conv: self.id,
            addr: ctx.address(),
            next_push,
        });
    }
}

impl Handler<SubmitSend> for Conversation {
    type Result = ();

    fn handle(&mut self, msg: SubmitSend, ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        if let Err(e) = self.check_sender(&msg.cmd.message) {
            let _ = msg.reply.send(Err(e));
            return;
        }
        if let Err(refused) = self.commits.push(msg, MAX_PENDING_SENDS) {
            let _ = refused.reply.send(Err(ChatError::new(
                ErrorCode::RateLimited,
                "too many sends waiting in this conversation; retry after a pause",
            )));
            return;
        }
        self.flush(ctx);
    }
}

impl Handler<Receipt> for Conversation {
    type Result = ();

    fn handle(&mut self, msg: Receipt, _ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        self.push(
            ServerFrame::Read {
                conv: self.id,
                user: msg.user,
                seq: msg.seq,
            },
            None,
            None,
        );
    }
}

impl Handler<Typing> for Conversation {
    type Result = Result<(), ChatError>;

    fn handle(&mut self, msg: Typing, _ctx: &mut Self::Context) -> Self::Result {
        let loaded = self.loaded.as_ref().map_err(Clone::clone)?;
        if loaded.kind == ConversationKind::Broadcast {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "nobody types in a broadcast conversation",
            ));
        }
        if !loaded.roles.contains_key(&msg.user) {
            return Err(ChatError::not_member());
        }
        self.last_activity = Instant::now();
        let event = Event::Typing {
            conv: self.id,
            user: msg.user,
        };
        self.bus.publish(&Channel::Conversation(self.id), &event);
        self.push(
            ServerFrame::Typing {
                conv: self.id,
                user: msg.user,
            },
            None,
            Some(msg.user),
        );
        Ok(())
    }
}

impl Handler<Remote> for Conversation {
    type Result = ();

    fn handle(&mut self, msg: Remote, ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        match msg.event {
            Event::Message { message } => {
                if message.conv == self.id {
                    self.deliver(*message, None, ctx)
                }
            }
            Event::Read { user, seq, .. } => self.push(
                ServerFrame::Read {
                    conv: self.id,
                    user,
                    seq,
                },
                None,
                None,
            ),
            Event::Typing { user, .. } => self.push(
                ServerFrame::Typing {
                    conv: self.id,
                    user,
                },
                None,
                Some(user),
            ),
            // Events of a user's channel: the registry handles them, never sent here.
            Event::Unread { .. }
            | Event::Joined { .. }
            | Event::Left { .. }
            | Event::Presence { .. }
            | Event::Disconnect { .. }
            | Event::Revoked { .. }
            | Event::AttributesChanged { .. }
            | Event::UserEvent { .. } => {}
        }
    }
}

impl Handler<Committed> for Conversation {
    type Result = ();

    fn handle(&mut self, msg: Committed, ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        let channel = self.channel();
        for m in msg.messages {
            if m.conv != self.id {
                continue;
            }
            self.bus.publish(
                &channel,
                &Event::Message {
                    message: Box::new(m.clone()),
                },
            );
            self.deliver(m, None, ctx);
        }
    }
}

impl Handler<Rebase> for Conversation {
    type Result = ();

    fn handle(&mut self, _msg: Rebase, ctx: &mut Self::Context) {
        let step = self.order.rebase();
        self.apply(step, ctx);
    }
}

impl Handler<RefreshMembers> for Conversation {
    type Result = ();

    fn handle(&mut self, _msg: RefreshMembers, ctx: &mut Self::Context) {
        ctx.wait(self.load());
    }
}

impl Handler<StopConversation> for Conversation {
    type Result = ();

    fn handle(&mut self, msg: StopConversation, ctx: &mut Self::Context) {
        self.handover = msg.handover;
        if self.busy() {
            self.stop_requested = true;
        } else {
            ctx.stop();
        }
    }
}
