//! idle: as many idle WebSockets to one node as this process may open (its open-files
//! limit), one user each; the node's resident memory per connection, and connects per
//! second around 5,000 open and near the maximum. The same against the ceiling.

use crate::common::{bulk_users, emit, load_env, open_files, round, rss_kib, say, token};
use crate::load::{connect_all, Ws};
use crate::targets::{metric, Kind, Target};
use crate::Opts;
use chat_testkit::{Result, TestDb};
use serde_json::json;
use std::time::{Duration, Instant};

/// Sockets opened per timed batch, and handshakes in flight at once.
const BATCH: usize = 500;
const PARALLEL: usize = 32;

struct Idle {
    kind: Kind,
    open: usize,
    kib_per_conn: f64,
    at_5000: f64,
    at_max: f64,
}

async fn run_target(opts: &Opts, kind: Kind, n: usize) -> Result<Idle> {
    let db = TestDb::create().await?;
    let target = Target::start(kind, Some(&db), &[], load_env).await?;
    let users: Vec<i64> = if kind == Kind::Ceiling {
        (1..=n as i64).collect()
    } else {
        bulk_users(&db, "i", n as i64, "1").await?
    };
    let tokens: Vec<String> = if kind == Kind::Ceiling {
        Vec::new()
    } else {
        users.iter().map(|u| token(*u)).collect()
    };
    let paths: Vec<(u16, String)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| target.path_with(*u, tokens.get(i).map_or("", String::as_str)))
        .collect();
    let pid = target.pids.first().copied().unwrap_or(0);
    opts.quiet().await;
    let rss0 = rss_kib(pid).unwrap_or(0);
    let batch = if opts.smoke { 100 } else { BATCH };
    let mut sockets: Vec<Ws> = Vec::with_capacity(n);
    // (sockets open before the batch, sockets of the batch, seconds it took)
    let mut rates: Vec<(usize, usize, f64)> = Vec::new();
    let mut error = None;
    let started = Instant::now();
    for chunk in paths.chunks(batch) {
        let t = Instant::now();
        match connect_all(chunk, PARALLEL).await {
            Ok(mut s) => {
                rates.push((sockets.len(), s.len(), t.elapsed().as_secs_f64()));
                sockets.append(&mut s);
            }
            Err(e) => {
                error = Some(format!("after {} sockets: {e}", sockets.len()));
                break;
            }
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(pid).unwrap_or(0);
    let open = sockets.len();
    let gauge = match target.apis().first() {
        Some(api) => metric(api, "chat_open_connections").await,
        None => open as f64,
    };
    let kib_per_conn = if open > 0 {
        rss1.saturating_sub(rss0) as f64 / open as f64
    } else {
        0.0
    };
    // Connects per second over the 2,000 sockets opened around 5,000 open (around the
    // middle, for small runs) and over the last 2,000.
    let window = 4 * batch;
    let mark = if n >= 5_000 + window { 5_000 } else { n / 2 };
    let rate_of = |sel: &dyn Fn(usize) -> bool| {
        let (k, t) = rates
            .iter()
            .filter(|(start, _, _)| sel(*start))
            .fold((0usize, 0f64), |(k, t), (_, c, s)| (k + c, t + s));
        if t > 0.0 {
            k as f64 / t
        } else {
            0.0
        }
    };
    let at_5000 = rate_of(&|start| start + window / 2 >= mark && start < mark + window / 2);
    let at_max = rate_of(&|start| start + window >= open);
    let (_, gen_open) = open_files();
    say(&format!(
        "  idle {:<8} {open:>6} sockets open ({gauge} by the target's count) in {total_s:.1} s; RSS {:.1} -> {:.1} MiB = {kib_per_conn:.2} KiB/connection; connects/s {at_5000:.0} at {mark} open, {at_max:.0} near {open}{}",
        kind.name(),
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        error.as_ref().map_or(String::new(), |e| format!("; stopped: {e}")),
    ));
    emit(&json!({
        "scenario": "idle", "target": kind.name(), "connections": open, "wanted": n,
        "target_count": gauge, "generator_open_files": gen_open,
        "rss_before_kib": rss0, "rss_after_kib": rss1, "kib_per_conn": round(kib_per_conn, 2),
        "connects_per_s_at_mark": round(at_5000, 0), "mark": mark,
        "connects_per_s_at_max": round(at_max, 0),
        "slowdown_at_max": if at_max > 0.0 { round(at_5000 / at_max, 2) } else { 0.0 },
        "seconds": round(total_s, 2), "error": error, "pass": error.is_none() && open == n,
        "batch": batch,
        "connects_per_s_by_batch": rates.iter().map(|r| round(r.1 as f64 / r.2, 0)).collect::<Vec<_>>(),
    }));
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(500)).await;
    target.stop().await;
    db.drop_now().await?;
    if let Some(e) = error {
        if opts.smoke {
            return Err(crate::common::fail(format!("idle {}: {e}", kind.name())));
        }
    }
    Ok(Idle {
        kind,
        open,
        kib_per_conn,
        at_5000,
        at_max,
    })
}

pub async fn run(opts: &Opts, targets: &[Kind]) -> Result<bool> {
    let (limit, open) = open_files();
    // Every socket is a file of this process; keep some for Postgres, logs and pipes.
    let room = limit.saturating_sub(open + 400) as usize;
    let n = if opts.smoke {
        300
    } else {
        opts.idle_max.map_or(room, |m| m.min(room))
    };
    say(&format!(
        "idle: {n} sockets, one user each (open-files limit {limit}, {open} open now)"
    ));
    let mut results = Vec::new();
    for kind in targets
        .iter()
        .filter(|k| matches!(k, Kind::Ceiling | Kind::Node1))
    {
        results.push(run_target(opts, *kind, n).await?);
    }
    let ceiling = results.iter().find(|r| r.kind == Kind::Ceiling);
    for r in &results {
        let ratio = ceiling
            .filter(|c| c.kib_per_conn > 0.0)
            .map(|c| r.kib_per_conn / c.kib_per_conn);
        let rate_ratio = ceiling
            .filter(|c| c.at_max > 0.0)
            .map(|c| r.at_max / c.at_max);
        say(&format!(
            "    {:<8} {:>6} open  {:>6.2} KiB/conn ({} of the ceiling's)  connects/s {:.0} -> {:.0} ({} of the ceiling's at the max)",
            r.kind.name(), r.open, r.kib_per_conn,
            ratio.map_or("-".into(), |x| format!("{x:.1}x")),
            r.at_5000, r.at_max,
            rate_ratio.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
        ));
        emit(&json!({
            "scenario": "idle-summary", "target": r.kind.name(), "connections": r.open,
            "kib_per_conn": round(r.kib_per_conn, 2),
            "memory_ratio_to_ceiling": ratio.map(|x| round(x, 2)),
            "connects_per_s_at_mark": round(r.at_5000, 0), "connects_per_s_at_max": round(r.at_max, 0),
            "connect_rate_ratio_to_ceiling": rate_ratio.map(|x| round(x, 3)),
        }));
    }
    Ok(true)
}
