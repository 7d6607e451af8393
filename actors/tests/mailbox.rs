//! A Conversation actor's mailbox is bounded while it waits (for its predecessor, or
//! its load): events of other nodes it cannot take are not dropped in silence, its
//! members here are told to `resync`. The actors themselves on a real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

mod common;

use chat_actors::conversation::MAILBOX;
use chat_actors::messages::FromBus;
use chat_actors::session::Outbound;
use chat_bus::{BusNotice, Channel, Event};
use chat_store::Held;
use chat_testkit::TestDb;
use chat_wire::Seq;
use common::{actors, direct_with_messages, session, stop_while_holding, store};
use std::time::{Duration, Instant};

#[actix_rt::test]
async fn events_an_actor_cannot_take_while_it_waits_make_its_members_resync() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db).await;
    let (conv, _a, b, stored, _writer) = direct_with_messages(&store, "mb", 4).await;
    let actors = actors(&store);
    let held = Held {
        conv,
        last_seq: Seq(0),
    };
    let (mut frames, _session, _killed) = session(&actors, &store, b, vec![held]).await;
    let registry = actors.registry.clone();

    // The first actor holds 3 (waiting for 2) when it is told to stop: a successor
    // started now waits for it, and takes nothing meanwhile.
    stop_while_holding(&registry, conv, &stored).await;
    // A flood of events of another node, more than the waiting successor's mailbox.
    for _ in 0..MAILBOX + 100 {
        registry.do_send(FromBus(BusNotice::Event {
            channel: Channel::Conversation(conv),
            event: Event::Message {
                message: Box::new(stored[3].clone()),
            },
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut resync = false;
    while !resync && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), frames.recv()).await {
            Ok(Some(Outbound::Text(t))) => resync = t.contains(r#""type":"resync""#),
            Ok(_) | Err(_) => break,
        }
    }
    assert!(resync, "events were refused and nobody was told");
    drop((registry, actors));
    db.drop_now().await.unwrap();
}
