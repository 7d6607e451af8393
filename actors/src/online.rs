//! Who has a socket open: the question the offline notifications ask of every member
//! they may tell, answered for the whole cluster by [`Presence`] (per-node leases in
//! Redis, or the node's memory on a single node).

use chat_bus::presence::Presence;
use chat_wire::UserId;
use futures_util::future::BoxFuture;
use std::collections::HashSet;

/// Which of some users have a socket open.
pub trait OnlineUsers: Send + Sync {
    /// The ones of `users` with a socket open. An answer that cannot be had counts
    /// nobody online: a notification too many beats one lost.
    fn online_of<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, HashSet<UserId>>;
}

impl OnlineUsers for Presence {
    fn online_of<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, HashSet<UserId>> {
        Box::pin(async move { Presence::online_of(self, users).await.unwrap_or_default() })
    }
}
