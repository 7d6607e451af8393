//! durable: 1,000 direct conversations, one sender each online (the peers offline), an
//! open-loop rate stepped up: the highest acked sends/s with p99 ack latency ≤ 50 ms,
//! with the node's group-commit batch size and append time per step.

use crate::common::{emit, histogram, mean_between, round, say};
use crate::fanout::{
    drain_and_recount, ladder, retry_reason, run_step, start_with_population, summary, warm_up,
    Best, Climb, Step, Variant,
};
use crate::load::{Book, Fleet};
use crate::targets::{trouble, Kind};
use crate::Opts;
use chat_testkit::{Api, Result, TestDb};
use serde_json::json;

/// Means of the node's commit histograms over one step.
struct Commits {
    /// `chat_group_commit_batch_size`: sends per conversation's group commit.
    batch: f64,
    /// `chat_store_append_seconds`, in ms.
    append_ms: f64,
    /// `chat_commit_rows`, `chat_commit_conversations`: sends and conversations per
    /// transaction of the node's writer (0 when the node has no such metric).
    rows: f64,
    convs: f64,
}

const COMMIT_METRICS: [&str; 4] = [
    "chat_group_commit_batch_size",
    "chat_store_append_seconds",
    "chat_commit_rows",
    "chat_commit_conversations",
];

/// The (sum, count) of each commit histogram, added up over every node.
async fn commit_metrics(apis: &[Api]) -> [(f64, f64); 4] {
    let mut out = [(0.0, 0.0); 4];
    for api in apis {
        for (o, name) in out.iter_mut().zip(COMMIT_METRICS) {
            let (sum, count) = histogram(api, name).await;
            o.0 += sum;
            o.1 += count;
        }
    }
    out
}

fn report(kind: Kind, rate: u64, s: &Step, m: &Commits) {
    let (batch, append_ms) = (m.batch, m.append_ms);
    let c = &s.counts;
    let acked_per_s = c.acked as f64 / s.seconds.max(1e-3);
    say(&format!(
        "  durable {:<7} {:>6}/s  sent {:>7} acked {:>7} ({:>7.0}/s)  ack p50 {:>7.2} p99 {:>7.2} ms  batch {:>5.1} (tx {:>5.1} rows, {:>5.1} convs) append {:>6.2} ms  cpu node {:>5.1}% gen {:>5.1}% pg {:>5.1}% rest {:>4.1}%  {}",
        kind.name(), rate, c.sent, c.acked, acked_per_s, s.ack_p50_ms, s.ack_p99_ms,
        batch, m.rows, m.convs, append_ms, s.cpu.target, s.cpu.gen, s.cpu.pg, s.cpu.rest(),
        if let Some(why) = s.discarded { why } else if s.pass { "PASS" } else { "FAIL" },
    ));
    if let Some(e) = &c.first_error {
        say(&format!("    first unexpected frame: {e}"));
    }
    emit(&json!({
        "scenario": "durable", "target": kind.name(), "rate": rate,
        "seconds": round(s.seconds, 2), "sent": c.sent, "acked": c.acked,
        "acked_per_s": round(acked_per_s, 0),
        "ack_p50_ms": round(s.ack_p50_ms, 2), "ack_p99_ms": round(s.ack_p99_ms, 2),
        "batch_mean": round(batch, 2), "append_mean_ms": round(append_ms, 3),
        "commit_rows_mean": round(m.rows, 2), "commit_conversations_mean": round(m.convs, 2),
        "errors": c.errors, "closed": c.closed, "pass": s.pass, "correct": s.correct,
        "cpu_node_pct": s.cpu.target, "cpu_gen_pct": s.cpu.gen, "cpu_pg_pct": s.cpu.pg,
        "cpu_other_pct": s.cpu.other, "cpu_machine_pct": s.cpu.machine,
        "cpu_rest_pct": s.cpu.rest(), "waited_s": s.waited_s, "discarded": s.discarded.is_some(),
    }));
}

async fn run_target(opts: &Opts, kind: Kind) -> Result<(Best, bool)> {
    let convs = if opts.smoke { 100 } else { 1_000 };
    let db = TestDb::create().await?;
    let (target, pop) = start_with_population(kind, &db, Variant::Direct, convs * 2).await?;
    let users = pop.users.clone();
    // The first member of each conversation sends; the second stays offline.
    let senders: Vec<u32> = pop.members.iter().map(|m| m[0]).collect();
    let order = pop.round_robin(&senders);
    let fleet = Fleet::open(
        Book::new(pop),
        &senders,
        |u| target.path(users[u as usize]),
        64,
    )
    .await?;
    let apis = target.apis();
    let warm = warm_up(&fleet, &order, opts, &format!("durable {}", kind.name())).await;
    let mut climb = Climb::new(ladder(opts, 1_000, 200), opts.refine);
    climb.all_correct &= warm;
    let (mut first_fail, mut best_step) = (None, None);
    while let Some(rate) = climb.next_rate() {
        let mut tries = 0;
        let s = loop {
            tries += 1;
            let before = commit_metrics(&apis).await;
            let mut s = run_step(&fleet, &target, &order, rate, opts, false, 50.0 + 1e-9).await;
            let after = commit_metrics(&apis).await;
            let m = Commits {
                batch: mean_between(before[0], after[0]),
                append_ms: mean_between(before[1], after[1]) * 1e3,
                rows: mean_between(before[2], after[2]),
                convs: mean_between(before[3], after[3]),
            };
            if !s.pass {
                drain_and_recount(&fleet, &mut s).await;
                s.discarded = if opts.smoke {
                    None
                } else {
                    retry_reason(&s, tries)
                };
            }
            report(kind, rate, &s, &m);
            if s.discarded.is_none() {
                break s;
            }
        };
        if !s.pass && first_fail.is_none() {
            first_fail = Some(format!(
                "{} at {rate}/s",
                if !s.correct {
                    "correctness"
                } else if s.ack_p99_ms > 50.0 {
                    "ack p99 over 50 ms"
                } else {
                    "backlog / not all acked"
                }
            ));
        }
        climb.record(rate, s.pass, s.correct, s.counts.closed == 0);
        if s.pass {
            best_step = Some(s);
        }
    }
    if !target.nodes.is_empty() {
        say(&format!("  counters: {}", trouble(&target).await));
    }
    fleet.close().await;
    target.stop().await;
    db.drop_now().await?;
    let (cpu, p99_ms) = best_step.map_or(Default::default(), |s| (s.cpu, s.ack_p99_ms));
    Ok((
        Best {
            target: kind,
            rate: climb.best,
            cpu,
            p99_ms,
            first_fail,
        },
        climb.all_correct,
    ))
}

/// The durable scenario on each of `targets`: with two or three nodes the senders
/// spread over them, each conversation written by the node its sender is on.
pub async fn run(opts: &Opts, targets: &[Kind]) -> Result<bool> {
    say(&format!(
        "durable: {} direct conversations, one sender each online; {} s steps; pass = all acked, ack p99 <= 50 ms",
        if opts.smoke { 100 } else { 1_000 },
        opts.step_seconds()
    ));
    let mut bests = Vec::new();
    let mut correct = true;
    for kind in targets {
        let (best, ok) = run_target(opts, *kind).await?;
        correct &= ok;
        bests.push(best);
    }
    summary("durable", "direct", &bests, "acked/s");
    Ok(correct)
}
