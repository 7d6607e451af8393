//! Who has a socket open: the question the offline notifications ask of every member
//! they may tell.
//!
//! [`OnlineUsers`] is the question; [`NodeOnline`] answers it with what this node
//! knows (the Registry's sessions here). A cluster-wide answer (presence leases kept
//! by every node) implements the same trait and takes its place where the node wires
//! the notifier (`chat_node::ChatNode::build`).

use crate::messages::OnlineOf;
use crate::registry::Registry;
use actix::Addr;
use chat_wire::UserId;
use futures_util::future::BoxFuture;
use std::collections::HashSet;

/// Which of some users have a socket open.
pub trait OnlineUsers: Send + Sync {
    /// The ones of `users` with a socket open. An answer that cannot be had counts
    /// nobody online: a notification too many beats one lost.
    fn online_of<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, HashSet<UserId>>;
}

/// Users with a session on this node, as its Registry knows them.
#[derive(Clone)]
pub struct NodeOnline(pub Addr<Registry>);

impl OnlineUsers for NodeOnline {
    fn online_of<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, HashSet<UserId>> {
        let ask = self.0.send(OnlineOf {
            users: users.to_vec(),
        });
        Box::pin(async move { ask.await.unwrap_or_default() })
    }
}
