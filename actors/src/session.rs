//! The Session actor: one per WebSocket connection.
//!
//! It decodes each text frame once into a [`ClientFrame`], checks shape, size and
//! rate, and hands typed commands to [`Chat`]. Everything it writes goes through a
//! bounded queue to a writer task that owns the `actix_ws::Session`; a client that
//! does not read fills the queue and is closed with 4001 instead of growing memory.

use crate::error::ChatError;
use crate::messages::{
    Attach, AudiencesChanged, CloseWith, Detach, Live, NewAudiences, Revoke, SessionId,
    SlowConsumer,
};
use crate::metrics as m;
use crate::registry::Registry;
use crate::service::{Chat, SendCommand};
use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseReason, ProtocolError};
use bytestring::ByteString;
use chat_store::{Held, NewMessage};
use chat_wire::{AudienceKey, ClientFrame, CloseCode, ErrorCode, ServerFrame, UserId, MAX_CID_LEN};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

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
    pub outbound_queue_bytes: usize,
}

/// What the writer task writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Text(ByteString),
    Pong(bytes::Bytes),
    Close(CloseReason),
}

/// The sending side of a socket's outbound queue, bounded in frames (the channel's
/// capacity, `limits.outbound_queue`) and in bytes of text queued
/// (`limits.outbound_queue_bytes`): a client that stops reading holds at most that
/// much of the node's memory, however large its frames. A frame larger than the byte
/// bound still goes into an empty queue. Clones share the bound.
#[derive(Clone, Debug)]
pub struct OutQueue {
    tx: mpsc::Sender<Outbound>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The writer's side of an [`OutQueue`].
pub struct OutReceiver {
    rx: mpsc::Receiver<Outbound>,
    bytes: Arc<AtomicUsize>,
}

impl Outbound {
    fn bytes(&self) -> usize {
        match self {
            Outbound::Text(t) => t.len(),
            Outbound::Pong(p) => p.len(),
            Outbound::Close(_) => 0,
        }
    }
}

impl OutQueue {
    /// A queue of at most `frames` frames and `max_bytes` bytes.
    pub fn new(frames: usize, max_bytes: usize) -> (OutQueue, OutReceiver) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let bytes = Arc::new(AtomicUsize::new(0));
        (
            OutQueue {
                tx,
                bytes: bytes.clone(),
                max_bytes,
            },
            OutReceiver { rx, bytes },
        )
    }

    /// Queues `out`, or hands it back when the queue is full (in frames or bytes) or
    /// closed.
    pub fn try_send(&self, out: Outbound) -> Result<(), mpsc::error::TrySendError<Outbound>> {
        let n = out.bytes();
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.max_bytes {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(mpsc::error::TrySendError::Full(out));
        }
        self.tx.try_send(out).inspect_err(|_| {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
        })
    }
}

impl OutReceiver {
    /// The next frame queued, in order; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = self.rx.recv().await?;
        self.bytes.fetch_sub(out.bytes(), Ordering::AcqRel);
        Some(out)
    }
}

/// A close frame of the contract.
pub fn close_reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code: actix_ws::CloseCode::from(code.code()),
        description: Some(description.to_string()),
    }
}

/// The write half of a WebSocket: `actix_ws::Session` in the node, a recorder in tests.
pub trait Socket {
    /// Writes a text frame; `Err` once the connection is gone.
    fn text(&mut self, text: ByteString) -> impl Future<Output = Result<(), ()>>;
    fn pong(&mut self, payload: &[u8]) -> impl Future<Output = Result<(), ()>>;
    /// Writes a close frame (or none) and ends the connection.
    fn close(self, reason: Option<CloseReason>) -> impl Future<Output = ()>;
}

impl Socket for actix_ws::Session {
    async fn text(&mut self, text: ByteString) -> Result<(), ()> {
        actix_ws::Session::text(self, text).await.map_err(|_| ())
    }

    async fn pong(&mut self, payload: &[u8]) -> Result<(), ()> {
        actix_ws::Session::pong(self, payload).await.map_err(|_| ())
    }

    async fn close(self, reason: Option<CloseReason>) {
        let _ = actix_ws::Session::close(self, reason).await;
    }
}

/// Owns the socket's write half: writes queued frames in order; a close sent on
/// `kill` (slow consumer) skips the queue.
pub async fn writer<S: Socket>(
    mut ws: S,
    mut rx: OutReceiver,
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
            ws.close(None).await;
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
async fn hard_close<S: Socket>(ws: S, reason: CloseReason) {
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(reason))).await;
}

/// A token bucket: `rate` frames per second, bursts of `rate`. Time is passed in, so
/// it is tested without waiting.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: u32, now: Instant) -> Self {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    /// When a token was last taken (or the bucket made).
    pub fn last_used(&self) -> Instant {
        self.at
    }

    /// Takes one token at `now`, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate);
        self.at = self.at.max(now);
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
    audiences: Arc<Vec<AudienceKey>>,
    /// The version of the attributes `audiences` were read from.
    audiences_version: i64,
    /// Handed to the registry at start (bus interest), then dropped.
    initial_conversations: Vec<Held>,
    out: OutQueue,
    kill: Option<oneshot::Sender<CloseReason>>,
    last_heard: Instant,
    token_expires: Instant,
    /// When the socket's token was issued (unix seconds), and the floor at or
    /// before which tokens are refused, checked on every frame.
    token_issued_at: i64,
    token_floor: Option<i64>,
    bucket: Bucket,
    in_flight: usize,
    closing: Option<(CloseCode, &'static str)>,
    /// Request frames refused in a row by the rate limit.
    limited_streak: u32,
    /// The registry confirmed the bus listens to all this session needs (`Live`).
    live: bool,
    /// A `sync` arrived before that: `resync` once live.
    synced_early: bool,
}

/// Everything a session starts with.
pub struct SessionParts {
    pub id: SessionId,
    pub user: UserId,
    pub chat: Chat,
    pub cfg: Arc<SessionConfig>,
    pub audiences: Vec<AudienceKey>,
    pub audiences_version: i64,
    pub conversations: Vec<Held>,
    pub out: OutQueue,
    pub kill: oneshot::Sender<CloseReason>,
    pub token_expires: Instant,
    /// When the token was issued (unix seconds).
    pub token_issued_at: i64,
    /// Tokens issued at or before this (unix seconds) are refused.
    pub token_floor: Option<i64>,
}

impl Session {
    pub fn new(p: SessionParts) -> Self {
        Session {
            id: p.id,
            user: p.user,
            registry: p.chat.registry.clone(),
            chat: p.chat,
            bucket: Bucket::new(p.cfg.sends_per_sec, Instant::now()),
            cfg: p.cfg,
            audiences: Arc::new(p.audiences),
            audiences_version: p.audiences_version,
            initial_conversations: p.conversations,
            out: p.out,
            kill: Some(p.kill),
            last_heard: Instant::now(),
            token_expires: p.token_expires,
            token_issued_at: p.token_issued_at,
            token_floor: p.token_floor,
            in_flight: 0,
            closing: None,
            limited_streak: 0,
            live: false,
            synced_early: false,
        }
    }

    /// Queues a frame; a full queue means the client is not reading: close it (4001).
    fn write(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.enqueue(Outbound::Text(frame), ctx);
    }

    fn enqueue(&mut self, out: Outbound, ctx: &mut Context<Self>) {
        match self.out.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.slow_consumer(ctx),
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    /// The outbound queue is full: close at once (4001), without writing what is queued.
    fn slow_consumer(&mut self, ctx: &mut Context<Self>) {
        if let Some(kill) = self.kill.take() {
            metrics::counter!(m::SLOW_CONSUMER_CLOSES_TOTAL).increment(1);
            tracing::info!(user = %self.user, session = %self.id, "slow consumer closed");
            let _ = kill.send(close_reason(CloseCode::SlowConsumer, "slow consumer"));
        }
        ctx.stop();
    }

    fn frame(&mut self, frame: &ServerFrame, ctx: &mut Context<Self>) {
        self.write(frame.to_text().into(), ctx);
    }

    fn error(&mut self, e: &ChatError, reference: Option<String>, ctx: &mut Context<Self>) {
        metrics::counter!(m::ERRORS_TOTAL, "code" => e.code.as_str()).increment(1);
        self.frame(
            &ServerFrame::error(e.code, e.message.clone(), reference),
            ctx,
        );
    }

    /// Closes in order: frames queued before the close are written first. With the
    /// queue full, the close skips the queue so its code still reaches the client.
    fn close(&mut self, code: CloseCode, why: &str, ctx: &mut Context<Self>) {
        if self
            .out
            .try_send(Outbound::Close(close_reason(code, why)))
            .is_err()
        {
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(close_reason(code, why));
            }
        }
        ctx.stop();
    }

    /// Takes a token for a request frame. A client that keeps going far past the limit
    /// is closed (1008) instead of being answered frame by frame.
    fn admit_frame(&mut self, reference: Option<String>, ctx: &mut Context<Self>) -> bool {
        if self.bucket.take(Instant::now()) {
            self.limited_streak = 0;
            return true;
        }
        self.limited_streak += 1;
        if self.limited_streak > 2 * self.cfg.sends_per_sec.max(10) {
            self.close(CloseCode::Policy, "rate limit abused", ctx);
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
            return self.close(CloseCode::Policy, "token expired", ctx);
        }
        if self.revoked() {
            return self.close(CloseCode::Policy, "token revoked", ctx);
        }
        let frame = match ClientFrame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                let err = ChatError::bad_request(e.message);
                return self.error(&err, e.reference, ctx);
            }
        };
        let reference = match &frame {
            ClientFrame::Ping => None,
            ClientFrame::Send { draft, .. } => Some(draft.cid.chars().take(MAX_CID_LEN).collect()),
            ClientFrame::Edit { cid, .. }
            | ClientFrame::Recall { cid, .. }
            | ClientFrame::React { cid, .. } => Some(cid.chars().take(MAX_CID_LEN).collect()),
            ClientFrame::Read { .. } => Some("read".to_string()),
            ClientFrame::Sync { .. } => Some("sync".to_string()),
            ClientFrame::Typing { .. } => Some("typing".to_string()),
        };
        if reference.is_some() && !self.admit_frame(reference.clone(), ctx) {
            return;
        }
        let frame = match frame.into_draft() {
            Ok((conv, draft)) => {
                let cmd = SendCommand {
                    conv,
                    session: Some(self.id),
                    message: NewMessage {
                        sender: self.user,
                        draft,
                    },
                };
                return self.send(cmd, reference, ctx);
            }
            Err(other) => other,
        };
        match frame {
            ClientFrame::Ping => self.frame(&ServerFrame::Pong, ctx),
            // Taken as drafts above.
            ClientFrame::Send { .. }
            | ClientFrame::Edit { .. }
            | ClientFrame::Recall { .. }
            | ClientFrame::React { .. } => {}
            ClientFrame::Read { conv, seq } => {
                let (chat, user, known) = (self.chat.clone(), self.user, self.audiences.clone());
                let registry = self.registry.clone();
                let fut = async move {
                    let audiences = current_audiences(&chat, &registry, user, known).await?;
                    chat.read(user, &audiences, conv, seq).await
                };
                // The answer (`unread`) reaches every device of the user through the
                // registry; only a refusal is answered here.
                ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
                    if let Err(e) = res {
                        act.error(&e, reference, ctx);
                    }
                }));
            }
            ClientFrame::Sync {
                cursors,
                limit,
                events_cursor,
            } => {
                // Before the bus confirmed this user's channels, a message committed
                // after this sync reads may not be pushed: `resync` once they are.
                self.synced_early |= !self.live;
                let (chat, user, known) = (self.chat.clone(), self.user, self.audiences.clone());
                let registry = self.registry.clone();
                let fut = async move {
                    let audiences = current_audiences(&chat, &registry, user, known).await?;
                    chat.sync(user, &audiences, &cursors, limit, events_cursor)
                        .await
                };
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
            return self.error(&ChatError::draining(), reference, ctx);
        }
        if let Err(e) = self.chat.send_shape(&cmd.message.draft) {
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

/// The user's audiences as Postgres has them now, as HTTP would see them: a socket must
/// never read what HTTP would refuse, whatever the bus carried or lost. When they differ
/// from what the session knew, the registry moves the user's sessions (and pushes) over.
async fn current_audiences(
    chat: &Chat,
    registry: &Addr<Registry>,
    user: UserId,
    known: Arc<Vec<AudienceKey>>,
) -> Result<Vec<AudienceKey>, ChatError> {
    let Some(record) = chat.store.user(user).await? else {
        return Err(ChatError::new(
            ErrorCode::Unauthorized,
            "user no longer exists",
        ));
    };
    let audiences = record.attributes.audiences();
    if audiences != *known {
        registry.do_send(AudiencesChanged {
            user,
            audiences: audiences.clone(),
            version: record.attributes_version,
        });
    }
    Ok(audiences)
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // `hello` is queued before the registry learns of the session: from then on
        // conversations write pushes into the same queue, and `hello` comes first.
        let hello = ServerFrame::Hello {
            user: self.user,
            node: self.cfg.node.clone(),
            heartbeat_s: self.cfg.heartbeat.as_secs(),
        };
        self.frame(&hello, ctx);
        self.registry.do_send(Attach {
            id: self.id,
            user: self.user,
            addr: ctx.address(),
            out: self.out.clone(),
            conversations: std::mem::take(&mut self.initial_conversations),
            audiences: self.audiences.as_ref().clone(),
            audiences_version: self.audiences_version,
        });
        // Silence for two heartbeats closes the connection.
        let check = (self.cfg.heartbeat / 2).max(Duration::from_millis(200));
        ctx.run_interval(check, |act, ctx| {
            if act.last_heard.elapsed() > act.cfg.heartbeat * 2 {
                tracing::debug!(user = %act.user, session = %act.id, "heartbeat timeout");
                act.close(CloseCode::GoingAway, "heartbeat timeout", ctx);
            }
        });
        // A socket does not outlive its token.
        let left = self.token_expires.saturating_duration_since(Instant::now());
        ctx.run_later(left, |act, ctx| {
            act.close(CloseCode::Policy, "token expired", ctx)
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
                let err = ChatError::bad_request("frames are JSON text, not binary");
                self.error(&err, None, ctx);
            }
            Ok(AggregatedMessage::Ping(p)) => self.enqueue(Outbound::Pong(p), ctx),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => ctx.stop(),
            // Over `limits.max_frame_bytes`, in one frame or aggregated fragments
            // (actix-ws reports an overflow of fragments as an I/O error).
            Err(ProtocolError::Overflow) | Err(ProtocolError::Io(_)) => {
                self.close(CloseCode::TooBig, "frame too large", ctx)
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket protocol error");
                self.close(CloseCode::Protocol, "protocol error", ctx)
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Live> for Session {
    type Result = ();

    fn handle(&mut self, _msg: Live, ctx: &mut Self::Context) {
        self.live = true;
        if std::mem::take(&mut self.synced_early) {
            self.frame(&ServerFrame::Resync, ctx);
        }
        // A revocation made between the handshake's read and the bus listening to
        // this user's channel reached no socket here: read the floor once more.
        let store = self.chat.store.clone();
        let user = self.user;
        ctx.spawn(
            async move { store.token_floor(user).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    if let Ok(floor) = res {
                        let revoked = match floor {
                            chat_store::TokenFloor::Unknown => true,
                            chat_store::TokenFloor::Since(f) => {
                                act.token_floor = f.max(act.token_floor);
                                act.revoked()
                            }
                        };
                        if revoked {
                            act.close(CloseCode::Policy, "token revoked", ctx);
                        }
                    }
                }),
        );
    }
}

impl Handler<SlowConsumer> for Session {
    type Result = ();

    fn handle(&mut self, _msg: SlowConsumer, ctx: &mut Self::Context) {
        self.slow_consumer(ctx);
    }
}

impl Session {
    fn revoked(&self) -> bool {
        self.token_floor
            .is_some_and(|floor| self.token_issued_at <= floor)
    }
}

impl Handler<Revoke> for Session {
    type Result = ();

    fn handle(&mut self, msg: Revoke, ctx: &mut Self::Context) {
        self.token_floor = Some(self.token_floor.map_or(msg.floor, |f| f.max(msg.floor)));
        if self.revoked() {
            self.close(CloseCode::Policy, "token revoked", ctx);
        }
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
        self.audiences_version = msg.version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What a test socket was asked to write.
    #[derive(Debug, Clone, PartialEq)]
    enum Wrote {
        Text(String),
        Pong,
        Close(Option<u16>),
    }

    /// A socket that records what is written; `stall` makes text writes never finish
    /// (a client that does not read), `fail` makes them fail (a connection gone).
    #[derive(Clone, Default)]
    struct Recorder {
        log: Rc<RefCell<Vec<Wrote>>>,
        stall: bool,
        fail: bool,
    }

    impl Recorder {
        fn wrote(&self) -> Vec<Wrote> {
            self.log.borrow().clone()
        }
    }

    impl Socket for Recorder {
        async fn text(&mut self, text: ByteString) -> Result<(), ()> {
            if self.stall {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err(());
            }
            self.log.borrow_mut().push(Wrote::Text(text.to_string()));
            Ok(())
        }

        async fn pong(&mut self, _payload: &[u8]) -> Result<(), ()> {
            self.log.borrow_mut().push(Wrote::Pong);
            Ok(())
        }

        async fn close(self, reason: Option<CloseReason>) {
            let code = reason.map(|r| u16::from(r.code));
            self.log.borrow_mut().push(Wrote::Close(code));
        }
    }

    fn text(t: &str) -> Outbound {
        Outbound::Text(ByteString::from(t.to_string()))
    }

    fn close(code: CloseCode) -> Outbound {
        Outbound::Close(close_reason(code, "test"))
    }

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn the_queue_is_bounded_in_bytes_as_in_frames() {
        let (q, mut rx) = OutQueue::new(100, 10);
        q.try_send(text("0123456789abc"))
            .expect("a big frame fits an empty queue");
        assert!(matches!(
            q.try_send(text("x")),
            Err(mpsc::error::TrySendError::Full(_))
        ));
        let first = futures_util::FutureExt::now_or_never(rx.recv()).flatten();
        assert_eq!(first, Some(text("0123456789abc")));
        q.try_send(text("01234")).expect("room again");
        q.try_send(text("56789")).expect("up to the bound");
        assert!(q.try_send(text("!")).is_err(), "past the bound");
        let (q, _rx) = OutQueue::new(1, 1 << 20);
        q.try_send(text("a")).expect("one frame");
        assert!(q.try_send(text("b")).is_err(), "past the frame bound");
    }

    #[tokio::test]
    async fn queued_frames_go_out_before_an_ordinary_close() {
        let sock = Recorder::default();
        let (tx, rx) = OutQueue::new(8, 1 << 20);
        let (_kill_tx, kill_rx) = oneshot::channel();
        for out in [text("a"), Outbound::Pong(bytes::Bytes::new()), text("b")] {
            let _ = tx.try_send(out);
        }
        let _ = tx.try_send(close(CloseCode::Draining));
        let done = tokio::time::timeout(LIMIT, writer(sock.clone(), rx, kill_rx)).await;
        assert!(done.is_ok(), "the writer ends after the close");
        assert_eq!(
            sock.wrote(),
            vec![
                Wrote::Text("a".into()),
                Wrote::Pong,
                Wrote::Text("b".into()),
                Wrote::Close(Some(1012))
            ]
        );
    }

    #[tokio::test]
    async fn the_kill_switch_skips_the_queue() {
        let sock = Recorder::default();
        let (tx, rx) = OutQueue::new(8, 1 << 20);
        let (kill_tx, kill_rx) = oneshot::channel();
        let _ = tx.try_send(text("never"));
        let _ = kill_tx.send(close_reason(CloseCode::SlowConsumer, "slow consumer"));
        let done = tokio::time::timeout(LIMIT, writer(sock.clone(), rx, kill_rx)).await;
        assert!(done.is_ok());
        assert_eq!(sock.wrote(), vec![Wrote::Close(Some(4001))]);
    }

    #[tokio::test]
    async fn the_kill_switch_interrupts_a_stalled_write() {
        let sock = Recorder {
            stall: true,
            ..Recorder::default()
        };
        let (tx, rx) = OutQueue::new(8, 1 << 20);
        let (kill_tx, kill_rx) = oneshot::channel();
        let _ = tx.try_send(text("stuck"));
        let task = tokio::task::LocalSet::new();
        let log = sock.clone();
        let handle = task.spawn_local(writer(sock, rx, kill_rx));
        task.run_until(async {
            tokio::task::yield_now().await;
            assert!(log.wrote().is_empty(), "the write is stalled");
            let _ = kill_tx.send(close_reason(CloseCode::SlowConsumer, "slow consumer"));
            assert!(tokio::time::timeout(LIMIT, handle).await.is_ok());
        })
        .await;
        assert_eq!(log.wrote(), vec![Wrote::Close(Some(4001))]);
    }

    #[tokio::test]
    async fn after_the_actor_is_gone_the_queue_drains_then_closes() {
        let sock = Recorder::default();
        let (tx, rx) = OutQueue::new(8, 1 << 20);
        let (kill_tx, kill_rx) = oneshot::channel::<CloseReason>();
        let _ = tx.try_send(text("last"));
        drop(kill_tx);
        drop(tx);
        let done = tokio::time::timeout(LIMIT, writer(sock.clone(), rx, kill_rx)).await;
        assert!(done.is_ok());
        assert_eq!(
            sock.wrote(),
            vec![Wrote::Text("last".into()), Wrote::Close(None)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_dropped_after_the_close_wait() {
        let sock = Recorder {
            stall: true,
            ..Recorder::default()
        };
        let (tx, rx) = OutQueue::new(8, 1 << 20);
        let (kill_tx, kill_rx) = oneshot::channel::<CloseReason>();
        let _ = tx.try_send(text("stuck"));
        drop(kill_tx);
        let started = tokio::time::Instant::now();
        let done = tokio::time::timeout(2 * CLOSE_WAIT, writer(sock.clone(), rx, kill_rx)).await;
        assert!(done.is_ok(), "bounded by CLOSE_WAIT");
        assert!(started.elapsed() >= CLOSE_WAIT);
        assert!(sock.wrote().is_empty());
        drop(tx);
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_writer() {
        let sock = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let (tx, rx) = OutQueue::new(8, 1 << 20);
        let (_kill_tx, kill_rx) = oneshot::channel();
        let _ = tx.try_send(text("a"));
        let _ = tx.try_send(close(CloseCode::Draining));
        let done = tokio::time::timeout(LIMIT, writer(sock.clone(), rx, kill_rx)).await;
        assert!(
            done.is_ok(),
            "the writer does not wait on a dead connection"
        );
        assert!(sock.wrote().is_empty(), "nothing after the failed write");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        for i in 0..10 {
            assert!(b.take(t0), "token {i} of the burst");
        }
        assert!(!b.take(t0), "the burst is spent");
        assert!(!b.take(t0 + Duration::from_millis(50)), "half a token");
        assert!(
            b.take(t0 + Duration::from_millis(100)),
            "one token after 1/rate"
        );
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn the_bucket_never_holds_more_than_one_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, t0);
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..10).filter(|_| b.take(later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn the_bucket_ignores_a_clock_that_goes_back() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }
}
