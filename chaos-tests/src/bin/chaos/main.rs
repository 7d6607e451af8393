//! `chaos`: a Jepsen-style run against a cluster of its own. It brings up Postgres
//! (initdb into a temporary directory), Redis, three nodes (each behind fault proxies
//! to Postgres and Redis) and HAProxy on spare loopback ports; runs a workload of
//! clients through HAProxy while faults drawn from a seed hit the cluster; lets every
//! client settle and sync to the end; then checks the whole history against Postgres
//! and writes a report. It exits non-zero when an invariant fails.
//!
//! `chaos --quick` (about 3 minutes) runs in CI; `chaos` alone is the 10-minute soak.

mod checker;
mod faults;
mod workload;
mod world;

use chat_testkit::fixtures::{mint, now};
use chat_testkit::process::SERVICE_KEY;
use chat_testkit::Result;
use checker::{FinalRead, Input, Membership, Row};
use clap::Parser;
use faults::Kind;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use workload::{Client, Clock, Outcome, Plan, SendOp};
use world::fail;

#[derive(Parser, Debug)]
#[command(about = "Jepsen-style fault run against a chat cluster of its own")]
struct Args {
    /// The CI run: about 3 minutes, with at least 3 node kills, a pause, a Redis
    /// restart, a Postgres restart and a lost COMMIT answer.
    #[arg(long)]
    quick: bool,
    /// Seed of the fault schedule and the workload (random when absent; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Clients (one user each) through HAProxy.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// New sends per second, all clients together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of load (faults happen during it); default 150 with --quick, else 600.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the report and the history go.
    #[arg(long, default_value = ".run/chaos")]
    out: PathBuf,
}

fn main() {
    let args = Args::parse();
    let code = actix_rt::System::new().block_on(async move {
        // Ctrl-C drops the run, and with it the world: every process it started and
        // its Postgres cluster go too.
        let outcome = tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(fail("interrupted")),
            _ = terminated() => Err(fail("terminated")),
        };
        match outcome {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("chaos: {e}");
                2
            }
        }
    });
    std::process::exit(code);
}

/// SIGTERM (as `timeout` sends it).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

async fn run(args: Args) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let duration = args
        .duration
        .unwrap_or(if args.quick { 150.0 } else { 600.0 });
    println!(
        "chaos: seed {seed}, {} clients, {} sends/s, {duration} s of load, {} nodes{}",
        args.clients,
        args.rate,
        args.nodes,
        if args.quick { " (quick)" } else { "" }
    );
    let scratch = std::env::temp_dir().join(format!("chat-chaos-{}", std::process::id()));
    let node_env: Vec<(String, String)> = [
        ("CHAT__SERVER__DRAIN_TIMEOUT", "5s"),
        // Actors stop and start often: handovers happen under load.
        ("CHAT__NODE__CONVERSATION_IDLE", "15s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut world = world::World::start(&scratch, args.nodes, &node_env).await?;
    let result = drive(&mut world, &args, seed, duration).await;
    drop(world);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn drive(world: &mut world::World, args: &Args, seed: u64, duration: f64) -> Result<bool> {
    let db = world::connect(&world.db_url).await?;
    // Users in SQL (fast, no password hashing); conversations through the API.
    let mut users = Vec::new();
    for i in 0..args.clients {
        let row = db
            .query_one(
                "INSERT INTO users (username, display_name, org) VALUES ($1, $1, 'chaos') RETURNING id",
                &[&format!("chaos-{seed}-{i}")],
            )
            .await?;
        let id: i64 = row.get(0);
        users.push((id, mint(&id.to_string(), now(), now() + 86_400)?));
    }
    let api = world.api();
    let mut members: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut convs_of: Vec<Vec<i64>> = vec![Vec::new(); users.len()];
    for pair in (0..users.len()).collect::<Vec<_>>().chunks(2) {
        if let [a, b] = pair {
            let conv = api.direct(&users[*a].1, users[*b].0).await?;
            members.insert(conv, vec![users[*a].0, users[*b].0]);
            convs_of[*a].push(conv);
            convs_of[*b].push(conv);
        }
    }
    for (g, group) in (0..users.len()).collect::<Vec<_>>().chunks(8).enumerate() {
        if group.len() < 2 {
            continue;
        }
        let ids: Vec<i64> = group[1..].iter().map(|i| users[*i].0).collect();
        let conv = api
            .group(&users[group[0]].1, &format!("group {g}"), &ids)
            .await?;
        members.insert(conv, group.iter().map(|i| users[*i].0).collect());
        for i in group {
            convs_of[*i].push(conv);
        }
    }

    let clock = Clock(Instant::now());
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let plan = Rc::new(Plan {
        clock,
        lb_port: world.lb_port(),
        load_end: duration,
        settle_end: duration + 25.0,
        send_every: args.clients as f64 / args.rate.max(0.1),
    });
    let mut handles = Vec::new();
    for (i, (user, token)) in users.iter().enumerate() {
        let client = Client::new(i, *user, token.clone(), convs_of[i].clone(), seed);
        handles.push(actix_rt::spawn(client.run(plan.clone())));
    }
    let notices = actix_rt::spawn(broadcaster(world.api(), plan.clone()));

    // Faults while the load runs.
    let must: Vec<Kind> = if args.quick {
        vec![
            Kind::Kill,
            Kind::Kill,
            Kind::Kill,
            Kind::Pause,
            Kind::RestartRedis,
            Kind::RestartPostgresImmediate,
            Kind::LoseCommit,
        ]
    } else {
        Vec::new()
    };
    let planned = faults::schedule(seed, 10.0, duration - 5.0, world.slots.len(), &must);
    let mut done = Vec::new();
    for p in &planned {
        let d = faults::inject(world, clock, p).await?;
        println!(
            "  {:>7.1} s  {:<28} {:<8} {:>5.1} s  {}",
            d.start,
            format!("{:?}", d.kind),
            d.node.clone().unwrap_or_else(|| "cluster".into()),
            d.end - d.start,
            d.note
        );
        done.push(d);
    }

    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.map_err(|e| fail(format!("client task: {e}")))?);
    }
    let (notices, broadcast_conv) = notices
        .await
        .map_err(|e| fail(format!("broadcaster: {e}")))?;
    if let Some(b) = broadcast_conv {
        members.insert(b, users.iter().map(|(u, _)| *u).collect());
    }
    println!(
        "  load and settle done at {:.1} s; final reads",
        clock.now()
    );

    // Final reads (definite answers, over HTTP), then the unread list.
    let mut final_reads = Vec::new();
    for (c, (user, token)) in clients.iter().zip(&users) {
        let mut mine: Vec<i64> = members
            .iter()
            .filter(|(_, m)| m.contains(user))
            .map(|(k, _)| *k)
            .collect();
        mine.sort_unstable();
        let mut answered = Vec::new();
        for conv in mine {
            let cursor = c
                .delivered
                .get(&conv)
                .and_then(|d| d.last())
                .map_or(0, |m| m.seq);
            let floor = c.read_sent.get(&conv).copied().unwrap_or(0).min(cursor);
            let seq = floor + (seed as i64 + conv + user) % (cursor - floor + 1);
            let (status, body) = api.read(token, conv, seq).await?;
            if status != 200 {
                return Err(fail(format!("final read: {status} {body}")));
            }
            answered.push((conv, seq, body["unread"].as_i64().unwrap_or(-1)));
        }
        let (status, listed) = api.get("/api/v1/unread", Some(token)).await?;
        if status != 200 {
            return Err(fail(format!("unread: {status} {listed}")));
        }
        for (conv, seq, n) in answered {
            final_reads.push(FinalRead {
                user: *user,
                conv,
                seq,
                answered: n,
                listed: listed["conversations"][conv.to_string()]
                    .as_i64()
                    .unwrap_or(0),
            });
        }
    }

    // A connection of its own: Postgres may have restarted since the set-up's.
    let db = world::connect(&world.db_url).await?;
    let rows: Vec<Row> = db
        .query(
            "SELECT conv, seq, sender, cid, extract(epoch FROM created_at)::float8 FROM messages",
            &[],
        )
        .await?
        .iter()
        .map(|r| Row {
            conv: r.get(0),
            seq: r.get(1),
            sender: r.get(2),
            cid: r.get(3),
            stored_at: r.get::<_, f64>(4) - epoch,
        })
        .collect();
    let membership = Membership { members };
    let input = Input {
        clients: &clients,
        notices: &notices,
        faults: &done,
        rows: &rows,
        membership: &membership,
        final_reads: &final_reads,
        broadcast_conv,
    };
    let (checks, mut summary) = checker::check(&input);
    let (mut with, mut without) = checker::ack_latencies(&input);
    let ms = |v: &mut Vec<f64>, p: f64| checker::round(checker::quantile(v, p) * 1000.0);
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for d in &done {
        *by_kind.entry(format!("{:?}", d.kind)).or_default() += 1;
    }
    let ok = checks.iter().all(|c| c.ok);
    summary["seed"] = json!(seed);
    summary["quick"] = json!(args.quick);
    summary["clients"] = json!(args.clients);
    summary["rate"] = json!(args.rate);
    summary["load_s"] = json!(duration);
    summary["faults"] = json!(done.len());
    summary["faults_by_kind"] = json!(by_kind);
    summary["ack_ms"] = json!({
        "during_faults": {"n": with.len(), "p50": ms(&mut with, 0.5), "p99": ms(&mut with, 0.99)},
        "without_faults": {"n": without.len(), "p50": ms(&mut without, 0.5), "p99": ms(&mut without, 0.99)},
    });
    summary["recovery"] = json!(checker::recovery(&input));
    summary["checks"] = json!(checks);
    summary["ok"] = json!(ok);
    print_table(&summary, &checks);

    std::fs::create_dir_all(&args.out)?;
    let report = args.out.join(format!("report-{seed}.json"));
    std::fs::write(&report, serde_json::to_string_pretty(&summary)?)?;
    let history = args.out.join(format!("history-{seed}.json"));
    std::fs::write(
        &history,
        serde_json::to_string(&json!({"clients": clients, "notices": notices, "faults": done}))?,
    )?;
    println!(
        "report: {}  history: {}",
        report.display(),
        history.display()
    );
    Ok(ok)
}

/// The system's notices to the run's audience (`org/chaos`), every 2 s, each retried
/// with its cid until it has a definite answer. Returns the sends and the broadcast
/// conversation.
async fn broadcaster(api: chat_testkit::Api, plan: Rc<Plan>) -> (Vec<SendOp>, Option<i64>) {
    let clock = plan.clock;
    let mut ops = Vec::new();
    let mut conv = None;
    let mut n = 0;
    while clock.now() < plan.load_end {
        n += 1;
        let cid = format!("notice-{n}");
        let mut op = SendOp {
            cid: cid.clone(),
            conv: -1,
            invoked: clock.now(),
            attempts: 0,
            errors: Vec::new(),
            outcome: Outcome::Unknown,
        };
        while clock.now() < plan.settle_end && op.outcome == Outcome::Unknown {
            op.attempts += 1;
            let body = json!({"audience": "org/chaos", "body": format!("notice {n}"), "cid": cid});
            match api
                .post("/api/v1/broadcasts", Some(SERVICE_KEY), &body)
                .await
            {
                Ok((200 | 201, v)) => {
                    let c = v["conversation_id"].as_i64();
                    conv = conv.or(c);
                    op.outcome = Outcome::Ok {
                        seq: v["seq"].as_i64().unwrap_or(-1),
                        at: clock.now(),
                    };
                }
                Ok((status, v)) => {
                    let code = v["error"]["code"].as_str().unwrap_or("").to_owned();
                    op.errors.push((clock.now(), format!("{status} {code}")));
                    if !matches!(status, 429 | 502 | 503 | 504) {
                        op.outcome = Outcome::Fail {
                            code,
                            at: clock.now(),
                        };
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                Err(e) => {
                    op.errors.push((clock.now(), e.to_string()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        ops.push(op);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for op in &mut ops {
        op.conv = conv.unwrap_or(-1);
    }
    (ops, conv)
}

fn print_table(summary: &Value, checks: &[checker::Check]) {
    println!();
    for (label, key) in [
        ("operations", "operations"),
        ("acked", "acked"),
        ("stored", "stored"),
        (
            "unknown outcome, found stored (recovered)",
            "recovered_unknown",
        ),
        ("unknown outcome, not stored", "unknown_not_stored"),
        (
            "unavailable answered, already stored",
            "unavailable_but_already_stored",
        ),
        ("faults", "faults"),
        ("reconnects", "reconnects"),
        ("resyncs", "resyncs"),
        ("pushed twice (allowed)", "pushed_twice"),
        ("pushed out of order", "pushed_out_of_order"),
        (
            "stale while a fault slowed pushes",
            "silent_stale_during_slow_faults",
        ),
    ] {
        println!("  {label:<44} {}", summary[key]);
    }
    for (label, key) in [
        ("ack ms p50/p99 without faults", "without_faults"),
        ("ack ms p50/p99 during faults", "during_faults"),
    ] {
        let a = &summary["ack_ms"][key];
        println!("  {label:<44} {}/{}", a["p50"], a["p99"]);
    }
    println!();
    for c in checks {
        println!(
            "  {:<6} {:<44} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.count
        );
        for e in &c.examples {
            println!("           {e}");
        }
    }
    println!();
}
