//! Tiered retention: TTLs to the second, partitions dropped by the upkeep leader,
//! leadership moving when its node dies, sends going on during a drop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_chaos::Chatter;
use chat_testkit::{Api, Endpoint, Node, NodeOptions, TestDb};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const FAST_RETENTION: [(&str, &str); 4] = [
    ("CHAT__RETENTION__NORMAL_TTL", "3s"),
    ("CHAT__RETENTION__DEDUPE_WINDOW", "3s"),
    ("CHAT__RETENTION__PARTITION_INTERVAL", "1s"),
    ("CHAT__RETENTION__UPKEEP_INTERVAL", "250ms"),
];

async fn start(db: &TestDb, id: &str) -> Node {
    let mut opts = NodeOptions::new(id, db);
    for (k, v) in FAST_RETENTION {
        opts = opts.set(k, v);
    }
    Node::start(opts).await.unwrap()
}

async fn leader(db: &TestDb) -> Option<String> {
    let c = db.client().await.unwrap();
    let row = c
        .query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
                AND a.application_name LIKE 'chat-upkeep:%'",
            &[],
        )
        .await
        .unwrap();
    row.map(|r| r.get::<_, String>(0))
}

fn seqs(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[actix_rt::test]
async fn normal_messages_expire_to_the_second_and_their_partitions_are_dropped() {
    let db = TestDb::create().await.unwrap();
    let node = start(&db, "node-1").await;
    let api = node.api();
    let (_a, ta) = api.register("keeper").await.unwrap();
    let (b, tb) = api.register("reader").await.unwrap();
    let conv = api.direct(&ta, b).await.unwrap();
    // A group whose sends are important unless they say otherwise.
    let (s, g) = api
        .post(
            "/api/v1/conversations",
            Some(&ta),
            &json!({"kind": "group", "title": "board", "members": [b], "default_tier": "important"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, g["conversation"]["default_tier"].as_str()),
        (201, Some("important"))
    );
    let board = g["conversation"]["id"].as_i64().unwrap();
    api.send(&ta, board, "b1", "minutes").await.unwrap();
    api.post(
        &format!("/api/v1/conversations/{board}/messages"),
        Some(&ta),
        &json!({"cid": "b2", "body": "chit-chat", "tier": "normal"}),
    )
    .await
    .unwrap();
    let path = format!("/api/v1/conversations/{conv}/messages");
    api.post(&path, Some(&ta), &json!({"cid": "n1", "body": "ordinary"}))
        .await
        .unwrap();
    let (s, _) = api
        .post(
            &path,
            Some(&ta),
            &json!({"cid": "i1", "body": "keep me", "tier": "important"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    api.post(
        &path,
        Some(&ta),
        &json!({"cid": "n2", "body": "ordinary too"}),
    )
    .await
    .unwrap();
    let sent_at = Instant::now();
    let c = db.client().await.unwrap();
    let partition: String = c
        .query_one(
            "SELECT tableoid::regclass::text FROM messages WHERE conv = $1 AND seq = 1",
            &[&conv],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        partition.starts_with("messages_normal_p"),
        "stored in a range partition: {partition}"
    );

    let (_, h) = api.get(&path, Some(&tb)).await.unwrap();
    assert_eq!(seqs(&h["messages"]), vec![1, 2, 3]);
    let (_, u) = api.get("/api/v1/unread", Some(&tb)).await.unwrap();
    assert_eq!(u["total"], 5, "3 here and 2 in the board");

    // Past the TTL: the normal ones are gone from every read, the important one stays.
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(sent_at.elapsed())).await;
    let (_, h) = api.get(&path, Some(&tb)).await.unwrap();
    assert_eq!(seqs(&h["messages"]), vec![2]);
    assert_eq!(h["oldest_retained_seq"], 2);
    let (_, u) = api.get("/api/v1/unread", Some(&tb)).await.unwrap();
    assert_eq!(u["total"], 2, "the important one here and the board's");
    let (_, list) = api.get("/api/v1/conversations", Some(&tb)).await.unwrap();
    let direct = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conv)
        .unwrap();
    assert_eq!(direct["last_message"]["seq"], 2);
    assert_eq!(direct["unread"], 1);
    // The group's default tier kept its first message; the one sent as normal expired.
    let (_, h) = api
        .get(
            &format!("/api/v1/conversations/{board}/messages"),
            Some(&tb),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&h["messages"]), vec![1]);
    assert_eq!(h["messages"][0]["tier"], "important");
    let mut cursors = BTreeMap::new();
    let synced = api.sync_all(&tb, &mut cursors, 100).await.unwrap();
    let mine: Vec<i64> = synced
        .iter()
        .filter(|m| m["conv"] == conv)
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(mine, vec![2]);

    // Upkeep drops the expired partition (no row-by-row delete); important stays.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let gone: bool = c
            .query_one("SELECT to_regclass($1) IS NULL", &[&partition])
            .await
            .unwrap()
            .get(0);
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition {partition} still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left: i64 = c
        .query_one("SELECT count(*) FROM messages WHERE conv = $1", &[&conv])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "only the important message is stored");
    let tier: String = c
        .query_one("SELECT tier FROM messages WHERE conv = $1", &[&conv])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tier, "important");
    // Reading still works, and a new send takes seq 4.
    let (s, b4) = api.send(&ta, conv, "n3", "after the drop").await.unwrap();
    assert_eq!((s, b4["seq"].as_i64()), (201, Some(4)));
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn upkeep_moves_to_another_node_when_its_holder_is_killed() {
    let db = TestDb::create().await.unwrap();
    let mut n1 = start(&db, "node-1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader(&db).await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leader(&db).await.as_deref(), Some("chat-upkeep:node-1"));
    let n2 = start(&db, "node-2").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        leader(&db).await.as_deref(),
        Some("chat-upkeep:node-1"),
        "one leader at a time"
    );
    n1.kill().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while leader(&db).await.as_deref() != Some("chat-upkeep:node-2") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leader(&db).await.as_deref(), Some("chat-upkeep:node-2"));
    drop(n2);
    db.drop_now().await.unwrap();
}

/// Range partitions of the `normal` tier whose range starts after `after` (unix s).
async fn partitions_after(db: &TestDb, after: i64) -> usize {
    let c = db.client().await.unwrap();
    let rows = c
        .query(
            "SELECT pg_get_expr(k.relpartbound, k.oid) AS bound FROM pg_inherits i
               JOIN pg_class k ON k.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE p.relname = 'messages_normal' AND NOT k.relname LIKE '%default'",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .filter_map(|r| {
            // FOR VALUES FROM ('2026-12-02 07:00:01+00') TO (...)
            let bound: String = r.get("bound");
            let from = bound.split('\'').nth(1)?.to_string();
            chrono::DateTime::parse_from_str(&format!("{from}00"), "%Y-%m-%d %H:%M:%S%z")
                .ok()
                .map(|t| t.timestamp())
        })
        .filter(|start| *start > after)
        .count()
}

#[actix_rt::test]
async fn partitions_are_still_created_ahead_while_the_upkeep_leader_is_paused() {
    let db = TestDb::create().await.unwrap();
    let n1 = start(&db, "node-1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader(&db).await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leader(&db).await.as_deref(), Some("chat-upkeep:node-1"));
    let n2 = start(&db, "node-2").await;
    // The leader stops dead (SIGSTOP): it keeps its lock and its sockets.
    let pid = n1.pid().unwrap().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stop.success());
    let paused_at = chrono::Utc::now().timestamp();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Ranges of 1 s, created two upkeep intervals (and at least three ranges) ahead:
    // ranges starting 4 s after the pause exist only if someone kept creating them.
    let ahead = partitions_after(&db, paused_at + 4).await;
    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    assert!(cont.success());
    assert!(
        ahead >= 1,
        "no partition created ahead while the leader was paused"
    );
    assert_eq!(
        leader(&db).await.as_deref(),
        Some("chat-upkeep:node-1"),
        "the paused leader kept its lock"
    );
    drop((n1, n2));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn sends_continue_while_an_expired_partition_is_dropped() {
    let db = TestDb::create().await.unwrap();
    let c = db.client().await.unwrap();
    // A node that does not lead upkeep yet: the test fills an old partition first.
    // (It is created by the node's migrations, so start a node first.)
    let node = start(&db, "node-1").await;
    let api = node.api();
    let (a, ta) = api.register("steady").await.unwrap();
    let (b, _tb) = api.register("peer").await.unwrap();
    let conv = api.direct(&ta, b).await.unwrap();
    let (s, _) = api.send(&ta, conv, "warm", "x").await.unwrap();
    assert_eq!(s, 201);
    // A client sends steadily from now on, while the test fills an hour-old range with
    // 200,000 expired messages of another conversation and upkeep drops it.
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let url = format!("ws://127.0.0.1:{}", node.port);
    let sending = {
        let stop = stop.clone();
        actix_rt::spawn(async move {
            let mut sender = Chatter::new(a, ta);
            sender.connect(&url).await.unwrap();
            let (mut worst, mut i) = (Duration::ZERO, 0usize);
            while !stop.get() {
                let t = Instant::now();
                sender.send(conv, &format!("live-{i}")).await.unwrap();
                while !sender.unacked.is_empty() {
                    assert!(
                        sender.pump(Duration::from_millis(50)).await.unwrap(),
                        "connection stays"
                    );
                    assert!(t.elapsed() < Duration::from_secs(5), "a send waited 5 s");
                }
                worst = worst.max(t.elapsed());
                i += 1;
            }
            (sender.acked.len(), i, worst)
        })
    };
    let end = chrono::Utc::now().timestamp() - 3600;
    let start_ts = end - 60;
    let name = format!("messages_normal_p{start_ts}_{end}");
    // The partition in its own transaction (creating it locks the parent for a moment),
    // then the rows (which lock nothing the sender needs).
    c.batch_execute(&format!(
        "CREATE TABLE {name} PARTITION OF messages_normal FOR VALUES FROM (to_timestamp({start_ts})) TO (to_timestamp({end}))"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!(
        "INSERT INTO conversations (kind, title, created_by, last_seq) VALUES ('group', 'old', {a}, 200000);
         INSERT INTO messages (conv, seq, sender, cid, body, tier, created_at)
           SELECT currval('conversations_id_seq'), g, {a}, 'old-' || g, 'expired body', 'normal', to_timestamp({start_ts} + g % 60)
             FROM generate_series(1, 200000) g;"
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut dropped = false;
    while !dropped && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        dropped = c
            .query_one("SELECT to_regclass($1) IS NULL", &[&name])
            .await
            .unwrap()
            .get(0);
    }
    assert!(dropped, "the expired partition was dropped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.set(true);
    let (acked, sent, worst) = sending.await.unwrap();
    assert_eq!(acked, sent, "every send acked");
    assert!(sent > 10, "sends went on meanwhile ({sent})");
    eprintln!("{sent} sends around the drop of 200,000 expired rows; slowest ack {worst:?}");
    let _ = Api::new(&node.http());
    drop(node);
    db.drop_now().await.unwrap();
}
