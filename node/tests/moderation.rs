//! Group moderation (mutes, bans) and the server API's conversation calls, through
//! real node processes on a real Redis bus and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_testkit::process::SERVICE_KEY;
use chat_testkit::{Endpoint, Node, NodeOptions, RedisServer, TestDb, WsClient};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

async fn cluster(n: usize, extra: &[(&str, &str)]) -> (TestDb, RedisServer, Vec<Node>) {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let mut opts = NodeOptions::new(&format!("node-{i}"), &db).redis(&redis.url());
        for (k, v) in extra {
            opts = opts.set(k, v);
        }
        nodes.push(Node::start(opts).await.unwrap());
    }
    (db, redis, nodes)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[actix_rt::test]
async fn a_muted_member_is_refused_on_http_and_ws_until_unmuted() {
    let (_db, _redis, nodes) = cluster(1, &[]).await;
    let a = nodes[0].api();
    let (_alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let group = a.group(&ta, "team", &[bob]).await.unwrap();
    let mute = format!("/api/v1/conversations/{group}/members/{bob}/mute");
    // A member may not mute; a bad until changes nothing.
    let (s, body) = a
        .post(&mute, Some(&tb), &json!({"until": "2099-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (400, "bad_request"), "{body}"); // muting yourself
    let (s, body) = a
        .post(&mute, Some(&ta), &json!({"until": "tomorrow"}))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (400, "bad_request"), "{body}");
    let (s, body) = a.post(&mute, Some(&ta), &json!({})).await.unwrap();
    assert_eq!((s, code(&body)), (400, "bad_request"), "{body}");
    let (s, body) = a
        .post(&mute, Some(&ta), &json!({"until": "2099-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conversation"]["muted"][0]["user"], bob, "{body}");
    let (s, body) = a
        .post(
            &format!("/api/v1/conversations/{group}/messages"),
            Some(&tb),
            &json!({"cid": "m1", "body": "hi"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2099-01-01"),
        "{body}"
    );
    let (mut wb, _) = WsClient::connect_hello(&nodes[0].ws_url(&tb))
        .await
        .unwrap();
    wb.send_msg(group, "w1", "over ws").await.unwrap();
    let err = wb.expect("error", T).await.unwrap();
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_str()),
        (Some("forbidden"), Some("w1")),
        "{err}"
    );
    // Reading still works.
    let (s, _) = a
        .get(
            &format!("/api/v1/conversations/{group}/messages"),
            Some(&tb),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    // Lifted: the send goes through.
    let (s, body) = a
        .post(&mute, Some(&ta), &json!({"until": null}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let (s, body) = a
        .post(
            &format!("/api/v1/conversations/{group}/messages"),
            Some(&tb),
            &json!({"cid": "m1", "body": "hi"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let (_, hist) = a
        .get(
            &format!("/api/v1/conversations/{group}/messages"),
            Some(&ta),
        )
        .await
        .unwrap();
    let actions: Vec<&str> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["system"]["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"muted") && actions.contains(&"unmuted"),
        "{actions:?}"
    );
}

#[actix_rt::test]
async fn a_banned_member_is_removed_and_cannot_be_added_again() {
    let (_db, _redis, nodes) = cluster(2, &[]).await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let (_alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let (carol, tc) = a.register("carol").await.unwrap();
    let group = a.group(&ta, "team", &[bob, carol]).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&nodes[1].ws_url(&tb))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A plain member bans nobody.
    let (s, body) = a
        .put_empty(
            &format!("/api/v1/conversations/{group}/bans/{bob}"),
            Some(&tc),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    let (s, body) = a
        .put_empty(
            &format!("/api/v1/conversations/{group}/bans/{bob}"),
            Some(&ta),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let left = wb.expect("left", T).await.unwrap();
    assert_eq!(left["conv"], group);
    let (s, body) = b
        .post(
            &format!("/api/v1/conversations/{group}/members"),
            Some(&ta),
            &json!({"users": [bob]}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&bob.to_string()));
    let (s, body) = a
        .get(&format!("/api/v1/conversations/{group}/bans"), Some(&ta))
        .await
        .unwrap();
    assert_eq!(
        (s, body["bans"][0]["user"].as_i64()),
        (200, Some(bob)),
        "{body}"
    );
    let (s, _) = a
        .get(&format!("/api/v1/conversations/{group}/bans"), Some(&tc))
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, body) = a
        .delete(
            &format!("/api/v1/conversations/{group}/bans/{bob}"),
            Some(&ta),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let (s, body) = a
        .post(
            &format!("/api/v1/conversations/{group}/members"),
            Some(&ta),
            &json!({"users": [bob]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
}

#[actix_rt::test]
async fn service_calls_send_create_set_members_and_delete_users() {
    let (db, _redis, nodes) = cluster(1, &[]).await;
    let a = nodes[0].api();
    let (alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let (carol, _tc) = a.register("carol").await.unwrap();
    let key = Some(SERVICE_KEY);
    // Every service call refuses a user token.
    let (s, _) = a
        .post(
            "/api/v1/service/messages",
            Some(&ta),
            &json!({"conv": 1, "as_user": 0, "cid": "x", "body": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, _) = a
        .delete(&format!("/api/v1/service/users/{bob}"), Some(&ta))
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, body) = a
        .post(
            "/api/v1/service/conversations",
            key,
            &json!({"kind": "group", "users": [alice, bob], "title": "ops"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let group = body["conversation"]["id"].as_i64().unwrap();
    assert_eq!(body["conversation"]["role"], "owner");
    // Alice is online: the backend's sends are pushed to her like anyone's.
    let (mut wa, _) = WsClient::connect_hello(&nodes[0].ws_url(&ta))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let send = |as_user: i64, cid: &str| json!({"conv": group, "as_user": as_user, "cid": cid, "body": "from the backend"});
    let (s, first) = a
        .post("/api/v1/service/messages", key, &send(bob, "s1"))
        .await
        .unwrap();
    assert_eq!(s, 201, "{first}");
    let (s, again) = a
        .post("/api/v1/service/messages", key, &send(bob, "s1"))
        .await
        .unwrap();
    assert_eq!((s, &again["seq"]), (200, &first["seq"]));
    let (s, body) = a
        .post("/api/v1/service/messages", key, &send(carol, "s2"))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "not_member"), "{body}");
    let (s, body) = a
        .post("/api/v1/service/messages", key, &send(0, "s3"))
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let pushed = wa.expect("msg", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (&pushed["seq"], &pushed["sender"], pushed["cid"].as_str()),
        (&first["seq"], &json!(bob), Some("s1"))
    );
    // The retry of s1 was not pushed again: the next one is the system's.
    let pushed = wa.expect("msg", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (&pushed["seq"], &pushed["sender"], pushed["body"].as_str()),
        (&body["seq"], &json!(0), Some("from the backend"))
    );
    let (s, body) = a
        .post(
            "/api/v1/service/messages",
            key,
            &json!({"conv": 999999, "as_user": 0, "cid": "s4", "body": "x"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    // Set members: carol in, bob out.
    let (s, body) = a
        .put(
            &format!("/api/v1/service/conversations/{group}/members"),
            key,
            &json!({"users": [alice, carol]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let mut members: Vec<i64> = body["conversation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_i64().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, vec![alice, carol]);
    let (s, body) = a
        .put(
            &format!("/api/v1/service/conversations/{group}/members"),
            key,
            &json!({"users": [alice, 987654]}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    // Delete bob (keep): login refused, his message stays with him as sender.
    let (s, body) = a
        .delete(&format!("/api/v1/service/users/{bob}"), key)
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["mode"].as_str(), body["messages_erased"].as_i64()),
        (Some("keep"), Some(0)),
        "{body}"
    );
    let (s, _) = a
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "bob", "password": "password-bob"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 401);
    let (s, _) = a.get("/api/v1/me", Some(&tb)).await.unwrap();
    assert_eq!(s, 401);
    let (s, profile) = a
        .get(&format!("/api/v1/users/{bob}"), Some(&ta))
        .await
        .unwrap();
    assert_eq!(
        (s, &profile["deleted"], &profile["display_name"]),
        (200, &json!(true), &json!("Deleted user")),
        "{profile}"
    );
    let (_, hist) = a
        .get(
            &format!("/api/v1/conversations/{group}/messages"),
            Some(&ta),
        )
        .await
        .unwrap();
    let his = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sender"] == bob && m["cid"] == "s1")
        .cloned()
        .unwrap();
    assert_eq!(his["body"], "from the backend");
    // In `keep` mode the stored body stays too.
    let row = db
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT body FROM messages WHERE conv = $1 AND seq = $2",
            &[&group, &his["seq"].as_i64().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "from the backend");
    let (s, _) = a
        .delete(&format!("/api/v1/service/users/{bob}"), key)
        .await
        .unwrap();
    assert_eq!(s, 404);
}

/// What a refused change must leave as it was: the group's `last_seq`, its stored
/// entries, its members (with roles and mutes) and its bans.
async fn snapshot(db: &TestDb, conv: i64) -> (i64, i64, Vec<String>, Vec<i64>) {
    let c = db.client().await.unwrap();
    let last_seq: i64 = c
        .query_one("SELECT last_seq FROM conversations WHERE id = $1", &[&conv])
        .await
        .unwrap()
        .get(0);
    let entries: i64 = c
        .query_one("SELECT count(*) FROM messages WHERE conv = $1", &[&conv])
        .await
        .unwrap()
        .get(0);
    let members = c
        .query(
            "SELECT user_id, role, silenced_until::text FROM members WHERE conv = $1
             ORDER BY user_id",
            &[&conv],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}:{:?}",
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(2)
            )
        })
        .collect();
    let bans = c
        .query(
            "SELECT user_id FROM bans WHERE conv = $1 ORDER BY user_id",
            &[&conv],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    (last_seq, entries, members, bans)
}

async fn history(api: &chat_testkit::Api, token: &str, conv: i64) -> Vec<Value> {
    let (s, body) = api
        .get(
            &format!("/api/v1/conversations/{conv}/messages?limit=100"),
            Some(token),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

fn actions(hist: &[Value]) -> Vec<String> {
    hist.iter()
        .filter_map(|m| m["system"]["action"].as_str().map(str::to_string))
        .collect()
}

/// Reads `ws` for `window` and fails on any `msg` frame of `conv` past `after_seq`.
async fn no_msg_of(ws: &mut WsClient, conv: i64, after_seq: i64, window: Duration) {
    let deadline = std::time::Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match ws.recv(left).await {
            Err(_) => return, // time-out: nothing more came
            Ok(chat_testkit::Incoming::Json(v)) => {
                let late = v["type"] == "msg"
                    && v["conv"] == conv
                    && v["seq"].as_i64().unwrap_or(0) > after_seq;
                assert!(!late, "pushed after the ban: {v}");
            }
            Ok(other) => panic!("the socket ended: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn deleting_a_user_in_erase_mode_blanks_their_messages_and_closes_their_sockets() {
    let erase = [("CHAT__SERVICE__DELETE_USER", "erase")];
    let (db, _redis, nodes) = cluster(2, &erase).await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let key = Some(SERVICE_KEY);
    let (alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let group = a.group(&ta, "team", &[bob]).await.unwrap();
    let msgs = format!("/api/v1/conversations/{group}/messages");
    let (s, a1) = a.send(&ta, group, "a1", "hello bob").await.unwrap();
    assert_eq!(s, 201, "{a1}");
    let (s, b1) = a
        .post(
            &msgs,
            Some(&tb),
            &json!({"cid": "b1", "body": "secret one @alice", "mentions": [alice]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{b1}");
    let (s, b2) = a
        .post(
            &msgs,
            Some(&tb),
            &json!({"cid": "b2", "body": "secret picture", "kind": "image",
                    "attach": {"url": "https://files.example/p.png", "mime": "image/png"}}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{b2}");
    // An edit of his carries a body of its own.
    let (s, e1) = a
        .patch(
            &format!("{msgs}/{}", b1["seq"]),
            Some(&tb),
            &json!({"cid": "e1", "body": "secret edited"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{e1}");
    let (s, a2) = a.send(&ta, group, "a2", "still here").await.unwrap();
    assert_eq!(s, 201, "{a2}");
    let before = db.stored(group).await.unwrap();
    // Bob is online on the other node.
    let (mut wb, _) = WsClient::connect_hello(&nodes[1].ws_url(&tb))
        .await
        .unwrap();
    let (s, _) = b.get("/api/v1/me", Some(&tb)).await.unwrap();
    assert_eq!(s, 200);

    let (s, body) = a
        .delete(&format!("/api/v1/service/users/{bob}"), key)
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (
            body["mode"].as_str(),
            body["messages_erased"].as_i64(),
            &body["groups_left"]
        ),
        (Some("erase"), Some(3), &json!([group])),
        "{body}"
    );
    assert_eq!(wb.until_close(T).await.unwrap(), Some(1008));
    let (s, body) = a.get("/api/v1/me", Some(&tb)).await.unwrap();
    assert_eq!((s, code(&body)), (401, "unauthorized"), "{body}");
    // The other node refuses the old token within 2 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (s, _) = b.get("/api/v1/me", Some(&tb)).await.unwrap();
        if s == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node-2 still took the token: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(WsClient::connect_hello(&nodes[1].ws_url(&tb))
        .await
        .is_err());
    let (s, profile) = a
        .get(&format!("/api/v1/users/{bob}"), Some(&ta))
        .await
        .unwrap();
    assert_eq!(
        (s, &profile["deleted"], &profile["display_name"]),
        (200, &json!(true), &json!("Deleted user")),
        "{profile}"
    );

    // The stream kept every entry in place; only his `left` came after.
    let after = db.stored(group).await.unwrap();
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(after[..before.len()], before[..]);
    let hist = history(&a, &ta, group).await;
    let by_seq = |seq: &Value| {
        hist.iter()
            .find(|m| m["seq"] == *seq)
            .cloned()
            .unwrap_or_else(|| panic!("seq {seq} missing from {hist:?}"))
    };
    for (sent, kind) in [(&b1, "text"), (&b2, "image")] {
        let m = by_seq(&sent["seq"]);
        assert_eq!(m["sender"], bob, "{m}");
        assert_eq!(m["kind"], kind, "{m}");
        assert_eq!(m["body"], "", "{m}");
        assert!(m["attach"].is_null(), "{m}");
        assert!(m["mentions"].is_null() || m["mentions"] == json!([]), "{m}");
    }
    assert_eq!(by_seq(&a1["seq"])["body"], "hello bob");
    assert_eq!(by_seq(&a2["seq"])["body"], "still here");
    assert!(
        !hist.iter().any(|m| m.to_string().contains("secret")),
        "{hist:?}"
    );
    assert_eq!(actions(&hist).last().map(String::as_str), Some("left"));

    // And in storage: nothing of his content is left, Alice's is untouched.
    let c = db.client().await.unwrap();
    let rows = c
        .query(
            "SELECT seq, body, attach IS NULL, mentions IS NULL FROM messages
             WHERE conv = $1 AND sender = $2 AND kind <> 'system' ORDER BY seq",
            &[&group, &bob],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(
            (
                r.get::<_, String>(1),
                r.get::<_, bool>(2),
                r.get::<_, bool>(3)
            ),
            (String::new(), true, true),
            "seq {}",
            r.get::<_, i64>(0)
        );
    }
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM messages WHERE body LIKE '%secret%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let alice_bodies: Vec<String> = c
        .query(
            "SELECT body FROM messages WHERE conv = $1 AND sender = $2 AND kind = 'text'
             ORDER BY seq",
            &[&group, &alice],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(alice_bodies, vec!["hello bob", "still here"]);
}

#[actix_rt::test]
async fn a_mute_ends_by_itself_when_until_passes() {
    let (db, _redis, nodes) = cluster(1, &[]).await;
    let a = nodes[0].api();
    let (_alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let group = a.group(&ta, "team", &[bob]).await.unwrap();
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (s, body) = a
        .post(
            &format!("/api/v1/conversations/{group}/members/{bob}/mute"),
            Some(&ta),
            &json!({"until": until.to_rfc3339()}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conversation"]["muted"][0]["user"], bob, "{body}");
    let (s, body) = a.send(&tb, group, "m1", "too early").await.unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    let seq_muted = snapshot(&db, group).await.0;
    // No unmute call: the same send goes through once `until` has passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let accepted = loop {
        let (s, body) = a.send(&tb, group, "m1", "on time").await.unwrap();
        if s == 201 {
            break body;
        }
        assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "still muted 10 s after until"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        chrono::Utc::now() >= until,
        "accepted before until: {accepted}"
    );
    // Nothing was written for the mute's end: the next entry is his message.
    assert_eq!(accepted["seq"].as_i64(), Some(seq_muted + 1), "{accepted}");
    let acts = actions(&history(&a, &ta, group).await);
    assert_eq!(acts.iter().filter(|a| *a == "muted").count(), 1, "{acts:?}");
    assert!(!acts.iter().any(|a| a == "unmuted"), "{acts:?}");
    // The group no longer lists him as muted, and a WebSocket send is taken too.
    let (_, list) = a.get("/api/v1/conversations", Some(&ta)).await.unwrap();
    let conv = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == group)
        .cloned()
        .unwrap();
    assert!(
        conv["muted"].is_null() || conv["muted"] == json!([]),
        "{conv}"
    );
    let (mut wb, _) = WsClient::connect_hello(&nodes[0].ws_url(&tb))
        .await
        .unwrap();
    wb.send_msg(group, "w1", "over ws").await.unwrap();
    let ack = wb.expect("ack", T).await.unwrap();
    assert_eq!(ack["cid"], "w1", "{ack}");
}

#[actix_rt::test]
async fn moderation_follows_the_roles_and_a_refusal_changes_nothing() {
    let (db, _redis, nodes) = cluster(1, &[]).await;
    let a = nodes[0].api();
    let key = Some(SERVICE_KEY);
    let (alice, ta) = a.register("alice").await.unwrap(); // owner
    let (bob, tb) = a.register("bob").await.unwrap(); // member
    let (carol, _tc) = a.register("carol").await.unwrap(); // member
    let (dave, td) = a.register("dave").await.unwrap(); // admin
    let (erin, _te) = a.register("erin").await.unwrap(); // admin
    let group = a
        .group(&ta, "team", &[bob, carol, dave, erin])
        .await
        .unwrap();
    for admin in [dave, erin] {
        let (s, body) = a
            .put(
                &format!("/api/v1/conversations/{group}/members/{admin}/role"),
                Some(&ta),
                &json!({"role": "admin"}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{body}");
    }
    let (s, body) = a
        .post(
            "/api/v1/service/conversations",
            key,
            &json!({"kind": "direct", "users": [alice, bob]}),
        )
        .await
        .unwrap();
    assert!(s == 201 || s == 200, "{s} {body}");
    let direct = body["conversation"]["id"].as_i64().unwrap();
    let until = json!({"until": "2099-01-01T00:00:00Z"});
    let mute = |conv: i64, user: i64| format!("/api/v1/conversations/{conv}/members/{user}/mute");
    let ban = |conv: i64, user: i64| format!("/api/v1/conversations/{conv}/bans/{user}");
    let group_before = snapshot(&db, group).await;
    let direct_before = snapshot(&db, direct).await;
    // (who, their token, what, in which conversation, on whom) → the refusal.
    let refusals: [(&str, &str, &str, i64, i64, u16, &str); 14] = [
        ("admin", &td, "mute", group, erin, 403, "forbidden"),
        ("admin", &td, "ban", group, erin, 403, "forbidden"),
        ("admin", &td, "mute", group, alice, 403, "forbidden"),
        ("admin", &td, "ban", group, alice, 403, "forbidden"),
        ("member", &tb, "mute", group, carol, 403, "forbidden"),
        ("member", &tb, "ban", group, carol, 403, "forbidden"),
        ("member", &tb, "mute", group, dave, 403, "forbidden"),
        ("member", &tb, "unban", group, carol, 403, "forbidden"),
        ("owner", &ta, "mute", group, alice, 400, "bad_request"),
        ("owner", &ta, "ban", group, alice, 400, "bad_request"),
        ("admin", &td, "mute", group, dave, 400, "bad_request"),
        ("admin", &td, "ban", group, dave, 400, "bad_request"),
        ("owner", &ta, "mute", direct, bob, 400, "bad_request"),
        ("owner", &ta, "ban", direct, bob, 400, "bad_request"),
    ];
    for (who, token, what, conv, target, want_status, want_code) in refusals {
        let (s, body) = match what {
            "mute" => a.post(&mute(conv, target), Some(token), &until).await,
            "ban" => a.put_empty(&ban(conv, target), Some(token)).await,
            _ => a.delete(&ban(conv, target), Some(token)).await,
        }
        .unwrap();
        assert_eq!(
            (s, code(&body)),
            (want_status, want_code),
            "{who} {what} {target} in {conv}: {body}"
        );
    }
    assert_eq!(snapshot(&db, group).await, group_before);
    assert_eq!(snapshot(&db, direct).await, direct_before);
    // The ones allowed: an admin a member, the owner an admin (mute and ban).
    let steps: [(&str, &str, i64, &str); 3] = [
        (&td, "mute", bob, "muted"),
        (&ta, "mute", dave, "muted"),
        (&ta, "ban", erin, "banned"),
    ];
    for (i, (token, what, target, action)) in steps.iter().enumerate() {
        let (s, body) = match *what {
            "mute" => a.post(&mute(group, *target), Some(token), &until).await,
            _ => a.put_empty(&ban(group, *target), Some(token)).await,
        }
        .unwrap();
        assert_eq!(s, 200, "{what} {target}: {body}");
        let now = snapshot(&db, group).await;
        assert_eq!(now.0, group_before.0 + i as i64 + 1);
        let hist = history(&a, &ta, group).await;
        let last = hist.last().unwrap();
        assert_eq!(
            (last["system"]["action"].as_str(), &last["system"]["users"]),
            (Some(*action), &json!([target])),
            "{last}"
        );
    }
    let (_, body) = a
        .get(&format!("/api/v1/conversations/{group}/bans"), Some(&ta))
        .await
        .unwrap();
    assert_eq!(body["bans"][0]["user"], erin, "{body}");
    let after = snapshot(&db, group).await;
    assert!(
        !after.2.iter().any(|m| m.starts_with(&format!("{erin}:"))),
        "{after:?}"
    );
    let muted: Vec<&String> = after.2.iter().filter(|m| !m.ends_with(":None")).collect();
    assert_eq!(muted.len(), 2, "{muted:?}");
}

#[actix_rt::test]
async fn pushes_to_a_banned_member_stop_on_the_other_node() {
    let (db, _redis, nodes) = cluster(2, &[]).await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let (_alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let (carol, tc) = a.register("carol").await.unwrap();
    let group = a.group(&ta, "team", &[bob, carol]).await.unwrap();
    // Bob and Carol are on node-2; Alice bans through node-1.
    let (mut wb, _) = WsClient::connect_hello(&nodes[1].ws_url(&tb))
        .await
        .unwrap();
    let (mut wc, _) = WsClient::connect_hello(&nodes[1].ws_url(&tc))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, m0) = a.send(&ta, group, "m0", "before").await.unwrap();
    assert_eq!(s, 201, "{m0}");
    let got = wb.expect("msg", T).await.unwrap();
    assert_eq!(got["seq"], m0["seq"], "{got}");
    let (s, body) = a
        .put_empty(
            &format!("/api/v1/conversations/{group}/bans/{bob}"),
            Some(&ta),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let ban_seq = snapshot(&db, group).await.0;
    let left = wb.expect("left", T).await.unwrap();
    assert_eq!(left["conv"], group, "{left}");
    // The others keep chatting, on both nodes.
    let mut sent = Vec::new();
    for i in 0..3 {
        let (s, m) = a.send(&ta, group, &format!("a{i}"), "after").await.unwrap();
        assert_eq!(s, 201, "{m}");
        sent.push(m["seq"].as_i64().unwrap());
        let (s, m) = b.send(&tc, group, &format!("c{i}"), "after").await.unwrap();
        assert_eq!(s, 201, "{m}");
        sent.push(m["seq"].as_i64().unwrap());
    }
    wc.send_msg(group, "cw", "over ws").await.unwrap();
    // Carol, on bob's node, gets every one of them...
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + T;
    let mut frames = Vec::new();
    while seen.len() < sent.len() + 1 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let m = match wc.recv(left).await {
            Ok(chat_testkit::Incoming::Json(m)) => m,
            other => panic!("{other:?} after {frames:?}"),
        };
        frames.push(m.clone());
        let theirs = m["type"] == "msg" && m["conv"] == group;
        // Her own send over the socket is acknowledged, not pushed back.
        let hers = m["type"] == "ack" && m["cid"] == "cw";
        if (theirs || hers) && m["seq"].as_i64().unwrap() > ban_seq {
            seen.push(m["seq"].as_i64().unwrap());
        }
    }
    assert!(sent.iter().all(|s| seen.contains(s)), "{sent:?} {seen:?}");
    // ...and bob none, nor may he read or write the group.
    no_msg_of(&mut wb, group, ban_seq, Duration::from_millis(1500)).await;
    let (s, body) = b.send(&tb, group, "b1", "let me in").await.unwrap();
    assert_eq!((s, code(&body)), (403, "not_member"), "{body}");
    wb.send_msg(group, "bw", "let me in").await.unwrap();
    let err = wb.expect("error", T).await.unwrap();
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_str()),
        (Some("not_member"), Some("bw")),
        "{err}"
    );
    no_msg_of(&mut wb, group, ban_seq, Duration::from_millis(500)).await;
}

#[actix_rt::test]
async fn moderating_unknown_users_and_non_members() {
    let (db, _redis, nodes) = cluster(1, &[]).await;
    let a = nodes[0].api();
    let key = Some(SERVICE_KEY);
    let (alice, ta) = a.register("alice").await.unwrap();
    let (bob, _tb) = a.register("bob").await.unwrap();
    let (_carol, tc) = a.register("carol").await.unwrap();
    let (dave, _td) = a.register("dave").await.unwrap();
    let group = a.group(&ta, "team", &[bob]).await.unwrap();
    // Dave is a member of another group only.
    let other = a.group(&tc, "elsewhere", &[dave]).await.unwrap();
    let mute = |user: i64| format!("/api/v1/conversations/{group}/members/{user}/mute");
    let ban = |user: i64| format!("/api/v1/conversations/{group}/bans/{user}");
    let until = json!({"until": "2099-01-01T00:00:00Z"});
    let before = snapshot(&db, group).await;
    let other_before = snapshot(&db, other).await;
    let (s, body) = a.post(&mute(987_654), Some(&ta), &until).await.unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    let (s, body) = a.put_empty(&ban(987_654), Some(&ta)).await.unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    let (s, body) = a.post(&mute(dave), Some(&ta), &until).await.unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    let (s, body) = a.delete(&ban(dave), Some(&ta)).await.unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    assert_eq!(snapshot(&db, group).await, before);

    // A ban of a non-member only refuses later adds.
    let (s, body) = a.put_empty(&ban(dave), Some(&ta)).await.unwrap();
    assert_eq!(s, 200, "{body}");
    let now = snapshot(&db, group).await;
    assert_eq!(
        (now.0, &now.2, &now.3),
        (before.0 + 1, &before.2, &vec![dave])
    );
    assert_eq!(snapshot(&db, other).await, other_before);
    let (s, body) = a.put_empty(&ban(dave), Some(&ta)).await.unwrap();
    assert_eq!(s, 200, "{body}"); // again: nothing new
    assert_eq!(snapshot(&db, group).await, now);
    let add = format!("/api/v1/conversations/{group}/members");
    let (s, body) = a
        .post(&add, Some(&ta), &json!({"users": [dave]}))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&dave.to_string()),
        "{body}"
    );
    let (s, body) = a
        .put(
            &format!("/api/v1/service/conversations/{group}/members"),
            key,
            &json!({"users": [alice, bob, dave]}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    assert_eq!(snapshot(&db, group).await, now);
    let (s, body) = a.delete(&ban(dave), Some(&ta)).await.unwrap();
    assert_eq!(s, 200, "{body}");
    let (s, body) = a.delete(&ban(dave), Some(&ta)).await.unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    let (s, body) = a
        .post(&add, Some(&ta), &json!({"users": [dave]}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let members = &body["conversation"]["members"];
    assert!(members.as_array().unwrap().contains(&json!(dave)), "{body}");
    let acts = actions(&history(&a, &ta, group).await);
    assert_eq!(
        acts[acts.len() - 3..],
        ["banned", "unbanned", "added"],
        "{acts:?}"
    );
}

#[actix_rt::test]
async fn service_set_members_keeps_the_group_limit_and_refuses_user_tokens() {
    let limit = [("CHAT__LIMITS__MAX_GROUP_MEMBERS", "5")];
    let (db, _redis, nodes) = cluster(1, &limit).await;
    let a = nodes[0].api();
    let key = Some(SERVICE_KEY);
    let mut users = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..7 {
        let (u, t) = a.register(&format!("user{i}")).await.unwrap();
        users.push(u);
        tokens.push(t);
    }
    let (s, body) = a
        .post(
            "/api/v1/service/conversations",
            key,
            &json!({"kind": "group", "users": users[..6], "title": "big"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (409, "conflict"), "{body}");
    let (s, body) = a
        .post(
            "/api/v1/service/conversations",
            key,
            &json!({"kind": "group", "users": users[..3], "title": "ops"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let group = body["conversation"]["id"].as_i64().unwrap();
    let set = format!("/api/v1/service/conversations/{group}/members");
    let before = snapshot(&db, group).await;
    let (s, body) = a
        .put(&set, key, &json!({"users": users[..6]}))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (409, "conflict"), "{body}");
    assert_eq!(snapshot(&db, group).await, before);
    // A user token, even the owner's, is refused on every server call; no token is 401.
    let owner = Some(tokens[0].as_str());
    let calls: Vec<(&str, String, Value)> = vec![
        ("put", set.clone(), json!({"users": users[..4]})),
        (
            "post",
            format!(
                "/api/v1/service/conversations/{group}/members/{}/mute",
                users[1]
            ),
            json!({"until": "2099-01-01T00:00:00Z"}),
        ),
        (
            "post",
            "/api/v1/service/messages".into(),
            json!({"conv": group, "as_user": users[0], "cid": "x", "body": "x"}),
        ),
        (
            "post",
            "/api/v1/service/conversations".into(),
            json!({"kind": "group", "users": users[..3]}),
        ),
        (
            "delete",
            format!("/api/v1/service/users/{}", users[1]),
            json!(null),
        ),
    ];
    for (token, want) in [(owner, (403, "forbidden")), (None, (401, "unauthorized"))] {
        for (method, path, body) in &calls {
            let (s, resp) = match *method {
                "put" => a.put(path, token, body).await,
                "post" => a.post(path, token, body).await,
                _ => a.delete(path, token).await,
            }
            .unwrap();
            assert_eq!((s, code(&resp)), want, "{method} {path}: {resp}");
        }
    }
    assert_eq!(snapshot(&db, group).await, before);
    let (s, profile) = a
        .get(&format!("/api/v1/users/{}", users[1]), owner)
        .await
        .unwrap();
    assert_eq!((s, &profile["deleted"]), (200, &json!(false)), "{profile}");
    // Exactly the limit is fine, and duplicates count once.
    let mut five: Vec<i64> = users[..5].to_vec();
    five.push(users[4]);
    let (s, body) = a.put(&set, key, &json!({"users": five})).await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["conversation"]["members"].as_array().unwrap().len(),
        5,
        "{body}"
    );
    let grown = snapshot(&db, group).await;
    let (s, body) = a
        .put(
            &set,
            key,
            &json!({"users": [users[0], users[1], users[2], users[3], users[4], users[6]]}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (409, "conflict"), "{body}");
    assert_eq!(snapshot(&db, group).await, grown);
}
