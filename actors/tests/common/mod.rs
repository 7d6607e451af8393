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
