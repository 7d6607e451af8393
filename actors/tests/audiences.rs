//! A user's audiences on a node follow the newest read of their attributes, whatever
//! order reads answer in: the actors themselves on a real Postgres, with the stale
//! answer sent by hand (no test through processes can make one read overtake another).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

mod common;

use chat_actors::messages::AudiencesChanged;
use chat_testkit::TestDb;
use chat_wire::{Attributes, AudienceKey};
use common::{actors, new_user, session, store};

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
    let actors = actors(&store);
    let (_frames, _session, _killed) = session(&actors, &store, user, Vec::new()).await;
    let (registry, directory) = (actors.registry.clone(), actors.directory.clone());
    let probe: bytestring::ByteString = "{}".into();

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
    drop((registry, actors));
    db.drop_now().await.unwrap();
}
