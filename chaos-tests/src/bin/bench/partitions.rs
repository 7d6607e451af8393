//! partitions: the same work with the node's own range partitions (today and the ones
//! it makes ahead) and with 400 per tier (past daily ranges made in SQL while the node
//! is stopped, named as upkeep names them): acked sends/s of one sender with one send
//! in flight and the node's mean append time, history paging
//! (`GET /api/v1/conversations/{id}/messages`) and `POST /api/v1/sync`.
//!
//! The data is the same in both runs and sits in today's partitions: 10,000 messages
//! of history in one conversation (sent over one WebSocket, 64 in flight) and 10 in
//! each of 20 others (HTTP sends), all through the node so that whatever it keeps
//! beside the messages is kept, plus what the append phase adds. The node runs with
//! 100-year TTLs for both tiers: upkeep keeps the old partitions, and the `important`
//! tier has range partitions too (a tier that never expires has none).

use crate::common::{
    bulk_group, bulk_users, emit, histogram, load_env, mean_between, mean_ms, pct_ms, round, say,
    token,
};
use crate::load::{Book, Fleet, Population};
use crate::targets::Kind;
use crate::Opts;
use chat_testkit::{Endpoint, HarnessError, Node, NodeOptions, Result, TestDb};
use serde_json::json;
use std::time::{Duration, Instant};

const HISTORY: i64 = 10_000;
const SIDE_CONVS: usize = 20;

struct Figures {
    partitions: i64,
    append_per_s: f64,
    append_ms: f64,
    page_ms: f64,
    sync_ms: f64,
}

async fn count_partitions(db: &TestDb, tier: &str) -> Result<i64> {
    let c = db.client().await?;
    Ok(c.query_one(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_class c ON c.oid = i.inhrelid
          WHERE p.relname = $1 AND c.relname <> $1 || '_default'",
        &[&format!("messages_{tier}")],
    )
    .await?
    .get(0))
}

/// Creates past daily partitions of both tiers until each has `want` range partitions.
async fn add_partitions(db: &TestDb, want: i64) -> Result<()> {
    let c = db.client().await?;
    let today = chrono::Utc::now().timestamp().div_euclid(86_400) * 86_400;
    for tier in ["normal", "important"] {
        let have = count_partitions(db, tier).await?;
        let mut sql = String::new();
        for i in 1..=(want - have).max(0) {
            let start = today - i * 86_400;
            let end = start + 86_400;
            sql.push_str(&format!(
                "CREATE TABLE messages_{tier}_p{start}_{end} PARTITION OF messages_{tier} \
                 FOR VALUES FROM (to_timestamp({start})) TO (to_timestamp({end}));\n"
            ));
        }
        if !sql.is_empty() {
            c.batch_execute(&sql).await?;
        }
    }
    Ok(())
}

async fn run_one(opts: &Opts, want: Option<i64>) -> Result<Figures> {
    let db = TestDb::create().await?;
    let options = load_env(NodeOptions::new("bench-1", &db))
        .set("CHAT__RETENTION__NORMAL_TTL", "36500d")
        .set("CHAT__RETENTION__IMPORTANT_TTL", "36500d");
    // The first start migrates the database and makes the node's own partitions.
    let mut node = Node::start(options).await?;
    node.kill().await?;
    if let Some(w) = want {
        add_partitions(&db, w).await?;
    }
    node.restart().await?;
    let parts = count_partitions(&db, "normal").await?;
    let parts_important = count_partitions(&db, "important").await?;
    let history = if opts.smoke { 1_000 } else { HISTORY };
    let users = bulk_users(&db, "p", 2, "1").await?;
    let (a, b) = (users[0], users[1]);
    let main = bulk_group(&db, &[a, b]).await?;
    let mut side = Vec::new();
    for _ in 0..SIDE_CONVS {
        side.push(bulk_group(&db, &[a, b]).await?);
    }

    // Append: one sender, one send in flight.
    let api = node.api();
    let pop = Population::new(vec![a, b], vec![main], vec![vec![0, 1]]);
    let book = Book::new(pop);
    let port = node.port;
    let fleet = Fleet::open(
        book.clone(),
        &[0],
        |_| (port, format!("/ws?token={}", token(a))),
        1,
    )
    .await?;
    let secs = opts.step_seconds();
    // The history, then a warm-up, then the timed run.
    book.borrow_mut().begin_step(history as usize);
    if !fleet
        .pipeline(0, history as u64, 64, Duration::from_secs(120))
        .await
    {
        return Err(HarnessError::Timeout("filling the history".into()));
    }
    let tok = token(a);
    for conv in &side {
        for k in 0..10 {
            let (status, body) = api
                .send(&tok, *conv, &format!("side-{k}"), "a side message")
                .await?;
            if status != 201 {
                return Err(HarnessError::Http(format!("side send: {status} {body}")));
            }
        }
    }
    opts.quiet().await;
    book.borrow_mut().begin_step(1_000);
    fleet.closed_loop(&[0], Duration::from_millis(300)).await;
    fleet.settle(Duration::from_secs(5)).await;
    let before = histogram(&api, "chat_store_append_seconds").await;
    book.borrow_mut().begin_step(100_000);
    let t = Instant::now();
    fleet.closed_loop(&[0], Duration::from_secs_f64(secs)).await;
    let elapsed = t.elapsed().as_secs_f64();
    fleet.settle(Duration::from_secs(5)).await;
    let append_ms = mean_between(before, histogram(&api, "chat_store_append_seconds").await) * 1e3;
    let (acked, errors, ack_p50, ack_p99) = {
        let mut bk = book.borrow_mut();
        let c = bk.finish_step();
        (
            c.acked,
            c.errors,
            pct_ms(&mut bk.ack_us, 0.5),
            pct_ms(&mut bk.ack_us, 0.99),
        )
    };
    fleet.close().await;
    if errors > 0 {
        return Err(HarnessError::Ws(format!(
            "{errors} error frames while appending"
        )));
    }
    let append_per_s = acked as f64 / elapsed;

    // History: pages of 50 from the newest back.
    let pages = if opts.smoke { 10 } else { 100 };
    let mut page_us = Vec::new();
    let mut before_seq: Option<i64> = None;
    for i in 0..pages + 2 {
        let path = match before_seq {
            Some(s) => format!("/api/v1/conversations/{main}/messages?limit=50&before_seq={s}"),
            None => format!("/api/v1/conversations/{main}/messages?limit=50"),
        };
        let t = Instant::now();
        let (status, body) = api.get(&path, Some(&tok)).await?;
        let us = t.elapsed().as_micros() as u32;
        if status != 200 {
            return Err(HarnessError::Http(format!("history: {status} {body}")));
        }
        let first = body["messages"][0]["seq"].as_i64().unwrap_or(1);
        // Two warm-up pages, re-read from the newest.
        if i >= 2 {
            page_us.push(us);
            before_seq = Some(first);
        }
        if first <= 1 {
            break;
        }
    }

    // Sync: 21 conversations, 100 messages of the main one and all of the others.
    let syncs = if opts.smoke { 5 } else { 50 };
    let mut cursors = serde_json::Map::new();
    cursors.insert(main.to_string(), json!(history - 100));
    for c in &side {
        cursors.insert(c.to_string(), json!(0));
    }
    let req = json!({"cursors": cursors, "limit": 100});
    let mut sync_us = Vec::new();
    for i in 0..syncs + 2 {
        let t = Instant::now();
        let (status, body) = api.post("/api/v1/sync", Some(&tok), &req).await?;
        let us = t.elapsed().as_micros() as u32;
        if status != 200 {
            return Err(HarnessError::Http(format!("sync: {status} {body}")));
        }
        let n = body["conversations"].as_array().map_or(0, Vec::len);
        if n != SIDE_CONVS + 1 {
            return Err(HarnessError::Http(format!(
                "sync returned {n} conversations, expected {}",
                SIDE_CONVS + 1
            )));
        }
        if i >= 2 {
            sync_us.push(us);
        }
    }
    let f = Figures {
        partitions: parts,
        append_per_s,
        append_ms,
        page_ms: mean_ms(&page_us),
        sync_ms: mean_ms(&sync_us),
    };
    say(&format!(
        "  partitions {:>4} normal / {:>4} important: append {:>6.0}/s (ack p50 {:.2} p99 {:.2} ms, mean append {:.2} ms); history page {:.2} ms (p99 {:.2}, {} pages); sync {:.2} ms (p99 {:.2}, {} calls)",
        parts, parts_important, append_per_s, ack_p50, ack_p99, append_ms,
        f.page_ms, pct_ms(&mut page_us.clone(), 0.99), page_us.len(),
        f.sync_ms, pct_ms(&mut sync_us.clone(), 0.99), sync_us.len(),
    ));
    emit(&json!({
        "scenario": "partitions", "target": Kind::Node1.name(),
        "partitions_per_tier": parts, "partitions_important": parts_important,
        "append_per_s": round(append_per_s, 0), "append_acked": acked,
        "append_ack_p50_ms": round(ack_p50, 3), "append_ack_p99_ms": round(ack_p99, 3),
        "append_mean_ms": round(append_ms, 3),
        "history_page_ms": round(f.page_ms, 3), "history_page_p99_ms": round(pct_ms(&mut page_us, 0.99), 3),
        "pages": page_us.len(),
        "sync_ms": round(f.sync_ms, 3), "sync_p99_ms": round(pct_ms(&mut sync_us, 0.99), 3),
        "syncs": sync_us.len(), "pass": true,
    }));
    drop(node);
    db.drop_now().await?;
    Ok(f)
}

pub async fn run(opts: &Opts) -> Result<bool> {
    let many = if opts.smoke { 20 } else { 400 };
    say(&format!(
        "partitions: the node's own range partitions vs {many} per tier; {} s of appends",
        opts.step_seconds()
    ));
    let base = run_one(opts, None).await?;
    let wide = run_one(opts, Some(many)).await?;
    let r = |a: f64, b: f64| if b > 0.0 { round(a / b, 2) } else { 0.0 };
    say(&format!(
        "    {} vs {} partitions: append rate {:.2}x slower, append time {:.2}x, history page {:.2}x, sync {:.2}x",
        wide.partitions,
        base.partitions,
        r(base.append_per_s, wide.append_per_s),
        r(wide.append_ms, base.append_ms),
        r(wide.page_ms, base.page_ms),
        r(wide.sync_ms, base.sync_ms),
    ));
    emit(&json!({
        "scenario": "partitions-summary", "few": base.partitions, "many": wide.partitions,
        "append_rate_slowdown": r(base.append_per_s, wide.append_per_s),
        "append_time_ratio": r(wide.append_ms, base.append_ms),
        "history_page_ratio": r(wide.page_ms, base.page_ms),
        "sync_ratio": r(wide.sync_ms, base.sync_ms),
    }));
    Ok(true)
}
