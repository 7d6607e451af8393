//! Two clusters on one Redis: with their own `bus.channel_prefix` they never hear each
//! other, although their databases number users and conversations alike.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_testkit::{Endpoint, Incoming, Node, NodeOptions, RedisServer, TestDb, WsClient};
use std::time::Duration;

async fn cluster_node(db: &TestDb, redis: &RedisServer, id: &str, prefix: &str) -> Node {
    Node::start(
        NodeOptions::new(id, db)
            .redis(&redis.url())
            .set("CHAT__BUS__CHANNEL_PREFIX", prefix),
    )
    .await
    .unwrap()
}

/// Messages of `conv` that reach `ws` within `d`.
async fn messages_of(ws: &mut WsClient, conv: i64, d: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + d;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return out;
        }
        match ws.recv(left).await {
            Ok(Incoming::Json(v)) if v["type"] == "msg" && v["conv"] == conv => {
                out.push(v["body"].as_str().unwrap_or_default().to_string())
            }
            Ok(Incoming::Json(_)) => {}
            _ => return out,
        }
    }
}

#[actix_rt::test]
async fn clusters_with_their_own_prefix_share_a_redis_and_hear_only_themselves() {
    let redis = RedisServer::start().await.unwrap();
    let (db_a, db_b) = (
        TestDb::create().await.unwrap(),
        TestDb::create().await.unwrap(),
    );
    // Cluster A: two nodes, prefix "acme"; cluster B: two nodes, prefix "globex".
    let a1 = cluster_node(&db_a, &redis, "a-1", "acme").await;
    let a2 = cluster_node(&db_a, &redis, "a-2", "acme").await;
    let b1 = cluster_node(&db_b, &redis, "b-1", "globex").await;
    let b2 = cluster_node(&db_b, &redis, "b-2", "globex").await;
    // The same ids on both sides: users 1 and 2, their direct conversation.
    let mut convs = Vec::new();
    let mut tokens = Vec::new();
    for n in [&a1, &b1] {
        let api = n.api();
        let (_, t1) = api.register("first").await.unwrap();
        let (u2, t2) = api.register("second").await.unwrap();
        convs.push(api.direct(&t1, u2).await.unwrap());
        tokens.push((t1, t2));
    }
    assert_eq!(
        convs[0], convs[1],
        "both clusters numbered the conversation alike"
    );
    let conv = convs[0];
    // Each cluster's second user listens on its cluster's second node.
    let (mut wa, _) = WsClient::connect_hello(&a2.ws_url(&tokens[0].1))
        .await
        .unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b2.ws_url(&tokens[1].1))
        .await
        .unwrap();
    let (s, _) = a1
        .api()
        .send(&tokens[0].0, conv, "a-1", "from acme")
        .await
        .unwrap();
    assert_eq!(s, 201);
    let (s, _) = b1
        .api()
        .send(&tokens[1].0, conv, "b-1", "from globex")
        .await
        .unwrap();
    assert_eq!(s, 201);
    // Across nodes within a cluster, and never across clusters.
    assert_eq!(
        messages_of(&mut wa, conv, Duration::from_secs(2)).await,
        ["from acme"]
    );
    assert_eq!(
        messages_of(&mut wb, conv, Duration::from_secs(1)).await,
        ["from globex"]
    );
    // Each cluster's presence keys carry its prefix only.
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.starts_with("acme:") || k.starts_with("globex:")),
        "{keys:?}"
    );
    drop((a1, a2, b1, b2));
    db_a.drop_now().await.unwrap();
    db_b.drop_now().await.unwrap();
}
