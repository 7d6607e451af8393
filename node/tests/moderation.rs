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
    let (_db, _redis, nodes) = cluster(1, &[]).await;
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
    let (s, _) = a
        .delete(&format!("/api/v1/service/users/{bob}"), key)
        .await
        .unwrap();
    assert_eq!(s, 404);
}
