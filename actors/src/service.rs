//! [`Chat`]: the operations HTTP handlers and sessions share, so both take one path.

use crate::directory::Directory;
use crate::error::ChatError;
use crate::messages::{
    Committed, ConversationFor, Joined, Left, Receipt, SessionId, SubmitSend, Typing,
};
use crate::registry::Registry;
use actix::Addr;
use chat_bus::{Bus, Channel, Event};
use chat_store::{GroupChange, GroupOutcome, Membership, NewMessage, Recorded, Store};
use chat_wire::http::{ReadResponse, SyncResponse};
use chat_wire::{
    AudienceKey, ConvId, ConversationKind, Draft, DraftLimits, ErrorCode, Message, Seq,
    ServerFrame, UserId,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A send that is durable: stored now, or stored before under the same cid.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub message: Message,
    pub duplicate: bool,
}

/// A send, parsed once at the edge (an HTTP body or a `send` frame) and passed down
/// unchanged: through the Conversation actor's group commit into the store.
#[derive(Debug, Clone)]
pub struct SendCommand {
    pub conv: ConvId,
    /// The sending connection, which gets the ack instead of a `msg` copy.
    pub session: Option<SessionId>,
    /// The sender and what it wrote, as the store takes it.
    pub message: NewMessage,
}

/// Shared by every handler and session of a node. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub store: Store,
    pub registry: Addr<Registry>,
    pub bus: Arc<dyn Bus>,
    /// The sessions of this node, to hand frames to.
    pub directory: Directory,
    /// Who is online across the cluster.
    pub presence: chat_bus::presence::Presence,
    /// This node's part of it (told of sockets by the registry).
    pub presence_hub: Addr<crate::presence::PresenceHub>,
    /// What a send is checked against (`limits.max_message_bytes`, attachment and
    /// mention limits).
    pub limits: DraftLimits,
    /// Most members of a group (`limits.max_group_members`).
    pub max_group_members: usize,
    /// Message bodies in one sync answer (`limits.max_sync_bytes`).
    pub max_sync_bytes: usize,
    /// Syncs running at once on this node: half the read pool, so that syncs, the
    /// heaviest reads, never take every connection from everything else (and from
    /// `/readyz`).
    pub sync_slots: Arc<tokio::sync::Semaphore>,
}

/// How long a sync waits for a slot before it is answered `unavailable`.
const SYNC_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Events of the caller's own stream in one sync answer: past it, `more`.
pub const SYNC_EVENTS_LIMIT: i64 = 500;

/// How often a send is retried against a Conversation actor that stopped meanwhile.
const SEND_ATTEMPTS: usize = 3;

impl Chat {
    /// Refuses a send of the wrong shape (cid, body, size) before anything is started.
    pub fn send_shape(&self, draft: &Draft) -> Result<(), ChatError> {
        Ok(draft.check(&self.limits)?)
    }

    /// Sends through the conversation's actor (group commit, then fan-out). Resolves
    /// once the message is committed, or with the reason it was not.
    pub async fn send(&self, cmd: SendCommand) -> Result<Accepted, ChatError> {
        self.send_shape(&cmd.message.draft)?;
        for _ in 0..SEND_ATTEMPTS {
            let addr = self
                .registry
                .send(ConversationFor { conv: cmd.conv })
                .await
                .map_err(|_| ChatError::draining())?;
            let (tx, rx) = oneshot::channel();
            let submit = SubmitSend {
                cmd: cmd.clone(),
                reply: tx,
            };
            // A fresh address always takes one message, even into a full mailbox
            // (actix bounds per sending address): only a stopped actor refuses it. The
            // actor's own bound refuses past MAX_PENDING_SENDS, and each user's sends
            // are bounded before here.
            if addr.try_send(submit).is_err() {
                continue;
            }
            match rx.await {
                Ok(result) => return result,
                // The actor stopped before answering: ask the registry again. A send
                // that was stored meanwhile is found again by its cid.
                Err(_) => continue,
            }
        }
        Err(ChatError::new(
            ErrorCode::Unavailable,
            "conversation is restarting, retry",
        ))
    }

    /// Moves `user`'s read cursor in `conv` forward; tells the user's devices their
    /// unread (`unread` frame) and the members the receipt (`read` frame).
    pub async fn read(
        &self,
        user: UserId,
        audiences: &[AudienceKey],
        conv: ConvId,
        seq: Seq,
    ) -> Result<ReadResponse, ChatError> {
        if seq.0 < 0 {
            return Err(ChatError::bad_request("seq must be >= 0"));
        }
        let (kind, before) = match self.store.membership(user, audiences, conv).await? {
            Membership::NoSuchConversation => return Err(ChatError::conversation_not_found()),
            Membership::NotMember => return Err(ChatError::not_member()),
            Membership::Member { kind, read_seq, .. } => (kind, read_seq),
        };
        let broadcast = kind == ConversationKind::Broadcast;
        let outcome = self.store.mark_read(user, conv, seq, broadcast).await?;
        let (total, _) = self.store.unread(user, audiences).await?;
        let unread = ServerFrame::Unread {
            conv,
            unread: outcome.unread,
            mentions_unread: outcome.mentions_unread,
            total,
        };
        self.directory
            .to_users(&[user], &unread.to_text().into(), None, None);
        self.bus.publish(
            &Channel::User(user),
            &Event::Unread {
                user,
                conv,
                unread: outcome.unread,
                mentions_unread: outcome.mentions_unread,
                total,
            },
        );
        if outcome.read_seq > before && !broadcast {
            if let Ok(addr) = self.registry.send(ConversationFor { conv }).await {
                addr.do_send(Receipt {
                    user,
                    seq: outcome.read_seq,
                });
            }
            self.bus.publish(
                &Channel::Conversation(conv),
                &Event::Read {
                    conv,
                    user,
                    seq: outcome.read_seq,
                },
            );
        }
        Ok(ReadResponse {
            read_seq: outcome.read_seq,
            unread: outcome.unread,
            mentions_unread: outcome.mentions_unread,
            total_unread: total,
        })
    }

    /// Every visible conversation past its cursor, with up to `limit` messages each,
    /// and the caller's own events after `events_cursor` (after 0 when absent), up to
    /// [`SYNC_EVENTS_LIMIT`].
    pub async fn sync(
        &self,
        user: UserId,
        audiences: &[AudienceKey],
        cursors: &BTreeMap<String, i64>,
        limit: Option<i64>,
        events_cursor: Option<i64>,
    ) -> Result<SyncResponse, ChatError> {
        let limit = limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ChatError::bad_request("limit must be 1..=500"));
        }
        let events_after = events_cursor.unwrap_or(0);
        if events_after < 0 {
            return Err(ChatError::bad_request("events_cursor must be >= 0"));
        }
        let mut parsed = BTreeMap::new();
        for (k, v) in cursors {
            let id: i64 = k.parse().map_err(|_| {
                ChatError::bad_request(format!("cursor key {k:?} is not a conversation id"))
            })?;
            parsed.insert(ConvId(id), Seq(*v));
        }
        let max_bytes = i64::try_from(self.max_sync_bytes).unwrap_or(i64::MAX);
        let _slot = tokio::time::timeout(SYNC_SLOT_WAIT, self.sync_slots.acquire())
            .await
            .map_err(|_| ChatError::new(ErrorCode::Unavailable, "too many syncs at once; retry"))?
            .map_err(|_| ChatError::unavailable())?;
        let mut answer = self
            .store
            .sync(user, audiences, &parsed, limit, max_bytes)
            .await?;
        let (mut events, last) = self
            .store
            .user_events(user, events_after, SYNC_EVENTS_LIMIT + 1)
            .await?;
        let cut = events.len() as i64 > SYNC_EVENTS_LIMIT;
        // Cut: at the last event returned. Whole: where the stream stood when read
        // (also where a cursor from beyond it, of a restored database say, lands).
        answer.events_cursor = last;
        if cut {
            events.truncate(SYNC_EVENTS_LIMIT as usize);
            answer.more = true;
            answer.events_cursor = events.last().map_or(events_after, |e| e.seq);
        }
        answer.events = events;
        Ok(answer)
    }

    /// Hands events committed in a user's stream to that user's sessions on this node
    /// (a `contact` frame) and to the other nodes. Call after commit: a push that is
    /// lost is found again by `sync`.
    pub fn push_user_events(&self, recorded: Vec<Recorded>) {
        for Recorded { user, entry } in recorded {
            if let Some(frame) = ServerFrame::for_user_event(&entry) {
                self.directory
                    .to_users(&[user], &frame.to_text().into(), None, None);
            }
            self.bus
                .publish(&Channel::User(user), &Event::UserEvent { user, entry });
        }
    }

    /// Makes one change to a group as `actor` (see [`GroupChange`]): its system
    /// entries are pushed and published in seq order by the conversation's actor,
    /// users added start listening to it on every node (`joined`), users removed stop
    /// (`left`).
    pub async fn change_group(
        &self,
        actor: UserId,
        conv: ConvId,
        change: GroupChange,
    ) -> Result<GroupOutcome, ChatError> {
        let outcome = self
            .store
            .change_group(conv, actor, change, self.max_group_members)
            .await??;
        if outcome.entries.is_empty() {
            return Ok(outcome);
        }
        if let Ok(addr) = self.registry.send(ConversationFor { conv }).await {
            addr.do_send(Committed {
                messages: outcome.entries.clone(),
            });
        }
        if !outcome.added.is_empty() {
            self.announce_join(conv, outcome.added.clone());
        }
        if !outcome.removed.is_empty() {
            for user in &outcome.removed {
                self.bus
                    .publish(&Channel::User(*user), &Event::Left { user: *user, conv });
            }
            self.registry.do_send(Left {
                users: outcome.removed.clone(),
                conv,
            });
        }
        Ok(outcome)
    }

    /// Tells every node that `users` are in `conv` now: those online listen to it
    /// and are sent `joined`.
    pub fn announce_join(&self, conv: ConvId, users: Vec<UserId>) {
        for user in &users {
            self.bus
                .publish(&Channel::User(*user), &Event::Joined { user: *user, conv });
        }
        self.registry.do_send(Joined { users, conv });
    }

    /// Tells the other online members that `user` is typing. Never stored.
    pub async fn typing(&self, user: UserId, conv: ConvId) -> Result<(), ChatError> {
        let addr = self
            .registry
            .send(ConversationFor { conv })
            .await
            .map_err(|_| ChatError::draining())?;
        addr.send(Typing { user })
            .await
            .map_err(|_| ChatError::unavailable())?
    }
}
