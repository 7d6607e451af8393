//! The HTTP API of one node against a real Postgres, over real sockets: a node run in
//! this process, or a node process where its log or a second node is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

mod common;
use base64::Engine;
use chat_testkit::fixtures::{code, mint, now, rows, user};
use chat_testkit::process::SERVICE_KEY;
use chat_testkit::{Endpoint, TestDb};
use common::{node, node_with, process_node};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

#[actix_rt::test]
async fn register_login_me_and_token_checks() {
    // A process: the test reads what the node logged.
    let db = TestDb::create().await.expect("create test database");
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();

    // Duplicate username, bad username, short password.
    let (s, b) = api
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"username": "alice", "password": "another-pass"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (409, "conflict"));
    for (name, pass) in [
        ("Al", "password1"),
        ("UPPER", "password1"),
        ("ok_name", "short"),
    ] {
        let (s, b) = api
            .post(
                "/api/v1/auth/register",
                None,
                &json!({"username": name, "password": pass}),
            )
            .await
            .unwrap();
        assert_eq!((s, code(&b)), (400, "bad_request"), "{name}/{pass}");
    }

    // Login: right, wrong, unknown.
    let (s, b) = api
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "alice", "password": "password-alice"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(b["user_id"], alice.id);
    let login_token = b["token"].as_str().unwrap().to_string();
    for (name, pass) in [("alice", "wrong-password"), ("nobody", "password-x")] {
        let (s, b) = api
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": name, "password": pass}),
            )
            .await
            .unwrap();
        assert_eq!((s, code(&b)), (401, "unauthorized"));
    }

    let (s, me) = api.get("/api/v1/me", Some(&login_token)).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(me["username"], "alice");
    assert_eq!(
        me["attributes"],
        json!({"org": null, "roles": [], "jobs": []})
    );

    // Missing, garbage, tampered, expired and alg-none tokens.
    let (s, b) = api.get("/api/v1/me", None).await.unwrap();
    assert_eq!((s, code(&b)), (401, "unauthorized"));
    let (s, _) = api.get("/api/v1/me", Some("not-a-token")).await.unwrap();
    assert_eq!(s, 401);
    let mut tampered = alice.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (s, _) = api.get("/api/v1/me", Some(&tampered)).await.unwrap();
    assert_eq!(s, 401);
    let expired = mint(&alice.id.to_string(), now() - 7200, now() - 3600).unwrap();
    let (s, b) = api.get("/api/v1/me", Some(&expired)).await.unwrap();
    assert_eq!((s, code(&b)), (401, "unauthorized"));
    assert!(b["error"]["message"].as_str().unwrap().contains("expired"));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(
            json!({"sub": alice.id.to_string(), "iat": now(), "exp": now() + 3600}).to_string()
        )
    );
    let (s, _) = api.get("/api/v1/me", Some(&none)).await.unwrap();
    assert_eq!(s, 401);
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": alice.id.to_string(), "iat": now(), "exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-entirely"),
    )
    .unwrap();
    let (s, b) = api.get("/api/v1/me", Some(&wrong_key)).await.unwrap();
    assert_eq!(s, 401);
    assert_eq!(
        b["error"]["message"], "invalid token",
        "the secret is not discussed"
    );

    // Claims of a holder of the secret in the wrong shape are named.
    let signed = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(chat_testkit::process::TEST_SECRET.as_bytes()),
        )
        .unwrap()
    };
    for (claims, says) in [
        (
            json!({"sub": alice.id, "iat": now(), "exp": now() + 60}),
            "decimal string",
        ),
        (
            json!({"sub": alice.id.to_string(), "exp": now() + 60}),
            "iat",
        ),
        (json!({"iat": now(), "exp": now() + 60}), "sub is missing"),
        (
            json!({"sub": "-3", "iat": now(), "exp": now() + 60}),
            "positive user id",
        ),
    ] {
        let (s, b) = api
            .get("/api/v1/me", Some(&signed(claims.clone())))
            .await
            .unwrap();
        assert_eq!((s, code(&b)), (401, "unauthorized"), "{claims}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{claims}: {message}");
    }

    // `chat-node mint-token` mints what the node takes.
    let out = std::process::Command::new(chat_testkit::process::node_bin())
        .args([
            "mint-token",
            "--user",
            &alice.id.to_string(),
            "--ttl",
            "10m",
        ])
        .env("CHAT__AUTH__JWT_SECRET", chat_testkit::process::TEST_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, me) = api.get("/api/v1/me", Some(&minted)).await.unwrap();
    assert_eq!((s, me["id"].as_i64()), (200, Some(alice.id)));
    // A token in the query string of a refused handshake stays out of the log too.
    let (s, _) = api
        .get(&format!("/ws?token={wrong_key}"), None)
        .await
        .unwrap();
    assert_eq!(s, 401);

    // The access log: route patterns, statuses, callers, reasons of refusals, and no
    // colour codes in a file.
    let log = node.log_text();
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a log file");
    assert!(
        log.lines().any(|l| l.contains("chat_node::access")
            && l.contains("route=/api/v1/me")
            && l.contains("status=200")
            && l.contains(&format!("user={}", alice.id))),
        "an access line of GET /me"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("route=/api/v1/me")
            && l.contains("status=401")
            && l.contains("reason=token expired")),
        "a warning with the reason of a refusal"
    );
    assert!(
        log.contains("signature does not match auth.jwt_secret"),
        "the log says why"
    );
    assert!(log.contains("route=/ws") && log.contains("status=401"));
    let (_, metrics) = api.get("/metrics", None).await.unwrap();
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chat_http_requests_total{")
                && l.contains(r#"route="/api/v1/me""#)
                && l.contains(r#"status="401""#)),
        "requests counted by route pattern and status"
    );
    assert!(metrics.contains("chat_http_request_duration_seconds_bucket{"));

    // Tokens and passwords never reach the log.
    assert!(!log.contains(&alice.token) && !log.contains("password-alice"));
    assert!(!log.contains(&wrong_key) && !log.contains(&minted));
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn provisioned_users_and_company_tokens() {
    let (db, node) = node().await;
    let api = node.api();
    let body = json!({"external_id": "emp-42", "username": "carol", "display_name": "Carol C",
                      "attributes": {"org": 1, "roles": [3], "jobs": ["7"]}});
    let (s, b) = api
        .post("/api/v1/users", Some(SERVICE_KEY), &body)
        .await
        .unwrap();
    assert_eq!(s, 201, "{b}");
    let id = b["user_id"].as_i64().unwrap();
    let (s, b) = api
        .post("/api/v1/users", Some(SERVICE_KEY), &body)
        .await
        .unwrap();
    assert_eq!((s, b["user_id"].as_i64()), (200, Some(id)));

    // A token minted by the company's backend works like the node's own.
    let token = mint(&id.to_string(), now(), now() + 600).unwrap();
    let (s, me) = api.get("/api/v1/me", Some(&token)).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(me["display_name"], "Carol C");
    assert_eq!(
        me["attributes"],
        json!({"org": "1", "roles": ["3"], "jobs": ["7"]})
    );
    // A provisioned user has no password to log in with.
    let (s, _) = api
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "carol", "password": ""}),
        )
        .await
        .unwrap();
    assert_eq!(s, 401);

    // Service calls need the service key; user calls need a user token.
    let (s, b) = api
        .post("/api/v1/users", Some(&token), &body)
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (403, "forbidden"));
    let (s, b) = api.get("/api/v1/me", Some(SERVICE_KEY)).await.unwrap();
    assert_eq!((s, code(&b)), (403, "forbidden"));
    // Another external id with a taken username conflicts.
    let (s, b) = api
        .post(
            "/api/v1/users",
            Some(SERVICE_KEY),
            &json!({"external_id": "emp-43", "username": "carol"}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (409, "conflict"));
    // A token for a user that does not exist is refused.
    let ghost = mint("999999", now(), now() + 600).unwrap();
    let (s, _) = api.get("/api/v1/me", Some(&ghost)).await.unwrap();
    assert_eq!(s, 401);

    let (s, b) = api.get("/api/v1/users?q=car", Some(&token)).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(b["users"][0]["username"], "carol");
    let (s, b) = api.get("/api/v1/users?q=c%25", Some(&token)).await.unwrap();
    assert_eq!(
        (s, b["users"].as_array().map(Vec::len)),
        (200, Some(0)),
        "LIKE wildcards are escaped"
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn direct_chat_history_unread_and_sync() {
    let (db, node) = node().await;
    let api = node.api();
    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();

    let (s, b) = api
        .post(
            "/api/v1/conversations",
            Some(&alice.token),
            &json!({"kind": "direct", "peer": bob.id}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    let conv = b["conversation"]["id"].as_i64().unwrap();
    assert_eq!(b["conversation"]["members"], json!([alice.id, bob.id]));
    // Created twice (from either side): one conversation.
    let (s, b) = api
        .post(
            "/api/v1/conversations",
            Some(&bob.token),
            &json!({"kind": "direct", "peer": alice.id}),
        )
        .await
        .unwrap();
    assert_eq!((s, b["conversation"]["id"].as_i64()), (200, Some(conv)));

    // Send, and retry the same cid: same seq, one row.
    let (s, first) = api
        .send(&alice.token, conv, "c-1", "hello bob")
        .await
        .unwrap();
    assert_eq!(s, 201);
    assert_eq!(first["seq"], 1);
    let (s, again) = api
        .send(&alice.token, conv, "c-1", "hello bob")
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(again, first);
    assert_eq!(rows(&db, conv).await.unwrap(), 1);

    // Unread: 1 for bob, 0 for alice (own messages are never unread).
    let (_, u) = api.get("/api/v1/unread", Some(&bob.token)).await.unwrap();
    assert_eq!(
        u,
        json!({"total": 1, "conversations": {conv.to_string(): 1}})
    );
    let (_, u) = api.get("/api/v1/unread", Some(&alice.token)).await.unwrap();
    assert_eq!(u["total"], 0);
    let (_, list) = api
        .get("/api/v1/conversations", Some(&bob.token))
        .await
        .unwrap();
    assert_eq!(list["total_unread"], 1);
    assert_eq!(
        list["conversations"][0]["last_message"]["body"],
        "hello bob"
    );

    let (s, r) = api.read(&bob.token, conv, 1).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        r,
        json!({"read_seq": 1, "unread": 0, "mentions_unread": 0, "total_unread": 0})
    );

    // More messages; bob's reply moves his own cursor past alice's earlier ones.
    for i in 2..=6 {
        api.send(&alice.token, conv, &format!("c-{i}"), &format!("m{i}"))
            .await
            .unwrap();
    }
    let (s, b) = api.send(&bob.token, conv, "b-1", "reply").await.unwrap();
    assert_eq!((s, b["seq"].as_i64()), (201, Some(7)));
    let (_, u) = api.get("/api/v1/unread", Some(&bob.token)).await.unwrap();
    assert_eq!(u["total"], 0, "sending moves the sender's read cursor");
    let (_, u) = api.get("/api/v1/unread", Some(&alice.token)).await.unwrap();
    assert_eq!(u["total"], 1);

    // read_seq sent backwards stays where it was.
    let (_, r) = api.read(&bob.token, conv, 2).await.unwrap();
    assert_eq!(r["read_seq"], 7);
    // Beyond last_seq it stops at last_seq.
    let (_, r) = api.read(&alice.token, conv, 1000).await.unwrap();
    assert_eq!(
        (r["read_seq"].as_i64(), r["unread"].as_i64()),
        (Some(7), Some(0))
    );

    // History pages, newest first page, ascending inside.
    let (s, h) = api
        .get(
            &format!("/api/v1/conversations/{conv}/messages?limit=3"),
            Some(&bob.token),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let seqs: Vec<i64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 6, 7]);
    assert_eq!(h["oldest_retained_seq"], 1);
    let (_, h) = api
        .get(
            &format!("/api/v1/conversations/{conv}/messages?limit=3&before_seq=5"),
            Some(&bob.token),
        )
        .await
        .unwrap();
    let seqs: Vec<i64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);

    // Sync with a limit smaller than the backlog: every message once, in order.
    let mut cursors = BTreeMap::new();
    let got = api.sync_all(&bob.token, &mut cursors, 2).await.unwrap();
    let seqs: Vec<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(cursors.get(&conv), Some(&7));
    // From the new cursors, nothing more.
    let again = api.sync_all(&bob.token, &mut cursors, 2).await.unwrap();
    assert!(again.is_empty());
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn groups_and_unread_arithmetic() {
    let (db, node) = node().await;
    let api = node.api();
    let a = user(&api, "anna").await.unwrap();
    let b = user(&api, "bert").await.unwrap();
    let c = user(&api, "cleo").await.unwrap();
    let g = api
        .group(&a.token, "team", &[b.id, c.id, b.id])
        .await
        .unwrap();
    let d = api.direct(&b.token, c.id).await.unwrap();
    api.send(&a.token, g, "a1", "x").await.unwrap();
    api.send(&a.token, g, "a2", "x").await.unwrap();
    api.send(&b.token, g, "b1", "x").await.unwrap();
    api.send(&b.token, d, "b2", "x").await.unwrap();
    let (_, u) = api.get("/api/v1/unread", Some(&c.token)).await.unwrap();
    assert_eq!(
        u,
        json!({"total": 4, "conversations": {g.to_string(): 3, d.to_string(): 1}})
    );
    let (_, u) = api.get("/api/v1/unread", Some(&a.token)).await.unwrap();
    assert_eq!(u, json!({"total": 1, "conversations": {g.to_string(): 1}}));
    let (_, u) = api.get("/api/v1/unread", Some(&b.token)).await.unwrap();
    assert_eq!(u["total"], 0);
    let (_, list) = api
        .get("/api/v1/conversations", Some(&c.token))
        .await
        .unwrap();
    let ids: Vec<i64> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![d, g], "newest activity first");
    let (_, first) = api
        .get("/api/v1/conversations?limit=1", Some(&c.token))
        .await
        .unwrap();
    assert_eq!(first["conversations"][0]["id"], d);
    let cursor = first["next_before"].as_str().unwrap().to_string();
    let (_, page) = api
        .get(
            &format!("/api/v1/conversations?limit=1&before={cursor}"),
            Some(&c.token),
        )
        .await
        .unwrap();
    assert_eq!(page["conversations"][0]["id"], g);
    assert_eq!(
        page["conversations"][0]["members"],
        json!([a.id, b.id, c.id])
    );
    // Unknown members are refused and nothing is created.
    let (s, bd) = api
        .post(
            "/api/v1/conversations",
            Some(&a.token),
            &json!({"kind": "group", "title": "x", "members": [987654]}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&bd)), (404, "not_found"));
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (db, node) = node_with(&[
        ("CHAT__LIMITS__MAX_BODY_BYTES", "4096"),
        ("CHAT__LIMITS__MAX_MESSAGE_BYTES", "1000"),
    ])
    .await;
    let api = node.api();
    let a = user(&api, "amy").await.unwrap();
    let b = user(&api, "ben").await.unwrap();
    let outsider = user(&api, "out").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    api.send(&a.token, conv, "ok-1", "fine").await.unwrap();
    let path = format!("/api/v1/conversations/{conv}/messages");

    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "malformed json",
            b"{\"cid\": ".to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "wrong types",
            br#"{"cid": 5, "body": ["x"]}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "missing field",
            br#"{"cid": "x1"}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "bad tier",
            br#"{"cid": "x1", "body": "b", "tier": "gold"}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "bad cid",
            br#"{"cid": "has space", "body": "b"}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "empty body",
            br#"{"cid": "x2", "body": ""}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "reply_to unknown",
            br#"{"cid": "x3", "body": "b", "reply_to": 99}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "not json",
            b"hello".to_vec(),
            "text/plain",
            400,
            "bad_request",
        ),
        (
            "NUL in body",
            br#"{"cid": "x6", "body": "a\u0000b"}"#.to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            "oversized request",
            format!(r#"{{"cid": "x4", "body": "{}"}}"#, "y".repeat(8000)).into_bytes(),
            "application/json",
            413,
            "too_large",
        ),
        (
            "oversized message",
            format!(r#"{{"cid": "x5", "body": "{}"}}"#, "y".repeat(2000)).into_bytes(),
            "application/json",
            413,
            "too_large",
        ),
    ];
    for (what, body, ct, status, want) in cases {
        let (s, b) = api.post_raw(&path, Some(&a.token), ct, body).await.unwrap();
        assert_eq!((s, code(&b)), (status, want), "{what}: {b}");
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}");
        // The messages speak of the API, not of the code behind it.
        for internal in ["i64", "struct ", "enum ", "deserialize"] {
            assert!(!message.contains(internal), "{what}: {message}");
        }
    }
    let (s, b) = api
        .post_raw(
            "/api/v1/conversations/abc/messages",
            Some(&a.token),
            "application/json",
            br#"{"cid":"p1","body":"b"}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"), "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("i64") && !message.contains("deserialize"),
        "{message}"
    );

    // Unknown conversation, another user's conversation.
    let (s, b) = api.send(&a.token, 999_999, "u1", "x").await.unwrap();
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = api.send(&outsider.token, conv, "o1", "x").await.unwrap();
    assert_eq!((s, code(&b)), (403, "not_member"));
    let (s, b) = api.get(&path, Some(&outsider.token)).await.unwrap();
    assert_eq!((s, code(&b)), (403, "not_member"));
    let (s, b) = api.read(&outsider.token, conv, 1).await.unwrap();
    assert_eq!((s, code(&b)), (403, "not_member"));
    let (s, b) = api
        .get("/api/v1/conversations/999999/messages", Some(&a.token))
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (404, "not_found"));
    // Bad query and path values.
    for p in [
        format!("{path}?limit=0"),
        format!("{path}?limit=abc"),
        format!("{path}?before_seq=-1"),
        "/api/v1/conversations/abc/messages".into(),
    ] {
        let (s, b) = api.get(&p, Some(&a.token)).await.unwrap();
        assert_eq!((s, code(&b)), (400, "bad_request"), "{p}");
    }
    let (s, b) = api
        .post(
            "/api/v1/sync",
            Some(&a.token),
            &json!({"cursors": {"abc": 1}}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = api
        .post(
            "/api/v1/conversations",
            Some(&a.token),
            &json!({"kind": "direct", "peer": a.id}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = api
        .get("/api/v1/users?q=a%00b", Some(&a.token))
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (400, "bad_request"), "NUL in a search");
    let (s, b) = api
        .get("/api/v1/nothing-here", Some(&a.token))
        .await
        .unwrap();
    assert_eq!((s, code(&b)), (404, "not_found"));

    // Nothing changed, and the node is still up.
    assert_eq!(rows(&db, conv).await.unwrap(), 1);
    let (s, _) = api.get("/healthz", None).await.unwrap();
    assert_eq!(s, 200);
    drop(node);
    db.drop_now().await.unwrap();
}

/// Two nodes on one database: their Conversation actors write the same conversation
/// concurrently, so only the conversation row lock keeps seqs and cids unique.
#[actix_rt::test]
async fn concurrent_writers_on_two_nodes_keep_seq_and_cid_unique() {
    let (db, n1) = node().await;
    let n2 = process_node(&db, "node-2", &[]).await;
    let (api1, api2) = (n1.api(), n2.api());
    let a = user(&api1, "writer").await.unwrap();
    let b = user(&api1, "other").await.unwrap();
    let conv = api1.direct(&a.token, b.id).await.unwrap();

    // 8 tasks on each node; every cid is sent twice, once through each node.
    let mut tasks = Vec::new();
    for t in 0..16 {
        let api = if t % 2 == 0 {
            api1.clone()
        } else {
            api2.clone()
        };
        let token = if t < 8 {
            a.token.clone()
        } else {
            b.token.clone()
        };
        tasks.push(actix_rt::spawn(async move {
            let mut out = Vec::new();
            for i in 0..15 {
                let cid = format!("t{}-{i}", t / 2);
                let (s, body) = api.send(&token, conv, &cid, "x").await.unwrap();
                assert!(s == 201 || s == 200, "{s} {body}");
                out.push((cid, body["seq"].as_i64().unwrap()));
            }
            out
        }));
    }
    let mut by_cid: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for t in tasks {
        for (cid, seq) in t.await.unwrap() {
            by_cid.entry(cid).or_default().insert(seq);
        }
    }
    // Each cid got exactly one seq, and the seqs are 1..N without gaps.
    assert!(by_cid.values().all(|s| s.len() == 1), "a cid got two seqs");
    let seqs: BTreeSet<i64> = by_cid.values().flatten().copied().collect();
    let n = by_cid.len() as i64;
    assert_eq!(seqs, (1..=n).collect::<BTreeSet<_>>());
    assert_eq!(rows(&db, conv).await.unwrap(), n);
    let c = db.client().await.unwrap();
    let dup: i64 = c
        .query_one("SELECT count(*) FROM (SELECT seq FROM messages WHERE conv = $1 GROUP BY seq HAVING count(*) > 1) d", &[&conv])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
    drop((n1, n2));
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn openapi_document_and_operations() {
    let (db, node) = node().await;
    let api = node.api();
    let (s, doc) = api.get("/api/v1/openapi.json", None).await.unwrap();
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/auth/register",
        "/api/v1/conversations/{id}/messages",
        "/api/v1/sync",
        "/api/v1/broadcasts",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} documented");
    }
    let (s, r) = api.get("/readyz", None).await.unwrap();
    assert_eq!((s, r["status"].as_str()), (200, Some("ready")));
    let (s, _) = api.get("/metrics", None).await.unwrap();
    assert_eq!(s, 200);
    drop(node);
    db.drop_now().await.unwrap();
}

/// The document says what the node checks: a send is one object per kind (text needs a
/// body, every other kind its own `attach` fields), path ids start at 1, member lists
/// hold people, and a send built from each shape's required fields is accepted while
/// one that breaks its shape is refused.
#[actix_rt::test]
async fn the_documented_send_shapes_are_what_the_node_accepts() {
    let (db, node) = node().await;
    let api = node.api();
    let (_, doc) = api.get("/api/v1/openapi.json", None).await.unwrap();
    let schemas = &doc["components"]["schemas"];
    let shapes = schemas["SendRequest"]["oneOf"].as_array().unwrap();
    let titles: Vec<&str> = shapes
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["text", "image", "file", "audio", "video", "location", "custom"]
    );
    let service: Vec<&str> = schemas["ServiceSend"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(service, titles);
    assert!(schemas["ServiceSend"]["oneOf"][0]["required"]
        .as_array()
        .unwrap()
        .contains(&json!("conv")));
    assert_eq!(schemas["MemberId"]["minimum"], 1);
    assert_eq!(schemas["AddMembers"]["properties"]["users"]["minItems"], 1);
    let param = &doc["paths"]["/api/v1/conversations/{id}/messages"]["post"]["parameters"][0];
    assert_eq!(
        (&param["name"], &param["schema"]["minimum"]),
        (&json!("id"), &json!(1))
    );

    let alice = user(&api, "alice").await.unwrap();
    let bob = user(&api, "bob").await.unwrap();
    let conv = api.direct(&alice.token, bob.id).await.unwrap();
    let path = format!("/api/v1/conversations/{conv}/messages");
    // A value for each field a shape's attach requires.
    let value = |field: &str, family: Option<&str>| match field {
        "url" => json!("https://files.example/a"),
        "mime" => json!(format!("{}/x", family.unwrap_or("application"))),
        "name" => json!("a.bin"),
        "size" | "duration_ms" => json!(1),
        "lat" | "lon" => json!(0.5),
        "data" => json!({"app": 1}),
        other => panic!("no value for attach.{other}"),
    };
    for (i, shape) in shapes.iter().enumerate() {
        let kind = shape["title"].as_str().unwrap();
        let mut send = json!({"cid": format!("shape-{i}"), "kind": kind});
        if kind == "text" {
            send["body"] = json!("hi");
        } else {
            let attach = &shape["properties"]["attach"];
            let family = attach["properties"]["mime"]["pattern"]
                .as_str()
                .and_then(|p| p.strip_prefix('^'))
                .and_then(|p| p.split('/').next())
                .filter(|f| !f.starts_with('['));
            let mut fields = serde_json::Map::new();
            for f in attach["required"].as_array().unwrap() {
                let f = f.as_str().unwrap();
                fields.insert(f.to_owned(), value(f, family));
            }
            send["attach"] = fields.into();
            // Without attach, the same kind is refused.
            let mut bare = send.clone();
            bare.as_object_mut().unwrap().remove("attach");
            bare["cid"] = json!(format!("bare-{i}"));
            let (s, b) = api.post(&path, Some(&alice.token), &bare).await.unwrap();
            assert_eq!((s, code(&b)), (400, "bad_request"), "{kind} without attach");
        }
        let (s, b) = api.post(&path, Some(&alice.token), &send).await.unwrap();
        assert_eq!(s, 201, "{kind} built from its shape: {send} -> {b}");
    }
    // A text without a body breaks its shape, and is refused.
    let (s, _) = api
        .post(&path, Some(&alice.token), &json!({"cid": "no-body"}))
        .await
        .unwrap();
    assert_eq!(s, 400);
    drop(node);
    db.drop_now().await.unwrap();
}

/// A fresh node shows every counter and gauge at 0 before any traffic, so `rate()`
/// and alerts work from the first scrape. (A process: the metrics recorder is global
/// to a process, and this one has seen no other node.)
#[actix_rt::test]
async fn metrics_are_present_at_zero_before_traffic() {
    let db = TestDb::create().await.expect("create test database");
    let node = process_node(&db, "node-1", &[]).await;
    let (s, m) = node.api().get("/metrics", None).await.unwrap();
    assert_eq!(s, 200);
    let text = m.as_str().unwrap_or_default().to_string();
    for line in [
        "chat_sends_acked_total 0",
        "chat_deliveries_total 0",
        "chat_slow_consumer_closes_total 0",
        "chat_bus_publishes_total 0",
        "chat_bus_publish_dropped_total 0",
        "chat_bus_receives_total 0",
        "chat_bus_reconnects_total 0",
        "chat_errors_total{code=\"not_member\"} 0",
        "chat_errors_total{code=\"rate_limited\"} 0",
        "chat_partitions_dropped_total{tier=\"normal\"} 0",
        "chat_open_connections 0",
        "chat_online_users 0",
        "chat_conversation_actors 0",
        "chat_users_by_sessions{sessions=\"4+\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    // Described, too. (Histograms appear with their first observation.)
    assert!(text.contains("# HELP chat_sends_acked_total sends acknowledged"));
    drop(node);
    db.drop_now().await.unwrap();
}

/// A cid is remembered for `retention.dedupe_window`: a resend within it is answered
/// with the stored message and stores nothing; after it, the same cid is a new send.
#[actix_rt::test]
async fn a_cid_is_deduplicated_within_the_window() {
    let (db, node) = node_with(&[("CHAT__RETENTION__DEDUPE_WINDOW", "2s")]).await;
    let api = node.api();
    let a = user(&api, "win-a").await.unwrap();
    let b = user(&api, "win-b").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    let (s, first) = api.send(&a.token, conv, "same", "one").await.unwrap();
    assert_eq!(s, 201);
    let (s, again) = api.send(&a.token, conv, "same", "one").await.unwrap();
    assert_eq!((s, &again["seq"]), (200, &first["seq"]));
    assert_eq!(rows(&db, conv).await.unwrap(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (s, later) = api.send(&a.token, conv, "same", "one").await.unwrap();
    assert_eq!((s, later["seq"].as_i64()), (201, Some(2)));
    assert_eq!(rows(&db, conv).await.unwrap(), 2);
    drop(node);
    db.drop_now().await.unwrap();
}

/// Sends to many conversations at once share the node's group commits: each is acked
/// once and stored once, and every conversation's seqs run 1..N.
#[actix_rt::test]
async fn sends_to_many_conversations_at_once_are_each_stored_once_in_order() {
    let (db, node) = node().await;
    let api = node.api();
    let hub = user(&api, "hub").await.unwrap();
    let mut convs = Vec::new();
    for i in 0..40 {
        let peer = user(&api, &format!("peer{i}")).await.unwrap();
        convs.push(api.direct(&hub.token, peer.id).await.unwrap());
    }
    let mut tasks = Vec::new();
    for &conv in &convs {
        for k in 0..5 {
            let (api, token) = (api.clone(), hub.token.clone());
            tasks.push(actix_rt::spawn(async move {
                api.send(&token, conv, &format!("m{conv}-{k}"), "x")
                    .await
                    .unwrap()
                    .0
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    for conv in convs {
        let stored = db.stored(conv).await.unwrap();
        let seqs: Vec<i64> = stored.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5], "conversation {conv}");
        let cids: BTreeSet<&String> = stored.iter().map(|(_, c)| c).collect();
        assert_eq!(cids.len(), 5);
    }
    drop(node);
    db.drop_now().await.unwrap();
}

/// A conversation another writer holds (here a transaction of the test's own) does not
/// hold up the sends of other conversations: they are acked meanwhile, and the held
/// one is written as soon as the lock goes.
#[actix_rt::test]
async fn a_conversation_held_by_another_writer_does_not_stall_the_others() {
    // One transaction at a time: a writer that waited for the lock would stall all.
    let (db, node) = node_with(&[("CHAT__DATABASE__WRITE_POOL_SIZE", "1")]).await;
    let api = node.api();
    let a = user(&api, "held-a").await.unwrap();
    let b = user(&api, "held-b").await.unwrap();
    let c = user(&api, "held-c").await.unwrap();
    let held = api.direct(&a.token, b.id).await.unwrap();
    let free = api.direct(&a.token, c.id).await.unwrap();
    let pg = db.client().await.unwrap();
    pg.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM conversations WHERE id = {held} FOR NO KEY UPDATE"
    ))
    .await
    .unwrap();
    let waiting = {
        let (api, token) = (api.clone(), a.token.clone());
        actix_rt::spawn(async move { api.send(&token, held, "h1", "held").await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    for k in 0..5 {
        let (s, _) = api
            .send(&a.token, free, &format!("f{k}"), "free")
            .await
            .unwrap();
        assert_eq!(s, 201);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the free conversation waited {:?}",
        started.elapsed()
    );
    assert!(
        !waiting.is_finished(),
        "the held conversation cannot be written yet"
    );
    assert_eq!(rows(&db, held).await.unwrap(), 0);
    pg.batch_execute("COMMIT").await.unwrap();
    let (s, body) = waiting.await.unwrap();
    assert_eq!((s, body["seq"].as_i64()), (201, Some(1)));
    assert_eq!(rows(&db, held).await.unwrap(), 1);
    drop(node);
    db.drop_now().await.unwrap();
}

/// History pages and sync read only the partitions of the days they need (bounds
/// from `conversation_days`), and still return every message: 300 messages over 12
/// past days, each day in a partition of its own, some important, paged and synced.
#[actix_rt::test]
async fn history_and_sync_are_whole_across_days_and_partitions() {
    let (db, node) = node().await;
    let api = node.api();
    let a = user(&api, "days-a").await.unwrap();
    let b = user(&api, "days-b").await.unwrap();
    let conv = api.direct(&a.token, b.id).await.unwrap();
    let pg = db.client().await.unwrap();
    let today = now() / 86_400 * 86_400;
    for d in 1..=13 {
        let start = today - d * 86_400;
        for tier in ["normal", "important"] {
            pg.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS messages_{tier}_p{start}_{end} PARTITION OF messages_{tier}
                 FOR VALUES FROM (to_timestamp({start})) TO (to_timestamp({end}))",
                end = start + 86_400
            ))
            .await
            .unwrap();
        }
    }
    // Seq s was stored (300 - s) hours ago; every fifth one is important.
    pg.batch_execute(&format!(
        "INSERT INTO messages (conv, seq, sender, cid, body, tier, created_at)
         SELECT {conv}, s, {a}, 'old-' || s, 'm' || s,
                CASE WHEN s % 5 = 0 THEN 'important' ELSE 'normal' END,
                now() - (300 - s) * interval '1 hour'
           FROM generate_series(1, 300) s;
         INSERT INTO conversation_days (conv, day, first_seq)
         SELECT conv, date_trunc('day', created_at, 'UTC'), min(seq) FROM messages
          WHERE conv = {conv} GROUP BY 1, 2;
         UPDATE conversations SET last_seq = 300 WHERE id = {conv}",
        a = a.id
    ))
    .await
    .unwrap();
    let days: i64 = pg
        .query_one(
            "SELECT count(*) FROM conversation_days WHERE conv = $1",
            &[&conv],
        )
        .await
        .unwrap()
        .get(0);
    assert!(days >= 12, "spread over {days} days");

    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let q = match before {
            Some(b) => format!("/api/v1/conversations/{conv}/messages?limit=37&before_seq={b}"),
            None => format!("/api/v1/conversations/{conv}/messages?limit=37"),
        };
        let (s, page) = api.get(&q, Some(&b.token)).await.unwrap();
        assert_eq!(s, 200, "{page}");
        let msgs = page["messages"].as_array().unwrap().clone();
        if msgs.is_empty() {
            break;
        }
        let seqs: Vec<i64> = msgs.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        before = seqs.first().copied();
        seen.extend(seqs.into_iter().rev());
        assert_eq!(page["oldest_retained_seq"].as_i64(), Some(1));
    }
    assert_eq!(seen, (1..=300).rev().collect::<Vec<_>>());

    // Sync from a cursor two days back, 100 at a time.
    let mut cursor = 250 - 48;
    let mut synced = Vec::new();
    loop {
        let (s, r) = api
            .post(
                "/api/v1/sync",
                Some(&b.token),
                &json!({"cursors": {conv.to_string(): cursor}, "limit": 40}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{r}");
        let convs = r["conversations"].as_array().unwrap();
        let Some(c) = convs.iter().find(|c| c["id"] == conv) else {
            break;
        };
        for m in c["messages"].as_array().unwrap() {
            synced.push(m["seq"].as_i64().unwrap());
        }
        cursor = *synced.last().unwrap();
        if !r["more"].as_bool().unwrap_or(false) {
            break;
        }
    }
    assert_eq!(synced, (203..=300).collect::<Vec<_>>());
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_burst_of_logins_is_bounded_and_refused_past_the_bound() {
    // A process, so the node's password-hash slots are its own.
    let db = TestDb::create().await.expect("create test database");
    let node = process_node(&db, "node-1", &[]).await;
    let api = node.api();
    let someone = user(&api, "burst").await.unwrap();
    let n = 120;
    let logins = (0..n).map(|_| {
        let api = api.clone();
        async move {
            api.post(
                "/api/v1/auth/login",
                None,
                &json!({"username": "burst", "password": "not-the-password"}),
            )
            .await
            .unwrap()
        }
    });
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all(logins).await;
    let took = started.elapsed();
    let limited = answers
        .iter()
        .filter(|(s, b)| *s == 429 && code(b) == "rate_limited")
        .count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 401 && code(b) == "unauthorized")
        .count();
    assert_eq!(limited + refused, n, "only 401 and 429: {answers:?}");
    assert!(limited >= 1, "the burst went past the bound");
    assert!(refused >= 2, "logins still run meanwhile");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    // The node still serves everything else.
    let (s, _) = api.get("/api/v1/me", Some(&someone.token)).await.unwrap();
    assert_eq!(s, 200);
    let (_, m) = api.get("/metrics", None).await.unwrap();
    assert!(
        m.as_str()
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("chat_password_hashes_refused_total ") && !l.ends_with(" 0")),
        "counted"
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn list_pages_hold_their_place_while_conversations_become_active() {
    let (db, node) = node().await;
    let api = node.api();
    let me = user(&api, "pager").await.unwrap();
    let mut convs = Vec::new();
    for name in ["peer-one", "peer-two", "peer-three"] {
        let peer = user(&api, name).await.unwrap();
        let conv = api.direct(&me.token, peer.id).await.unwrap();
        api.send(&me.token, conv, &format!("hi-{name}"), "hi")
            .await
            .unwrap();
        convs.push(conv);
    }
    let (p1, p2, p3) = (convs[0], convs[1], convs[2]);
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect()
    };
    let (_, first) = api
        .get("/api/v1/conversations?limit=2", Some(&me.token))
        .await
        .unwrap();
    assert_eq!(ids(&first), vec![p3, p2]);
    let cursor = first["next_before"].as_str().unwrap().to_string();
    // The last conversation of the page becomes the newest meanwhile.
    api.send(&me.token, p2, "again", "again").await.unwrap();
    let (s, second) = api
        .get(
            &format!("/api/v1/conversations?limit=2&before={cursor}"),
            Some(&me.token),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        ids(&second),
        vec![p1],
        "continues below where the page ended"
    );
    assert!(second.get("next_before").is_none(), "{second}");
    // A conversation id, or anything else, is not a cursor.
    for bad in [p2.to_string(), "zz".to_string(), "1.2.3".to_string()] {
        let (s, b) = api
            .get(
                &format!("/api/v1/conversations?before={bad}"),
                Some(&me.token),
            )
            .await
            .unwrap();
        assert_eq!((s, code(&b)), (400, "bad_request"), "{bad}");
    }
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn an_audience_conversation_without_a_notice_is_not_listed() {
    let (db, node) = node().await;
    let api = node.api();
    let token = chat_testkit::fixtures::provision(&api, "reader", json!({"org": "9"}))
        .await
        .unwrap()
        .token;
    // What a broadcast whose send failed leaves behind: the audience's conversation,
    // with no notice in it.
    db.client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO conversations (kind, audience, title, created_by)
             VALUES ('broadcast', 'org/9', 'org/9', 0)",
            &[],
        )
        .await
        .unwrap();
    let (s, list) = api
        .get("/api/v1/conversations", Some(&token))
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(list["conversations"], json!([]), "{list}");
    // Once a notice is in it, it shows.
    let (s, sent) = api
        .post(
            "/api/v1/broadcasts",
            Some(SERVICE_KEY),
            &json!({"audience": "org/9", "body": "hello org 9", "cid": "n-1"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{sent}");
    let (_, list) = api
        .get("/api/v1/conversations", Some(&token))
        .await
        .unwrap();
    assert_eq!(
        list["conversations"][0]["id"], sent["conversation_id"],
        "{list}"
    );
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn a_sync_answer_is_bounded_in_bytes_by_whole_conversations() {
    let (db, node) = node_with(&[("CHAT__LIMITS__MAX_SYNC_BYTES", "25000")]).await;
    let api = node.api();
    let me = user(&api, "big-syncer").await.unwrap();
    let body = "x".repeat(10_000);
    let mut convs = Vec::new();
    for i in 0..5 {
        let peer = user(&api, &format!("big-peer-{i}")).await.unwrap();
        let conv = api.direct(&me.token, peer.id).await.unwrap();
        for j in 0..3 {
            let (s, _) = api
                .send(&peer.token, conv, &format!("b-{i}-{j}"), &body)
                .await
                .unwrap();
            assert_eq!(s, 201);
        }
        convs.push(conv);
    }
    let mut cursors: BTreeMap<String, i64> = BTreeMap::new();
    let mut got: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for round in 0..20 {
        let (s, r) = api
            .post(
                "/api/v1/sync",
                Some(&me.token),
                &json!({"cursors": cursors}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{r}");
        let answer = r["conversations"].as_array().unwrap();
        // One conversation's worth past the bound at most: 25,000 + 30,000.
        let bytes: usize = answer
            .iter()
            .flat_map(|c| c["messages"].as_array().unwrap())
            .map(|m| m["body"].as_str().unwrap().len())
            .sum();
        assert!(bytes <= 55_000, "round {round}: {bytes} bytes");
        for c in answer {
            let id = c["id"].as_i64().unwrap();
            let seqs: Vec<i64> = c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_i64().unwrap())
                .collect();
            // Never a cut conversation: every one comes with all it has.
            assert_eq!(seqs, vec![1, 2, 3], "round {round}, conversation {id}");
            got.entry(id).or_default().extend(&seqs);
            cursors.insert(id.to_string(), 3);
        }
        if r["more"] != json!(true) {
            break;
        }
    }
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), convs);
    assert!(got.values().all(|s| s == &vec![1, 2, 3]), "{got:?}");
    drop(node);
    db.drop_now().await.unwrap();
}

#[actix_rt::test]
async fn http_writes_are_rate_limited_per_user_and_groups_need_another_member() {
    let (db, node) = node_with(&[("CHAT__LIMITS__HTTP_WRITES_PER_SEC", "5")]).await;
    let api = node.api();
    let a = user(&api, "writer-a").await.unwrap();
    let b = user(&api, "writer-b").await.unwrap();
    // A group of the creator alone is refused (and counts as a write).
    let (s, e) = api
        .post(
            "/api/v1/conversations",
            Some(&a.token),
            &json!({"kind": "group", "title": "just me", "members": [a.id]}),
        )
        .await
        .unwrap();
    assert_eq!((s, code(&e)), (400, "bad_request"), "{e}");
    let conv = api.direct(&a.token, b.id).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (s, body) = api
            .send(&a.token, conv, &format!("w-{i}"), "x")
            .await
            .unwrap();
        if s == 429 {
            assert_eq!(code(&body), "rate_limited");
        }
        statuses.push(s);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 5, "{statuses:?}");
    assert_eq!(
        rows(&db, conv).await.unwrap(),
        statuses.iter().filter(|s| **s == 201).count() as i64,
        "a refused send stores nothing"
    );
    // Another user has a bucket of their own.
    let (s, _) = api.send(&b.token, conv, "b-1", "y").await.unwrap();
    assert_eq!(s, 201);
    // And the bucket refills.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (s, _) = api.send(&a.token, conv, "w-late", "x").await.unwrap();
    assert_eq!(s, 201);
    drop(node);
    db.drop_now().await.unwrap();
}

/// Runs the node binary on `url` and returns its exit status and output; it is
/// expected to stop by itself.
async fn run_until_exit(url: &str, extra: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(chat_testkit::process::node_bin());
    cmd.env("CHAT__DATABASE__URL", url)
        .env("CHAT__AUTH__JWT_SECRET", chat_testkit::process::TEST_SECRET)
        .env(
            "CHAT__SERVER__BIND",
            format!("127.0.0.1:{}", chat_testkit::free_port()),
        )
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("the node stops by itself")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[actix_rt::test]
async fn a_missing_database_and_another_applications_database_are_named_at_start() {
    let db = TestDb::create().await.unwrap();
    let missing = format!("{}_nope", db.url);
    let (ok, text) = run_until_exit(&missing, &[]).await;
    assert!(!ok);
    assert!(
        text.contains("does not exist") && text.contains("CREATE DATABASE"),
        "{text}"
    );
    assert!(
        !text.contains("retrying"),
        "no retry loop for a missing database: {text}"
    );

    let client = db.client().await.unwrap();
    client
        .batch_execute("CREATE TABLE invoices (id int)")
        .await
        .unwrap();
    let (ok, text) = run_until_exit(&db.url, &[]).await;
    assert!(!ok);
    assert!(
        text.contains("invoices") && text.contains("allow_foreign_schema"),
        "{text}"
    );
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing was migrated");
    // Told to, it migrates; a second start finds its own history and says nothing.
    let node = chat_testkit::Node::start(
        chat_testkit::NodeOptions::new("node-1", &db)
            .set("CHAT__DATABASE__ALLOW_FOREIGN_SCHEMA", "true"),
    )
    .await
    .unwrap();
    assert!(node.log_text().contains("migrating it anyway"));
    drop(node);
    let node = chat_testkit::Node::start(chat_testkit::NodeOptions::new("node-1", &db))
        .await
        .unwrap();
    drop(node);
    drop(client);
    db.drop_now().await.unwrap();
}
