//! A user's audiences on a node follow the newest read of their attributes, whatever
//! order reads answer in: the actors themselves on a real Postgres, with the stale
//! answer sent by hand (no test through processes can make one read overtake another).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

mod common;

use actix::prelude::*;
use chat_actors::directory::Directory;
use chat_actors::messages::{AudiencesChanged, SessionId};
use chat_actors::registry::Registry;
use chat_actors::service::Chat;
use chat_actors::session::{OutQueue, Session, SessionConfig, SessionParts};
use chat_actors::writer::{Writer, WriterConfig};
use chat_bus::{Bus, LocalBus};
use chat_testkit::TestDb;
use chat_wire::{Attributes, AudienceKey};
use common::{new_user, store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn audiences(org: &str) -> Vec<AudienceKey> {
    Attributes {
        org: Some(org.into()),
        ..Attributes::default()
    }
    .audiences()
}

#[actix_rt::test]
async fn an_older_read_of_a_users_attributes_never_undoes_a_newer_one() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db).await;
    let user = new_user(&store, "aud-a").await;
    let writer = Writer::start(store.clone(), WriterConfig::default(), None);
    let directory = Directory::new();
    let bus: Arc<dyn Bus> = Arc::new(LocalBus);
    let registry = Registry::new(
        store.clone(),
        writer,
        directory.clone(),
        bus.clone(),
        16,
        Duration::from_secs(3600),
    )
    .start();
    let chat = Chat {
        store: store.clone(),
        registry: registry.clone(),
        bus,
        directory: directory.clone(),
        max_message_bytes: 1024,
        max_sync_bytes: 1 << 20,
        sync_slots: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let (out, _frames) = OutQueue::new(64, 1 << 20);
    let (kill, _killed) = tokio::sync::oneshot::channel();
    let record = store.user(user).await.unwrap().unwrap();
    let _session = Session::create(move |_| {
        Session::new(SessionParts {
            id: SessionId(1),
            user,
            chat,
            cfg: Arc::new(SessionConfig {
                node: "n1".into(),
                heartbeat: Duration::from_secs(30),
                sends_per_sec: 10,
                outbound_queue: 64,
                outbound_queue_bytes: 1 << 20,
            }),
            audiences: record.attributes.audiences(),
            audiences_version: record.attributes_version,
            conversations: Vec::new(),
            out,
            kill,
            token_expires: Instant::now() + Duration::from_secs(3600),
        })
    });
    let all = AudienceKey::from_stored("all".into());
    let probe: bytestring::ByteString = "{}".into();
    let deadline = Instant::now() + Duration::from_secs(5);
    while directory.to_audience(&all, &probe) == 0 {
        assert!(Instant::now() < deadline, "the session never attached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Two changes, and their reads answering in the wrong order: the newer first.
    let (old, new) = (audiences("old-org"), audiences("new-org"));
    let old_key = AudienceKey::from_stored("org/old-org".into());
    let new_key = AudienceKey::from_stored("org/new-org".into());
    registry
        .send(AudiencesChanged {
            user,
            audiences: new,
            version: 2,
        })
        .await
        .unwrap();
    registry
        .send(AudiencesChanged {
            user,
            audiences: old,
            version: 1,
        })
        .await
        .unwrap();
    assert_eq!(directory.to_audience(&new_key, &probe), 1, "newest kept");
    assert_eq!(
        directory.to_audience(&old_key, &probe),
        0,
        "a stale read moved the user back"
    );
    drop(registry);
    db.drop_now().await.unwrap();
}
