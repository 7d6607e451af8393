//! A Conversation actor that is told to stop while it still holds messages for a gap,
//! and a successor started meanwhile: the actors themselves, on a real Postgres, with a
//! session's outbound queue in the node's directory. The race needs an event to land in
//! the moment between an actor's offer to stop and its stop, which no test through
//! processes can aim at; here each step is sent by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

mod common;

use common::{direct_with_messages, stop_while_holding, store};

use actix::prelude::*;
use chat_actors::directory::Directory;
use chat_actors::messages::{ConversationFor, Remote, SessionId, SlowConsumer};
use chat_actors::registry::Registry;
use chat_actors::session::{OutQueue, Outbound};
use chat_bus::{Event, LocalBus};
use chat_testkit::TestDb;
use std::sync::Arc;
use std::time::Duration;

/// Stands in for a session: nothing here fills its queue.
struct Quiet;

impl Actor for Quiet {
    type Context = Context<Self>;
}

impl Handler<SlowConsumer> for Quiet {
    type Result = ();
    fn handle(&mut self, _msg: SlowConsumer, _ctx: &mut Self::Context) {}
}

#[actix_rt::test]
async fn a_successor_pushes_only_after_its_stopping_predecessor_has_pushed_all_it_held() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db).await;
    // Four messages committed (as if by another node, whose events come by hand).
    let (conv, _a, b, stored, writer) = direct_with_messages(&store, "ho", 4).await;
    let directory = Directory::new();
    let registry = Registry::new(
        store.clone(),
        writer,
        directory.clone(),
        Arc::new(LocalBus),
        16,
        Duration::from_secs(3600),
    )
    .start();
    let (queue, mut pushed) = OutQueue::new(64, 1 << 20);
    directory.attach(b, SessionId(1), Quiet.start().recipient(), queue);
    let event = |i: usize| Remote {
        event: Event::Message {
            message: Box::new(stored[i - 1].clone()),
        },
    };

    // 3 overtakes 2: held while the actor waits for the gap (then reads it). The
    // actor's offer to stop lands now, while it holds 3; the registry forgets it and
    // a successor starts for the next event, 4.
    let first = stop_while_holding(&registry, conv, &stored).await;
    let second = registry.send(ConversationFor { conv }).await.unwrap();
    assert_ne!(first, second, "a new actor");
    second.send(event(4)).await.unwrap();

    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(5), pushed.recv()).await {
            Ok(Some(Outbound::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                seqs.push(v["seq"].as_i64().unwrap());
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4], "each once, in order");
    // And nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), pushed.recv())
            .await
            .is_err(),
        "pushed again"
    );
    drop(registry);
    db.drop_now().await.unwrap();
}
