//! The first scenarios of the bench: HTTP sends, closed-loop WebSocket throughput,
//! push latency, a broadcast to a large audience, sends during a partition drop. They
//! use the suite's resilient client ([`Chatter`], on awc).

use crate::common::{bench_env, bulk_group, bulk_users, histogram, mean_between, token};
use chat_chaos::{percentile, Chatter};
use chat_testkit::{Endpoint, HarnessError, Node, NodeOptions, RedisServer, Result, TestDb};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// `senders` clients, each sending to its conversation with one send in flight, for
/// `seconds`. Returns acked sends per second.
async fn run_senders(node: &Node, senders: &[(i64, i64)], seconds: u64) -> Result<f64> {
    let url = format!("ws://127.0.0.1:{}", node.port);
    let total = Rc::new(RefCell::new(0u64));
    let syncs = Rc::new(RefCell::new(0usize));
    let mut clients = Vec::new();
    for (user, conv) in senders.iter().copied() {
        let mut c = Chatter::new(user, token(user));
        c.connect(&url).await?;
        c.pump(Duration::from_millis(5)).await?;
        clients.push((c, conv));
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (mut c, conv)) in clients.into_iter().enumerate() {
        let (total, syncs) = (total.clone(), syncs.clone());
        tasks.push(actix_rt::spawn(async move {
            let mut k = 0u64;
            while Instant::now() < until {
                if c.send(conv, &format!("b{i}-{k}")).await.is_err() {
                    return;
                }
                k += 1;
                if !c.wait_acked(Duration::from_secs(10)).await.unwrap_or(false) {
                    return;
                }
                *total.borrow_mut() += 1;
            }
            *syncs.borrow_mut() += c.syncs;
            c.close().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = *total.borrow();
    let elapsed = started.elapsed().as_secs_f64();
    let (sum, count) = histogram(&node.api(), "chat_store_append_seconds").await;
    eprintln!(
        "  ({n} acked in {elapsed:.1} s; client syncs {}; mean append so far {:.2} ms)",
        syncs.borrow(),
        if count > 0.0 { sum / count * 1e3 } else { 0.0 }
    );
    Ok(n as f64 / elapsed)
}

pub async fn http(seconds: u64) -> Result<()> {
    let _ = seconds;
    let db = TestDb::create().await?;
    let node = Node::start(bench_env(NodeOptions::new("bench-1", &db))).await?;
    let api = node.api();
    let (a, ta) = api.register("httpa").await?;
    let (b, _) = api.register("httpb").await?;
    let _ = a;
    let conv = api.direct(&ta, b).await?;
    api.send(&ta, conv, "warm", "x").await?;
    let t = Instant::now();
    let (s, _) = api.send(&ta, conv, "one", "one send").await?;
    let one = t.elapsed();
    assert_status(s)?;
    let t = Instant::now();
    for i in 0..1000 {
        let (s, _) = api
            .send(&ta, conv, &format!("seq-{i}"), "sequential")
            .await?;
        assert_status(s)?;
    }
    let all = t.elapsed();
    println!(
        "http: one send {:.2} ms; 1,000 sequential sends {:.2} s ({:.2} ms each, {:.0}/s)",
        one.as_secs_f64() * 1e3,
        all.as_secs_f64(),
        all.as_secs_f64(),
        1000.0 / all.as_secs_f64()
    );
    drop(node);
    db.drop_now().await
}

fn assert_status(s: u16) -> Result<()> {
    if s == 201 || s == 200 {
        Ok(())
    } else {
        Err(HarnessError::Http(format!("send answered {s}")))
    }
}

pub async fn throughput(seconds: u64) -> Result<()> {
    let db = TestDb::create().await?;
    let node = Node::start(bench_env(NodeOptions::new("bench-1", &db))).await?;
    let api = node.api();
    let users = bulk_users(&db, "tp", 1000, "1").await?;
    for n in [1usize, 10, 100] {
        let conv = bulk_group(&db, &users[..n.max(2)]).await?;
        let before = histogram(&api, "chat_group_commit_batch_size").await;
        let senders: Vec<(i64, i64)> = users[..n].iter().map(|u| (*u, conv)).collect();
        let rate = run_senders(&node, &senders, seconds).await?;
        let after = histogram(&api, "chat_group_commit_batch_size").await;
        let avg = mean_between(before, after);
        println!("throughput: {n:>4} senders, 1 conversation: {rate:>8.0} acked sends/s, mean group-commit batch {avg:.1}");
    }
    // 1,000 senders across 1,000 conversations (each with its neighbour).
    let mut senders = Vec::new();
    for i in 0..1000 {
        let conv = bulk_group(&db, &[users[i], users[(i + 1) % 1000]]).await?;
        senders.push((users[i], conv));
    }
    let before = histogram(&api, "chat_group_commit_batch_size").await;
    let rate = run_senders(&node, &senders, seconds).await?;
    let after = histogram(&api, "chat_group_commit_batch_size").await;
    let avg = mean_between(before, after);
    println!("throughput: 1000 senders, 1000 conversations: {rate:>8.0} acked sends/s, mean group-commit batch {avg:.1}");
    drop(node);
    db.drop_now().await
}

/// A database, a Redis and two nodes on the Redis bus.
async fn two_nodes() -> Result<(TestDb, RedisServer, Node, Node)> {
    let db = TestDb::create().await?;
    let redis = RedisServer::start().await?;
    let a = Node::start(bench_env(
        NodeOptions::new("bench-a", &db).redis(&redis.url()),
    ))
    .await?;
    let b = Node::start(bench_env(
        NodeOptions::new("bench-b", &db).redis(&redis.url()),
    ))
    .await?;
    Ok((db, redis, a, b))
}

pub async fn latency(seconds: u64) -> Result<()> {
    let (db, _redis, a, b) = two_nodes().await?;
    let users = bulk_users(&db, "lat", 22, "1").await?;
    let conv = bulk_group(&db, &users).await?;
    for (label, senders, per_sender_rate) in [("light", 1usize, 50u64), ("heavy", 20, 100)] {
        let mut same = Chatter::new(users[20], token(users[20]));
        same.connect(&format!("ws://127.0.0.1:{}", a.port)).await?;
        let mut cross = Chatter::new(users[21], token(users[21]));
        cross.connect(&format!("ws://127.0.0.1:{}", b.port)).await?;
        same.pump(Duration::from_millis(300)).await?;
        cross.pump(Duration::from_millis(300)).await?;
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for (s, user) in users.iter().copied().enumerate().take(senders) {
            let mut c = Chatter::new(user, token(user));
            c.connect(&format!("ws://127.0.0.1:{}", a.port)).await?;
            tasks.push(actix_rt::spawn(async move {
                let gap = Duration::from_micros(1_000_000 / per_sender_rate);
                let mut k = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    if c.send(conv, &format!("{label}-{s}-{k}")).await.is_err() {
                        return;
                    }
                    k += 1;
                    let _ = c.pump(gap.saturating_sub(t.elapsed())).await;
                }
                let _ = c.pump(Duration::from_millis(500)).await;
            }));
        }
        let reader = |mut c: Chatter| {
            actix_rt::spawn(async move {
                while Instant::now() < until + Duration::from_secs(1) {
                    if !c.pump(Duration::from_millis(100)).await.unwrap_or(false) {
                        break;
                    }
                }
                c.latencies_us
            })
        };
        let (rs, rc) = (reader(same), reader(cross));
        for t in tasks {
            let _ = t.await;
        }
        let mut ls = rs.await.unwrap_or_default();
        let mut lc = rc.await.unwrap_or_default();
        let rate = senders as u64 * per_sender_rate;
        println!(
            "latency {label} ({rate} msg/s): same node p50 {:.2} ms p99 {:.2} ms ({} samples); cross node p50 {:.2} ms p99 {:.2} ms ({} samples)",
            percentile(&mut ls, 0.5) as f64 / 1e3, percentile(&mut ls, 0.99) as f64 / 1e3, ls.len(),
            percentile(&mut lc, 0.5) as f64 / 1e3, percentile(&mut lc, 0.99) as f64 / 1e3, lc.len(),
        );
    }
    drop((a, b));
    db.drop_now().await
}

pub async fn broadcast() -> Result<()> {
    let (db, _redis, a, b) = two_nodes().await?;
    let online = bulk_users(&db, "on", 1000, "1").await?;
    bulk_users(&db, "off", 99_000, "1").await?;
    let mut clients = Vec::new();
    for (i, u) in online.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut c = Chatter::new(*u, token(*u));
        c.connect(&format!("ws://127.0.0.1:{}", node.port)).await?;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = db.client().await?;
    let rows_before: i64 = c
        .query_one("SELECT count(*) FROM messages", &[])
        .await?
        .get(0);
    let done = Rc::new(RefCell::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut cl in clients {
        let done = done.clone();
        tasks.push(actix_rt::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if cl.received.values().any(|m| !m.is_empty()) {
                    done.borrow_mut().push(Instant::now());
                    return;
                }
                if !cl.pump(Duration::from_millis(20)).await.unwrap_or(false) {
                    return;
                }
            }
        }));
    }
    let post = Instant::now();
    let (s, body) = a
        .api()
        .post(
            "/api/v1/broadcasts",
            Some(chat_testkit::process::SERVICE_KEY),
            &json!({"audience": "org/1", "body": "notice", "cid": "bench-notice"}),
        )
        .await?;
    let answered = post.elapsed();
    assert_status(s)?;
    for t in tasks {
        let _ = t.await;
    }
    let rows_after: i64 = c
        .query_one("SELECT count(*) FROM messages", &[])
        .await?
        .get(0);
    let got: Vec<Instant> = done.borrow().clone();
    let last = got
        .iter()
        .max()
        .map(|t| t.duration_since(started))
        .unwrap_or_default();
    println!(
        "broadcast: audience of 100,000; rows written {}; POST answered in {:.1} ms; {}/1000 online members on 2 nodes had it after {:.1} ms ({body})",
        rows_after - rows_before, answered.as_secs_f64() * 1e3, got.len(), last.as_secs_f64() * 1e3,
    );
    drop((a, b));
    db.drop_now().await
}

pub async fn drop_partition() -> Result<()> {
    let db = TestDb::create().await?;
    let node = Node::start(
        bench_env(NodeOptions::new("bench-1", &db)).set("CHAT__RETENTION__UPKEEP_INTERVAL", "1s"),
    )
    .await?;
    let users = bulk_users(&db, "dr", 2, "1").await?;
    let conv = bulk_group(&db, &users).await?;
    let c = db.client().await?;
    let end = chrono::Utc::now().timestamp() - 100 * 86_400;
    let start = end - 86_400;
    let name = format!("messages_normal_p{start}_{end}");
    c.batch_execute(&format!(
        "CREATE TABLE {name} (LIKE messages_normal INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         INSERT INTO {name} (conv, seq, sender, cid, body, tier, created_at)
           SELECT 999999, g, 0, 'old-' || g, 'an expired message body of ordinary length', 'normal',
                  to_timestamp({start} + g % 86400) FROM generate_series(1, 1000000) g;
         CREATE INDEX ON {name} (conv, seq); CREATE INDEX ON {name} (conv, sender, cid);"
    ))
    .await?;
    // Attach only now (fast: the rows are checked against the bound once), so upkeep
    // sees it and drops it at its next round while the sender is busy.
    let mut sender = Chatter::new(users[0], token(users[0]));
    sender
        .connect(&format!("ws://127.0.0.1:{}", node.port))
        .await?;
    let mut lat = Vec::new();
    let attach = format!(
        "ALTER TABLE messages_normal ATTACH PARTITION {name} FOR VALUES FROM (to_timestamp({start})) TO (to_timestamp({end}))"
    );
    c.batch_execute(&attach).await?;
    let attached = Instant::now();
    let mut dropped_at = None;
    let mut k = 0;
    while attached.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        sender.send(conv, &format!("d{k}")).await?;
        k += 1;
        sender.wait_acked(Duration::from_secs(10)).await?;
        lat.push(t.elapsed().as_micros() as u64);
        if dropped_at.is_none() {
            let gone: bool = c
                .query_one("SELECT to_regclass($1) IS NULL", &[&name])
                .await?
                .get(0);
            if gone {
                dropped_at = Some(attached.elapsed());
            }
        } else if lat.len() > 200 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (drop_sum, drop_n) = histogram(&node.api(), "chat_partition_drop_seconds").await;
    if drop_n == 0.0 {
        let (_, m) = node.api().get("/metrics", None).await?;
        for l in m
            .as_str()
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("partition") || l.contains("upkeep"))
        {
            eprintln!("  {l}");
        }
    }
    println!(
        "drop: 1,000,000 expired rows dropped {} after attach, DROP took {:.1} ms; {} sends meanwhile: p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        dropped_at.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
        if drop_n > 0.0 { drop_sum / drop_n * 1e3 } else { f64::NAN },
        lat.len(),
        percentile(&mut lat, 0.5) as f64 / 1e3,
        percentile(&mut lat, 0.99) as f64 / 1e3,
        percentile(&mut lat, 1.0) as f64 / 1e3,
    );
    drop(node);
    db.drop_now().await
}
