//! Contacts, friend requests, blocks and profiles, through node processes on a real
//! Postgres (and, for pushes between nodes, a Redis bus the test starts).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

#[expect(
    dead_code,
    reason = "these tests run node processes only, not the in-process node"
)]
mod common;
use chat_testkit::fixtures::{code, user, User, T};
use chat_testkit::{Api, Endpoint, Node, NodeOptions, RedisServer, TestDb, WsClient};
use common::process_node;
use serde_json::{json, Value};

/// Sends a friend request; returns (status, body).
async fn ask(api: &Api, from: &User, to: i64, note: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "user": to });
    if let Some(n) = note {
        body["note"] = json!(n);
    }
    api.post("/api/v1/contacts/requests", Some(&from.token), &body)
        .await
        .unwrap()
}

/// Answers request `id` with `how` (`accept`, `decline`, `cancel`).
async fn answer(api: &Api, who: &User, id: i64, how: &str) -> (u16, Value) {
    api.post(
        &format!("/api/v1/contacts/requests/{id}/{how}"),
        Some(&who.token),
        &json!({}),
    )
    .await
    .unwrap()
}

async fn contacts(api: &Api, who: &User) -> Value {
    let (s, b) = api.get("/api/v1/contacts", Some(&who.token)).await.unwrap();
    assert_eq!(s, 200, "{b}");
    b
}

/// Makes `a` and `b` contacts.
async fn befriend(api: &Api, a: &User, b: &User) {
    let (s, r) = ask(api, a, b.id, None).await;
    assert_eq!(s, 201, "{r}");
    let id = r["request"]["id"].as_i64().unwrap();
    let (s, r) = answer(api, b, id, "accept").await;
    assert_eq!(s, 200, "{r}");
}

/// The user ids of a `GET /contacts` list.
fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_i64().unwrap())
        .collect()
}

/// `POST /sync` with no conversation cursors and `events_cursor`.
async fn sync_events(api: &Api, who: &User, cursor: Option<i64>) -> Value {
    let mut body = json!({ "cursors": {} });
    if let Some(c) = cursor {
        body["events_cursor"] = json!(c);
    }
    let (s, b) = api
        .post("/api/v1/sync", Some(&who.token), &body)
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    b
}

/// The `kind` of each event of a sync answer.
fn kinds(sync: &Value) -> Vec<String> {
    sync["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn open_direct(api: &Api, who: &User, peer: i64) -> (u16, Value) {
    api.post(
        "/api/v1/conversations",
        Some(&who.token),
        &json!({"kind": "direct", "peer": peer}),
    )
    .await
    .unwrap()
}

#[actix_rt::test]
async fn a_request_to_an_offline_user_is_found_by_sync_and_accepting_makes_contacts() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();

    // Bob is offline: nothing is pushed, the request waits in his stream.
    let (s, r) = ask(&api, &alice, bob.id, Some("  hi, it's Alice  ")).await;
    assert_eq!(s, 201, "{r}");
    let req = &r["request"];
    assert_eq!(
        (req["from"].as_i64(), req["to"].as_i64(), &req["status"]),
        (Some(alice.id), Some(bob.id), &json!("pending"))
    );
    assert_eq!(req["note"], "hi, it's Alice", "the note is trimmed");
    let id = req["id"].as_i64().unwrap();

    // A sync without a cursor starts from the beginning of Bob's stream.
    let first = sync_events(&api, &bob, None).await;
    assert_eq!(kinds(&first), ["request"]);
    assert_eq!(first["events"][0]["seq"], 1);
    assert_eq!(first["events"][0]["event"]["request"]["id"], id);
    assert_eq!(first["events"][0]["event"]["request"]["from"], alice.id);
    assert_eq!(first["events_cursor"], 1);
    assert_eq!(first["more"], false);
    // Again from the cursor it returned: nothing new.
    let again = sync_events(&api, &bob, Some(1)).await;
    assert_eq!(kinds(&again), Vec::<String>::new());
    assert_eq!(again["events_cursor"], 1);
    // A negative cursor is refused.
    let (s, b) = api
        .post(
            "/api/v1/sync",
            Some(&bob.token),
            &json!({"cursors": {}, "events_cursor": -1}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"));

    let bob_view = contacts(&api, &bob).await;
    assert_eq!(bob_view["incoming"][0]["id"], id);
    assert_eq!(bob_view["outgoing"], json!([]));
    let alice_view = contacts(&api, &alice).await;
    assert_eq!(alice_view["outgoing"][0]["id"], id);
    assert_eq!(alice_view["incoming"], json!([]));

    let (s, r) = answer(&api, &bob, id, "accept").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["request"]["status"], "accepted");
    assert!(r["request"]["answered_at"].is_string(), "{r}");

    let bob_view = contacts(&api, &bob).await;
    assert_eq!(ids(&bob_view["contacts"]), [alice.id]);
    assert_eq!(bob_view["contacts"][0]["username"], "alice");
    assert_eq!(bob_view["incoming"], json!([]));
    let alice_view = contacts(&api, &alice).await;
    assert_eq!(ids(&alice_view["contacts"]), [bob.id]);
    assert_eq!(alice_view["contacts"][0]["display_name"], "bob");
    assert_eq!(alice_view["outgoing"], json!([]));

    // Alice's stream holds her request and its answer; Bob's the answer after 1.
    let a = sync_events(&api, &alice, Some(0)).await;
    assert_eq!(kinds(&a), ["request", "request_answered"]);
    assert_eq!(a["events"][1]["event"]["request"]["status"], "accepted");
    assert_eq!(a["events_cursor"], 2);

    // The same over a socket: the `sync` frame carries the events too.
    let (mut ws, _) = WsClient::connect_hello(&node.ws_url(&bob.token))
        .await
        .unwrap();
    ws.send_json(&json!({"type": "sync", "cursors": {}, "events_cursor": 1}))
        .await
        .unwrap();
    let frame = ws.expect("sync", T).await.unwrap();
    assert_eq!(kinds(&frame), ["request_answered"]);
    assert_eq!(frame["events_cursor"], 2);

    // A long stream comes 500 events per answer, with `more` until the end.
    let carol = user(&api, "carol").await.unwrap();
    db.client()
        .await
        .unwrap()
        .batch_execute(&format!(
            "INSERT INTO user_events (user_id, seq, event)
             SELECT {id}, s, jsonb_build_object('kind', 'blocked', 'user', s)
               FROM generate_series(1, 620) AS s;
             UPDATE users SET events_seq = 620 WHERE id = {id};",
            id = carol.id
        ))
        .await
        .unwrap();
    let page = sync_events(&api, &carol, None).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 500);
    assert_eq!(
        (&page["more"], &page["events_cursor"]),
        (&json!(true), &json!(500))
    );
    let rest = sync_events(&api, &carol, Some(500)).await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 120);
    assert_eq!(rest["events"][0]["seq"], 501);
    assert_eq!(
        (&rest["more"], &rest["events_cursor"]),
        (&json!(false), &json!(620))
    );
    // A cursor beyond the stream is brought back to where it stands.
    let beyond = sync_events(&api, &carol, Some(9_000)).await;
    assert_eq!(beyond["events_cursor"], 620);
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn requests_and_answers_are_pushed_to_users_on_another_node() {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let start = |id: &str| {
        NodeOptions::new(id, &db)
            .bin(env!("CARGO_BIN_EXE_chat-node"))
            .redis(&redis.url())
    };
    let n1 = Node::start(start("node-1")).await.unwrap();
    let n2 = Node::start(start("node-2")).await.unwrap();
    let (api1, api2) = (n1.api(), n2.api());
    let alice = user(&api1, "alice").await.unwrap();
    let bob = user(&api2, "bob").await.unwrap();

    let (mut wa, _) = WsClient::connect_hello(&n1.ws_url(&alice.token))
        .await
        .unwrap();
    let (mut wb, _) = WsClient::connect_hello(&n2.ws_url(&bob.token))
        .await
        .unwrap();
    // Let each node's subscription of its user's channel settle.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Alice asks on node 1; Bob, on node 2, is told at once.
    let (s, r) = ask(&api1, &alice, bob.id, Some("from the other node")).await;
    assert_eq!(s, 201, "{r}");
    let id = r["request"]["id"].as_i64().unwrap();
    let pushed = wb.expect("contact", T).await.unwrap();
    assert_eq!(pushed["event"]["event"]["kind"], "request");
    assert_eq!(pushed["event"]["event"]["request"]["id"], id);
    assert_eq!(
        pushed["event"]["event"]["request"]["note"],
        "from the other node"
    );
    assert_eq!(pushed["event"]["seq"], 1);
    // Her own device hears of it too (her stream holds it as well).
    let own = wa.expect("contact", T).await.unwrap();
    assert_eq!(own["event"]["event"]["kind"], "request");

    // Bob accepts on node 2; Alice, on node 1, gets the answer.
    let (s, _) = answer(&api2, &bob, id, "accept").await;
    assert_eq!(s, 200);
    let answered = wa.expect("contact", T).await.unwrap();
    assert_eq!(answered["event"]["event"]["kind"], "request_answered");
    assert_eq!(answered["event"]["event"]["request"]["status"], "accepted");
    assert_eq!(answered["event"]["seq"], 2);
    let mine = wb.expect("contact", T).await.unwrap();
    assert_eq!(mine["event"]["event"]["kind"], "request_answered");

    // Unfriending on node 1 reaches Bob on node 2, naming Alice.
    let (s, _) = api1
        .delete(&format!("/api/v1/contacts/{}", bob.id), Some(&alice.token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    let gone = wb.expect("contact", T).await.unwrap();
    assert_eq!(
        gone["event"]["event"],
        json!({"kind": "unfriended", "user": alice.id})
    );
    drop((n1, n2));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn decline_cancel_duplicates_and_refusals() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    let carol = user(&api, "carol").await.unwrap();
    let dave = user(&api, "dave").await.unwrap();
    let requests = |u: i64| {
        let db = &db;
        async move {
            db.count(
                "SELECT count(*) FROM contact_requests WHERE from_user = $1 OR to_user = $1",
                u,
            )
            .await
            .unwrap()
        }
    };

    // Refused: oneself, an unknown user, the system user, a bad note, a bad id.
    let (s, b) = ask(&api, &alice, alice.id, None).await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = ask(&api, &alice, 999_999, None).await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = ask(&api, &alice, 0, None).await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = ask(&api, &alice, bob.id, Some(&"x".repeat(501))).await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    assert!(b["error"]["message"].as_str().unwrap().contains("note"));
    let (s, b) = answer(&api, &bob, 999_999, "accept").await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = api
        .post(
            "/api/v1/contacts/requests/abc/accept",
            Some(&bob.token),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"));
    assert_eq!(requests(alice.id).await, 0, "nothing stored on refusal");

    let (s, r) = ask(&api, &alice, bob.id, None).await;
    assert_eq!(s, 201);
    let first = r["request"]["id"].as_i64().unwrap();
    // The same again: 409, and nothing more is stored.
    let (s, b) = ask(&api, &alice, bob.id, None).await;
    assert_eq!((s, code(&b)), (409, "conflict"));
    assert_eq!(requests(alice.id).await, 1);

    // Only the recipient accepts or declines; only the sender cancels.
    for (who, how) in [
        (&alice, "accept"),
        (&alice, "decline"),
        (&carol, "accept"),
        (&bob, "cancel"),
        (&carol, "cancel"),
    ] {
        let (s, b) = answer(&api, who, first, how).await;
        assert_eq!((s, code(&b)), (403, "forbidden"), "{how}");
    }
    assert_eq!(
        contacts(&api, &bob).await["incoming"][0]["status"],
        "pending"
    );

    // Declined; answering again is a conflict.
    let (s, r) = answer(&api, &bob, first, "decline").await;
    assert_eq!((s, &r["request"]["status"]), (200, &json!("declined")));
    let (s, b) = answer(&api, &bob, first, "accept").await;
    assert_eq!((s, code(&b)), (409, "conflict"));
    assert_eq!(contacts(&api, &bob).await["contacts"], json!([]));

    // A new request after a decline; its sender cancels it.
    let (s, r) = ask(&api, &alice, bob.id, Some("again")).await;
    assert_eq!(s, 201);
    let second = r["request"]["id"].as_i64().unwrap();
    assert_ne!(second, first);
    let (s, r) = answer(&api, &alice, second, "cancel").await;
    assert_eq!((s, &r["request"]["status"]), (200, &json!("cancelled")));
    assert_eq!(contacts(&api, &bob).await["incoming"], json!([]));
    assert_eq!(contacts(&api, &alice).await["outgoing"], json!([]));
    // Bob saw all of it in his stream.
    let events = sync_events(&api, &bob, None).await;
    let statuses: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["request"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "declined", "pending", "cancelled"]);

    // Asking someone who already asked you accepts their request.
    let (s, r) = ask(&api, &carol, dave.id, None).await;
    assert_eq!(s, 201);
    let theirs = r["request"]["id"].as_i64().unwrap();
    let (s, r) = ask(&api, &dave, carol.id, None).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["request"]["id"], theirs);
    assert_eq!(r["request"]["status"], "accepted");
    assert_eq!(ids(&contacts(&api, &carol).await["contacts"]), [dave.id]);
    // Contacts cannot ask again, either way.
    for (from, to) in [(&carol, dave.id), (&dave, carol.id)] {
        let (s, b) = ask(&api, from, to, None).await;
        assert_eq!((s, code(&b)), (409, "conflict"));
    }

    // Unfriending removes both directions; again, or a stranger, is 404.
    let (s, _) = api
        .delete(&format!("/api/v1/contacts/{}", dave.id), Some(&carol.token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(contacts(&api, &carol).await["contacts"], json!([]));
    assert_eq!(contacts(&api, &dave).await["contacts"], json!([]));
    for peer in [dave.id, alice.id] {
        let (s, b) = api
            .delete(&format!("/api/v1/contacts/{peer}"), Some(&carol.token))
            .await
            .unwrap();
        assert_eq!((s, code(&b)), (404, "not_found"));
    }
    let d = sync_events(&api, &dave, Some(0)).await;
    assert_eq!(
        d["events"].as_array().unwrap().last().unwrap()["event"],
        json!({"kind": "unfriended", "user": carol.id})
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_block_refuses_direct_conversations_and_requests_both_ways_until_lifted() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    let carol = user(&api, "carol").await.unwrap();
    befriend(&api, &alice, &bob).await;
    let (s, r) = ask(&api, &carol, alice.id, None).await;
    assert_eq!(s, 201);
    let carols = r["request"]["id"].as_i64().unwrap();

    // Blocking a friend ends the friendship; blocking one who asked cancels it.
    for (other, path) in [(bob.id, "bob"), (carol.id, "carol")] {
        let (s, b) = api
            .put_empty(&format!("/api/v1/blocks/{other}"), Some(&alice.token))
            .await
            .unwrap();
        assert_eq!(s, 200, "{path}: {b}");
    }
    // Again: nothing changes.
    let (s, _) = api
        .put_empty(&format!("/api/v1/blocks/{}", bob.id), Some(&alice.token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    let mine = contacts(&api, &alice).await;
    assert_eq!(mine["contacts"], json!([]));
    assert_eq!(mine["incoming"], json!([]));
    let mut blocked: Vec<i64> = mine["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    blocked.sort_unstable();
    assert_eq!(blocked, [bob.id, carol.id]);
    assert_eq!(contacts(&api, &bob).await["contacts"], json!([]));
    assert_eq!(contacts(&api, &carol).await["outgoing"], json!([]));
    let c = sync_events(&api, &carol, None).await;
    assert_eq!(kinds(&c), ["request", "request_answered"]);
    assert_eq!(c["events"][1]["event"]["request"]["id"], carols);
    assert_eq!(c["events"][1]["event"]["request"]["status"], "cancelled");
    let b = sync_events(&api, &bob, None).await;
    assert_eq!(kinds(&b), ["request", "request_answered", "unfriended"]);
    // Alice's stream tells her other devices of both blocks, once each.
    let a = sync_events(&api, &alice, None).await;
    assert_eq!(kinds(&a).iter().filter(|k| *k == "blocked").count(), 2);

    // Neither can open a direct conversation with the other, nor ask.
    for (who, peer) in [(&alice, bob.id), (&bob, alice.id)] {
        let (s, b) = open_direct(&api, who, peer).await;
        assert_eq!((s, code(&b)), (403, "forbidden"), "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains("block"));
        let (s, b) = ask(&api, who, peer, None).await;
        assert_eq!((s, code(&b)), (403, "forbidden"));
    }
    let (s, b) = api
        .put_empty(&format!("/api/v1/blocks/{}", alice.id), Some(&alice.token))
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = api
        .put_empty("/api/v1/blocks/999999", Some(&alice.token))
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (404, "not_found"));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM conversations WHERE kind = 'direct' AND direct_a = $1",
            alice.id.min(bob.id)
        )
        .await
        .unwrap(),
        0
    );

    // Lifted: both ways work again (the second finds the first's conversation).
    let (s, _) = api
        .delete(&format!("/api/v1/blocks/{}", bob.id), Some(&alice.token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (s, b) = open_direct(&api, &bob, alice.id).await;
    assert_eq!(s, 201, "{b}");
    let (s, again) = open_direct(&api, &alice, bob.id).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["conversation"]["id"], b["conversation"]["id"]);
    // Unblocking again changes nothing; Carol stays blocked.
    let (s, _) = api
        .delete(&format!("/api/v1/blocks/{}", bob.id), Some(&alice.token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(contacts(&api, &alice).await["blocked"], json!([carol.id]));
    let (s, b) = open_direct(&api, &carol, alice.id).await;
    assert_eq!((s, code(&b)), (403, "forbidden"));
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn direct_conversations_need_friendship_when_the_switch_is_on() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(
        &db,
        "node-1",
        &[("CHAT__CHAT__DIRECT_REQUIRES_FRIENDSHIP", "true")],
    )
    .await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    let carol = user(&api, "carol").await.unwrap();

    let (s, b) = open_direct(&api, &alice, bob.id).await;
    assert_eq!((s, code(&b)), (403, "forbidden"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("contact"));
    // A pending request is not friendship yet.
    let (s, r) = ask(&api, &alice, bob.id, None).await;
    assert_eq!(s, 201);
    let (s, _) = open_direct(&api, &bob, alice.id).await;
    assert_eq!(s, 403);
    let id = r["request"]["id"].as_i64().unwrap();
    let (s, _) = answer(&api, &bob, id, "accept").await;
    assert_eq!(s, 200);
    let (s, b) = open_direct(&api, &alice, bob.id).await;
    assert_eq!(s, 201, "{b}");
    // Groups are not concerned.
    let (s, _) = api
        .post(
            "/api/v1/conversations",
            Some(&alice.token),
            &json!({"kind": "group", "title": "g", "members": [carol.id]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_profile_change_is_what_peers_see_and_bad_input_changes_nothing() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    befriend(&api, &alice, &bob).await;

    let avatar = "https://cdn.example.com/avatars/alice.png";
    let (s, b) = api
        .patch(
            "/api/v1/me",
            Some(&alice.token),
            &json!({"display_name": " Alice A. ", "avatar_url": avatar}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user"]["display_name"], "Alice A.");
    assert_eq!(b["user"]["avatar_url"], avatar);
    assert_eq!(b["user"]["username"], "alice");

    let seen = contacts(&api, &bob).await;
    assert_eq!(seen["contacts"][0]["display_name"], "Alice A.");
    assert_eq!(seen["contacts"][0]["avatar_url"], avatar);
    let (s, found) = api
        .get("/api/v1/users?q=ali", Some(&bob.token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(found["users"][0]["display_name"], "Alice A.");
    assert_eq!(found["users"][0]["avatar_url"], avatar);

    // Refused, and nothing changes.
    for bad in [
        json!({"avatar_url": "ftp://cdn.example.com/a.png"}),
        json!({"avatar_url": "javascript:alert(1)"}),
        json!({"avatar_url": "no url at all"}),
        json!({"avatar_url": format!("https://example.com/{}", "a".repeat(1100))}),
        json!({"display_name": "   "}),
        json!({"display_name": "x".repeat(65)}),
        json!({"display_name": "New", "avatar_url": "mailto:a@b.c"}),
        json!({}),
    ] {
        let (s, b) = api
            .patch("/api/v1/me", Some(&alice.token), &bad)
            .await
            .unwrap();
        assert_eq!((s, code(&b)), (400, "bad_request"), "{bad}");
    }
    let (_, me) = api.get("/api/v1/me", Some(&alice.token)).await.unwrap();
    assert_eq!(me["display_name"], "Alice A.");
    assert_eq!(me["avatar_url"], avatar);

    // Only the name: the avatar stays. `null` removes the avatar, the name stays.
    let (s, b) = api
        .patch(
            "/api/v1/me",
            Some(&alice.token),
            &json!({"display_name": "Al"}),
        )
        .await
        .unwrap();
    assert_eq!((s, &b["user"]["avatar_url"]), (200, &json!(avatar)));
    let (s, b) = api
        .patch(
            "/api/v1/me",
            Some(&alice.token),
            &json!({"avatar_url": null}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(b["user"]["avatar_url"], Value::Null);
    assert_eq!(b["user"]["display_name"], "Al");
    assert_eq!(
        contacts(&api, &bob).await["contacts"][0]["avatar_url"],
        Value::Null
    );

    // The OpenAPI document describes the new calls and what they carry.
    let (s, doc) = api.get("/api/v1/openapi.json", None).await.unwrap();
    assert_eq!(s, 200);
    for path in [
        "/api/v1/contacts",
        "/api/v1/contacts/requests",
        "/api/v1/contacts/requests/{id}/accept",
        "/api/v1/contacts/{user}",
        "/api/v1/blocks/{user}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/api/v1/me"]["patch"].is_object());
    for schema in [
        "ContactsResponse",
        "ContactRequest",
        "UserEvent",
        "EventEntry",
        "PatchMe",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn two_users_asking_each_other_at_once_end_up_contacts_once() {
    let db = TestDb::create().await.unwrap();
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let mut pairs = Vec::new();
    for i in 0..12 {
        let a = user(&api, &format!("left{i}")).await.unwrap();
        let b = user(&api, &format!("right{i}")).await.unwrap();
        pairs.push((a, b));
    }
    // Each pair asks both ways at the same moment; every pair at once.
    let asks = pairs.iter().map(|(a, b)| {
        let api = api.clone();
        async move {
            let (x, y) = futures_util::join!(ask(&api, a, b.id, None), ask(&api, b, a.id, None));
            (x, y)
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    for ((a, b), ((s1, r1), (s2, r2))) in pairs.iter().zip(answers) {
        let mut statuses = [s1, s2];
        statuses.sort_unstable();
        // One created the request, the other accepted it: never a conflict or a 5xx.
        assert_eq!(statuses, [200, 201], "{r1} {r2}");
        assert_eq!(r1["request"]["id"], r2["request"]["id"]);
        assert_eq!(ids(&contacts(&api, a).await["contacts"]), [b.id]);
        assert_eq!(ids(&contacts(&api, b).await["contacts"]), [a.id]);
        let stored = db
            .count(
                "SELECT count(*) FROM contact_requests WHERE from_user = $1 OR to_user = $1",
                a.id,
            )
            .await
            .unwrap();
        assert_eq!(stored, 1);
        // Both streams hold the request and its acceptance, seqs 1 and 2.
        for u in [a, b] {
            let s = sync_events(&api, u, None).await;
            assert_eq!(kinds(&s), ["request", "request_answered"]);
            assert_eq!(s["events_cursor"], 2);
        }
    }
    drop(node);
    db.drop_now().await.unwrap();
}
