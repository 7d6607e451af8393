//! The single-node bus: there is no other node, so there is nothing to carry.

use crate::{Bus, Channel, Event};

/// The embedded bus of a single node (`bus.kind = "local"`). The node delivers to its
/// own sessions itself, so publishing and subscribing have nothing to do.
#[derive(Debug, Default, Clone)]
pub struct LocalBus;

impl Bus for LocalBus {
    fn publish(&self, _channel: &Channel, _event: &Event) {}
    fn subscribe(&self, _channel: &Channel) {}
    fn unsubscribe(&self, _channel: &Channel) {}
    fn confirm(&self, done: tokio::sync::oneshot::Sender<()>) {
        let _ = done.send(());
    }
    fn flush(&self, done: tokio::sync::oneshot::Sender<()>) {
        let _ = done.send(());
    }
    fn is_up(&self) -> bool {
        true
    }
}
