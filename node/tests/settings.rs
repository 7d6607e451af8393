//! A member's own settings of a conversation (muted, pinned, archived), through a node
//! process on a real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

#[expect(
    dead_code,
    reason = "these tests run node processes only, not the in-process node"
)]
mod common;
use chat_testkit::fixtures::{code, user, User, T};
use chat_testkit::{Api, Endpoint, TestDb, WsClient};
use common::process_node;
use serde_json::{json, Value};

/// `PUT /conversations/{conv}/settings`; returns (status, body).
async fn put_settings(api: &Api, who: &User, conv: i64, body: &Value) -> (u16, Value) {
    api.put(
        &format!("/api/v1/conversations/{conv}/settings"),
        Some(&who.token),
        body,
    )
    .await
    .unwrap()
}

/// `conv` as it stands in `who`'s list.
async fn listed(api: &Api, who: &User, conv: i64) -> Value {
    let (s, b) = api
        .get("/api/v1/conversations", Some(&who.token))
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    b["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conv)
        .cloned()
        .unwrap_or_else(|| panic!("{conv} not in {b}"))
}

/// `conv` as one conversation call answers it (`PATCH` with nothing to change).
async fn got(api: &Api, who: &User, conv: i64) -> Value {
    let (s, b) = api
        .patch(
            &format!("/api/v1/conversations/{conv}"),
            Some(&who.token),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    b["conversation"].clone()
}

/// The three settings of a conversation object (or a settings event).
fn three(c: &Value) -> (Value, Value, Value) {
    (
        c["muted_until"].clone(),
        c["pinned"].clone(),
        c["archived"].clone(),
    )
}

/// `POST /sync` with no conversation cursors and `events_cursor`.
async fn sync_events(api: &Api, who: &User, cursor: i64) -> Value {
    let (s, b) = api
        .post(
            "/api/v1/sync",
            Some(&who.token),
            &json!({"cursors": {}, "events_cursor": cursor}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    b
}

#[actix_rt::test]
async fn settings_are_the_members_own_and_reach_their_other_devices() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    let carol = user(&api, "carol").await.unwrap();
    let conv = api.group(&alice.token, "team", &[bob.id]).await.unwrap();
    let (s, b) = api.send(&bob.token, conv, "m1", "hello").await.unwrap();
    assert_eq!(s, 201, "{b}");
    let before = listed(&api, &alice, conv).await;
    let last_seq = before["last_seq"].clone();
    assert_eq!(
        three(&before),
        (json!(null), json!(false), json!(false)),
        "nothing set yet"
    );
    let stored = db.stored(conv).await.unwrap().len();

    // Alice's other device, on a socket.
    let (mut other, _) = WsClient::connect_hello(&node.ws_url(&alice.token))
        .await
        .unwrap();

    // Muted until a time: the answer, the push, the list and the conversation call agree.
    let (s, b) = put_settings(
        &api,
        &alice,
        conv,
        &json!({"muted_until": "2031-02-03T04:05:06+01:00"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let until = json!("2031-02-03T03:05:06.000000Z");
    assert_eq!(b["conversation"]["id"], conv);
    assert_eq!(
        three(&b["conversation"]),
        (until.clone(), json!(false), json!(false))
    );
    let pushed = other.expect("contact", T).await.unwrap();
    let ev = &pushed["event"]["event"];
    assert_eq!(ev["kind"], "settings", "{pushed}");
    assert_eq!(ev["conv"], conv);
    assert_eq!(three(ev), (until.clone(), json!(false), json!(false)));
    let first_seq = pushed["event"]["seq"].as_i64().unwrap();
    assert_eq!(three(&listed(&api, &alice, conv).await).0, until);
    assert_eq!(three(&got(&api, &alice, conv).await).0, until);
    // Bob's view of the same group is his own: nothing set.
    assert_eq!(
        three(&listed(&api, &bob, conv).await),
        (json!(null), json!(false), json!(false))
    );

    // Forever, then unmuted with null.
    let (s, b) = put_settings(&api, &alice, conv, &json!({"muted_until": "forever"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["conversation"]["muted_until"], "forever");
    let pushed = other.expect("contact", T).await.unwrap();
    assert_eq!(pushed["event"]["event"]["muted_until"], "forever");
    assert_eq!(listed(&api, &alice, conv).await["muted_until"], "forever");
    let (s, b) = put_settings(&api, &alice, conv, &json!({"muted_until": null})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["conversation"]["muted_until"], json!(null));
    let pushed = other.expect("contact", T).await.unwrap();
    assert_eq!(pushed["event"]["event"]["muted_until"], json!(null));

    // Pinned and archived; an absent mute stays as it is.
    let (s, b) = put_settings(&api, &alice, conv, &json!({"muted_until": "forever"})).await;
    assert_eq!(s, 200, "{b}");
    other.expect("contact", T).await.unwrap();
    let (s, b) = put_settings(
        &api,
        &alice,
        conv,
        &json!({"pinned": true, "archived": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let now = (json!("forever"), json!(true), json!(true));
    assert_eq!(three(&b["conversation"]), now);
    let pushed = other.expect("contact", T).await.unwrap();
    assert_eq!(three(&pushed["event"]["event"]), now);
    let last_event = pushed["event"]["seq"].as_i64().unwrap();
    assert_eq!(last_event, first_seq + 4, "one event per change");
    assert_eq!(three(&listed(&api, &alice, conv).await), now);
    assert_eq!(three(&got(&api, &alice, conv).await), now);
    let (s, b) = put_settings(&api, &alice, conv, &json!({"archived": false})).await;
    assert_eq!(s, 200, "{b}");
    let now = (json!("forever"), json!(true), json!(false));
    assert_eq!(three(&b["conversation"]), now);
    let last_event = other.expect("contact", T).await.unwrap()["event"]["seq"]
        .as_i64()
        .unwrap();

    // A device that was away learns them from sync.
    let synced = sync_events(&api, &alice, first_seq - 1).await;
    let events = synced["events"].as_array().unwrap();
    assert_eq!(events.len(), 6, "{synced}");
    assert!(events.iter().all(|e| e["event"]["kind"] == "settings"));
    assert_eq!(events[0]["event"]["muted_until"], until);
    assert_eq!(three(&events[5]["event"]), now);
    assert_eq!(synced["events_cursor"], last_event);

    // A non-member is refused, an unknown conversation is not found.
    let (s, b) = put_settings(&api, &carol, conv, &json!({"pinned": true})).await;
    assert_eq!((s, code(&b)), (403, "not_member"), "{b}");
    let (s, b) = put_settings(&api, &alice, 987_654, &json!({"pinned": true})).await;
    assert_eq!((s, code(&b)), (404, "not_found"), "{b}");
    assert_eq!(sync_events(&api, &carol, 0).await["events"], json!([]));

    // Bad values change nothing.
    for bad in [
        json!({"muted_until": "soon"}),
        json!({"muted_until": 5}),
        json!({"pinned": "yes"}),
        json!({"pinned": false, "colour": "red"}),
        json!({}),
    ] {
        let (s, b) = put_settings(&api, &alice, conv, &bad).await;
        assert_eq!((s, code(&b)), (400, "bad_request"), "{bad}: {b}");
    }
    assert_eq!(three(&listed(&api, &alice, conv).await), now);
    assert_eq!(
        sync_events(&api, &alice, last_event).await["events"],
        json!([]),
        "no event for a refused change"
    );

    // Settings are no entry of the conversation's stream.
    let after = listed(&api, &alice, conv).await;
    assert_eq!(after["last_seq"], last_seq);
    assert_eq!(listed(&api, &bob, conv).await["last_seq"], last_seq);
    assert_eq!(db.stored(conv).await.unwrap().len(), stored);

    // The OpenAPI document describes the call and its body.
    let (s, doc) = api.get("/api/v1/openapi.json", None).await.unwrap();
    assert_eq!(s, 200);
    let op = &doc["paths"]["/api/v1/conversations/{id}/settings"]["put"];
    assert_eq!(op["tags"], json!(["conversations"]), "{op}");
    assert!(op["responses"]["200"].is_object() && op["responses"]["403"].is_object());
    assert!(doc["components"]["schemas"]["SettingsRequest"].is_object());
    other.close().await;
    drop(node);
    db.drop_now().await.unwrap();
}
