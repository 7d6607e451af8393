//! The cluster under faults: real node processes, a real Redis the test starts on a
//! spare port, real Postgres, HAProxy. Each test is bounded to a minute or so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_chaos::Chatter;
use chat_testkit::{Api, Endpoint, Haproxy, Node, NodeOptions, RedisServer, TestDb, WsClient};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn ws_base(node: &Node) -> String {
    format!("ws://127.0.0.1:{}", node.port)
}

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

async fn user(api: &Api, name: &str) -> (i64, String) {
    api.register(name).await.unwrap()
}

/// Every acked cid of `sender` is stored exactly once, with its acked seq, and the
/// conversation's seqs run 1..N without gaps.
async fn assert_acked_stored_once(db: &TestDb, conv: i64, acked: &BTreeMap<String, i64>) -> i64 {
    let rows = db.stored(conv).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
    let n = seqs.len() as i64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "seqs contiguous from 1");
    let by_cid: BTreeMap<String, i64> = rows.into_iter().map(|(s, c)| (c, s)).collect();
    assert_eq!(by_cid.len() as i64, n, "no cid stored twice");
    for (cid, seq) in acked {
        assert_eq!(by_cid.get(cid), Some(seq), "acked {cid} stored at its seq");
    }
    n
}

#[actix_rt::test]
async fn users_on_different_nodes_chat_and_a_user_on_both_gets_everything_once() {
    let (db, _redis, nodes) = cluster(2, &[]).await;
    let (a1, a2) = (nodes[0].api(), nodes[1].api());
    let (alice, ta) = user(&a1, "alice").await;
    let (bob, tb) = user(&a2, "bob").await;
    let (carol, tc) = user(&a1, "carol").await;
    let direct = a1.direct(&ta, bob).await.unwrap();
    let group = a2.group(&tb, "trio", &[alice, carol]).await.unwrap();

    let mut wa = Chatter::new(alice, ta.clone());
    wa.connect(&ws_base(&nodes[0])).await.unwrap();
    let mut wb = Chatter::new(bob, tb.clone());
    wb.connect(&ws_base(&nodes[1])).await.unwrap();
    // Carol has one device on each node.
    let mut wc1 = Chatter::new(carol, tc.clone());
    wc1.connect(&ws_base(&nodes[0])).await.unwrap();
    let mut wc2 = Chatter::new(carol, tc.clone());
    wc2.connect(&ws_base(&nodes[1])).await.unwrap();
    // Let subscriptions settle.
    for c in [&mut wa, &mut wb, &mut wc1, &mut wc2] {
        c.pump(Duration::from_millis(300)).await.unwrap();
    }

    for i in 0..5 {
        wa.send(direct, &format!("a-d{i}")).await.unwrap();
        wb.send(direct, &format!("b-d{i}")).await.unwrap();
        wa.send(group, &format!("a-g{i}")).await.unwrap();
        wb.send(group, &format!("b-g{i}")).await.unwrap();
        wc1.send(group, &format!("c-g{i}")).await.unwrap();
    }
    for c in [&mut wa, &mut wb, &mut wc1, &mut wc2] {
        assert!(c.settle(group, 15, T).await.unwrap(), "group settles");
    }
    assert!(wa.settle(direct, 10, T).await.unwrap());
    assert!(wb.settle(direct, 10, T).await.unwrap());

    // Pushes arrived across nodes, in order, and nobody needed a sync to see them.
    for (name, c) in [
        ("alice", &wa),
        ("bob", &wb),
        ("carol@1", &wc1),
        ("carol@2", &wc2),
    ] {
        assert_eq!(
            c.seqs(group),
            (1..=15).collect::<Vec<_>>(),
            "{name} has the group"
        );
        let order = c.push_order.get(&group).cloned().unwrap_or_default();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{name} pushes in order: {order:?}"
        );
    }
    // Carol's second device got every message of the group exactly once: 10 by pushes
    // from others + 5 of her own other device.
    let order = wc2.push_order.get(&group).cloned().unwrap_or_default();
    assert_eq!(order.len(), 15, "carol's other device: each message once");
    assert_eq!(
        wb.push_order.get(&direct).map(Vec::len),
        Some(5),
        "bob: alice's 5 pushed once"
    );
    assert_acked_stored_once(&db, group, &wc1.acked).await;
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn node_killed_while_clients_send_loses_nothing_acked() {
    let (db, _redis, mut nodes) = cluster(2, &[("CHAT__LIMITS__SENDS_PER_SEC", "1000")]).await;
    let api = nodes[1].api();
    let (s, ts) = user(&api, "sender").await;
    let (r, tr) = user(&api, "receiver").await;
    let conv = api.direct(&ts, r).await.unwrap();
    let mut sender = Chatter::new(s, ts);
    sender.connect(&ws_base(&nodes[0])).await.unwrap();
    let mut receiver = Chatter::new(r, tr);
    receiver.connect(&ws_base(&nodes[1])).await.unwrap();
    let survivor = ws_base(&nodes[1]);

    let total = 300;
    let mut killed = false;
    let started = Instant::now();
    for i in 0..total {
        let cid = format!("k-{i}");
        if sender.send(conv, &cid).await.is_err() || !sender.connected() {
            // The node is gone: reconnect to the other one, resend, sync.
            sender.connect(&survivor).await.unwrap();
            sender.send(conv, &cid).await.unwrap();
        }
        // Keep a window of at most 20 in flight.
        while sender.unacked.len() > 20 {
            if !sender.pump(Duration::from_millis(100)).await.unwrap() {
                sender.connect(&survivor).await.unwrap();
            }
        }
        if i == 100 && !killed {
            nodes[0].kill().await.unwrap();
            killed = true;
        }
        receiver.pump(Duration::from_millis(1)).await.unwrap();
    }
    assert!(killed);
    // Everything gets acked eventually (resent after reconnect), and stored once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sender.unacked.is_empty() && Instant::now() < deadline {
        if !sender.pump(Duration::from_millis(200)).await.unwrap() {
            sender.connect(&survivor).await.unwrap();
        }
    }
    assert!(
        sender.unacked.is_empty(),
        "still unacked: {:?}",
        sender.unacked.keys().take(5).collect::<Vec<_>>()
    );
    assert!(
        sender.closes.iter().any(|c| c.is_none()),
        "the sender saw its node die"
    );
    let n = assert_acked_stored_once(&db, conv, &sender.acked).await;
    assert_eq!(n, total as i64, "every send stored exactly once");
    // The receiver ends with every message once, in order, after sync.
    assert!(receiver
        .settle(conv, n, Duration::from_secs(20))
        .await
        .unwrap());
    assert_eq!(receiver.seqs(conv), (1..=n).collect::<Vec<_>>());
    let order = receiver.push_order.get(&conv).cloned().unwrap_or_default();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "pushes in order");
    eprintln!("kill test: {n} messages in {:?}", started.elapsed());
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn redis_restart_nodes_resubscribe_and_resync() {
    let (db, mut redis, nodes) = cluster(2, &[]).await;
    let api = nodes[0].api();
    let (a, ta) = user(&api, "ana").await;
    let (b, tb) = user(&api, "ben").await;
    let conv = api.direct(&ta, b).await.unwrap();
    let mut ca = Chatter::new(a, ta);
    ca.connect(&ws_base(&nodes[0])).await.unwrap();
    let mut cb = Chatter::new(b, tb);
    cb.connect(&ws_base(&nodes[1])).await.unwrap();
    cb.pump(Duration::from_millis(300)).await.unwrap();
    ca.send(conv, "before").await.unwrap();
    assert!(cb.settle(conv, 1, T).await.unwrap());

    let port = redis.port;
    redis.stop().await.unwrap();
    // /readyz reports the bus down; sends still commit and ack.
    let deadline = Instant::now() + T;
    let mut down = false;
    while Instant::now() < deadline {
        let (s, body) = api.get("/readyz", None).await.unwrap();
        if s == 503 && body.to_string().contains("bus") {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(down, "readyz says the bus is down");
    for i in 0..10 {
        ca.send(conv, &format!("during-{i}")).await.unwrap();
    }
    let deadline = Instant::now() + T;
    while !ca.unacked.is_empty() && Instant::now() < deadline {
        ca.pump(Duration::from_millis(100)).await.unwrap();
    }
    assert!(ca.unacked.is_empty(), "sends ack while Redis is down");

    let _redis = RedisServer::start_on(port).await.unwrap();
    // Both nodes reconnect, resubscribe and tell their sessions to resync.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cb.resyncs == 0 && Instant::now() < deadline {
        cb.pump(Duration::from_millis(200)).await.unwrap();
    }
    assert!(cb.resyncs >= 1, "resync after the bus came back");
    assert!(cb.settle(conv, 11, T).await.unwrap());
    assert_eq!(cb.seqs(conv), (1..=11).collect::<Vec<_>>());
    nodes[0].wait_ready(T).await.unwrap();
    // Pushes flow again across nodes.
    ca.send(conv, "after").await.unwrap();
    let deadline = Instant::now() + T;
    while !cb.push_order.get(&conv).is_some_and(|o| o.contains(&12)) && Instant::now() < deadline {
        cb.pump(Duration::from_millis(100)).await.unwrap();
    }
    assert!(cb.push_order[&conv].contains(&12), "push after resubscribe");
    assert_acked_stored_once(&db, conv, &ca.acked).await;
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn sigterm_drains_with_1012_and_loses_nothing() {
    let (db, _redis, mut nodes) = cluster(2, &[("CHAT__SERVER__DRAIN_TIMEOUT", "5s")]).await;
    let api = nodes[1].api();
    let (a, ta) = user(&api, "dora").await;
    let (b, tb) = user(&api, "dave").await;
    let conv = api.direct(&ta, b).await.unwrap();
    let mut ca = Chatter::new(a, ta);
    ca.connect(&ws_base(&nodes[0])).await.unwrap();
    let mut cb = Chatter::new(b, tb);
    cb.connect(&ws_base(&nodes[1])).await.unwrap();
    for i in 0..20 {
        ca.send(conv, &format!("pre-{i}")).await.unwrap();
    }
    let draining_api = nodes[0].api();
    nodes[0].terminate().unwrap();
    // Readiness turns 503 while the node drains.
    let mut saw_503 = false;
    for _ in 0..50 {
        match draining_api.get("/readyz", None).await {
            Ok((503, _)) => {
                saw_503 = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => break,
        }
    }
    assert!(saw_503, "readyz 503 during the drain");
    // The socket is closed with 1012 after its in-flight sends were answered.
    let deadline = Instant::now() + T;
    while ca.connected() && Instant::now() < deadline {
        ca.pump(Duration::from_millis(100)).await.unwrap();
    }
    assert_eq!(ca.closes.last(), Some(&Some(1012)));
    assert!(
        nodes[0].wait_exit(Duration::from_secs(8)).await.unwrap(),
        "exits within the drain timeout"
    );
    // New connections go elsewhere: reconnect, resend, sync.
    ca.connect(&ws_base(&nodes[1])).await.unwrap();
    for i in 0..5 {
        ca.send(conv, &format!("post-{i}")).await.unwrap();
    }
    let deadline = Instant::now() + T;
    while !ca.unacked.is_empty() && Instant::now() < deadline {
        ca.pump(Duration::from_millis(100)).await.unwrap();
    }
    assert!(ca.unacked.is_empty());
    let n = assert_acked_stored_once(&db, conv, &ca.acked).await;
    assert_eq!(n, 25);
    assert!(cb.settle(conv, 25, T).await.unwrap());
    assert_eq!(cb.seqs(conv), (1..=25).collect::<Vec<_>>());
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn chat_through_haproxy_reaches_a_user_on_another_node() {
    let (db, _redis, nodes) = cluster(2, &[]).await;
    let mut lb = Haproxy::start(&[nodes[0].port, nodes[1].port])
        .await
        .unwrap();
    let api = Api::new(&lb.http());
    // Wait for HAProxy's health checks to see both nodes.
    let deadline = Instant::now() + T;
    while api.get("/readyz", None).await.map(|r| r.0).unwrap_or(0) != 200
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, ta) = user(&api, "lb-alice").await;
    let (b, tb) = user(&api, "lb-bob").await;
    let conv = api.direct(&ta, b).await.unwrap();
    let lb_ws = format!("ws://127.0.0.1:{}", lb.port);
    let mut ca = Chatter::new(a, ta);
    ca.connect(&lb_ws).await.unwrap();
    let via = ca.node.clone().unwrap();
    // Bob connects straight to the other node.
    let other = nodes.iter().find(|n| n.id != via).unwrap();
    let mut cb = Chatter::new(b, tb);
    cb.connect(&ws_base(other)).await.unwrap();
    assert_ne!(ca.node, cb.node);
    cb.pump(Duration::from_millis(300)).await.unwrap();
    ca.send(conv, "via-lb").await.unwrap();
    cb.send(conv, "direct").await.unwrap();
    assert!(ca.settle(conv, 2, T).await.unwrap());
    assert!(cb.settle(conv, 2, T).await.unwrap());
    assert_eq!(
        cb.push_order.get(&conv).map(Vec::len),
        Some(1),
        "bob got alice's push"
    );
    assert_eq!(
        ca.push_order.get(&conv).map(Vec::len),
        Some(1),
        "alice got bob's push through HAProxy"
    );
    // A bad token through HAProxy is refused at the handshake.
    let r = WsClient::connect(&format!("{lb_ws}/ws?token=nope")).await;
    assert!(r.is_err());
    // The token may travel in a header instead of the URL.
    let tb2 = cb.token.clone();
    let mut wb = WsClient::connect_bearer(&format!("{lb_ws}/ws"), &tb2)
        .await
        .unwrap();
    let hello = wb.expect("hello", T).await.unwrap();
    assert_eq!(hello["user"], b);
    // HAProxy logged the handshakes, never a token.
    let deadline = Instant::now() + T;
    while !lb.log_text().contains("/ws") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = lb.log_text();
    assert!(log.contains("GET /ws"), "handshakes are logged: {log}");
    for secret in [ca.token.as_str(), tb2.as_str(), "token="] {
        assert!(
            !log.contains(secret),
            "a token reached HAProxy's log: {log}"
        );
    }
    lb.stop().await.unwrap();
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn interest_drives_subscriptions() {
    let (db, redis, nodes) = cluster(1, &[]).await;
    let api = nodes[0].api();
    let (a, ta) = user(&api, "sub-a").await;
    let (b, _tb) = user(&api, "sub-b").await;
    let conv = api.direct(&ta, b).await.unwrap();
    let channels = || async {
        let out = tokio::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "PUBSUB",
                "CHANNELS",
                "chat:*",
            ])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            // chat:n (drop notices between nodes) is always listened to.
            .filter(|l| l.starts_with("chat:") && *l != "chat:n")
            .map(String::from)
            .collect::<BTreeSet<String>>()
    };
    assert!(
        channels().await.is_empty(),
        "nothing subscribed without local interest"
    );
    let mut ca = Chatter::new(a, ta);
    ca.connect(&ws_base(&nodes[0])).await.unwrap();
    ca.pump(Duration::from_millis(500)).await.unwrap();
    let subs = channels().await;
    assert!(
        subs.contains(&format!("chat:c:{conv}")) && subs.contains(&format!("chat:u:{a}")),
        "{subs:?}"
    );
    ca.close().await;
    let deadline = Instant::now() + T;
    while !channels().await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        channels().await.is_empty(),
        "unsubscribed when the interest went"
    );
    drop(nodes);
    db.drop_now().await.unwrap();
}

/// A node whose Conversation actor is started by a remote event pushes from what its
/// member's client had at connect, not from that event: here the first message is
/// stored by a node that tells nobody (as a node that died before publishing would),
/// and the second one, from a node on the bus, starts the actor. The member still gets
/// both, in order (the first read from Postgres).
#[actix_rt::test]
async fn a_fresh_actor_pushes_from_what_its_member_had_not_from_the_first_event() {
    let (db, _redis, nodes) = cluster(2, &[]).await;
    let side = Node::start(NodeOptions::new("side", &db)).await.unwrap();
    let (a1, a2) = (nodes[0].api(), nodes[1].api());
    let (_alice, ta) = user(&a1, "fresh-a").await;
    let (bob, tb) = user(&a2, "fresh-b").await;
    let conv = a1.direct(&ta, bob).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&nodes[1].ws_url(&tb))
        .await
        .unwrap();
    // Node 2 listens to the conversation for bob (and has no actor for it yet).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = side.api().send(&ta, conv, "first", "one").await.unwrap();
    assert_eq!(s, 201);
    let (s, _) = a1.send(&ta, conv, "second", "two").await.unwrap();
    assert_eq!(s, 201);

    let first = wb.expect("msg", T).await.unwrap();
    let second = wb.expect("msg", T).await.unwrap();
    assert_eq!(
        (first["seq"].as_i64(), second["seq"].as_i64()),
        (Some(1), Some(2)),
        "{first} {second}"
    );
    assert_eq!(first["body"], "one");
    drop((nodes, side));
    db.drop_now().await.unwrap();
}
