//! What the actor tests share: a migrated store on a test database, and users in it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use chat_store::{NewUser, Retention, Store, StoreConfig};
use chat_testkit::TestDb;
use chat_wire::Attributes;
use std::time::Duration;

pub async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&StoreConfig {
        url: db.url.clone(),
        pool_size: 4,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        retention: Retention {
            normal: Duration::from_secs(86_400),
            important: None,
        },
        write_pool_size: 2,
        dedupe_window: Duration::from_secs(3600),
        entry_windows: Default::default(),
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

pub async fn new_user(store: &Store, name: &str) -> chat_wire::UserId {
    store
        .create_user(&NewUser {
            username: name.into(),
            display_name: name.into(),
            password_hash: None,
            external_id: None,
            attributes: Attributes::default(),
        })
        .await
        .unwrap()
}

/// A node's actors on `store` with a local bus: the registry, its directory, and what
/// a session needs.
pub struct Actors {
    pub registry: actix::Addr<chat_actors::registry::Registry>,
    pub directory: chat_actors::directory::Directory,
    pub chat: chat_actors::service::Chat,
}

pub fn actors(store: &Store) -> Actors {
    use actix::Actor;
    let writer = chat_actors::writer::Writer::start(
        store.clone(),
        chat_actors::writer::WriterConfig::default(),
        None,
    );
    let directory = chat_actors::directory::Directory::new();
    let bus: std::sync::Arc<dyn chat_bus::Bus> = std::sync::Arc::new(chat_bus::LocalBus);
    let presence = chat_bus::presence::Presence::local("n1".into());
    let presence_hub = chat_actors::presence::PresenceHub::new(
        presence.clone(),
        store.clone(),
        bus.clone(),
        directory.clone(),
        chat_actors::presence::PresenceConfig {
            offline_grace: Duration::from_secs(1),
            group_max_members: 20,
        },
    )
    .start();
    let registry = chat_actors::registry::Registry::new(
        store.clone(),
        writer,
        directory.clone(),
        bus.clone(),
        16,
        Duration::from_secs(3600),
    )
    .with_presence(presence_hub.clone())
    .start();
    let chat = chat_actors::service::Chat {
        store: store.clone(),
        registry: registry.clone(),
        bus,
        directory: directory.clone(),
        presence,
        presence_hub,
        limits: chat_wire::DraftLimits {
            max_body_bytes: 1024,
            ..Default::default()
        },
        max_group_members: 1000,
        max_sync_bytes: 1 << 20,
        sync_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
    };
    Actors {
        registry,
        directory,
        chat,
    }
}

/// A session of `user` (as the WebSocket handshake would start it, without a socket):
/// its outbound queue's receiving end, and the session.
pub async fn session(
    actors: &Actors,
    store: &Store,
    user: chat_wire::UserId,
    conversations: Vec<chat_store::Held>,
) -> (
    chat_actors::session::OutReceiver,
    actix::Addr<chat_actors::session::Session>,
    tokio::sync::oneshot::Receiver<actix_ws::CloseReason>,
) {
    use chat_actors::session::{OutQueue, Session, SessionConfig, SessionParts};
    use std::time::Instant;
    let (out, frames) = OutQueue::new(1 << 16, 1 << 26);
    let (kill, killed) = tokio::sync::oneshot::channel();
    let record = store.user(user).await.unwrap().unwrap();
    let chat = actors.chat.clone();
    let addr = actix::Actor::create(move |_| {
        Session::new(SessionParts {
            id: chat_actors::messages::SessionId(user.0 as u64),
            user,
            chat,
            cfg: std::sync::Arc::new(SessionConfig {
                node: "n1".into(),
                heartbeat: Duration::from_secs(30),
                sends_per_sec: 10,
                outbound_queue: 1 << 16,
                outbound_queue_bytes: 1 << 26,
            }),
            audiences: record.attributes.audiences(),
            audiences_version: record.attributes_version,
            conversations,
            out,
            kill,
            token_expires: Instant::now() + Duration::from_secs(3600),
            token_issued_at: 0,
            token_floor: None,
        })
    });
    // Attached once the directory reaches it.
    let probe: bytestring::ByteString = "{}".into();
    let deadline = Instant::now() + Duration::from_secs(5);
    while actors.directory.to_users(&[user], &probe, None, None) == 0 {
        assert!(Instant::now() < deadline, "the session never attached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (frames, addr, killed)
}

/// A direct conversation of two new users (`<prefix>-a` writes) holding `n` messages
/// committed through a writer, as another node would have: (conversation, a, b,
/// messages, the writer).
pub async fn direct_with_messages(
    store: &Store,
    prefix: &str,
    n: usize,
) -> (
    chat_wire::ConvId,
    chat_wire::UserId,
    chat_wire::UserId,
    Vec<chat_wire::Message>,
    chat_actors::writer::Writer,
) {
    use chat_store::{Appended, NewMessage};
    let (a, b) = (
        new_user(store, &format!("{prefix}-a")).await,
        new_user(store, &format!("{prefix}-b")).await,
    );
    let (conv, _) = store
        .create_direct(a, b, chat_wire::Tier::Normal, Default::default())
        .await
        .unwrap();
    let writer = chat_actors::writer::Writer::start(
        store.clone(),
        chat_actors::writer::WriterConfig::default(),
        None,
    );
    let mut stored = Vec::new();
    for i in 1..=n {
        let draft = chat_wire::Draft::text(format!("{prefix}-{i}"), format!("m{i}"));
        let out = writer
            .append(conv, vec![NewMessage { sender: a, draft }])
            .await
            .unwrap();
        match out.into_iter().next() {
            Some(Appended::Stored(m)) => stored.push(m),
            other => panic!("not stored: {other:?}"),
        }
    }
    (conv, a, b, stored, writer)
}

/// Starts `conv`'s actor, hands it messages 1 and 3 of `stored` as another node's
/// events (so it holds 3, waiting for 2), and has the registry tell it to stop now:
/// the next actor of `conv` starts while this one still holds a message. Returns the
/// stopping actor.
pub async fn stop_while_holding(
    registry: &actix::Addr<chat_actors::registry::Registry>,
    conv: chat_wire::ConvId,
    stored: &[chat_wire::Message],
) -> actix::Addr<chat_actors::conversation::Conversation> {
    use chat_actors::messages::{ConversationFor, ConversationIdle, Remote};
    let first = registry.send(ConversationFor { conv }).await.unwrap();
    for i in [1, 3] {
        first
            .send(Remote {
                event: chat_bus::Event::Message {
                    message: Box::new(stored[i - 1].clone()),
                },
            })
            .await
            .unwrap();
    }
    registry
        .send(ConversationIdle {
            conv,
            addr: first.clone(),
        })
        .await
        .unwrap();
    first
}
