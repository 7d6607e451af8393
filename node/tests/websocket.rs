//! The WebSocket protocol of one node run in this process, over real sockets, with
//! real clients.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

mod common;
use chat_testkit::fixtures::{mint, now, rows, user, T};
use chat_testkit::process::{SERVICE_KEY, TEST_SECRET};
use chat_testkit::TestDb;
use chat_testkit::{Endpoint, Incoming, WsClient};
use common::{node, node_with, process_node};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

async fn ws(node: &impl Endpoint, token: &str) -> WsClient {
    let (ws, hello) = WsClient::connect_hello(&node.ws_url(token))
        .await
        .expect("connect");
    assert_eq!(hello["node"], "node-1");
    ws
}

async fn ack(ws: &mut WsClient, cid: &str) -> Value {
    loop {
        let f = ws.recv(T).await.expect("frame");
        match f {
            Incoming::Json(v) if v["type"] == "ack" && v["cid"] == cid => return v,
            Incoming::Json(v) if v["type"] == "error" => panic!("error instead of ack: {v}"),
            Incoming::Json(_) => {}
            other => panic!("closed while waiting for ack: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn two_users_chat_and_every_device_sees_both_sides() {
    let (db, node) = node().await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    let conv = api.direct(&alice.token, bob.id).await.unwrap();
    let mut a1 = ws(&node, &alice.token).await;
    let mut a2 = ws(&node, &alice.token).await;
    let mut b = ws(&node, &bob.token).await;

    a1.send_msg(conv, "a-1", "hi bob").await.unwrap();
    let ack1 = ack(&mut a1, "a-1").await;
    assert_eq!(
        (ack1["conv"].as_i64(), ack1["seq"].as_i64()),
        (Some(conv), Some(1))
    );
    let m = b.expect("msg", T).await.unwrap();
    assert_eq!(
        (m["body"].as_str(), m["sender"].as_i64(), m["seq"].as_i64()),
        (Some("hi bob"), Some(alice.id), Some(1))
    );
    let m = a2.expect("msg", T).await.unwrap();
    assert_eq!(
        m["cid"], "a-1",
        "the sender's other device gets its own message"
    );

    b.send_msg(conv, "b-1", "hi alice").await.unwrap();
    assert_eq!(ack(&mut b, "b-1").await["seq"], 2);
    for dev in [&mut a1, &mut a2] {
        let m = dev.expect("msg", T).await.unwrap();
        assert_eq!(
            (m["body"].as_str(), m["seq"].as_i64()),
            (Some("hi alice"), Some(2))
        );
    }

    // A retried cid: same seq, no second delivery.
    a1.send_msg(conv, "a-1", "hi bob").await.unwrap();
    assert_eq!(ack(&mut a1, "a-1").await["seq"], 1);
    b.send_json(&json!({"type": "ping"})).await.unwrap();
    loop {
        match b.recv(T).await.unwrap() {
            // Alice's devices coming online may be announced meanwhile.
            Incoming::Json(v) if v["type"] == "presence" => {}
            Incoming::Json(v) => {
                assert_eq!(v["type"], "pong", "no second msg before the pong: {v}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rows(&db, conv).await.unwrap(), 2);

    // An HTTP send takes the same path and is pushed too.
    let (s, _) = api
        .send(&bob.token, conv, "b-http", "over http")
        .await
        .unwrap();
    assert_eq!(s, 201);
    let m = a1.expect("msg", T).await.unwrap();
    assert_eq!(
        (m["body"].as_str(), m["seq"].as_i64()),
        (Some("over http"), Some(3))
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn fifty_concurrent_senders_get_contiguous_seqs_seen_in_order() {
    let (db, node) = node().await;
    let api = node.api();
    let mut users = Vec::new();
    for i in 0..50 {
        users.push(user(&api, &format!("u{i:02}")).await.unwrap());
    }
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let conv = api.group(&users[0].token, "fifty", &ids).await.unwrap();
    const EACH: usize = 4;
    let total = (50 * EACH) as i64;
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let url = node.ws_url(&u.token);
        tasks.push(actix_rt::spawn(async move {
            let (mut ws, _) = WsClient::connect_hello(&url).await.expect("connect");
            for k in 0..EACH {
                ws.send_msg(conv, &format!("s{i}-{k}"), "x")
                    .await
                    .expect("send");
            }
            let (mut acks, mut seen) = (Vec::new(), Vec::new());
            // Everyone reads until it has its acks and every other sender's messages.
            while acks.len() < EACH || seen.len() < (total as usize - EACH) {
                match ws.recv(Duration::from_secs(20)).await.expect("frame") {
                    Incoming::Json(v) if v["type"] == "ack" => {
                        acks.push(v["seq"].as_i64().unwrap())
                    }
                    Incoming::Json(v) if v["type"] == "msg" => {
                        seen.push(v["seq"].as_i64().unwrap())
                    }
                    Incoming::Json(v) if v["type"] == "error" => panic!("error: {v}"),
                    Incoming::Json(_) => {}
                    other => panic!("closed: {other:?}"),
                }
            }
            (acks, seen)
        }));
    }
    let mut all_acks = BTreeSet::new();
    for t in tasks {
        let (acks, seen) = t.await.unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "a member saw messages out of order: {seen:?}"
        );
        for a in &acks {
            assert!(all_acks.insert(*a), "seq {a} acked twice");
            assert!(
                !seen.contains(a),
                "own send delivered to the sending connection"
            );
        }
    }
    assert_eq!(all_acks, (1..=total).collect::<BTreeSet<_>>());
    assert_eq!(rows(&db, conv).await.unwrap(), total);
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn bad_frames_get_errors_and_the_connection_stays() {
    let (db, node) = node().await;
    let api = node.api();
    let a = user(&api, "ann").await.unwrap();
    let b = user(&api, "bea").await.unwrap();
    let out = user(&api, "ozzy").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    let mut w = ws(&node, &out.token).await;

    let cases = [
        ("{not json".to_string(), None),
        (r#"{"type":"dance"}"#.to_string(), Some("dance")),
        (
            r#"{"type":"send","conv":"one","cid":"c-x","body":"b"}"#.to_string(),
            Some("c-x"),
        ),
        (
            r#"{"type":"send","conv":1,"cid":"bad cid!","body":"b"}"#.to_string(),
            Some("bad cid!"),
        ),
        (r#"[1,2,3]"#.to_string(), None),
        (r#"{"type":"read","conv":1}"#.to_string(), Some("read")),
    ];
    for (text, reference) in cases {
        w.send_text(&text).await.unwrap();
        let e = w.expect("error", T).await.unwrap();
        assert_eq!(e["code"], "bad_request", "{text}: {e}");
        assert_eq!(e["ref"].as_str(), reference, "{text}");
    }
    // Another user's conversation and an unknown one.
    w.send_msg(conv, "c-nm", "let me in").await.unwrap();
    let e = w.expect("error", T).await.unwrap();
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("not_member"), Some("c-nm"))
    );
    w.send_msg(987_654, "c-nf", "x").await.unwrap();
    let e = w.expect("error", T).await.unwrap();
    assert_eq!(e["code"], "not_found");
    w.send_json(&json!({"type": "read", "conv": conv, "seq": 1}))
        .await
        .unwrap();
    assert_eq!(w.expect("error", T).await.unwrap()["code"], "not_member");
    w.send_json(&json!({"type": "typing", "conv": conv}))
        .await
        .unwrap();
    assert_eq!(w.expect("error", T).await.unwrap()["code"], "not_member");
    // Still working.
    w.send_json(&json!({"type": "ping"})).await.unwrap();
    w.expect("pong", T).await.unwrap();
    assert_eq!(rows(&db, conv).await.unwrap(), 0);
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn oversized_frames_close_with_1009() {
    let (db, node) = node_with(&[("CHAT__LIMITS__MAX_FRAME_BYTES", "1024")]).await;
    let api = node.api();
    let a = user(&api, "big").await.unwrap();
    let mut w = ws(&node, &a.token).await;
    let body = "x".repeat(4000);
    w.send_text(&json!({"type": "send", "conv": 1, "cid": "c", "body": body}).to_string())
        .await
        .unwrap();
    assert_eq!(w.until_close(T).await.unwrap(), Some(1009));

    // Fragments that add up past the limit are refused the same way.
    let mut w = ws(&node, &a.token).await;
    use actix_http::ws::{Item, Message};
    let chunk = bytes::Bytes::from(vec![b' '; 600]);
    w.send_message(Message::Continuation(Item::FirstText(chunk.clone())))
        .await
        .unwrap();
    w.send_message(Message::Continuation(Item::Continue(chunk.clone())))
        .await
        .unwrap();
    let _ = w
        .send_message(Message::Continuation(Item::Last(chunk)))
        .await;
    assert_eq!(w.until_close(T).await.unwrap(), Some(1009));
    // The node is fine.
    let mut w = ws(&node, &a.token).await;
    w.send_json(&json!({"type": "ping"})).await.unwrap();
    w.expect("pong", T).await.unwrap();
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn handshake_refusals_heartbeat_and_token_expiry() {
    let (db, node) = node_with(&[
        ("CHAT__SERVER__HEARTBEAT_S", "1"),
        ("CHAT__LIMITS__MAX_CONNECTIONS_PER_USER", "2"),
        (
            "CHAT__SERVER__ALLOWED_ORIGINS",
            "https://app.example,https://other.example",
        ),
        ("CHAT__AUTH__LEEWAY", "0s"),
    ])
    .await;
    let api = node.api();
    let a = user(&api, "hank").await.unwrap();
    let origin = Some("https://app.example");

    for bad in ["", "garbage"] {
        let r = WsClient::connect_with(&node.ws_url(bad), origin).await;
        assert!(
            matches!(r, Err(chat_testkit::HarnessError::Http(ref s)) if s == "status 401"),
            "{bad}"
        );
    }
    let r = WsClient::connect_with(&format!("ws://127.0.0.1:{}/ws", node.port()), origin).await;
    assert!(matches!(r, Err(chat_testkit::HarnessError::Http(ref s)) if s == "status 401"));
    let r = WsClient::connect_with(&node.ws_url(&a.token), Some("https://evil.example")).await;
    assert!(matches!(r, Err(chat_testkit::HarnessError::Http(ref s)) if s == "status 403"));
    // A service key is a valid credential of the wrong kind, as on user calls: 403.
    let r = WsClient::connect_with(&node.ws_url(SERVICE_KEY), origin).await;
    assert!(
        matches!(r, Err(chat_testkit::HarnessError::Http(ref s)) if s == "status 403"),
        "{:?}",
        r.err()
    );

    // Connection limit per user.
    let mut c1 = WsClient::connect_with(&node.ws_url(&a.token), origin)
        .await
        .unwrap();
    let c2 = WsClient::connect_with(&node.ws_url(&a.token), origin)
        .await
        .unwrap();
    let r = WsClient::connect_with(&node.ws_url(&a.token), origin).await;
    assert!(matches!(r, Err(chat_testkit::HarnessError::Http(ref s)) if s == "status 429"));
    drop(c2);

    // Silence for two heartbeats closes the socket; pinging keeps one open.
    c1.expect("hello", T).await.unwrap();
    let code = c1.until_close(Duration::from_secs(6)).await.unwrap();
    assert!(code.is_some(), "silent client closed with a code");
    let mut live = WsClient::connect_with(&node.ws_url(&a.token), origin)
        .await
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        live.send_json(&json!({"type": "ping"})).await.unwrap();
    }
    live.expect("pong", T).await.unwrap();
    drop(live);

    // A token that "never expires" (exp at u64::MAX) works and harms nothing.
    let forever = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": a.id.to_string(), "iat": now(), "exp": u64::MAX}),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    let mut f = WsClient::connect_with(&node.ws_url(&forever), origin)
        .await
        .unwrap();
    f.expect("hello", T).await.unwrap();
    f.send_json(&json!({"type": "ping"})).await.unwrap();
    f.expect("pong", T).await.unwrap();
    drop(f);

    // A socket whose token expires is closed with 1008.
    let short = mint(&a.id.to_string(), now(), now() + 2).unwrap();
    let mut s = WsClient::connect_with(&node.ws_url(&short), origin)
        .await
        .unwrap();
    let mut closed = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.send_json(&json!({"type": "ping"})).await.ok();
        match s.recv(Duration::from_millis(300)).await {
            Ok(Incoming::Close(c)) => {
                closed = c;
                break;
            }
            Ok(Incoming::Eof) => panic!("connection ended without a close frame"),
            _ => {}
        }
    }
    assert_eq!(closed, Some(1008));
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn read_receipts_unread_and_typing() {
    let (db, node) = node().await;
    let api = node.api();
    let a = user(&api, "ava").await.unwrap();
    let b = user(&api, "bono").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    let mut wa = ws(&node, &a.token).await;
    let mut wb1 = ws(&node, &b.token).await;
    let mut wb2 = ws(&node, &b.token).await;
    for i in 0..3 {
        wa.send_msg(conv, &format!("m{i}"), "x").await.unwrap();
        ack(&mut wa, &format!("m{i}")).await;
    }
    wb1.send_json(&json!({"type": "read", "conv": conv, "seq": 2}))
        .await
        .unwrap();
    for dev in [&mut wb1, &mut wb2] {
        let u = dev.expect("unread", T).await.unwrap();
        assert_eq!(
            u,
            json!({"type": "unread", "conv": conv, "unread": 1, "mentions_unread": 0, "total": 1})
        );
    }
    let r = wa.expect("read", T).await.unwrap();
    assert_eq!(
        r,
        json!({"type": "read", "conv": conv, "user": b.id, "seq": 2})
    );

    // Typing reaches the other member's devices, never the typist's.
    wa.send_json(&json!({"type": "typing", "conv": conv}))
        .await
        .unwrap();
    let t = wb2.expect("typing", T).await.unwrap();
    assert_eq!(t, json!({"type": "typing", "conv": conv, "user": a.id}));
    wa.send_json(&json!({"type": "ping"})).await.unwrap();
    loop {
        match wa.recv(T).await.unwrap() {
            // Bono's devices coming online may be announced meanwhile.
            Incoming::Json(v) if v["type"] == "presence" => {}
            Incoming::Json(v) => {
                assert_eq!(v["type"], "pong", "no typing echo: {v}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn reconnect_and_sync_returns_exactly_the_missed_messages() {
    let (db, node) = node().await;
    let api = node.api();
    let a = user(&api, "away").await.unwrap();
    let b = user(&api, "here").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    let mut wa = ws(&node, &a.token).await;
    let mut wb = ws(&node, &b.token).await;
    wb.send_msg(conv, "before", "seen live").await.unwrap();
    let m = wa.expect("msg", T).await.unwrap();
    let cursor = m["seq"].as_i64().unwrap();
    wa.close().await;

    for i in 0..25 {
        wb.send_msg(conv, &format!("gone-{i}"), &format!("missed {i}"))
            .await
            .unwrap();
        ack(&mut wb, &format!("gone-{i}")).await;
    }
    let mut wa = ws(&node, &a.token).await;
    let mut cursors = BTreeMap::from([(conv.to_string(), cursor)]);
    let mut got = Vec::new();
    for _ in 0..20 {
        wa.send_json(&json!({"type": "sync", "cursors": cursors, "limit": 10}))
            .await
            .unwrap();
        let s = wa.expect("sync", T).await.unwrap();
        for c in s["conversations"].as_array().unwrap() {
            for m in c["messages"].as_array().unwrap() {
                got.push(m["body"].as_str().unwrap().to_string());
                cursors.insert(c["id"].to_string(), m["seq"].as_i64().unwrap());
            }
        }
        if s["more"] == json!(false) {
            break;
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("missed {i}")).collect();
    assert_eq!(got, want);
    drop(node);
    db.drop_now().await.unwrap();
}

/// A client that never reads while others flood its conversation is closed with 4001;
/// the node's memory stays bounded and the other clients keep getting messages.
#[actix_rt::test]
async fn slow_consumer_is_closed_with_4001() {
    // A process: the test reads the node's memory, apart from its own.
    let db = TestDb::create().await.expect("create test database");
    let settings = [
        ("CHAT__LIMITS__OUTBOUND_QUEUE", "64"),
        ("CHAT__LIMITS__SENDS_PER_SEC", "100000"),
        ("CHAT__LIMITS__MAX_MESSAGE_BYTES", "65536"),
    ];
    let node = process_node(&db, "node-1", &settings).await;
    let api = node.api();
    let slow = user(&api, "slow").await.unwrap();
    let fast = user(&api, "fast").await.unwrap();
    let flood = user(&api, "flood").await.unwrap();
    let conv = api
        .group(&flood.token, "busy", &[slow.id, fast.id])
        .await
        .unwrap();
    let mut ws_slow = ws(&node, &slow.token).await;
    let mut ws_fast = ws(&node, &fast.token).await;
    let mut ws_flood = ws(&node, &flood.token).await;
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0)
    };
    let pid = node.pid().unwrap();
    let before = rss(pid);

    // 3000 messages of 16 KiB: ~48 MiB that the slow client never reads. The fast
    // client reads all the time; the flooder sends in windows of 32 and reads its acks.
    let body = "z".repeat(16 * 1024);
    let total = 3000usize;
    let reader = actix_rt::spawn(async move {
        let mut seen = 0;
        while seen < total {
            let v = ws_fast
                .expect("msg", Duration::from_secs(30))
                .await
                .expect("fast client gets every message");
            assert_eq!(v["type"], "msg");
            seen += 1;
        }
        seen
    });
    let mut peak = before;
    for window in 0..total / 32 + 1 {
        let n = (total - window * 32).min(32);
        for i in 0..n {
            ws_flood
                .send_msg(conv, &format!("f{window}-{i}"), &body)
                .await
                .unwrap();
        }
        for _ in 0..n {
            ws_flood.expect("ack", T).await.unwrap();
        }
        peak = peak.max(rss(pid));
    }
    assert_eq!(reader.await.unwrap(), total);
    // The slow one, once it reads, finds itself closed with 4001.
    assert_eq!(
        ws_slow.until_close(Duration::from_secs(30)).await.unwrap(),
        Some(4001)
    );
    let metrics = api.get("/metrics", None).await.unwrap().1;
    assert!(metrics
        .as_str()
        .unwrap_or("")
        .contains("chat_slow_consumer_closes_total 1"));
    // Bounded memory: far less than the ~48 MiB flood (RSS in KiB).
    assert!(
        peak.saturating_sub(before) < 40 * 1024,
        "rss grew from {before} KiB to {peak} KiB"
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_conversation_keeps_a_bounded_queue_of_waiting_sends_and_refuses_past_it() {
    let (db, node) = node_with(&[
        ("CHAT__LIMITS__SENDS_PER_SEC", "100000"),
        ("CHAT__LIMITS__OUTBOUND_QUEUE", "8192"),
    ])
    .await;
    let api = node.api();
    let a = user(&api, "queue-a").await.unwrap();
    let b = user(&api, "queue-b").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    // Another writer holds the conversation's row: the node's commits of it wait.
    let mut c = db.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE",
        &[&conv],
    )
    .await
    .unwrap();
    let mut w = ws(&node, &a.token).await;
    let n = chat_actors::conversation::MAX_PENDING_SENDS + 600;
    for i in 0..n {
        w.send_msg(conv, &format!("q-{i}"), "x").await.unwrap();
    }
    let (mut acked, mut limited) = (BTreeMap::new(), BTreeSet::new());
    fn collect(v: Value, acked: &mut BTreeMap<String, i64>, limited: &mut BTreeSet<String>) {
        match v["type"].as_str() {
            Some("ack") => {
                let seq = v["seq"].as_i64().unwrap();
                acked.insert(v["cid"].as_str().unwrap().to_string(), seq);
            }
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                limited.insert(v["ref"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        match w.recv(Duration::from_millis(200)).await {
            Ok(Incoming::Json(v)) => collect(v, &mut acked, &mut limited),
            Ok(other) => panic!("connection ended: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(acked.is_empty(), "nothing commits while the row is held");
    assert!(
        limited.len() >= 500,
        "the sends past the queue's bound are refused at once: {}",
        limited.len()
    );
    tx.rollback().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.len() + limited.len() < n && std::time::Instant::now() < deadline {
        if let Ok(Incoming::Json(v)) = w.recv(Duration::from_millis(500)).await {
            collect(v, &mut acked, &mut limited);
        }
    }
    assert_eq!(acked.len() + limited.len(), n, "every send answered once");
    assert_eq!(rows(&db, conv).await.unwrap(), acked.len() as i64);
    let stored: BTreeSet<String> = db
        .stored(conv)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, cid)| cid)
        .collect();
    assert!(
        limited.iter().all(|cid| !stored.contains(cid)),
        "a refused send is not stored"
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_client_that_asks_for_big_answers_and_never_reads_is_closed_at_the_byte_bound() {
    let (db, node) = node_with(&[
        ("CHAT__LIMITS__SENDS_PER_SEC", "100000"),
        ("CHAT__LIMITS__OUTBOUND_QUEUE", "100000"),
        ("CHAT__LIMITS__OUTBOUND_QUEUE_BYTES", "1048576"),
        ("CHAT__LIMITS__MAX_SYNC_BYTES", "262144"),
    ])
    .await;
    let api = node.api();
    let a = user(&api, "hoarder").await.unwrap();
    let b = user(&api, "filler").await.unwrap();
    let conv = api.direct(&b.token, a.id).await.unwrap();
    let body = "y".repeat(10_000);
    for i in 0..10 {
        let (s, _) = api
            .send(&b.token, conv, &format!("f-{i}"), &body)
            .await
            .unwrap();
        assert_eq!(s, 201);
    }
    let mut w = ws(&node, &a.token).await;
    // 400 syncs of about 100 KB each, and never a read: 40 MB the node must not hold.
    for _ in 0..400 {
        if w.send_json(&json!({"type": "sync", "cursors": {}}))
            .await
            .is_err()
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let code = w.until_close(Duration::from_secs(20)).await.unwrap();
    assert_eq!(code, Some(4001), "closed as a slow consumer");
    drop(node);
    db.drop_now().await.unwrap();
}
