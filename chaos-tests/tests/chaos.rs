//! The chaos run: three nodes behind the same Redis and Postgres, clients on all of
//! them sending into one group, nodes killed with SIGKILL and restarted while the load
//! goes on. At the end every acked message is stored exactly once, seqs have no gap,
//! and every client, after sync, holds the whole conversation in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_chaos::Chatter;
use chat_testkit::{Endpoint, Node, NodeOptions, RedisServer, TestDb};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLIENTS: usize = 6;
const ROUNDS: usize = 60;

#[actix_rt::test]
async fn nodes_killed_under_load_lose_nothing_acked() {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let opts = NodeOptions::new(&format!("node-{i}"), &db)
            .redis(&redis.url())
            .set("CHAT__LIMITS__SENDS_PER_SEC", "1000");
        nodes.push(Node::start(opts).await.unwrap());
    }
    let api = nodes[0].api();
    let mut users = Vec::new();
    for i in 0..CLIENTS {
        users.push(api.register(&format!("chaos{i}")).await.unwrap());
    }
    let ids: Vec<i64> = users.iter().map(|u| u.0).collect();
    let conv = api.group(&users[0].1, "chaos", &ids).await.unwrap();
    let base = |n: &Node| format!("ws://127.0.0.1:{}", n.port);

    let mut clients: Vec<Chatter> = Vec::new();
    for (i, (id, token)) in users.iter().enumerate() {
        let mut c = Chatter::new(*id, token.clone());
        c.connect(&base(&nodes[i % 3])).await.unwrap();
        clients.push(c);
    }
    let started = Instant::now();
    let mut kills = 0;
    for round in 0..ROUNDS {
        // Every client sends one message per round (up to 4 in flight each).
        for (i, c) in clients.iter_mut().enumerate() {
            let _ = c.send(conv, &format!("c{i}-r{round}")).await;
        }
        // Kill a node every 15 rounds, restart it 5 rounds later.
        if round % 15 == 7 {
            let victim = (round / 15) % 3;
            nodes[victim].kill().await.unwrap();
            kills += 1;
        }
        if round % 15 == 12 {
            let victim = (round / 15) % 3;
            nodes[victim].restart().await.unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let alive = c.pump(Duration::from_millis(20)).await.unwrap_or(false);
            if !alive || !c.connected() || c.unacked.len() > 4 {
                // Reconnect to a node that answers (any of them may be down).
                for k in 0..6 {
                    let n = &nodes[(i + round + k) % 3];
                    if n.pid().is_some() && c.connect(&base(n)).await.is_ok() {
                        break;
                    }
                }
            }
        }
    }
    assert!(kills >= 3, "three kills during the run");
    // Let everything settle: every client on a live node, all sends acked.
    for c in clients.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.unacked.is_empty() && Instant::now() < deadline {
            if !c.pump(Duration::from_millis(200)).await.unwrap_or(false) || !c.connected() {
                let n = nodes.iter().find(|n| n.pid().is_some()).unwrap();
                let _ = c.connect(&base(n)).await;
            }
        }
        assert!(
            c.unacked.is_empty(),
            "client {} still has unacked sends",
            c.user
        );
    }

    // Postgres: every cid once, seqs 1..N, each acked cid at its acked seq.
    let rows = db.stored(conv).await.unwrap();
    let n = rows.len() as i64;
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "no gap in seqs");
    let stored: BTreeMap<String, i64> = rows.into_iter().map(|(s, c)| (c, s)).collect();
    assert_eq!(stored.len() as i64, n, "no cid stored twice");
    assert_eq!(
        n as usize,
        CLIENTS * ROUNDS,
        "every send stored exactly once"
    );
    for c in &clients {
        for (cid, seq) in &c.acked {
            assert_eq!(
                stored.get(cid),
                Some(seq),
                "acked {cid} is stored at its seq"
            );
        }
    }
    // Every client ends with the whole conversation, in order, after sync.
    for c in clients.iter_mut() {
        assert!(
            c.settle(conv, n, Duration::from_secs(20)).await.unwrap(),
            "client {} settles",
            c.user
        );
        assert_eq!(c.seqs(conv), (1..=n).collect::<Vec<_>>());
        let order = c.push_order.get(&conv).cloned().unwrap_or_default();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]) || c.closes.len() > 1,
            "pushes in order between reconnects"
        );
    }
    eprintln!(
        "chaos: {n} messages, {kills} kills, {} reconnects, in {:?}",
        clients.iter().map(|c| c.closes.len()).sum::<usize>(),
        started.elapsed()
    );
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_send_whose_commit_answer_was_lost_is_stored_once_acked_on_retry_and_pushed() {
    use chat_testkit::{Fault, FaultProxy, WsClient};
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    // Node A reaches Postgres through a proxy that can lose a COMMIT's answer.
    let proxy = FaultProxy::start(([127, 0, 0, 1], db.port()).into())
        .await
        .unwrap();
    let mut opts = NodeOptions::new("node-a", &db).redis(&redis.url());
    opts.database_url = db.url_via(proxy.port);
    let a = Node::start(opts).await.unwrap();
    let b = Node::start(NodeOptions::new("node-b", &db).redis(&redis.url()))
        .await
        .unwrap();
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("lost-commit-a").await.unwrap();
    let (bob, tb) = api_b.register("lost-commit-b").await.unwrap();
    let conv = api_a.direct(&ta, bob).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.set(Fault::LoseCommitAnswer);
    let (first, body) = api_a.send(&ta, conv, "lost-1", "committed").await.unwrap();
    assert_eq!(proxy.lost_commits(), 1, "the COMMIT went by the proxy");
    assert_eq!(first, 503, "the node cannot know it committed: {body}");
    assert_eq!(body["error"]["code"], "unavailable");
    // It did commit: the retry with the same cid gets it back, stored once.
    let (again, body) = api_a.send(&ta, conv, "lost-1", "committed").await.unwrap();
    assert_eq!(again, 200, "a retry of a stored send: {body}");
    assert_eq!(body["seq"], 1);
    assert_eq!(
        db.stored(conv).await.unwrap(),
        vec![(1, "lost-1".to_owned())]
    );
    // And bob hears of it, pushed or told to sync.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut heard = false;
    while !heard && Instant::now() < deadline {
        match wb.recv(Duration::from_secs(1)).await {
            Ok(chat_testkit::Incoming::Json(v)) => {
                heard = (v["type"] == "msg" && v["seq"] == 1) || v["type"] == "resync"
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    assert!(heard, "bob never heard of the message");
    drop((a, b));
    db.drop_now().await.unwrap();
}
