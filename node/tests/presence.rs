//! Presence across a cluster of real node processes on one Redis, and the service
//! calls that close a user's sockets and revoke their tokens on every node.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_testkit::process::SERVICE_KEY;
use chat_testkit::{
    fixtures, Api, Endpoint, Incoming, Node, NodeOptions, RedisServer, TestDb, WsClient,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Short leases and grace so the bounds are seen within a test.
const FAST: &[(&str, &str)] = &[
    ("CHAT__PRESENCE__LEASE", "3s"),
    ("CHAT__PRESENCE__OFFLINE_GRACE", "1s"),
];

async fn cluster(n: usize) -> (TestDb, RedisServer, Vec<Node>) {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let mut opts = NodeOptions::new(&format!("node-{i}"), &db).redis(&redis.url());
        for (k, v) in FAST {
            opts = opts.set(k, v);
        }
        nodes.push(Node::start(opts).await.unwrap());
    }
    (db, redis, nodes)
}

async fn ws(node: &Node, token: &str) -> WsClient {
    let (ws, _) = WsClient::connect_hello(&node.ws_url(token)).await.unwrap();
    ws
}

/// Every `presence` frame that arrives within `d`.
async fn presence_frames(ws: &mut WsClient, d: Duration) -> Vec<Value> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        match ws.recv(left).await {
            Ok(Incoming::Json(v)) if v["type"] == "presence" => out.push(v),
            Ok(Incoming::Json(_)) => {}
            _ => return out,
        }
    }
}

/// The next `presence` frame about `user`.
async fn next_presence(ws: &mut WsClient, user: i64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = ws.expect("presence", left).await.unwrap();
        if v["user"] == user {
            return v;
        }
    }
}

async fn presence_of(api: &Api, token: &str, users: &[i64]) -> Vec<Value> {
    let (s, body) = api
        .post("/api/v1/presence", Some(token), &json!({ "users": users }))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    body["presence"].as_array().unwrap().clone()
}

fn entry(list: &[Value], user: i64) -> Value {
    list.iter()
        .find(|p| p["user"] == user)
        .cloned()
        .unwrap_or(Value::Null)
}

#[actix_rt::test]
async fn presence_crosses_nodes_coalesces_reconnects_and_a_killed_node_leaves_no_ghost() {
    let (_db, _redis, mut nodes) = cluster(3).await;
    let api = nodes[1].api();
    let (alice, ta) = api.register("alice").await.unwrap();
    let (bob, tb) = api.register("bob").await.unwrap();
    let (carol, tc) = api.register("carol").await.unwrap();
    let (dave, td) = api.register("dave").await.unwrap();
    // Bob is alice's direct peer; carol shares a small group with her; dave nothing.
    api.direct(&ta, bob).await.unwrap();
    api.group(&ta, "trio", &[carol, bob]).await.unwrap();

    let mut wb = ws(&nodes[1], &tb).await;
    let mut wc = ws(&nodes[2], &tc).await;
    let mut wd = ws(&nodes[0], &td).await;
    // Their own comings online reach each other (bob and carol share the group).
    let _ = presence_frames(&mut wb, Duration::from_millis(500)).await;
    let _ = presence_frames(&mut wc, Duration::from_millis(10)).await;

    // Alice comes online on node 1: bob (node 2) and carol (node 3) are told.
    let wa = ws(&nodes[0], &ta).await;
    let on_b = next_presence(&mut wb, alice, T).await;
    assert_eq!(on_b["online"], true, "{on_b}");
    assert!(on_b["last_seen"].is_null(), "{on_b}");
    let on_c = next_presence(&mut wc, alice, T).await;
    assert_eq!(on_c["online"], true, "{on_c}");
    // Dave may not see alice: no frame about her.
    let seen_by_dave = presence_frames(&mut wd, Duration::from_millis(500)).await;
    assert!(
        seen_by_dave.iter().all(|p| p["user"] != alice),
        "{seen_by_dave:?}"
    );

    // Asked for, from another node; an unknown id is left out.
    let list = presence_of(&nodes[2].api(), &tc, &[alice, dave, 987_654]).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(entry(&list, alice)["online"], true);
    assert_eq!(entry(&list, dave)["online"], true);
    // More than 200 ids, or a non-id, is refused.
    let many: Vec<i64> = (1..=201).collect();
    let (s, body) = api
        .post("/api/v1/presence", Some(&tb), &json!({ "users": many }))
        .await
        .unwrap();
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (s, _) = api
        .post("/api/v1/presence", Some(&tb), &json!({ "users": ["x"] }))
        .await
        .unwrap();
    assert_eq!(s, 400);

    // The service sees her one session, on node 1, and everyone online.
    let (s, body) = api
        .get(
            &format!("/api/v1/service/users/{alice}/sessions"),
            Some(SERVICE_KEY),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{body}");
    assert_eq!(sessions[0]["node"], "node-1");
    let (s, body) = api
        .get("/api/v1/service/online", Some(SERVICE_KEY))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let mut online: Vec<i64> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_i64().unwrap())
        .collect();
    online.sort();
    let mut everyone = vec![alice, bob, carol, dave];
    everyone.sort();
    assert_eq!(online, everyone);

    // Alice closes her socket: offline after the grace, with a last_seen.
    wa.close().await;
    let off = next_presence(&mut wb, alice, T).await;
    assert_eq!(off["online"], false, "{off}");
    assert!(off["last_seen"].is_string(), "{off}");
    let list = presence_of(&api, &tb, &[alice]).await;
    assert_eq!(entry(&list, alice)["online"], false);
    assert!(entry(&list, alice)["last_seen"].is_string());

    // A reconnect within the grace, to another node, announces nothing.
    let wa = ws(&nodes[0], &ta).await;
    assert_eq!(next_presence(&mut wb, alice, T).await["online"], true);
    wa.close().await;
    let wa2 = ws(&nodes[2], &ta).await;
    let flaps = presence_frames(&mut wb, Duration::from_secs(3)).await;
    assert!(flaps.iter().all(|p| p["user"] != alice), "{flaps:?}");
    wa2.close().await;
    assert_eq!(next_presence(&mut wb, alice, T).await["online"], false);

    // Her only socket is on node 1, killed with -9: she is announced offline within
    // the bound (a lease and a third, plus the watchers' delivery).
    let _wa = ws(&nodes[0], &ta).await;
    assert_eq!(next_presence(&mut wb, alice, T).await["online"], true);
    let killed = Instant::now();
    nodes[0].kill().await.unwrap();
    let off = next_presence(&mut wb, alice, Duration::from_secs(30)).await;
    let ghost = killed.elapsed();
    assert_eq!(off["online"], false, "{off}");
    assert!(
        ghost < Duration::from_secs(10),
        "ghost online for {ghost:?}"
    );
    let list = presence_of(&api, &tb, &[alice, dave]).await;
    assert_eq!(entry(&list, alice)["online"], false, "{list:?}");
    assert_eq!(entry(&list, dave)["online"], false, "{list:?}");
    eprintln!("ghost after kill -9 with a 3 s lease: {ghost:?}");
}

#[actix_rt::test]
async fn disconnect_and_revoke_close_the_sockets_of_every_node() {
    let (_db, _redis, nodes) = cluster(2).await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let (alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();

    // Refused with a user token, and for bad input.
    for (path, get) in [
        (format!("/api/v1/service/users/{alice}/disconnect"), false),
        (format!("/api/v1/service/users/{alice}/revoke"), false),
        (format!("/api/v1/service/users/{alice}/sessions"), true),
        ("/api/v1/service/online".to_string(), true),
    ] {
        let (s, body) = if get {
            a.get(&path, Some(&tb)).await.unwrap()
        } else {
            a.post(&path, Some(&tb), &json!({})).await.unwrap()
        };
        assert_eq!(s, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{path}");
    }
    let (s, _) = a
        .post(
            &format!("/api/v1/service/users/{alice}/disconnect"),
            Some(SERVICE_KEY),
            &json!({"code": 3000}),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    let (s, _) = a
        .post(
            "/api/v1/service/users/987654/disconnect",
            Some(SERVICE_KEY),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(s, 404);
    let (s, _) = a
        .post(
            "/api/v1/service/users/987654/revoke",
            Some(SERVICE_KEY),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(s, 404);

    // Disconnect through node 1 closes her sockets on both nodes with the code asked.
    let mut w1 = ws(&nodes[0], &ta).await;
    let mut w2 = ws(&nodes[1], &ta).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = a
        .post(
            &format!("/api/v1/service/users/{alice}/disconnect"),
            Some(SERVICE_KEY),
            &json!({"code": 4100}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(w1.until_close(T).await.unwrap(), Some(4100));
    assert_eq!(w2.until_close(T).await.unwrap(), Some(4100));
    // Her token still works: a disconnect is not a revocation.
    let (s, _) = b.get("/api/v1/me", Some(&ta)).await.unwrap();
    assert_eq!(s, 200);

    // Revoke through node 2: both sockets close with 1008, the token is refused on
    // HTTP (at once on node 2, within the floor's freshness on node 1) and on connect.
    let mut w1 = ws(&nodes[0], &ta).await;
    let mut w2 = ws(&nodes[1], &ta).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = b
        .post(
            &format!("/api/v1/service/users/{alice}/revoke"),
            Some(SERVICE_KEY),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert!(body["not_before"].is_string(), "{body}");
    assert_eq!(w1.until_close(T).await.unwrap(), Some(1008));
    assert_eq!(w2.until_close(T).await.unwrap(), Some(1008));
    let (s, body) = b.get("/api/v1/me", Some(&ta)).await.unwrap();
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"]["message"], "token revoked");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _) = a.get("/api/v1/me", Some(&ta)).await.unwrap();
    assert_eq!(s, 401);
    assert!(WsClient::connect_hello(&nodes[0].ws_url(&ta))
        .await
        .is_err());
    // A token issued after the revocation's second works, on both nodes.
    let now = fixtures::now();
    let fresh = fixtures::mint(&alice.to_string(), now, now + 600).unwrap();
    let (s, body) = a.get("/api/v1/me", Some(&fresh)).await.unwrap();
    assert_eq!(s, 200, "{body}");
    let (s, _) = b.get("/api/v1/me", Some(&fresh)).await.unwrap();
    assert_eq!(s, 200);
    let _w = ws(&nodes[1], &fresh).await;
    // Bob was never touched, until he is deleted: his sockets on both nodes close with
    // 1008 and his token is refused.
    let (s, _) = a.get("/api/v1/me", Some(&tb)).await.unwrap();
    assert_eq!(s, 200);
    let mut b1 = ws(&nodes[0], &tb).await;
    let mut b2 = ws(&nodes[1], &tb).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = a
        .delete(&format!("/api/v1/service/users/{bob}"), Some(SERVICE_KEY))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(b1.until_close(T).await.unwrap(), Some(1008));
    assert_eq!(b2.until_close(T).await.unwrap(), Some(1008));
    let (s, _) = b.get("/api/v1/me", Some(&tb)).await.unwrap();
    assert_eq!(s, 401);
}
