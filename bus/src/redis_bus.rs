//! Redis pub/sub between nodes.
//!
//! Two connections: a multiplexed one for `PUBLISH`, and a pub/sub one owned by a
//! task that keeps the wanted subscription set. When the pub/sub connection drops,
//! the task reconnects with backoff, subscribes everything wanted again, and tells
//! the node (`BusNotice::Reconnected`) so that sessions `resync`.
//!
//! An event that cannot be published (the queue is full, or Redis fails the pipeline)
//! is not dropped in silence: its channel is remembered, and the next pipeline that
//! goes through starts with a [`DropNotice`] on [`nodes_channel`](crate::nodes_channel), which every node
//! listens to; the nodes with sessions concerned tell them to `resync`.

use crate::{nodes_channel, Bus, BusError, BusNotice, Channel, DropNotice, Envelope, Event};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Most queued publishes before new ones are dropped (pushes may be lost; sync is not).
const PUBLISH_QUEUE: usize = 65_536;
/// Most events one pipelined round trip to Redis carries.
const PUBLISH_BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long Redis may take to answer one pipeline (or one (un)subscribe) before the
/// connection counts as failed. Longer than the client's default (500 ms): a full
/// pipeline on a busy Redis can take that long, and every failure costs the sessions
/// concerned a `resync`.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most channels one drop notice names; past that it names none (every channel).
const MAX_NOTICE_CHANNELS: usize = 256;

/// The channels of events not published since the last drop notice went out.
#[derive(Default)]
struct Drops {
    channels: BTreeSet<String>,
    all: bool,
}

impl Drops {
    fn add(&mut self, channel: String) {
        if self.all {
            return;
        }
        self.channels.insert(channel);
        if self.channels.len() > MAX_NOTICE_CHANNELS {
            self.all = true;
            self.channels.clear();
        }
    }

    fn merge(&mut self, other: Drops) {
        if other.all {
            self.all = true;
            self.channels.clear();
        } else {
            for c in other.channels {
                self.add(c);
            }
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.channels.is_empty()
    }

    /// The notice's payload, if anything was dropped.
    fn notice(&self, origin: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let notice = DropNotice {
            origin: origin.to_owned(),
            channels: (!self.all).then(|| self.channels.iter().cloned().collect()),
        };
        serde_json::to_string(&notice).ok()
    }
}

/// Drops not yet told, shared by `publish` and the publisher task, which `wake`
/// rouses when there is something to tell and no event to carry it.
#[derive(Default)]
struct DropLog {
    drops: Mutex<Drops>,
    wake: Notify,
}

impl DropLog {
    fn record(&self, channels: impl IntoIterator<Item = String>) {
        let mut n = 0;
        {
            let mut d = self.drops.lock().unwrap_or_else(|e| e.into_inner());
            for c in channels {
                d.add(c);
                n += 1;
            }
        }
        metrics::counter!(crate::metrics::PUBLISH_DROPPED_TOTAL).increment(n);
        self.wake.notify_one();
    }

    fn is_empty(&self) -> bool {
        self.drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn take(&self) -> Drops {
        std::mem::take(&mut *self.drops.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn put_back(&self, drops: Drops) {
        self.drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(drops);
    }
}

/// What the publisher task takes, in order.
enum Out {
    Event(Outgoing),
    /// Answer once everything before has gone out, or been told as dropped in a drop
    /// notice that went out.
    Flush(oneshot::Sender<()>),
}

struct Outgoing {
    /// The channel's Redis name.
    channel: String,
    payload: String,
    /// Whether losing it must be told: not for typing, which nobody syncs.
    tell: bool,
}

enum Command {
    Subscribe(Channel),
    Unsubscribe(Channel),
    /// Answer once the subscriptions asked for before are in force, or, while the
    /// bus is down, at once: the resubscription is followed by
    /// [`BusNotice::Reconnected`], which has every session `resync`.
    Confirm(oneshot::Sender<()>),
}

/// Redis pub/sub bus (`bus.kind = "redis"`).
pub struct RedisBus {
    /// The first word of every channel name (`bus.channel_prefix`).
    prefix: Arc<str>,
    origin: String,
    publish_tx: mpsc::Sender<Out>,
    command_tx: mpsc::UnboundedSender<Command>,
    up: Arc<AtomicBool>,
    drops: Arc<DropLog>,
}

impl RedisBus {
    /// Connects and starts the bus tasks on the current tokio runtime. Events from other
    /// nodes, and connection changes, arrive on `notices`.
    pub async fn start(
        url: &str,
        prefix: &str,
        origin: String,
        notices: mpsc::UnboundedSender<BusNotice>,
    ) -> Result<RedisBus, BusError> {
        let prefix: Arc<str> = Arc::from(prefix);
        let client = redis::Client::open(url)?;
        let up = Arc::new(AtomicBool::new(false));
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let drops = Arc::new(DropLog::default());
        tokio::spawn(publisher(
            client.clone(),
            prefix.clone(),
            origin.clone(),
            publish_rx,
            drops.clone(),
        ));
        tokio::spawn(subscriber(
            client,
            prefix.clone(),
            origin.clone(),
            command_rx,
            notices,
            up.clone(),
        ));
        Ok(RedisBus {
            prefix,
            origin,
            publish_tx,
            command_tx,
            up,
            drops,
        })
    }
}

impl Bus for RedisBus {
    fn publish(&self, channel: &Channel, event: &Event) {
        let envelope = Envelope {
            origin: self.origin.clone(),
            event: event.clone(),
        };
        let Ok(payload) = serde_json::to_string(&envelope) else {
            return;
        };
        let out = Outgoing {
            channel: channel.name_in(&self.prefix),
            payload,
            tell: event.must_be_told_if_lost(),
        };
        if let Err(e) = self.publish_tx.try_send(Out::Event(out)) {
            match e.into_inner() {
                Out::Event(out) if out.tell => self.drops.record([out.channel]),
                _ => metrics::counter!(crate::metrics::PUBLISH_DROPPED_TOTAL).increment(1),
            }
        }
    }

    fn subscribe(&self, channel: &Channel) {
        let _ = self.command_tx.send(Command::Subscribe(channel.clone()));
    }

    fn unsubscribe(&self, channel: &Channel) {
        let _ = self.command_tx.send(Command::Unsubscribe(channel.clone()));
    }

    fn confirm(&self, done: oneshot::Sender<()>) {
        let _ = self.command_tx.send(Command::Confirm(done));
    }

    fn flush(&self, done: oneshot::Sender<()>) {
        // Behind every queued event; into a full queue once there is room (the
        // drain's own bound ends the wait).
        if let Err(mpsc::error::TrySendError::Full(out)) =
            self.publish_tx.try_send(Out::Flush(done))
        {
            let tx = self.publish_tx.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tx.send(out).await;
                });
            }
        }
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

async fn publisher(
    client: redis::Client,
    prefix: Arc<str>,
    origin: String,
    mut rx: mpsc::Receiver<Out>,
    log: Arc<DropLog>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT));
    let mut backoff = Duration::from_millis(100);
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    // Channels of the pipeline in flight, to tell as dropped if it fails.
    let mut sent: Vec<String> = Vec::with_capacity(PUBLISH_BATCH);
    // Flushes whose events were dropped: answered once a drop notice telling them
    // has gone out (a node that exits before then has told nobody).
    let mut held: Vec<oneshot::Sender<()>> = Vec::new();
    // What queued while Redis could not be reached is dropped, and told, rather than
    // published late: the nodes that missed it have their sessions sync it, and a
    // burst of stale pushes after an outage would only swamp them.
    let drop_queued = |rx: &mut mpsc::Receiver<Out>, held: &mut Vec<oneshot::Sender<()>>| {
        let mut lost = Vec::new();
        while let Ok(out) = rx.try_recv() {
            match out {
                Out::Event(out) if out.tell => lost.push(out.channel),
                Out::Event(_) => {}
                Out::Flush(done) => held.push(done),
            }
        }
        if !lost.is_empty() {
            log.record(lost);
        }
    };
    let mut failed = false;
    loop {
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                if std::mem::take(&mut failed) {
                    drop_queued(&mut rx, &mut held);
                }
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus publisher cannot reach redis");
                failed = true;
                drop_queued(&mut rx, &mut held);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Everything queued goes out in one pipeline per round trip, in order: under
        // load a round trip carries many events instead of one. Drops not yet told
        // lead the pipeline.
        loop {
            let closed = tokio::select! {
                n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n == 0,
                () = log.wake.notified() => false,
            };
            let drops = log.take();
            let notice = drops.notice(&origin);
            let mut pipe = redis::pipe();
            if let Some(notice) = &notice {
                pipe.cmd("PUBLISH")
                    .arg(nodes_channel(&prefix))
                    .arg(notice)
                    .ignore();
            }
            let mut flushes = Vec::new();
            let mut n = 0;
            for out in batch.drain(..) {
                match out {
                    Out::Event(out) => {
                        pipe.cmd("PUBLISH")
                            .arg(&out.channel)
                            .arg(out.payload)
                            .ignore();
                        if out.tell {
                            sent.push(out.channel);
                        }
                        n += 1;
                    }
                    Out::Flush(done) => flushes.push(done),
                }
            }
            let r: Result<(), _> = if n > 0 || notice.is_some() {
                pipe.query_async(&mut conn).await
            } else {
                Ok(())
            };
            match r {
                Ok(()) => {
                    metrics::counter!(crate::metrics::PUBLISHES_TOTAL).increment(n);
                    if notice.is_some() {
                        metrics::counter!(crate::metrics::DROP_NOTICES_SENT_TOTAL).increment(1);
                    }
                    sent.clear();
                    // Everything before these flushes went out, or was told in a
                    // notice that did (this one, or one before).
                    if log.is_empty() {
                        for done in held.drain(..).chain(flushes) {
                            let _ = done.send(());
                        }
                    } else {
                        held.extend(flushes);
                        log.wake.notify_one();
                    }
                }
                Err(e) => {
                    // Redis may have carried part of the pipeline: the whole of it is
                    // told as dropped (a `resync` too many costs a sync, one too few
                    // loses pushes for good).
                    tracing::warn!(error = %e, events = n, "bus publish failed");
                    log.put_back(drops);
                    log.record(sent.drain(..));
                    failed = true;
                    held.extend(flushes);
                    break;
                }
            }
            if closed {
                return;
            }
        }
    }
}

async fn subscriber(
    client: redis::Client,
    prefix: Arc<str>,
    origin: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
    notices: mpsc::UnboundedSender<BusNotice>,
    up: Arc<AtomicBool>,
) {
    let mut wanted: BTreeSet<Channel> = BTreeSet::new();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                tracing::warn!(%error, "bus subscriber cannot reach redis");
                // Keep the wanted set current while down.
                while let Ok(cmd) = commands.try_recv() {
                    apply(&mut wanted, cmd);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        while let Ok(cmd) = commands.try_recv() {
            apply(&mut wanted, cmd);
        }
        let mut names: Vec<String> = wanted.iter().map(|c| c.name_in(&prefix)).collect();
        names.push(nodes_channel(&prefix));
        if let Err(error) = answered(sink.subscribe(&names)).await {
            tracing::warn!(%error, "bus resubscribe failed");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = Duration::from_millis(100);
        up.store(true, Ordering::SeqCst);
        metrics::gauge!(crate::metrics::UP).set(1.0);
        if first {
            first = false;
            tracing::info!("bus connected");
        } else {
            metrics::counter!(crate::metrics::RECONNECTS_TOTAL).increment(1);
            tracing::info!(channels = names.len(), "bus reconnected and resubscribed");
        }
        // Also on the first connect: sockets accepted while Redis was not yet reachable
        // may have missed pushes.
        if notices.send(BusNotice::Reconnected).is_err() {
            return;
        }
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    // Each (un)subscribe is awaited before the next command: a
                    // confirmation comes after every subscribe asked before it.
                    let r = match &cmd {
                        Command::Subscribe(ch) if !wanted.contains(ch) => answered(sink.subscribe(ch.name_in(&prefix))).await,
                        Command::Unsubscribe(ch) if wanted.contains(ch) => answered(sink.unsubscribe(ch.name_in(&prefix))).await,
                        _ => Ok(()),
                    };
                    // Kept wanted either way: a failed one is made on resubscribing.
                    apply(&mut wanted, cmd);
                    if let Err(error) = r {
                        tracing::warn!(%error, "bus (un)subscribe failed");
                        break;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    metrics::counter!(crate::metrics::RECEIVES_TOTAL).increment(1);
                    if msg.get_channel_name() == nodes_channel(&prefix) {
                        let Some(notice) = drop_notice(&msg, &prefix, &origin) else { continue };
                        if notices.send(notice).is_err() {
                            return;
                        }
                        continue;
                    }
                    let Some(channel) = Channel::parse_in(&prefix, msg.get_channel_name()) else { continue };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    let Ok(envelope) = serde_json::from_str::<Envelope>(&payload) else {
                        tracing::warn!(channel = %channel, "unreadable bus event");
                        continue;
                    };
                    if envelope.origin == origin {
                        continue;
                    }
                    if notices.send(BusNotice::Event { channel, event: envelope.event }).is_err() {
                        return;
                    }
                }
            }
        }
        up.store(false, Ordering::SeqCst);
        metrics::gauge!(crate::metrics::UP).set(0.0);
        tracing::warn!("bus connection lost; reconnecting");
        if notices.send(BusNotice::Down).is_err() {
            return;
        }
    }
}

/// A pub/sub request's answer within [`RESPONSE_TIMEOUT`] (a Redis that stopped
/// answering counts as lost, and is reconnected to).
async fn answered(
    request: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, request).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("redis did not answer in time".to_owned()),
    }
}

/// The notice of another node's [`DropNotice`], if it is one.
fn drop_notice(msg: &redis::Msg, prefix: &str, origin: &str) -> Option<BusNotice> {
    let payload = msg.get_payload::<String>().ok()?;
    let Ok(notice) = serde_json::from_str::<DropNotice>(&payload) else {
        tracing::warn!("unreadable drop notice");
        return None;
    };
    if notice.origin == origin {
        return None;
    }
    metrics::counter!(crate::metrics::DROP_NOTICES_RECEIVED_TOTAL).increment(1);
    tracing::info!(from = %notice.origin, channels = ?notice.channels.as_ref().map(Vec::len), "another node dropped bus events");
    Some(BusNotice::Missed {
        channels: notice.channels.map(|names| {
            names
                .iter()
                .filter_map(|n| Channel::parse_in(prefix, n))
                .collect()
        }),
    })
}

/// Keeps the wanted set; a confirmation is answered (in force, or see
/// [`Command::Confirm`]).
fn apply(wanted: &mut BTreeSet<Channel>, cmd: Command) {
    match cmd {
        Command::Subscribe(ch) => {
            wanted.insert(ch);
        }
        Command::Unsubscribe(ch) => {
            wanted.remove(&ch);
        }
        Command::Confirm(done) => {
            let _ = done.send(());
        }
    }
}
