//! Offline notifications through real node processes on one Redis and one Postgres,
//! POSTed to a real HTTP receiver the test runs: who is told and who is not, the
//! signature, a receiver that is down for a while, and nodes killed with notifications
//! due.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_testkit::{Api, Endpoint, Node, NodeOptions, Receiver, RedisServer, TestDb, WsClient};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SECRET: &str = "notify-secret-of-the-test";
const T: Duration = Duration::from_secs(20);

async fn cluster(
    n: usize,
    receiver: &Receiver,
    extra: &[(&str, &str)],
) -> (TestDb, RedisServer, Vec<Node>) {
    let db = TestDb::create().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let mut opts = NodeOptions::new(&format!("node-{i}"), &db)
            .redis(&redis.url())
            .set("CHAT__NOTIFY__URL", &receiver.url())
            .set("CHAT__NOTIFY__SECRET", SECRET)
            .set("CHAT__NOTIFY__POLL", "200ms")
            .set("CHAT__NOTIFY__MAX_BACKOFF", "2s")
            .set("CHAT__PRESENCE__LEASE", "3s")
            .set("CHAT__PRESENCE__OFFLINE_GRACE", "500ms");
        for (k, v) in extra {
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

async fn send(api: &Api, token: &str, conv: i64, cid: &str, body: &Value) -> i64 {
    let mut body = body.clone();
    body["cid"] = json!(cid);
    let (s, b) = api
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(token),
            &body,
        )
        .await
        .unwrap();
    assert!(s == 200 || s == 201, "{s} {b}");
    b["seq"].as_i64().unwrap()
}

fn ids(taken: &[chat_testkit::Taken]) -> Vec<String> {
    taken
        .iter()
        .map(|t| {
            t.notification["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The one number `sql` selects.
async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[actix_rt::test]
async fn offline_members_are_told_and_online_muted_and_sending_ones_are_not() {
    let receiver = Receiver::start(SECRET).await.unwrap();
    // Members with a socket open are looked at again after 1 s.
    let (db, _redis, nodes) = cluster(2, &receiver, &[("CHAT__NOTIFY__DELAY", "1s")]).await;
    let api = nodes[0].api();
    let (alice, ta) = api.register("alice").await.unwrap();
    let (bob, tb) = api.register("bob").await.unwrap();
    let (carol, tc) = api.register("carol").await.unwrap();
    let (dave, td) = api.register("dave").await.unwrap();
    let (erin, te) = api.register("erin").await.unwrap();
    let group = api
        .group(&ta, "team", &[bob, carol, dave, erin])
        .await
        .unwrap();
    let direct = api.direct(&ta, bob).await.unwrap();
    // Erin muted the group (for a year): never told of it.
    let (s, b) = api
        .put(
            &format!("/api/v1/conversations/{group}/settings"),
            Some(&te),
            &json!({"muted_until": "forever"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    // Alice (the sender) has a socket on node 1; carol and dave theirs on node 2; bob
    // and erin none.
    let _wa = ws(&nodes[0], &ta).await;
    let _wc = ws(&nodes[1], &tc).await;
    let _wd = ws(&nodes[1], &td).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = &tb;

    let s1 = send(
        &api,
        &ta,
        group,
        "g1",
        &json!({"body": "hello @bob", "mentions": [bob]}),
    )
    .await;
    let s2 = send(&api, &ta, group, "g2", &json!({"body": "second"})).await;
    let s3 = send(&api, &ta, direct, "d1", &json!({"body": "just you"})).await;
    // Carol reads both at once; dave never does.
    let (s, b) = api.read(&tc, group, s2).await.unwrap();
    assert_eq!(s, 200, "{b}");

    let expected: BTreeSet<String> = [
        format!("{group}:{s1}:{bob}"),
        format!("{group}:{s2}:{bob}"),
        format!("{direct}:{s3}:{bob}"),
        // Dave had a socket open, but did not read within the delay.
        format!("{group}:{s1}:{dave}"),
        format!("{group}:{s2}:{dave}"),
    ]
    .into();
    let taken = receiver
        .wait_until(T, |t| {
            ids(t).into_iter().collect::<BTreeSet<_>>() == expected
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", ids(&receiver.taken())));
    // Nothing more comes for carol (read it), erin (muted) or alice (sent it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = receiver.taken();
    assert_eq!(ids(&after).len(), expected.len(), "{:?}", ids(&after));
    let (posts, refused, bad) = receiver.counts();
    assert!(posts >= 1);
    assert_eq!((refused, bad), (0, 0), "every POST was signed right");

    let by_id: BTreeMap<String, Value> = taken
        .iter()
        .map(|t| {
            (
                t.notification["id"].as_str().unwrap().to_string(),
                t.notification.clone(),
            )
        })
        .collect();
    let first = &by_id[&format!("{group}:{s1}:{bob}")];
    assert_eq!(first["user"], bob);
    assert_eq!(first["conv"], group);
    assert_eq!(first["seq"], s1);
    assert_eq!(first["sender"], alice);
    assert_eq!(first["kind"], "text");
    assert_eq!(first["preview"], "hello @bob");
    assert_eq!(first["mention"], true, "bob is mentioned");
    assert_eq!(by_id[&format!("{group}:{s1}:{dave}")]["mention"], false);
    assert_eq!(by_id[&format!("{group}:{s2}:{bob}")]["mention"], false);
    assert_eq!(
        by_id[&format!("{direct}:{s3}:{bob}")]["preview"],
        "just you"
    );
    // The immediate ones came before the second looks.
    let bob_first = taken
        .iter()
        .find(|t| t.notification["user"] == bob)
        .unwrap()
        .at;
    let dave_first = taken
        .iter()
        .find(|t| t.notification["user"] == dave)
        .unwrap()
        .at;
    assert!(dave_first > bob_first, "dave's waited for the delay");

    // @all flags everyone; a system entry (a member added) tells nobody.
    let (frank, _) = api.register("frank").await.unwrap();
    let (s, b) = api
        .post(
            &format!("/api/v1/conversations/{group}/members"),
            Some(&ta),
            &json!({"users": [frank]}),
        )
        .await
        .unwrap();
    assert!(s == 200 || s == 201, "{s} {b}");
    let s4 = send(
        &api,
        &ta,
        group,
        "g4",
        &json!({"body": "all hands", "mentions": [0]}),
    )
    .await;
    let all = receiver
        .wait_until(T, |t| {
            ids(t).contains(&format!("{group}:{s4}:{frank}"))
                && ids(t).contains(&format!("{group}:{s4}:{bob}"))
        })
        .await
        .unwrap();
    for t in all.iter().filter(|t| t.notification["seq"] == s4) {
        assert_eq!(t.notification["mention"], true, "{}", t.notification);
    }
    // The queue is empty once everything is taken.
    let client = db.client().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left: i64 = count(
        &client,
        "SELECT (SELECT count(*) FROM notify_outbox) + (SELECT count(*) FROM notify_queue)",
    )
    .await;
    assert_eq!(left, 0);
    let m = nodes[0].api().get("/metrics", None).await.unwrap().1;
    let m2 = nodes[1].api().get("/metrics", None).await.unwrap().1;
    let delivered = metric(m.as_str().unwrap(), "chat_notify_delivered_total")
        + metric(m2.as_str().unwrap(), "chat_notify_delivered_total");
    assert_eq!(delivered as usize, receiver.taken().len());
    // The OpenAPI document describes the POST for the company's receiver.
    let (s, doc) = api.get("/api/v1/openapi.json", None).await.unwrap();
    assert_eq!(s, 200);
    let hook = &doc["webhooks"]["offline_notifications"]["post"];
    assert_eq!(
        hook["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NotificationBatch",
        "{hook}"
    );
    assert!(hook["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "X-Chat-Signature"));
    let fields = &doc["components"]["schemas"]["Notification"]["properties"];
    for f in [
        "id", "user", "conv", "seq", "sender", "kind", "preview", "mention",
    ] {
        assert!(fields.get(f).is_some(), "{f} in {fields}");
    }
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_receiver_down_for_a_while_and_killed_nodes_lose_no_notification() {
    let mut receiver = Receiver::start(SECRET).await.unwrap();
    let (db, _redis, mut nodes) = cluster(2, &receiver, &[]).await;
    let api = nodes[0].api();
    let api2 = nodes[1].api();
    let (_alice, ta) = api.register("alice").await.unwrap();
    let (bob, _tb) = api.register("bob").await.unwrap();
    let conv = api.direct(&ta, bob).await.unwrap();

    // Down: its port refuses connections. Sends are acked all the same.
    receiver.stop().await;
    let mut expected = BTreeSet::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { &api } else { &api2 };
        let seq = send(
            via,
            &ta,
            conv,
            &format!("down-{i}"),
            &json!({"body": format!("m{i}")}),
        )
        .await;
        expected.insert(format!("{conv}:{seq}:{bob}"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = db.client().await.unwrap();
    let tried: i64 = count(
        &client,
        "SELECT count(*) FROM notify_outbox WHERE attempts > 0",
    )
    .await;
    assert!(tried > 0, "POSTs were tried while the receiver was down");

    // Up, but failing: answered 503, nothing kept.
    receiver.resume().await.unwrap();
    receiver.answer(Some(503));
    for i in 0..10 {
        let seq = send(
            &api,
            &ta,
            conv,
            &format!("err-{i}"),
            &json!({"body": format!("e{i}")}),
        )
        .await;
        expected.insert(format!("{conv}:{seq}:{bob}"));
    }
    receiver
        .wait_until(T, |_| receiver.counts().1 >= 2)
        .await
        .ok();
    assert!(receiver.counts().1 >= 1, "the failing answers were seen");
    assert!(receiver.taken().is_empty());

    // Down again, and every node is killed with notifications due; one comes back.
    receiver.stop().await;
    receiver.answer(None);
    for i in 0..10 {
        let seq = send(
            &api2,
            &ta,
            conv,
            &format!("kill-{i}"),
            &json!({"body": format!("k{i}")}),
        )
        .await;
        expected.insert(format!("{conv}:{seq}:{bob}"));
    }
    // They are stored and due, not yet taken, when every node dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let due: i64 = count(
        &client,
        "SELECT (SELECT count(*) FROM notify_outbox) + (SELECT count(*) FROM notify_queue)",
    )
    .await;
    assert_eq!(due as usize, expected.len(), "all of them wait");
    for n in nodes.iter_mut() {
        n.kill().await.unwrap();
    }
    receiver.resume().await.unwrap();
    nodes[1].restart().await.unwrap();

    let taken = receiver
        .wait_until(T, |t| {
            ids(t).into_iter().collect::<BTreeSet<_>>() == expected
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {} of {}", receiver.taken().len(), expected.len()));
    // At least once, and here exactly once: no POST was ever taken and then retried.
    let got = ids(&taken);
    assert_eq!(
        got.len(),
        expected.len(),
        "a notification came twice: {got:?}"
    );
    assert!(
        taken.iter().all(|t| t.node == "node-2"),
        "the restarted node sent them"
    );
    assert_eq!(receiver.counts().2, 0, "every POST was signed right");
    // Ids are the same on every try: each names its message and member.
    for t in &taken {
        let n = &t.notification;
        assert_eq!(
            n["id"].as_str().unwrap(),
            format!("{}:{}:{}", n["conv"], n["seq"], n["user"])
        );
    }
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_long_outage_fills_the_queue_no_further_than_max_pending() {
    let mut receiver = Receiver::start(SECRET).await.unwrap();
    let (db, _redis, nodes) = cluster(1, &receiver, &[("CHAT__NOTIFY__MAX_PENDING", "5")]).await;
    let api = nodes[0].api();
    let (_alice, ta) = api.register("alice").await.unwrap();
    let (bob, _) = api.register("bob").await.unwrap();
    let conv = api.direct(&ta, bob).await.unwrap();
    receiver.stop().await;
    let mut seqs = Vec::new();
    for i in 0..12 {
        seqs.push(
            send(
                &api,
                &ta,
                conv,
                &format!("c{i}"),
                &json!({"body": format!("m{i}")}),
            )
            .await,
        );
    }
    // Within a few polls the outbox holds the 5 newest only.
    let client = db.client().await.unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        let n: i64 = count(&client, "SELECT count(*) FROM notify_outbox").await;
        let queued: i64 = count(&client, "SELECT count(*) FROM notify_queue").await;
        if n == 5 && queued == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox {n}, queue {queued}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = api.get("/metrics", None).await.unwrap().1;
    assert_eq!(
        metric(m.as_str().unwrap(), "chat_notify_dropped_total"),
        7.0
    );
    receiver.resume().await.unwrap();
    let newest: BTreeSet<String> = seqs[7..]
        .iter()
        .map(|s| format!("{conv}:{s}:{bob}"))
        .collect();
    receiver
        .wait_until(T, |t| ids(t).into_iter().collect::<BTreeSet<_>>() == newest)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", ids(&receiver.taken())));

    // A deleted sender's undelivered notifications go with them (their previews hold
    // what they wrote).
    receiver.stop().await;
    send(&api, &ta, conv, "last", &json!({"body": "to be erased"})).await;
    let outbox = || count(&client, "SELECT count(*) FROM notify_outbox");
    let deadline = std::time::Instant::now() + T;
    while outbox().await != 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alice = api.get("/api/v1/me", Some(&ta)).await.unwrap().1["id"]
        .as_i64()
        .unwrap();
    let (s, b) = api
        .delete(
            &format!("/api/v1/service/users/{alice}"),
            Some(chat_testkit::process::SERVICE_KEY),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(outbox().await, 0);
    drop(nodes);
    db.drop_now().await.unwrap();
}
