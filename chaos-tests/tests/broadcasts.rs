//! In-site notices to whole audiences: one row per broadcast whatever the audience's
//! size, pushed to online members on every node, read like any conversation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_chaos::Chatter;
use chat_testkit::process::SERVICE_KEY;
use chat_testkit::{Api, Endpoint, Node, NodeOptions, RedisServer, TestDb};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

async fn provision(api: &Api, name: &str, attrs: Value) -> (i64, String) {
    let u = chat_testkit::fixtures::provision(api, name, attrs)
        .await
        .unwrap();
    (u.id, u.token)
}

fn conv_ids(list: &Value) -> Vec<i64> {
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[actix_rt::test]
async fn broadcast_to_a_large_audience_is_one_row_pushed_and_read_like_any_conversation() {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let n1 = Node::start(NodeOptions::new("node-1", &db).redis(&redis.url()))
        .await
        .unwrap();
    let n2 = Node::start(NodeOptions::new("node-2", &db).redis(&redis.url()))
        .await
        .unwrap();
    let (api1, api2) = (n1.api(), n2.api());

    // 100,000 members of org 1 / role 3, made in SQL for speed.
    let c = db.client().await.unwrap();
    c.batch_execute(
        "INSERT INTO users (username, display_name, org, roles, jobs)
         SELECT 'bulk' || g, 'Bulk ' || g, '1', ARRAY['3'], ARRAY['2'] FROM generate_series(1, 100000) g",
    )
    .await
    .unwrap();
    let (online, t_online) = provision(&api1, "online", json!({"org": 1, "roles": [3]})).await;
    let (_offline, t_offline) =
        provision(&api1, "offline", json!({"org": "1", "roles": ["3", "9"]})).await;
    let (_outsider, t_outsider) =
        provision(&api1, "outsider", json!({"org": 2, "roles": [3]})).await;
    let (later, t_later) = provision(&api1, "later", json!({"org": 2})).await;

    // The online member listens on node 2; "later" is online on node 1.
    let mut on = Chatter::new(online, t_online.clone());
    on.connect(&format!("ws://127.0.0.1:{}", n2.port))
        .await
        .unwrap();
    let mut lt = Chatter::new(later, t_later.clone());
    lt.connect(&format!("ws://127.0.0.1:{}", n1.port))
        .await
        .unwrap();
    on.pump(Duration::from_millis(300)).await.unwrap();

    let body = json!({"audience": "role/3/org/1", "body": "All hands at 3pm", "cid": "notice-1", "tier": "important"});
    let started = Instant::now();
    let (s, b) = api1
        .post("/api/v1/broadcasts", Some(SERVICE_KEY), &body)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(s, 201, "{b}");
    let conv = b["conversation_id"].as_i64().unwrap();
    assert_eq!(b["seq"], 1);
    eprintln!("broadcast to 100,000+ users answered in {took:?}");

    // One message row, no row per recipient.
    let rows: i64 = db
        .count("SELECT count(*) FROM messages WHERE conv = $1", conv)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let cursors: i64 = db
        .count("SELECT count(*) FROM members WHERE conv = $1", conv)
        .await
        .unwrap();
    assert_eq!(cursors, 0);
    // The same cid again: same seq, still one row.
    let (s, again) = api2
        .post("/api/v1/broadcasts", Some(SERVICE_KEY), &body)
        .await
        .unwrap();
    assert_eq!(
        (s, again["seq"].as_i64(), again["conversation_id"].as_i64()),
        (200, Some(1), Some(conv))
    );

    // The online member on the other node gets it pushed.
    let deadline = Instant::now() + T;
    while on.seqs(conv).is_empty() && Instant::now() < deadline {
        on.pump(Duration::from_millis(100)).await.unwrap();
    }
    assert_eq!(
        on.push_order.get(&conv),
        Some(&vec![1]),
        "pushed across nodes"
    );
    assert_eq!(on.received[&conv][&1]["sender"], 0, "sent by the system");

    // The offline member sees it in the list, unread and sync, and reads it to 0.
    let (_, list) = api2
        .get("/api/v1/conversations", Some(&t_offline))
        .await
        .unwrap();
    let entry = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == conv)
        .cloned()
        .unwrap();
    assert_eq!(
        (entry["kind"].as_str(), entry["unread"].as_i64()),
        (Some("broadcast"), Some(1))
    );
    assert!(
        entry.get("members").is_none(),
        "no member list for a broadcast"
    );
    assert_eq!(entry["last_message"]["body"], "All hands at 3pm");
    let (_, u) = api2.get("/api/v1/unread", Some(&t_offline)).await.unwrap();
    assert_eq!(u["total"], 1);
    let (s, r) = api2.read(&t_offline, conv, 1).await.unwrap();
    assert_eq!(
        (s, r["unread"].as_i64(), r["total_unread"].as_i64()),
        (200, Some(0), Some(0))
    );
    let cursors: i64 = db
        .count("SELECT count(*) FROM members WHERE conv = $1", conv)
        .await
        .unwrap();
    assert_eq!(cursors, 1, "a cursor row on first read");

    // A non-matching user never sees it.
    let (_, list) = api1
        .get("/api/v1/conversations", Some(&t_outsider))
        .await
        .unwrap();
    assert!(!conv_ids(&list).contains(&conv));
    let (s, e) = api1
        .get(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&t_outsider),
        )
        .await
        .unwrap();
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("not_member")));
    let mut cur = std::collections::BTreeMap::new();
    assert!(api1
        .sync_all(&t_outsider, &mut cur, 50)
        .await
        .unwrap()
        .is_empty());

    // Nobody posts into it with a user token, over HTTP or WebSocket.
    let (s, e) = api1
        .post("/api/v1/broadcasts", Some(&t_online), &body)
        .await
        .unwrap();
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, e) = api1
        .send(&t_online, conv, "mine", "hello all")
        .await
        .unwrap();
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")));
    on.send(conv, "ws-mine").await.unwrap();
    on.pump(Duration::from_millis(500)).await.unwrap();
    assert!(on.acked.is_empty(), "no ack for a send into a broadcast");
    let rows: i64 = db
        .count("SELECT count(*) FROM messages WHERE conv = $1", conv)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // Attributes change: "later" joins the audience from its next request, and its
    // open session follows (the next notice is pushed to it).
    let (_, list) = api1
        .get("/api/v1/conversations", Some(&t_later))
        .await
        .unwrap();
    assert!(!conv_ids(&list).contains(&conv));
    let (s, _) = api2
        .put(
            &format!("/api/v1/users/{later}/attributes"),
            Some(SERVICE_KEY),
            &json!({"org": "1", "roles": ["3"]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (_, list) = api1
        .get("/api/v1/conversations", Some(&t_later))
        .await
        .unwrap();
    assert!(conv_ids(&list).contains(&conv));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = api2
        .post(
            "/api/v1/broadcasts",
            Some(SERVICE_KEY),
            &json!({"audience": "org/1/role/3", "body": "Second", "cid": "notice-2"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    let deadline = Instant::now() + T;
    while !lt.seqs(conv).contains(&2) && Instant::now() < deadline {
        lt.pump(Duration::from_millis(100)).await.unwrap();
    }
    assert!(
        lt.push_order.get(&conv).is_some_and(|o| o.contains(&2)),
        "the open session follows the new audience"
    );
    // Bad audiences are refused.
    for bad in ["", "team/1", "org/1/org/2", "org"] {
        let (s, e) = api1
            .post(
                "/api/v1/broadcasts",
                Some(SERVICE_KEY),
                &json!({"audience": bad, "body": "x", "cid": "bad"}),
            )
            .await
            .unwrap();
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    drop((n1, n2));
    db.drop_now().await.unwrap();
}
