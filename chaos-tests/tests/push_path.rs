//! The push path never goes silent: every push that is lost is signalled (a seq gap, a
//! `resync`, a `joined`), through real node processes on a real Redis the test starts,
//! and real Postgres. A "side" node shares the database but not the bus: what it stores
//! is what a node that died before publishing would leave behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_testkit::process::SERVICE_KEY;
use chat_testkit::{
    Api, Endpoint, Fault, FaultProxy, Incoming, Node, NodeOptions, RedisServer, TestDb, WsClient,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

async fn cluster(extra: &[(&str, &str)]) -> (TestDb, RedisServer, Node, Node) {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let start = |id: &str| {
        let mut o = NodeOptions::new(id, &db).redis(&redis.url());
        for (k, v) in extra {
            o = o.set(k, v);
        }
        Node::start(o)
    };
    let a = start("node-a").await.unwrap();
    let b = start("node-b").await.unwrap();
    (db, redis, a, b)
}

/// A node on the same database with no bus: it tells nobody what it stores.
async fn side_node(db: &TestDb) -> Node {
    Node::start(NodeOptions::new("side", db)).await.unwrap()
}

/// Every JSON frame that arrives within `d` (stops early at a close).
async fn frames_for(ws: &mut WsClient, d: Duration) -> Vec<Value> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match ws
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Ok(Incoming::Json(v)) => out.push(v),
            _ => break,
        }
    }
    out
}

fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

async fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let port = redis.port.to_string();
    let mut all = vec!["-p", port.as_str()];
    all.extend_from_slice(args);
    let out = tokio::process::Command::new("redis-cli")
        .args(&all)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn group(api: &Api, token: &str, title: &str, members: &[i64]) -> i64 {
    api.group(token, title, members).await.unwrap()
}

#[actix_rt::test]
async fn a_member_added_on_another_node_gets_joined_then_every_message() {
    let (db, _redis, a, b) = cluster(&[]).await;
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("join-alice").await.unwrap();
    let (bob, tb) = api_b.register("join-bob").await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The group is made on node A and written at once: bob on node B is told he
    // joined, with the conversation, and then gets the first message, not nothing.
    let conv = group(&api_a, &ta, "made on A", &[bob]).await;
    let (s, _) = api_a.send(&ta, conv, "j-1", "first").await.unwrap();
    assert_eq!(s, 201);
    let joined = wb.expect("joined", T).await.unwrap();
    assert_eq!(joined["conv"], conv, "{joined}");
    assert_eq!(joined["conversation"]["id"], conv, "{joined}");
    assert_eq!(joined["conversation"]["title"], "made on A", "{joined}");
    // The first message was committed before or after the channel was in force: either
    // it is pushed, or it is in the sync the `joined` frame calls for.
    let frames = frames_for(&mut wb, Duration::from_millis(800)).await;
    let pushed: Vec<i64> = of_type(&frames, "msg")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    let synced = api_b
        .sync_all(&tb, &mut Default::default(), 100)
        .await
        .unwrap();
    assert!(
        pushed.contains(&1) || synced.iter().any(|m| m["conv"] == conv && m["seq"] == 1),
        "pushed {pushed:?}, synced {synced:?}"
    );
    // From now on every message is pushed.
    for i in 2..=5 {
        let (s, _) = api_a
            .send(&ta, conv, &format!("j-{i}"), &format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(s, 201);
    }
    let mut seqs = pushed;
    let deadline = Instant::now() + T;
    while !(2..=5).all(|s| seqs.contains(&s)) && Instant::now() < deadline {
        if let Ok(m) = wb.expect("msg", Duration::from_millis(500)).await {
            seqs.extend(m["seq"].as_i64());
        }
    }
    assert!((2..=5).all(|s| seqs.contains(&s)), "pushed {seqs:?}");
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_join_nobody_announced_is_found_within_the_reconcile_bound() {
    let (db, _redis, a, b) = cluster(&[]).await;
    let side = side_node(&db).await;
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("lost-alice").await.unwrap();
    let (bob, tb) = api_b.register("lost-bob").await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Made on the side node: the join is never announced on the bus.
    let conv = group(&side.api(), &ta, "unannounced", &[bob]).await;
    let started = Instant::now();
    let joined = wb.expect("joined", Duration::from_secs(15)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(joined["conv"], conv, "{joined}");
    assert!(took <= Duration::from_secs(12), "healed in {took:?}");
    // And node B listens to it now: a message sent on node A is pushed to bob.
    let (s, _) = api_a.send(&ta, conv, "after-heal", "hello").await.unwrap();
    assert_eq!(s, 201);
    let m = wb.expect("msg", T).await.unwrap();
    assert_eq!(
        (m["conv"].as_i64(), m["seq"].as_i64()),
        (Some(conv), Some(1))
    );
    let reconciled = metric(&api_b, "chat_joins_reconciled_total").await;
    assert!(reconciled >= 1.0, "counted: {reconciled}");
    drop((a, b, side));
    db.drop_now().await.unwrap();
}

async fn metric(api: &Api, name: &str) -> f64 {
    let (_, body) = api.get("/metrics", None).await.unwrap();
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[actix_rt::test]
async fn a_sync_before_the_bus_confirmed_the_channels_is_followed_by_resync_or_is_complete() {
    // A client that syncs right after `hello` must not miss a message committed
    // between its sync and the moment its channels are subscribed. Node B's link to
    // Redis is slow (each way 400 ms), so that moment is long: a message sent then is
    // not pushed, and the early sync cannot hold it. The node must say `resync` once
    // subscribed.
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into())
        .await
        .unwrap();
    let a = Node::start(NodeOptions::new("node-a", &db).redis(&redis.url()))
        .await
        .unwrap();
    let b = Node::start(NodeOptions::new("node-b", &db).redis(&proxy.url("redis", "")))
        .await
        .unwrap();
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("early-alice").await.unwrap();
    let (bob, tb) = api_b.register("early-bob").await.unwrap();
    let conv = api_a.direct(&ta, bob).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Fault::Delay(Duration::from_millis(400)));

    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    wb.send_json(&json!({"type": "sync", "cursors": {}}))
        .await
        .unwrap();
    let first = wb.expect("sync", T).await.unwrap();
    let (s, body) = api_a.send(&ta, conv, "early-1", "race").await.unwrap();
    assert_eq!(s, 201);
    let seq = body["seq"].as_i64().unwrap();
    let frames = frames_for(&mut wb, Duration::from_secs(5)).await;
    let in_first = first["conversations"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["id"] == conv
                && c["messages"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["seq"] == seq))
        })
    });
    assert!(!in_first, "the sync was answered before the send: {first}");
    let pushed = of_type(&frames, "msg").iter().any(|m| m["seq"] == seq);
    let told = !of_type(&frames, "resync").is_empty();
    assert!(
        pushed || told,
        "seq {seq} neither pushed nor signalled: {frames:?}"
    );
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_resend_after_a_lost_commit_answer_is_pushed_by_a_fresh_actor() {
    let (db, _redis, a, b) = cluster(&[]).await;
    let side = side_node(&db).await;
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("resend-alice").await.unwrap();
    let (bob, tb) = api_b.register("resend-bob").await.unwrap();
    let conv = api_a.direct(&ta, bob).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The first attempt commits on a node that never publishes it (it died before it
    // could answer): alice never hears the answer and resends through node A, where
    // the conversation has no actor yet.
    let (s, first) = side
        .api()
        .send(&ta, conv, "lost-answer", "hello")
        .await
        .unwrap();
    assert_eq!(s, 201);
    assert!(wb.expect("msg", Duration::from_millis(500)).await.is_err());
    let (s, again) = api_a.send(&ta, conv, "lost-answer", "hello").await.unwrap();
    assert_eq!(s, 200, "a duplicate: {again}");
    assert_eq!(again["seq"], first["seq"]);
    // Bob on node B gets the message now.
    let m = wb.expect("msg", T).await.unwrap();
    assert_eq!(
        (m["seq"].clone(), m["body"].clone()),
        (first["seq"].clone(), json!("hello"))
    );
    assert_eq!(db.stored(conv).await.unwrap().len(), 1, "stored once");
    drop((a, b, side));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn actors_that_stop_and_start_again_never_push_twice_or_out_of_order() {
    // Actors stop after 30 ms idle, so they retire and restart between bursts, while
    // two nodes write one group (messages of the other node overtake and wait).
    let (db, _redis, a, b) = cluster(&[("CHAT__NODE__CONVERSATION_IDLE", "30ms")]).await;
    let (api_a, api_b) = (a.api(), b.api());
    let mut users = Vec::new();
    for i in 0..6 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        users.push(api.register(&format!("idle-{i}")).await.unwrap());
    }
    let ids: Vec<i64> = users.iter().map(|u| u.0).collect();
    let conv = group(&api_a, &users[0].1, "restarts", &ids[1..]).await;
    let mut sockets = Vec::new();
    for (i, (_, t)) in users.iter().enumerate().skip(2) {
        let node = if i % 2 == 0 { &a } else { &b };
        sockets.push(WsClient::connect_hello(&node.ws_url(t)).await.unwrap().0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ta, tb) = (users[0].1.clone(), users[1].1.clone());
    let mut sent = 0;
    for burst in 0..40 {
        let (ka, kb) = (api_a.clone(), api_b.clone());
        let (ta, tb) = (ta.clone(), tb.clone());
        let one = async move {
            for j in 0..3 {
                ka.send(&ta, conv, &format!("a-{burst}-{j}"), "x")
                    .await
                    .unwrap();
            }
        };
        let two = async move {
            for j in 0..3 {
                kb.send(&tb, conv, &format!("b-{burst}-{j}"), "x")
                    .await
                    .unwrap();
            }
        };
        tokio::join!(one, two);
        sent += 6;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for (k, ws) in sockets.iter_mut().enumerate() {
        let frames = frames_for(ws, Duration::from_secs(3)).await;
        let seqs: Vec<i64> = of_type(&frames, "msg")
            .iter()
            .filter_map(|m| m["seq"].as_i64())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "socket {k}: pushed twice or out of order: {seqs:?}"
        );
        let resynced = !of_type(&frames, "resync").is_empty();
        assert!(
            resynced || seqs.len() == sent,
            "socket {k}: {} of {sent} pushed, no resync",
            seqs.len()
        );
    }
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_dropped_publish_makes_the_other_node_resync_its_sessions() {
    let (db, redis, a, b) = cluster(&[]).await;
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("drop-alice").await.unwrap();
    let (bob, tb) = api_b.register("drop-bob").await.unwrap();
    let conv = api_a.direct(&ta, bob).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis cuts every publisher connection; the subscribers stay.
    redis_cli(&redis, &["CLIENT", "KILL", "TYPE", "normal"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, _) = api_a.send(&ta, conv, "dropped", "lost push").await.unwrap();
    assert_eq!(s, 201);
    // The push is lost with its connection; bob is told to sync instead.
    let frames = frames_for(&mut wb, Duration::from_secs(4)).await;
    let pushed = !of_type(&frames, "msg").is_empty();
    let told = !of_type(&frames, "resync").is_empty();
    assert!(pushed || told, "neither pushed nor resync: {frames:?}");
    if !pushed {
        assert!(metric(&api_a, "chat_bus_publish_dropped_total").await >= 1.0);
        assert!(metric(&api_b, "chat_bus_drop_notices_received_total").await >= 1.0);
    }
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn after_a_redis_outage_sessions_resync_instead_of_a_burst_of_old_pushes() {
    let (db, mut redis, a, b) = cluster(&[]).await;
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("burst-alice").await.unwrap();
    let (bob, tb) = api_b.register("burst-bob").await.unwrap();
    let conv = api_a.direct(&ta, bob).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = api_a.send(&ta, conv, "before", "0").await.unwrap();
    assert_eq!(s, 201);
    assert_eq!(wb.expect("msg", T).await.unwrap()["seq"], 1);

    let port = redis.port;
    redis.stop().await.unwrap();
    for i in 0..150 {
        let (s, _) = api_a
            .send(&ta, conv, &format!("during-{i}"), "x")
            .await
            .unwrap();
        assert_eq!(s, 201);
    }
    let _redis = RedisServer::start_on(port).await.unwrap();
    b.wait_ready(Duration::from_secs(15)).await.unwrap();
    a.wait_ready(Duration::from_secs(15)).await.unwrap();
    wb.expect("resync", T).await.unwrap();
    let (s, _) = api_a.send(&ta, conv, "after", "new").await.unwrap();
    assert_eq!(s, 201);
    let frames = frames_for(&mut wb, Duration::from_secs(2)).await;
    let seqs: Vec<i64> = of_type(&frames, "msg")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert!(seqs.contains(&152), "the new message is pushed: {seqs:?}");
    assert!(
        seqs.len() <= 2,
        "{} old messages pushed after the resync: {seqs:?}",
        seqs.len()
    );
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn an_attribute_change_keeps_the_audiences_the_user_keeps_subscribed() {
    let (db, redis, a, b) = cluster(&[]).await;
    let (api_a, api_b) = (a.api(), b.api());
    let keeper =
        chat_testkit::fixtures::provision(&api_b, "keeper", json!({"org": "1", "roles": ["2"]}))
            .await
            .unwrap();
    let (user, token) = (keeper.id, keeper.token);
    let (mut ws, _) = WsClient::connect_hello(&b.ws_url(&token)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Watch what node B asks of Redis while the user's role changes (org 1 is kept).
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "MONITOR"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = api_a
        .put(
            &format!("/api/v1/users/{user}/attributes"),
            Some(SERVICE_KEY),
            &json!({"org": "1", "roles": ["3"]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    monitor.start_kill().unwrap();
    let out = monitor.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    let unsubscribed: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("\"unsubscribe\""))
        .collect();
    assert!(
        log.to_ascii_lowercase().contains("chat:a:role/3"),
        "the new audience is subscribed: {log}"
    );
    for kept in ["\"chat:a:all\"", "\"chat:a:org/1\""] {
        assert!(
            !unsubscribed.iter().any(|l| l.contains(kept)),
            "{kept} was unsubscribed although kept: {unsubscribed:?}"
        );
    }
    assert!(
        unsubscribed.iter().any(|l| l.contains("chat:a:role/2")),
        "the audience left is unsubscribed: {log}"
    );
    // A notice to the kept audience still arrives.
    let (s, _) = api_a
        .post(
            "/api/v1/broadcasts",
            Some(SERVICE_KEY),
            &json!({"audience": "org/1", "body": "still here", "cid": "kept-1"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    let m = ws.expect("msg", T).await.unwrap();
    assert_eq!(m["body"], "still here");
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_user_moved_out_of_an_audience_unheard_of_stops_seeing_it_on_open_sockets() {
    let (db, _redis, a, b) = cluster(&[]).await;
    let api_a = a.api();
    let mover = chat_testkit::fixtures::provision(&b.api(), "mover", json!({"org": "1"}))
        .await
        .unwrap();
    let (user, token) = (mover.id, mover.token);
    let (mut ws, _) = WsClient::connect_hello(&b.ws_url(&token)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let notice = |cid: &'static str| {
        let api = api_a.clone();
        async move {
            let (s, body) = api
                .post(
                    "/api/v1/broadcasts",
                    Some(SERVICE_KEY),
                    &json!({"audience": "org/1", "body": cid, "cid": cid}),
                )
                .await
                .unwrap();
            assert_eq!(s, 201, "{body}");
        }
    };
    notice("org-1").await;
    let m = ws.expect("msg", T).await.unwrap();
    let conv = m["conv"].as_i64().unwrap();
    // The user leaves org 1 and nobody tells the nodes (the event is lost).
    db.client()
        .await
        .unwrap()
        .execute("UPDATE users SET org = '2' WHERE id = $1", &[&user])
        .await
        .unwrap();
    // The open socket reads what HTTP would: the audience's conversation is gone.
    ws.send_json(&json!({"type": "sync", "cursors": {}}))
        .await
        .unwrap();
    let sync = ws.expect("sync", T).await.unwrap();
    let convs: Vec<i64> = sync["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    assert!(
        !convs.contains(&conv),
        "synced a conversation it left: {sync}"
    );
    ws.send_json(&json!({"type": "read", "conv": conv, "seq": 1}))
        .await
        .unwrap();
    let e = ws.expect("error", T).await.unwrap();
    assert_eq!(e["code"], "not_member", "{e}");
    // And its pushes stop.
    notice("org-1-again").await;
    let frames = frames_for(&mut ws, Duration::from_secs(1)).await;
    assert!(
        of_type(&frames, "msg").is_empty(),
        "pushed after leaving: {frames:?}"
    );
    drop((a, b));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_node_that_exits_after_a_failed_publish_tells_the_other_nodes_first() {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    // Node A reaches Redis through a proxy the test can cut; B directly.
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into())
        .await
        .unwrap();
    let mut a = Node::start(
        NodeOptions::new("node-a", &db)
            .redis(&proxy.url("redis", ""))
            .set("CHAT__SERVER__DRAIN_TIMEOUT", "2s"),
    )
    .await
    .unwrap();
    let b = Node::start(NodeOptions::new("node-b", &db).redis(&redis.url()))
        .await
        .unwrap();
    let (api_a, api_b) = (a.api(), b.api());
    let (_alice, ta) = api_a.register("exit-alice").await.unwrap();
    let (bob, tb) = api_b.register("exit-bob").await.unwrap();
    let conv = api_a.direct(&ta, bob).await.unwrap();
    let (mut wb, _) = WsClient::connect_hello(&b.ws_url(&tb)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A loses Redis, stores a message (whose push cannot go out) and is told to stop
    // at once; Redis comes back while it drains.
    proxy.set(Fault::Cut);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = api_a
        .send(&ta, conv, "exit-1", "stored, not pushed")
        .await
        .unwrap();
    assert_eq!(s, 201);
    a.terminate().unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    proxy.set(Fault::Pass);
    assert!(
        a.wait_exit(Duration::from_secs(10)).await.unwrap(),
        "node A did not exit"
    );

    // Bob hears of it before A is gone: the message itself, or a resync.
    let frames = frames_for(&mut wb, Duration::from_secs(3)).await;
    let pushed = !of_type(&frames, "msg").is_empty();
    let told = !of_type(&frames, "resync").is_empty();
    assert!(pushed || told, "A exited telling nobody: {frames:?}");
    drop(b);
    db.drop_now().await.unwrap();
}
