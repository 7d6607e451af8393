//! The Session actor: one per WebSocket connection.
//!
//! It decodes each text frame once into a [`ClientFrame`], checks shape, size and
//! rate, and hands typed commands to [`Chat`]. Everything it writes goes through a
//! bounded queue to a writer task that owns the `actix_ws::Session`; a client that
//! does not read fills the queue and is closed with 4001 instead of growing memory.

use crate::messages::{Attach, CloseWith, Detach, NewAudiences, Push, SessionId};
use crate::registry::Registry;
use crate::service::{check_send, Chat, ChatError, SendCommand};
use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use chat_wire::{ClientFrame, ConvId, ErrorCode, ServerFrame, UserId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Close codes of the contract.
pub mod close {
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const DRAINING: u16 = 1012;
    pub const SLOW_CONSUMER: u16 = 4001;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
}

/// How long the writer keeps trying to deliver a close frame to a client that does
/// not read before it drops the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub node: String,
    pub heartbeat: Duration,
    pub sends_per_sec: u32,
    pub outbound_queue: usize,
    pub max_message_bytes: usize,
}

/// What the writer task writes.
pub enum Outbound {
    Text(ByteString),
    Pong(bytes::Bytes),
    Close(CloseReason),
}

fn reason(code: u16, description: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_string()),
    }
}

/// Owns the socket's write half: writes queued frames in order; a close sent on
/// `kill` (slow consumer) skips the queue.
pub async fn writer(
    mut ws: actix_ws::Session,
    mut rx: mpsc::Receiver<Outbound>,
    mut kill: oneshot::Receiver<CloseReason>,
) {
    // The kill switch stays armed until it fires or its sender is dropped (the actor
    // stopped normally); after that the queue is drained in order, close included.
    let mut armed = true;
    // Once the actor is gone, what is left in the queue gets CLOSE_WAIT to go out.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            biased;
            r = &mut kill, if armed => match r {
                Ok(r) => return hard_close(ws, r).await,
                Err(_) => {
                    armed = false;
                    deadline = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                    continue;
                }
            },
            _ = sleep_until(deadline) => return,
            next = rx.recv() => next,
        };
        let Some(out) = next else {
            let _ = ws.close(None).await;
            return;
        };
        let written = match out {
            Outbound::Text(t) => tokio::select! {
                biased;
                r = &mut kill, if armed => match r {
                    Ok(r) => return hard_close(ws, r).await,
                    Err(_) => {
                        armed = false;
                        deadline = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                        ws.text(t).await
                    }
                },
                _ = sleep_until(deadline) => return,
                w = ws.text(t.clone()) => w,
            },
            Outbound::Pong(p) => ws.pong(&p).await,
            Outbound::Close(r) => {
                let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(r))).await;
                return;
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// Sleeps until `deadline`, or for ever when there is none.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Closes without writing what is queued: the client was not reading it.
async fn hard_close(ws: actix_ws::Session, reason: CloseReason) {
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(reason))).await;
}

/// A token bucket: `rate` sends per second, bursts of `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The Session actor. See the module documentation.
pub struct Session {
    id: SessionId,
    user: UserId,
    chat: Chat,
    registry: Addr<Registry>,
    cfg: Arc<SessionConfig>,
    audiences: Arc<Vec<String>>,
    /// Handed to the registry at start (bus interest), then dropped.
    initial_conversations: Vec<ConvId>,
    out: mpsc::Sender<Outbound>,
    kill: Option<oneshot::Sender<CloseReason>>,
    last_heard: Instant,
    token_expires: Instant,
    bucket: Bucket,
    in_flight: usize,
    closing: Option<(u16, &'static str)>,
    /// Request frames refused in a row by the rate limit.
    limited_streak: u32,
}

/// Everything a session starts with.
pub struct SessionParts {
    pub id: SessionId,
    pub user: UserId,
    pub chat: Chat,
    pub cfg: Arc<SessionConfig>,
    pub audiences: Vec<String>,
    pub conversations: Vec<ConvId>,
    pub out: mpsc::Sender<Outbound>,
    pub kill: oneshot::Sender<CloseReason>,
    pub token_expires: Instant,
}

impl Session {
    pub fn new(p: SessionParts) -> Self {
        Session {
            id: p.id,
            user: p.user,
            registry: p.chat.registry.clone(),
            chat: p.chat,
            bucket: Bucket::new(p.cfg.sends_per_sec),
            cfg: p.cfg,
            audiences: Arc::new(p.audiences),
            initial_conversations: p.conversations,
            out: p.out,
            kill: Some(p.kill),
            last_heard: Instant::now(),
            token_expires: p.token_expires,
            in_flight: 0,
            closing: None,
            limited_streak: 0,
        }
    }

    /// Queues a frame; a full queue means the client is not reading: close it (4001).
    fn write(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.enqueue(Outbound::Text(frame), ctx);
    }

    fn enqueue(&mut self, out: Outbound, ctx: &mut Context<Self>) {
        match self.out.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("chat_slow_consumer_closes_total").increment(1);
                tracing::info!(user = %self.user, session = self.id, "slow consumer closed");
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(reason(close::SLOW_CONSUMER, "slow consumer"));
                }
                ctx.stop();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn frame(&mut self, frame: &ServerFrame, ctx: &mut Context<Self>) {
        self.write(frame.to_text().into(), ctx);
    }

    fn error(&mut self, e: &ChatError, reference: Option<String>, ctx: &mut Context<Self>) {
        metrics::counter!("chat_errors_total", "code" => e.code.as_str()).increment(1);
        self.frame(
            &ServerFrame::error(e.code, e.message.clone(), reference),
            ctx,
        );
    }

    /// Closes in order: frames queued before the close are written first. With the
    /// queue full, the close skips the queue so its code still reaches the client.
    fn close(&mut self, code: u16, why: &str, ctx: &mut Context<Self>) {
        if self
            .out
            .try_send(Outbound::Close(reason(code, why)))
            .is_err()
        {
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(reason(code, why));
            }
        }
        ctx.stop();
    }

    /// Takes a token for a request frame. A client that keeps going far past the limit
    /// is closed (1008) instead of being answered frame by frame.
    fn admit_frame(&mut self, reference: Option<String>, ctx: &mut Context<Self>) -> bool {
        if self.bucket.take() {
            self.limited_streak = 0;
            return true;
        }
        self.limited_streak += 1;
        if self.limited_streak > 2 * self.cfg.sends_per_sec.max(10) {
            self.close(close::POLICY, "rate limit abused", ctx);
        } else {
            let err = ChatError::new(ErrorCode::RateLimited, "too many frames; slow down");
            self.error(&err, reference, ctx);
        }
        false
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        // Checked on every frame, not only by the timer: a frame never acts on an
        // expired token.
        if Instant::now() >= self.token_expires {
            return self.close(close::POLICY, "token expired", ctx);
        }
        let frame = match ClientFrame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                let err = ChatError::new(ErrorCode::BadRequest, e.message);
                return self.error(&err, e.reference, ctx);
            }
        };
        let reference = match &frame {
            ClientFrame::Ping => None,
            ClientFrame::Send { cid, .. } => Some(cid.chars().take(64).collect()),
            ClientFrame::Read { .. } => Some("read".to_string()),
            ClientFrame::Sync { .. } => Some("sync".to_string()),
            ClientFrame::Typing { .. } => Some("typing".to_string()),
        };
        if reference.is_some() && !self.admit_frame(reference.clone(), ctx) {
            return;
        }
        match frame {
            ClientFrame::Ping => self.frame(&ServerFrame::Pong, ctx),
            ClientFrame::Send {
                conv,
                cid,
                body,
                tier,
                reply_to,
            } => {
                let cmd = SendCommand {
                    sender: self.user,
                    session: Some(self.id),
                    conv,
                    cid,
                    body,
                    tier,
                    reply_to,
                };
                self.send(cmd, reference, ctx)
            }
            ClientFrame::Read { conv, seq } => {
                let (chat, user, audiences) =
                    (self.chat.clone(), self.user, self.audiences.clone());
                let fut = async move { chat.read(user, &audiences, conv, seq).await };
                // The answer (`unread`) reaches every device of the user through the
                // registry; only a refusal is answered here.
                ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
                    if let Err(e) = res {
                        act.error(&e, reference, ctx);
                    }
                }));
            }
            ClientFrame::Sync { cursors, limit } => {
                let (chat, user, audiences) =
                    (self.chat.clone(), self.user, self.audiences.clone());
                let fut = async move { chat.sync(user, &audiences, &cursors, limit).await };
                ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
                    Ok(r) => act.frame(&ServerFrame::from(r), ctx),
                    Err(e) => act.error(&e, reference, ctx),
                }));
            }
            ClientFrame::Typing { conv } => {
                let (chat, user) = (self.chat.clone(), self.user);
                let fut = async move { chat.typing(user, conv).await };
                ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
                    if let Err(e) = res {
                        act.error(&e, reference, ctx);
                    }
                }));
            }
        }
    }

    fn send(&mut self, cmd: SendCommand, reference: Option<String>, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            let err = ChatError::new(ErrorCode::Unavailable, "node is draining; reconnect");
            return self.error(&err, reference, ctx);
        }
        if let Err(e) = check_send(&cmd.cid, &cmd.body, self.cfg.max_message_bytes) {
            return self.error(&e, reference, ctx);
        }
        self.in_flight += 1;
        let chat = self.chat.clone();
        let fut = async move { chat.send(cmd).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight -= 1;
            match res {
                Ok(a) => act.frame(
                    &ServerFrame::Ack {
                        cid: a.message.cid,
                        conv: a.message.conv,
                        seq: a.message.seq,
                        ts: a.message.ts,
                    },
                    ctx,
                ),
                Err(e) => act.error(&e, reference, ctx),
            }
            if act.in_flight == 0 {
                if let Some((code, why)) = act.closing {
                    act.close(code, why, ctx);
                }
            }
        }));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.registry.do_send(Attach {
            id: self.id,
            user: self.user,
            addr: ctx.address(),
            conversations: std::mem::take(&mut self.initial_conversations),
            audiences: self.audiences.as_ref().clone(),
        });
        let hello = ServerFrame::Hello {
            user: self.user,
            node: self.cfg.node.clone(),
            heartbeat_s: self.cfg.heartbeat.as_secs(),
        };
        self.frame(&hello, ctx);
        // Silence for two heartbeats closes the connection.
        let check = (self.cfg.heartbeat / 2).max(Duration::from_millis(200));
        ctx.run_interval(check, |act, ctx| {
            if act.last_heard.elapsed() > act.cfg.heartbeat * 2 {
                tracing::debug!(user = %act.user, session = act.id, "heartbeat timeout");
                act.close(close::GOING_AWAY, "heartbeat timeout", ctx);
            }
        });
        // A socket does not outlive its token.
        let left = self.token_expires.saturating_duration_since(Instant::now());
        ctx.run_later(left, |act, ctx| {
            act.close(close::POLICY, "token expired", ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.registry.do_send(Detach {
            id: self.id,
            user: self.user,
        });
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(AggregatedMessage::Text(text)) => self.handle_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => {
                let err = ChatError::new(ErrorCode::BadRequest, "frames are JSON text, not binary");
                self.error(&err, None, ctx);
            }
            Ok(AggregatedMessage::Ping(p)) => self.enqueue(Outbound::Pong(p), ctx),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => ctx.stop(),
            // Over `limits.max_frame_bytes`, in one frame or aggregated fragments
            // (actix-ws reports an overflow of fragments as an I/O error).
            Err(ProtocolError::Overflow) | Err(ProtocolError::Io(_)) => {
                self.close(close::TOO_BIG, "frame too large", ctx)
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket protocol error");
                self.close(close::PROTOCOL, "protocol error", ctx)
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        self.write(msg.frame, ctx);
    }
}

impl Handler<CloseWith> for Session {
    type Result = ();

    fn handle(&mut self, msg: CloseWith, ctx: &mut Self::Context) {
        if self.in_flight == 0 {
            self.close(msg.code, msg.reason, ctx);
        } else {
            self.closing = Some((msg.code, msg.reason));
        }
    }
}

impl Handler<NewAudiences> for Session {
    type Result = ();

    fn handle(&mut self, msg: NewAudiences, _ctx: &mut Self::Context) {
        self.audiences = msg.audiences;
    }
}
