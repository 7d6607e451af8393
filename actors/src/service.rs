//! [`Chat`]: the operations HTTP handlers and sessions share, so both take one path.

use crate::messages::{ConversationFor, Receipt, SessionId, SubmitSend, Typing};
use crate::registry::Registry;
use actix::Addr;
use chat_bus::{Bus, Channel, Event};
use chat_store::{Membership, Store, StoreError};
use chat_wire::http::{ReadResponse, SyncResponse};
use chat_wire::{ConvId, ConversationKind, ErrorCode, Message, Seq, ServerFrame, Tier, UserId};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// An operation refused or failed, with the contract's code. The message is safe to
/// show a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ChatError {
            code,
            message: message.into(),
        }
    }
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "storage is unavailable, retry later",
        )
    }
    pub fn not_member() -> Self {
        Self::new(
            ErrorCode::NotMember,
            "you are not a member of this conversation",
        )
    }
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "conversation not found")
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                ChatError::new(ErrorCode::NotFound, format!("{what} not found"))
            }
            StoreError::Invalid(why) => ChatError::new(ErrorCode::BadRequest, why),
            StoreError::Conflict(what) => {
                ChatError::new(ErrorCode::Conflict, format!("{what} is taken"))
            }
            StoreError::Unavailable(_) | StoreError::Migration(_) => {
                tracing::error!(error = %e, "store call failed");
                ChatError::unavailable()
            }
        }
    }
}

/// A send that is durable: stored now, or stored before under the same cid.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub message: Message,
    pub duplicate: bool,
}

/// A send as a client asked for it, validated for shape by the caller.
#[derive(Debug, Clone)]
pub struct SendCommand {
    pub sender: UserId,
    pub session: Option<SessionId>,
    pub conv: ConvId,
    pub cid: String,
    pub body: String,
    pub tier: Option<Tier>,
    pub reply_to: Option<Seq>,
}

/// Checks the shape of a send (cid, body) before it goes to a Conversation actor; the
/// HTTP handlers and the sessions both call it.
pub fn check_send(cid: &str, body: &str, max_bytes: usize) -> Result<(), ChatError> {
    let bad = |msg: &str| Err(ChatError::new(ErrorCode::BadRequest, msg));
    if !chat_wire::valid_cid(cid) {
        return bad("cid must be 1..64 of [A-Za-z0-9_-]");
    }
    if body.is_empty() {
        return bad("body must not be empty");
    }
    if !chat_wire::storable_text(body) {
        return bad("body must not contain NUL characters");
    }
    if body.len() > max_bytes {
        return Err(ChatError::new(
            ErrorCode::TooLarge,
            format!("body is larger than {max_bytes} bytes"),
        ));
    }
    Ok(())
}

/// Shared by every handler and session of a node. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub store: Store,
    pub registry: Addr<Registry>,
    pub bus: Arc<dyn Bus>,
}

/// How often a send is retried against a Conversation actor that stopped meanwhile.
const SEND_ATTEMPTS: usize = 3;

impl Chat {
    /// Sends through the conversation's actor (group commit, then fan-out). Resolves
    /// once the message is committed, or with the reason it was not.
    pub async fn send(&self, cmd: SendCommand) -> Result<Accepted, ChatError> {
        for _ in 0..SEND_ATTEMPTS {
            let addr = self
                .registry
                .send(ConversationFor { conv: cmd.conv })
                .await
                .map_err(|_| ChatError::new(ErrorCode::Unavailable, "node is shutting down"))?;
            let (tx, rx) = oneshot::channel();
            let submit = SubmitSend {
                sender: cmd.sender,
                session: cmd.session,
                cid: cmd.cid.clone(),
                body: cmd.body.clone(),
                tier: cmd.tier,
                reply_to: cmd.reply_to,
                reply: tx,
            };
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
        audiences: &[String],
        conv: ConvId,
        seq: Seq,
    ) -> Result<ReadResponse, ChatError> {
        if seq.0 < 0 {
            return Err(ChatError::new(ErrorCode::BadRequest, "seq must be >= 0"));
        }
        let (kind, before) = match self.store.membership(user, audiences, conv).await? {
            Membership::NoSuchConversation => return Err(ChatError::not_found()),
            Membership::NotMember => return Err(ChatError::not_member()),
            Membership::Member { kind, read_seq, .. } => (kind, read_seq),
        };
        let broadcast = kind == ConversationKind::Broadcast;
        let outcome = self.store.mark_read(user, conv, seq, broadcast).await?;
        let (total, _) = self.store.unread(user, audiences).await?;
        let unread = ServerFrame::Unread {
            conv,
            unread: outcome.unread,
            total,
        };
        self.registry.do_send(crate::messages::FanoutUsers {
            users: Arc::from(vec![user]),
            frame: unread.to_text().into(),
            skip: None,
            skip_user: None,
        });
        self.bus.publish(
            &Channel::User(user),
            &Event::Unread {
                user,
                conv,
                unread: outcome.unread,
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
            total_unread: total,
        })
    }

    /// Every visible conversation past its cursor, with up to `limit` messages each.
    pub async fn sync(
        &self,
        user: UserId,
        audiences: &[String],
        cursors: &BTreeMap<String, i64>,
        limit: Option<i64>,
    ) -> Result<SyncResponse, ChatError> {
        let limit = limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ChatError::new(
                ErrorCode::BadRequest,
                "limit must be 1..=500",
            ));
        }
        let mut parsed = BTreeMap::new();
        for (k, v) in cursors {
            let id: i64 = k.parse().map_err(|_| {
                ChatError::new(
                    ErrorCode::BadRequest,
                    format!("cursor key {k:?} is not a conversation id"),
                )
            })?;
            parsed.insert(ConvId(id), Seq(*v));
        }
        Ok(self.store.sync(user, audiences, &parsed, limit).await?)
    }

    /// Tells the other online members that `user` is typing. Never stored.
    pub async fn typing(&self, user: UserId, conv: ConvId) -> Result<(), ChatError> {
        let addr = self
            .registry
            .send(ConversationFor { conv })
            .await
            .map_err(|_| ChatError::unavailable())?;
        addr.send(Typing { user })
            .await
            .map_err(|_| ChatError::unavailable())?
    }
}
