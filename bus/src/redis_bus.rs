//! Redis pub/sub between nodes.
//!
//! Two connections: a multiplexed one for `PUBLISH`, and a pub/sub one owned by a
//! task that keeps the wanted subscription set. When the pub/sub connection drops,
//! the task reconnects with backoff, subscribes everything wanted again, and tells
//! the node (`BusNotice::Reconnected`) so that sessions `resync`.

use crate::{Bus, BusError, BusNotice, Channel, Envelope, Event};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most queued publishes before new ones are dropped (pushes may be lost; sync is not).
const PUBLISH_QUEUE: usize = 65_536;
/// Most events one pipelined round trip to Redis carries.
const PUBLISH_BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

enum Command {
    Subscribe(Channel),
    Unsubscribe(Channel),
}

/// Redis pub/sub bus (`bus.kind = "redis"`).
pub struct RedisBus {
    origin: String,
    publish_tx: mpsc::Sender<(String, String)>,
    command_tx: mpsc::UnboundedSender<Command>,
    up: Arc<AtomicBool>,
}

impl RedisBus {
    /// Connects and starts the bus tasks on the current tokio runtime. Events from other
    /// nodes, and connection changes, arrive on `notices`.
    pub async fn start(
        url: &str,
        origin: String,
        notices: mpsc::UnboundedSender<BusNotice>,
    ) -> Result<RedisBus, BusError> {
        let client = redis::Client::open(url)?;
        let up = Arc::new(AtomicBool::new(false));
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher(client.clone(), publish_rx));
        tokio::spawn(subscriber(
            client,
            origin.clone(),
            command_rx,
            notices,
            up.clone(),
        ));
        Ok(RedisBus {
            origin,
            publish_tx,
            command_tx,
            up,
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
        if self.publish_tx.try_send((channel.name(), payload)).is_err() {
            metrics::counter!(crate::metrics::PUBLISH_DROPPED_TOTAL).increment(1);
        }
    }

    fn subscribe(&self, channel: &Channel) {
        let _ = self.command_tx.send(Command::Subscribe(channel.clone()));
    }

    fn unsubscribe(&self, channel: &Channel) {
        let _ = self.command_tx.send(Command::Unsubscribe(channel.clone()));
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

async fn publisher(client: redis::Client, mut rx: mpsc::Receiver<(String, String)>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut conn = match client.get_multiplexed_async_connection().await {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus publisher cannot reach redis");
                // Drop what queued meanwhile: pushes may be lost, sync is not.
                while rx.try_recv().is_ok() {
                    metrics::counter!(crate::metrics::PUBLISH_DROPPED_TOTAL).increment(1);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Everything queued goes out in one pipeline per round trip, in order: under
        // load a round trip carries many events instead of one.
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            let mut pipe = redis::pipe();
            for (channel, payload) in &batch {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            }
            let n = batch.len() as u64;
            batch.clear();
            let r: Result<(), _> = pipe.query_async(&mut conn).await;
            match r {
                Ok(()) => metrics::counter!(crate::metrics::PUBLISHES_TOTAL).increment(n),
                Err(e) => {
                    metrics::counter!(crate::metrics::PUBLISH_DROPPED_TOTAL).increment(n);
                    tracing::warn!(error = %e, events = n, "bus publish failed");
                    break;
                }
            }
        }
        if rx.is_closed() {
            return;
        }
    }
}

async fn subscriber(
    client: redis::Client,
    origin: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
    notices: mpsc::UnboundedSender<BusNotice>,
    up: Arc<AtomicBool>,
) {
    let mut wanted: BTreeSet<Channel> = BTreeSet::new();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "bus subscriber cannot reach redis");
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
        let names: Vec<String> = wanted.iter().map(Channel::name).collect();
        if !names.is_empty() {
            if let Err(e) = sink.subscribe(&names).await {
                tracing::warn!(error = %e, "bus resubscribe failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        }
        backoff = Duration::from_millis(100);
        up.store(true, Ordering::SeqCst);
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
                    let r = match &cmd {
                        Command::Subscribe(ch) if !wanted.contains(ch) => sink.subscribe(ch.name()).await,
                        Command::Unsubscribe(ch) if wanted.contains(ch) => sink.unsubscribe(ch.name()).await,
                        _ => Ok(()),
                    };
                    apply(&mut wanted, cmd);
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "bus (un)subscribe failed");
                        break;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    metrics::counter!(crate::metrics::RECEIVES_TOTAL).increment(1);
                    let Some(channel) = Channel::parse(msg.get_channel_name()) else { continue };
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
        tracing::warn!("bus connection lost; reconnecting");
        if notices.send(BusNotice::Down).is_err() {
            return;
        }
    }
}

fn apply(wanted: &mut BTreeSet<Channel>, cmd: Command) {
    match cmd {
        Command::Subscribe(ch) => {
            wanted.insert(ch);
        }
        Command::Unsubscribe(ch) => {
            wanted.remove(&ch);
        }
    }
}
