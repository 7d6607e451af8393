//! Group management, message kinds, mentions, edits, recalls and reactions, through
//! real node processes on a real Redis bus and Postgres: every change is an entry of
//! the conversation's seq stream, seen live (push) and later (sync, history).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

use chat_testkit::{Api, Endpoint, Incoming, Node, NodeOptions, RedisServer, TestDb, WsClient};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// `n` nodes on one database and one Redis bus, with extra settings.
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

async fn ws(node: &Node, token: &str) -> WsClient {
    let (mut ws, _) = WsClient::connect_hello(&node.ws_url(token)).await.unwrap();
    // The bus confirms the user's channels shortly after the handshake.
    let _ = frames_for(&mut ws, Duration::from_millis(300)).await;
    ws
}

/// Every JSON frame that arrives within `d`.
async fn frames_for(ws: &mut WsClient, d: Duration) -> Vec<Value> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        match ws.recv(left).await {
            Ok(Incoming::Json(v)) => out.push(v),
            _ => return out,
        }
    }
}

/// The next `msg` frame of `conv` with seq `seq`.
async fn expect_msg(ws: &mut WsClient, conv: i64, seq: i64) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = ws.expect("msg", left).await.unwrap();
        if v["conv"] == conv && v["seq"] == seq {
            return v;
        }
    }
}

async fn send_json(api: &Api, token: &str, conv: i64, body: &Value) -> (u16, Value) {
    api.post(
        &format!("/api/v1/conversations/{conv}/messages"),
        Some(token),
        body,
    )
    .await
    .unwrap()
}

async fn history(api: &Api, token: &str, conv: i64) -> (u16, Value) {
    api.get(
        &format!("/api/v1/conversations/{conv}/messages"),
        Some(token),
    )
    .await
    .unwrap()
}

async fn conversation(api: &Api, token: &str, conv: i64) -> Option<Value> {
    let (s, list) = api.get("/api/v1/conversations", Some(token)).await.unwrap();
    assert_eq!(s, 200, "{list}");
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conv)
        .cloned()
}

async fn last_seq(db: &TestDb, conv: i64) -> i64 {
    let client = db.client().await.unwrap();
    let row = client
        .query_one("SELECT last_seq FROM conversations WHERE id = $1", &[&conv])
        .await
        .unwrap();
    row.get(0)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[actix_rt::test]
async fn members_added_and_removed_on_one_node_are_pushed_and_refused_on_the_other() {
    let (db, _redis, nodes) = cluster(2, &[]).await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let (alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let (carol, tc) = b.register("carol").await.unwrap();
    let group = a.group(&ta, "team", &[bob]).await.unwrap();
    for i in 0..3 {
        a.send(&ta, group, &format!("before-{i}"), "before carol")
            .await
            .unwrap();
    }
    // Carol is online on node B only; she is added through node A.
    let mut wc = ws(&nodes[1], &tc).await;
    let (s, body) = a
        .post(
            &format!("/api/v1/conversations/{group}/members"),
            Some(&ta),
            &json!({"users": [carol]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let members: Vec<i64> = body["conversation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_i64().unwrap())
        .collect();
    assert!(members.contains(&carol), "{members:?}");
    let joined = wc.expect("joined", T).await.unwrap();
    assert_eq!(joined["conv"], group);
    assert_eq!(joined["conversation"]["role"], "member");
    // `joined` shows the group as it is, the entry that added her last; what follows
    // is pushed (what came before, sync has).
    let added = &joined["conversation"]["last_message"];
    assert_eq!(added["seq"], 4);
    assert_eq!(added["kind"], "system");
    assert_eq!(joined["conversation"]["preview"], "[added]");
    assert_eq!(added["system"]["action"], "added");
    assert_eq!(added["system"]["actor"], alice);
    assert_eq!(added["system"]["users"], json!([carol]));
    a.send(&ta, group, "after-1", "welcome").await.unwrap();
    let m = expect_msg(&mut wc, group, 5).await;
    assert_eq!(m["body"], "welcome");
    // History and sync start where she joined.
    let (s, h) = history(&b, &tc, group).await;
    assert_eq!(s, 200, "{h}");
    let seqs: Vec<i64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        vec![4, 5],
        "carol reads from the entry that added her"
    );
    assert_eq!(h["oldest_retained_seq"], 4);
    let (s, sy) = b.post("/api/v1/sync", Some(&tc), &json!({})).await.unwrap();
    assert_eq!(s, 200);
    let c = sy["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == group)
        .cloned()
        .unwrap();
    assert_eq!(c["messages"][0]["seq"], 4);
    // The added entry and later ones do not count for her; only alice's message.
    assert_eq!(c["unread"], 1);
    let (s, _) = b.send(&tc, group, "c-1", "hi all").await.unwrap();
    assert_eq!(s, 201);

    // Bob is online on node A; carol is removed through node B by alice.
    let mut wb = ws(&nodes[0], &tb).await;
    let (s, body) = b
        .delete(
            &format!("/api/v1/conversations/{group}/members/{carol}"),
            Some(&ta),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let removed = expect_msg(&mut wb, group, 7).await;
    assert_eq!(removed["system"]["action"], "removed");
    // Carol hears it once more, then `left`, then nothing of the group.
    let left = wc.expect("left", T).await.unwrap();
    assert_eq!(left["conv"], group);
    a.send(&ta, group, "after-2", "carol is gone")
        .await
        .unwrap();
    expect_msg(&mut wb, group, 8).await;
    let later = frames_for(&mut wc, Duration::from_millis(800)).await;
    assert!(
        !later.iter().any(|f| f["type"] == "msg" && f["seq"] == 8),
        "a removed member gets no pushes: {later:?}"
    );
    // Refused on both nodes: send, read, history; sync no longer lists it.
    for api in [&a, &b] {
        let (s, body) = api.send(&tc, group, "c-2", "still here?").await.unwrap();
        assert_eq!((s, code(&body)), (403, "not_member"), "{body}");
        let (s, _) = api.read(&tc, group, 8).await.unwrap();
        assert_eq!(s, 403);
        let (s, _) = history(api, &tc, group).await;
        assert_eq!(s, 403);
        let (_, sy) = api
            .post(
                "/api/v1/sync",
                Some(&tc),
                &json!({"cursors": {group.to_string(): 5}}),
            )
            .await
            .unwrap();
        assert!(
            !sy["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == group),
            "{sy}"
        );
    }
    // A client that was away learns both from its own stream.
    let (_, sy) = a.post("/api/v1/sync", Some(&tc), &json!({})).await.unwrap();
    let kinds: Vec<(String, i64)> = sy["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"]["kind"].as_str().unwrap().to_string(),
                e["event"]["conv"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("joined".to_string(), group), ("left".to_string(), group)],
        "{sy}"
    );
    wc.send_json(&json!({"type": "send", "conv": group, "cid": "c-3", "body": "x"}))
        .await
        .unwrap();
    let err = wc.expect("error", T).await.unwrap();
    assert_eq!(err["code"], "not_member");
    assert_eq!(
        last_seq(&db, group).await,
        8,
        "nothing stored by the refusals"
    );
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn roles_decide_who_manages_and_an_owner_who_leaves_hands_over() {
    let (db, _redis, nodes) = cluster(1, &[("CHAT__LIMITS__MAX_GROUP_MEMBERS", "4")]).await;
    let api = nodes[0].api();
    let (alice, ta) = api.register("alice").await.unwrap();
    let (bob, tb) = api.register("bob").await.unwrap();
    let (carol, tc) = api.register("carol").await.unwrap();
    let (dave, _) = api.register("dave").await.unwrap();
    let (erin, _) = api.register("erin").await.unwrap();
    let group = api.group(&ta, "team", &[bob, carol]).await.unwrap();
    let members = format!("/api/v1/conversations/{group}/members");
    let c = conversation(&api, &ta, group).await.unwrap();
    assert_eq!(c["role"], "owner");
    // A member cannot add, rename, remove or change roles.
    let (s, body) = api
        .post(&members, Some(&tb), &json!({"users": [dave]}))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    let (s, _) = api
        .patch(
            &format!("/api/v1/conversations/{group}"),
            Some(&tb),
            &json!({"title": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, _) = api
        .delete(&format!("{members}/{carol}"), Some(&tb))
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, _) = api
        .put(
            &format!("{members}/{carol}/role"),
            Some(&tb),
            &json!({"role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    assert_eq!(last_seq(&db, group).await, 0, "refusals store nothing");
    // The owner makes bob an admin; bob adds and renames, but cannot remove the owner
    // or change roles.
    let (s, body) = api
        .put(
            &format!("{members}/{bob}/role"),
            Some(&ta),
            &json!({"role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let (s, body) = api
        .post(&members, Some(&tb), &json!({"users": [dave]}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let (s, body) = api
        .patch(
            &format!("/api/v1/conversations/{group}"),
            Some(&tb),
            &json!({"title": "Team 2"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, body["conversation"]["title"].as_str()),
        (200, Some("Team 2")),
        "{body}"
    );
    let (s, _) = api
        .delete(&format!("{members}/{alice}"), Some(&tb))
        .await
        .unwrap();
    assert_eq!(s, 403, "an admin does not remove the owner");
    let (s, _) = api
        .put(
            &format!("{members}/{carol}/role"),
            Some(&tb),
            &json!({"role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 403, "only the owner changes roles");
    // Bad input: past the size limit, unknown users, a direct conversation.
    let (s, body) = api
        .post(&members, Some(&ta), &json!({"users": [erin]}))
        .await
        .unwrap();
    assert_eq!(
        (s, code(&body)),
        (409, "conflict"),
        "4 members is the limit: {body}"
    );
    let (s, body) = api
        .post(&members, Some(&ta), &json!({"users": [999_999]}))
        .await
        .unwrap();
    assert_eq!((s, code(&body)), (404, "not_found"), "{body}");
    let (s, _) = api
        .post(&members, Some(&ta), &json!({"users": "bob"}))
        .await
        .unwrap();
    assert_eq!(s, 400);
    let direct = api.direct(&ta, bob).await.unwrap();
    let (s, _) = api
        .post(
            &format!("/api/v1/conversations/{direct}/members"),
            Some(&ta),
            &json!({"users": [carol]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "a direct conversation has no members to manage");
    // Carol leaves; then the owner leaves and bob, the admin, owns the group.
    let (s, _) = api
        .post(
            &format!("/api/v1/conversations/{group}/leave"),
            Some(&tc),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(
        conversation(&api, &tc, group).await.is_none(),
        "gone from carol's list"
    );
    let (s, _) = api
        .post(
            &format!("/api/v1/conversations/{group}/leave"),
            Some(&ta),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let c = conversation(&api, &tb, group).await.unwrap();
    assert_eq!(c["role"], "owner", "the admin takes over: {c}");
    let (_, h) = history(&api, &tb, group).await;
    let actions: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["system"]["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "role_changed",
            "added",
            "renamed",
            "left",
            "left",
            "role_changed"
        ],
        "every change is an entry of the stream"
    );
    assert_eq!(c["unread"], 0, "system entries are never unread");
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn each_kind_takes_its_attachment_and_bad_ones_store_nothing() {
    let (db, _redis, nodes) = cluster(1, &[("CHAT__LIMITS__MAX_ATTACHMENT_SIZE", "1000000")]).await;
    let api = nodes[0].api();
    let (_, ta) = api.register("alice").await.unwrap();
    let (bob, tb) = api.register("bob").await.unwrap();
    let conv = api.direct(&ta, bob).await.unwrap();
    let url = "https://files.example.com/x";
    let good = [
        json!({"kind": "image", "body": "look", "attach": {"url": url, "mime": "image/png", "width": 640, "height": 480}}),
        json!({"kind": "file", "attach": {"url": url, "name": "report.pdf", "size": 1234, "mime": "application/pdf"}}),
        json!({"kind": "audio", "attach": {"url": url, "mime": "audio/ogg", "duration_ms": 3000}}),
        json!({"kind": "video", "attach": {"url": url, "mime": "video/mp4", "duration_ms": 9000, "size": 99}}),
        json!({"kind": "location", "attach": {"lat": 52.52, "lon": 13.40, "name": "Berlin"}}),
        json!({"kind": "custom", "attach": {"data": {"card": "order", "id": 7}}}),
    ];
    for (i, g) in good.iter().enumerate() {
        let mut body = g.clone();
        body["cid"] = json!(format!("g{i}"));
        let (s, r) = send_json(&api, &ta, conv, &body).await;
        assert_eq!(s, 201, "{body} -> {r}");
    }
    let bad = [
        (
            json!({"kind": "image", "attach": {"url": url, "mime": "audio/ogg"}}),
            400,
        ),
        (
            json!({"kind": "image", "attach": {"url": "ftp://x/y", "mime": "image/png"}}),
            400,
        ),
        (json!({"kind": "image", "body": "no attachment"}), 400),
        (
            json!({"kind": "text", "body": "x", "attach": {"url": url}}),
            400,
        ),
        (
            json!({"kind": "file", "attach": {"url": url, "size": 10}}),
            400,
        ),
        (
            json!({"kind": "file", "attach": {"url": url, "name": "big", "size": 2_000_000}}),
            413,
        ),
        (
            json!({"kind": "audio", "attach": {"url": url, "mime": "audio/ogg"}}),
            400,
        ),
        (
            json!({"kind": "video", "attach": {"url": url, "mime": "video/mp4", "duration_ms": -1}}),
            400,
        ),
        (
            json!({"kind": "location", "attach": {"lat": 123.0, "lon": 0.0}}),
            400,
        ),
        (json!({"kind": "custom", "attach": {}}), 400),
        (
            json!({"kind": "custom", "attach": {"data": {"x": "y".repeat(5000)}}}),
            413,
        ),
        (
            json!({"kind": "image", "attach": {"url": url, "mime": "image/png", "script": 1}}),
            400,
        ),
        (json!({"kind": "system", "body": "forged"}), 400),
        (
            json!({"kind": "recall", "body": "forged", "target": 1}),
            400,
        ),
        (json!({"kind": "sticker", "body": "x"}), 400),
    ];
    for (i, (b, want)) in bad.iter().enumerate() {
        let mut body = b.clone();
        body["cid"] = json!(format!("b{i}"));
        let (s, r) = send_json(&api, &ta, conv, &body).await;
        assert_eq!(s, *want, "{body} -> {r}");
    }
    assert_eq!(last_seq(&db, conv).await, 6, "the bad sends stored nothing");
    let (_, h) = history(&api, &tb, conv).await;
    let kinds: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["image", "file", "audio", "video", "location", "custom"]
    );
    assert_eq!(h["messages"][1]["attach"]["name"], "report.pdf");
    // The list shows the last message's kind and a preview.
    let c = conversation(&api, &tb, conv).await.unwrap();
    assert_eq!(c["last_message"]["kind"], "custom");
    assert_eq!(c["preview"], "[custom]");
    assert_eq!(c["unread"], 6);
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn mentions_are_counted_like_unread_and_all_is_for_admins_in_large_groups() {
    let (db, _redis, nodes) = cluster(1, &[("CHAT__CHAT__MENTION_ALL_MAX_MEMBERS", "3")]).await;
    let api = nodes[0].api();
    let (_, ta) = api.register("alice").await.unwrap();
    let (bob, tb) = api.register("bob").await.unwrap();
    let (carol, tc) = api.register("carol").await.unwrap();
    let (dave, _) = api.register("dave").await.unwrap();
    let (outsider, _) = api.register("eve").await.unwrap();
    let group = api.group(&ta, "team", &[bob, carol]).await.unwrap();
    let sends = [
        json!({"cid": "m1", "body": "@bob look", "mentions": [bob]}),
        json!({"cid": "m2", "body": "plain"}),
        json!({"cid": "m3", "body": "@all", "mentions": [0]}),
        json!({"cid": "m4", "body": "@carol", "mentions": [carol]}),
        json!({"cid": "m5", "body": "@bob again", "mentions": [bob, carol]}),
    ];
    for b in &sends {
        let (s, r) = send_json(&api, &ta, group, b).await;
        assert_eq!(s, 201, "{r}");
    }
    let c = conversation(&api, &tb, group).await.unwrap();
    assert_eq!(
        (c["unread"].as_i64(), c["mentions_unread"].as_i64()),
        (Some(5), Some(3))
    );
    let c = conversation(&api, &tc, group).await.unwrap();
    assert_eq!(c["mentions_unread"], 3, "@all, @carol and the last");
    // Reading moves the mention count exactly as it moves unread.
    let (s, r) = api.read(&tb, group, 3).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        (r["unread"].as_i64(), r["mentions_unread"].as_i64()),
        (Some(2), Some(1))
    );
    let (_, sy) = api
        .post(
            "/api/v1/sync",
            Some(&tb),
            &json!({"cursors": {group.to_string(): 3}}),
        )
        .await
        .unwrap();
    assert_eq!(sy["conversations"][0]["mentions_unread"], 1);
    assert_eq!(
        sy["conversations"][0]["messages"][1]["mentions"],
        json!([bob, carol])
    );
    // A mention names a member; too many are refused.
    let (s, _) = send_json(
        &api,
        &ta,
        group,
        &json!({"cid": "x1", "body": "hey", "mentions": [outsider]}),
    )
    .await;
    assert_eq!(s, 400);
    let many: Vec<i64> = (1..=51).collect();
    let (s, _) = send_json(
        &api,
        &ta,
        group,
        &json!({"cid": "x2", "body": "hey", "mentions": many}),
    )
    .await;
    assert_eq!(s, 400);
    // With a fourth member the group is past 3: a member may no longer mention @all,
    // the owner still may.
    let (s, _) = api
        .post(
            &format!("/api/v1/conversations/{group}/members"),
            Some(&ta),
            &json!({"users": [dave]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (s, r) = send_json(
        &api,
        &tb,
        group,
        &json!({"cid": "b-all", "body": "@all", "mentions": [0]}),
    )
    .await;
    assert_eq!((s, code(&r)), (403, "forbidden"), "{r}");
    let (s, _) = send_json(
        &api,
        &ta,
        group,
        &json!({"cid": "a-all", "body": "@all", "mentions": [0]}),
    )
    .await;
    assert_eq!(s, 201);
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn edits_recalls_and_reactions_reach_online_and_offline_members_and_never_count() {
    let (db, _redis, nodes) = cluster(2, &[("CHAT__CHAT__RECALL_WINDOW", "2s")]).await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let (alice, ta) = a.register("alice").await.unwrap();
    let (bob, tb) = a.register("bob").await.unwrap();
    let (carol, tc) = a.register("carol").await.unwrap();
    let group = a.group(&ta, "team", &[bob, carol]).await.unwrap();
    // Bob is online on node B; carol is away.
    let mut wb = ws(&nodes[1], &tb).await;
    for (cid, body) in [("m1", "helo"), ("m2", "oops"), ("m3", "old")] {
        a.send(&ta, group, cid, body).await.unwrap();
    }
    let base = format!("/api/v1/conversations/{group}/messages");
    let (s, r) = a
        .patch(
            &format!("{base}/1"),
            Some(&ta),
            &json!({"cid": "e1", "body": "hello"}),
        )
        .await
        .unwrap();
    assert_eq!((s, r["seq"].as_i64()), (201, Some(4)), "{r}");
    // The same cid again is the same entry.
    let (s, r) = a
        .patch(
            &format!("{base}/1"),
            Some(&ta),
            &json!({"cid": "e1", "body": "hello"}),
        )
        .await
        .unwrap();
    assert_eq!((s, r["seq"].as_i64()), (200, Some(4)));
    let (s, r) = a
        .delete(&format!("{base}/2?cid=r1"), Some(&ta))
        .await
        .unwrap();
    assert_eq!((s, r["seq"].as_i64()), (201, Some(5)), "{r}");
    // Bob saw the edit and the recall live, as entries pointing at their targets.
    let edit = expect_msg(&mut wb, group, 4).await;
    assert_eq!(
        (edit["kind"].as_str(), edit["target"].as_i64()),
        (Some("edit"), Some(1))
    );
    assert_eq!(edit["body"], "hello");
    let recall = expect_msg(&mut wb, group, 5).await;
    assert_eq!(
        (recall["kind"].as_str(), recall["target"].as_i64()),
        (Some("recall"), Some(2))
    );
    // Reactions from three users, over HTTP and the socket; bob changes his mind once.
    let react =
        |seq: i64, emoji: &str, cid: &str| format!("{base}/{seq}/reactions/{emoji}?cid={cid}");
    let (s, _) = a
        .put(&react(1, "%F0%9F%91%8D", "x1"), Some(&ta), &json!({}))
        .await
        .unwrap();
    assert_eq!(s, 201);
    let pushed = expect_msg(&mut wb, group, 6).await;
    assert_eq!(pushed["reaction"], json!({"emoji": "👍", "on": true}));
    for (cid, emoji, on) in [("x2", "👍", true), ("x3", "🎉", true), ("x4", "🎉", false)] {
        wb.send_json(&json!({"type": "react", "conv": group, "target": 1, "cid": cid, "emoji": emoji, "on": on}))
            .await
            .unwrap();
        let ack = wb.expect("ack", T).await.unwrap();
        assert_eq!(ack["cid"], cid);
    }
    let (s, _) = b
        .put(&react(1, "%F0%9F%8E%89", "x5"), Some(&tc), &json!({}))
        .await
        .unwrap();
    assert_eq!(s, 201);
    expect_msg(&mut wb, group, 10).await;

    // Carol, offline all along, finds everything folded in by sync.
    let (_, sy) = b.post("/api/v1/sync", Some(&tc), &json!({})).await.unwrap();
    let c = &sy["conversations"][0];
    assert_eq!(c["unread"], 3, "only the three messages count: {c}");
    let msgs = c["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 10);
    assert_eq!(
        (msgs[0]["body"].as_str(), msgs[0]["edited"].as_bool()),
        (Some("hello"), Some(true))
    );
    assert_eq!(
        (msgs[1]["body"].as_str(), msgs[1]["recalled"].as_bool()),
        (Some(""), Some(true))
    );
    let reactions = &msgs[0]["reactions"];
    assert_eq!(
        reactions,
        &json!([{"emoji": "👍", "count": 2, "me": false}, {"emoji": "🎉", "count": 1, "me": true}]),
        "{msgs:?}"
    );
    // History as alice: the same, with her own reaction marked.
    let (_, h) = history(&a, &ta, group).await;
    assert_eq!(
        h["messages"][0]["reactions"][0],
        json!({"emoji": "👍", "count": 2, "me": true})
    );
    assert_eq!(
        h["messages"][1]["body"], "",
        "a recalled body is returned to nobody"
    );
    // The list's last message is the last one people wrote, as it stands.
    let conv = conversation(&a, &tc, group).await.unwrap();
    assert_eq!(conv["last_message"]["seq"], 3);
    assert_eq!(
        (conv["unread"].as_i64(), conv["mentions_unread"].as_i64()),
        (Some(3), Some(0))
    );

    // Refusals: another's message, a target that is not a message, out of range, a
    // recalled message, the recall window.
    let (s, r) = b
        .patch(
            &format!("{base}/1"),
            Some(&tb),
            &json!({"cid": "e2", "body": "mine"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&r)), (403, "forbidden"), "{r}");
    let (s, _) = a
        .patch(
            &format!("{base}/4"),
            Some(&ta),
            &json!({"cid": "e3", "body": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "an edit entry is not a message to edit");
    let (s, r) = a
        .patch(
            &format!("{base}/99"),
            Some(&ta),
            &json!({"cid": "e4", "body": "x"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&r)), (404, "not_found"), "{r}");
    let (s, _) = a
        .put(&react(2, "ok", "x6"), Some(&tb), &json!({}))
        .await
        .unwrap();
    assert_eq!(s, 400, "no reaction on a recalled message");
    let (s, _) = a
        .put(&react(1, "a%20b", "x7"), Some(&tb), &json!({}))
        .await
        .unwrap();
    assert_eq!(s, 400, "not an emoji");
    let (s, _) = a
        .delete(&format!("{base}/1?cid=r2"), Some(&tb))
        .await
        .unwrap();
    assert_eq!(s, 403, "a member recalls only their own");
    let (_, r) = a.send(&tb, group, "b1", "bob's").await.unwrap();
    let seq = r["seq"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let before = last_seq(&db, group).await;
    let (s, r) = a
        .delete(&format!("{base}/{seq}?cid=r3"), Some(&tb))
        .await
        .unwrap();
    assert_eq!(
        (s, code(&r)),
        (403, "forbidden"),
        "past the recall window: {r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recall window"),
        "{r}"
    );
    assert_eq!(last_seq(&db, group).await, before, "refusals store nothing");
    // The owner, an admin of the group, still recalls it.
    let (s, _) = a
        .delete(&format!("{base}/{seq}?cid=r4"), Some(&ta))
        .await
        .unwrap();
    assert_eq!(s, 201, "admins recall any message");
    // Bob (online) read everything; what carol sees unread is still just messages.
    let conv = conversation(&a, &tc, group).await.unwrap();
    assert_eq!(conv["unread"], 4);
    let _ = (alice, carol);
    drop(nodes);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_blocked_user_cannot_send_into_the_direct_conversation() {
    let (db, _redis, nodes) = cluster(1, &[]).await;
    let api = nodes[0].api();
    let (alice, ta) = api.register("alice").await.unwrap();
    let (bob, tb) = api.register("bob").await.unwrap();
    let conv = api.direct(&ta, bob).await.unwrap();
    let client = db.client().await.unwrap();
    client
        .execute(
            "INSERT INTO blocks (blocker, blocked) VALUES ($1, $2)",
            &[&alice, &bob],
        )
        .await
        .unwrap();
    let (s, r) = api.send(&tb, conv, "b1", "hello?").await.unwrap();
    assert_eq!((s, code(&r)), (403, "forbidden"), "{r}");
    // The one who blocked may still write.
    let (s, _) = api.send(&ta, conv, "a1", "bye").await.unwrap();
    assert_eq!(s, 201);
    assert_eq!(last_seq(&db, conv).await, 1);
    drop(nodes);
    db.drop_now().await.unwrap();
}
