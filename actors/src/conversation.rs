//! The Conversation actor: this node's single writer for one conversation.
//!
//! Sends that arrive while a write is in flight wait in `pending` and go to Postgres
//! together in the next transaction (group commit). Only after commit does the actor
//! answer the senders, publish each message once on the bus, and push it to the local
//! member sessions. Pushes leave in seq order: a message that overtakes an earlier one
//! (committed by another node and not yet heard of) waits briefly, then the gap is
//! filled from Postgres.

use crate::messages::{
    ConversationIdle, FanoutAudience, FanoutUsers, Receipt, RefreshMembers, Remote, SessionId,
    StopConversation, SubmitSend, Typing,
};
use crate::registry::Registry;
use crate::service::{Accepted, ChatError};
use actix::prelude::*;
use bytestring::ByteString;
use chat_bus::{Bus, Channel, Event};
use chat_store::{Appended, NewMessage, Store};
use chat_wire::{ConvId, ConversationKind, ErrorCode, Message, Seq, ServerFrame, UserId};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest one group commit may take before its senders are told `unavailable`.
const APPEND_TIMEOUT: Duration = Duration::from_secs(35);
/// Most sends stored in one transaction.
const MAX_BATCH: usize = 512;
/// How long an overtaking message waits for the one before it before the gap is
/// filled from Postgres.
const GAP_WAIT: Duration = Duration::from_millis(300);
/// Most messages fetched to fill one gap; a wider gap is skipped (clients sync).
const MAX_GAP_FILL: i64 = 200;
/// How often the actor checks whether it is idle, and after how long it offers to stop.
const IDLE_CHECK: Duration = Duration::from_secs(15);
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// What the actor knows of its conversation once loaded.
#[derive(Clone)]
struct Loaded {
    kind: ConversationKind,
    audience: Option<String>,
    members: Arc<[UserId]>,
    member_set: HashSet<UserId>,
}

/// The Conversation actor. See the module documentation.
pub struct Conversation {
    id: ConvId,
    store: Store,
    registry: Addr<Registry>,
    bus: Arc<dyn Bus>,
    /// `Ok` once loaded; the error every send gets when the conversation could not be
    /// loaded (it does not exist, or Postgres is down).
    loaded: Result<Loaded, ChatError>,
    pending: Vec<SubmitSend>,
    writing: bool,
    stop_requested: bool,
    last_activity: Instant,
    /// The next seq to push to local sessions; set by the first message seen.
    next_push: Option<i64>,
    /// Committed messages waiting for an earlier seq, with the session to skip.
    held: BTreeMap<i64, (Message, Option<SessionId>)>,
    gap_timer: Option<SpawnHandle>,
}

impl Conversation {
    pub fn new(id: ConvId, store: Store, registry: Addr<Registry>, bus: Arc<dyn Bus>) -> Self {
        Conversation {
            id,
            store,
            registry,
            bus,
            loaded: Err(ChatError::unavailable()),
            pending: Vec::new(),
            writing: false,
            stop_requested: false,
            last_activity: Instant::now(),
            next_push: None,
            held: BTreeMap::new(),
            gap_timer: None,
        }
    }

    fn load(&self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let store = self.store.clone();
        let id = self.id;
        async move {
            let Some((kind, audience)) = store.conversation_kind(id).await? else {
                return Err(ChatError::not_found());
            };
            let members = if kind == ConversationKind::Broadcast {
                Vec::new()
            } else {
                store.members(id).await?
            };
            Ok(Loaded {
                kind,
                audience,
                member_set: members.iter().copied().collect(),
                members: Arc::from(members),
            })
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
                // Whatever waits gets the error; then the actor leaves, so the next
                // request loads afresh (the conversation may exist by then, or
                // Postgres be back).
                tracing::debug!(conv = %act.id, error = %e, "conversation not loaded");
                act.registry.do_send(ConversationIdle {
                    conv: act.id,
                    addr: ctx.address(),
                });
            }
            act.loaded = res;
        })
    }

    /// A write in flight, sends waiting, or messages held for an earlier seq.
    fn busy(&self) -> bool {
        self.writing || !self.pending.is_empty() || !self.held.is_empty()
    }

    /// Whether `sender` may post here.
    fn check_sender(&self, sender: UserId) -> Result<&Loaded, ChatError> {
        let loaded = self.loaded.as_ref().map_err(Clone::clone)?;
        if loaded.kind == ConversationKind::Broadcast {
            if sender != UserId::SYSTEM {
                return Err(ChatError::new(
                    ErrorCode::Forbidden,
                    "broadcast conversations are written by the system only",
                ));
            }
        } else if !loaded.member_set.contains(&sender) {
            return Err(ChatError::not_member());
        }
        Ok(loaded)
    }

    /// Stores what is pending in one transaction, unless a write is in flight.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.pending.is_empty() {
            return;
        }
        let take = self.pending.len().min(MAX_BATCH);
        let batch: Vec<SubmitSend> = self.pending.drain(..take).collect();
        let rows: Vec<NewMessage> = batch
            .iter()
            .map(|s| NewMessage {
                sender: s.sender,
                cid: s.cid.clone(),
                body: s.body.clone(),
                tier: s.tier,
                reply_to: s.reply_to,
            })
            .collect();
        self.writing = true;
        metrics::histogram!("chat_group_commit_batch_size").record(rows.len() as f64);
        let store = self.store.clone();
        let conv = self.id;
        let started = Instant::now();
        // Bounded even if Postgres stops answering: the senders hear `unavailable`
        // (and retry with their cids) instead of waiting for ever.
        let fut = async move {
            match tokio::time::timeout(APPEND_TIMEOUT, store.append(conv, &rows)).await {
                Ok(r) => r,
                Err(_) => Err(chat_store::StoreError::Unavailable(
                    "append timed out".into(),
                )),
            }
        }
        .into_actor(self)
        .map(move |result, act, ctx| {
            metrics::histogram!("chat_store_append_seconds")
                .record(started.elapsed().as_secs_f64());
            act.writing = false;
            act.committed(batch, result, ctx);
            if act.stop_requested && !act.busy() {
                ctx.stop();
            } else {
                act.flush(ctx);
            }
        });
        ctx.spawn(fut);
    }

    /// Answers the senders of a written batch, then publishes and pushes what is new.
    fn committed(
        &mut self,
        batch: Vec<SubmitSend>,
        result: Result<Vec<Appended>, chat_store::StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let outcomes = match result {
            Ok(o) => o,
            Err(e) => {
                let err = ChatError::from(e);
                for s in batch {
                    let _ = s.reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let mut fresh = Vec::new();
        for (send, outcome) in batch.into_iter().zip(outcomes) {
            let answer = match outcome {
                Appended::Stored(m) => {
                    fresh.push((m.clone(), send.session));
                    Ok(Accepted {
                        message: m,
                        duplicate: false,
                    })
                }
                Appended::Duplicate(m) => {
                    // Stored by an earlier write whose answer was lost (the commit
                    // went through but the connection did not): if it was never
                    // pushed here, push it now. Pushes at or past `next_push` are new.
                    if self.next_push.is_some_and(|n| m.seq.0 >= n) {
                        fresh.push((m.clone(), send.session));
                    }
                    Ok(Accepted {
                        message: m,
                        duplicate: true,
                    })
                }
                Appended::BadReply => Err(ChatError::new(
                    ErrorCode::BadRequest,
                    "reply_to names no earlier message of this conversation",
                )),
            };
            if answer.is_ok() {
                metrics::counter!("chat_sends_acked_total").increment(1);
            }
            let _ = send.reply.send(answer);
        }
        let channel = self.channel();
        for (m, session) in fresh {
            self.bus
                .publish(&channel, &Event::Message { message: m.clone() });
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
        let seq = m.seq.0;
        let next = *self.next_push.get_or_insert(seq);
        if seq < next {
            return; // pushed already (or skipped as part of a gap)
        }
        self.held.insert(seq, (m, skip));
        self.release(ctx);
    }

    /// Pushes every held message that is next in line; arms the gap timer otherwise.
    fn release(&mut self, ctx: &mut Context<Self>) {
        while let Some(next) = self.next_push {
            let Some((m, skip)) = self.held.remove(&next) else {
                break;
            };
            self.push(ServerFrame::Msg(m), skip, None);
            self.next_push = Some(next + 1);
        }
        if self.held.is_empty() {
            if let Some(h) = self.gap_timer.take() {
                ctx.cancel_future(h);
            }
            if self.stop_requested && !self.busy() {
                ctx.stop();
            }
        } else if self.gap_timer.is_none() {
            self.gap_timer = Some(ctx.run_later(GAP_WAIT, |act, ctx| act.fill_gap(ctx)));
        }
    }

    /// Fetches the messages missing before the first held one; skips what stays missing.
    fn fill_gap(&mut self, ctx: &mut Context<Self>) {
        self.gap_timer = None;
        let (Some(from), Some(&upto)) = (self.next_push, self.held.keys().next()) else {
            return;
        };
        let store = self.store.clone();
        let conv = self.id;
        let want = (upto - from).clamp(1, MAX_GAP_FILL);
        let fut = async move { store.history(conv, Seq(upto), want, Seq(upto)).await }
            .into_actor(self)
            .map(move |res, act, ctx| {
                if let Ok((messages, _)) = res {
                    for m in messages {
                        if act.next_push.is_some_and(|n| m.seq.0 >= n) {
                            act.held.entry(m.seq.0).or_insert((m, None));
                        }
                    }
                }
                // Whatever is still missing has expired or cannot be had: move on.
                if let Some(&first) = act.held.keys().next() {
                    if act.next_push.is_some_and(|n| first > n)
                        && !act.held.contains_key(&act.next_push.unwrap_or(first))
                    {
                        act.next_push = Some(first);
                    }
                }
                act.release(ctx);
            });
        ctx.spawn(fut);
    }

    /// One frame to the local member sessions (or the audience's).
    fn push(&self, frame: ServerFrame, skip: Option<SessionId>, skip_user: Option<UserId>) {
        let Ok(loaded) = &self.loaded else { return };
        let frame: ByteString = frame.to_text().into();
        match &loaded.audience {
            Some(audience) => self.registry.do_send(FanoutAudience {
                audience: audience.clone(),
                frame,
            }),
            None => self.registry.do_send(FanoutUsers {
                users: loaded.members.clone(),
                frame,
                skip,
                skip_user,
            }),
        }
    }
}

impl Actor for Conversation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        // Nothing else is handled until the conversation is loaded.
        ctx.wait(self.load());
        ctx.run_interval(IDLE_CHECK, |act, ctx| {
            if !act.busy() && act.last_activity.elapsed() >= IDLE_AFTER {
                act.registry.do_send(ConversationIdle {
                    conv: act.id,
                    addr: ctx.address(),
                });
            }
        });
    }
}

impl Handler<SubmitSend> for Conversation {
    type Result = ();

    fn handle(&mut self, msg: SubmitSend, ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        if let Err(e) = self.check_sender(msg.sender) {
            let _ = msg.reply.send(Err(e));
            return;
        }
        self.pending.push(msg);
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
        if !loaded.member_set.contains(&msg.user) {
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
            Event::Message { message } if message.conv == self.id => {
                self.deliver(message, None, ctx)
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
            _ => {}
        }
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

    fn handle(&mut self, _msg: StopConversation, ctx: &mut Self::Context) {
        if self.busy() {
            self.stop_requested = true;
        } else {
            ctx.stop();
        }
    }
}
