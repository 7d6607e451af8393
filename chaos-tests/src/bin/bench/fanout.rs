//! fanout: every user online, an open-loop send rate spread over them, stepped up until
//! a step fails. A step passes when every acked message reached every other online
//! member exactly once and in seq order, and p99 send-to-push latency is under 100 ms.
//! Also `durable`'s step runner (acks only, no one else online).

use crate::common::{
    bulk_directs, bulk_groups, bulk_users, emit, load_env, pct_ms, round, say, Cpu, CpuProbe,
    NOISY_REST_PCT,
};
use crate::load::{Book, Fleet, Population, StepCounts};
use crate::targets::{metric, trouble, Kind, Target};
use crate::Opts;
use chat_testkit::{Result, TestDb};
use clap::ValueEnum;
use serde_json::json;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Groups of 10.
    Group,
    /// Direct (1:1) conversations.
    Direct,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Group => "group",
            Variant::Direct => "direct",
        }
    }
}

/// What one step measured.
pub struct Step {
    pub rate: u64,
    pub counts: StepCounts,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub cpu: Cpu,
    /// The generator sent the whole step (not stopped by a backlog).
    pub completed: bool,
    pub settled: bool,
    /// Nothing lost, duplicated, reordered or refused; no socket closed.
    pub correct: bool,
    pub pass: bool,
    pub seconds: f64,
    /// Seconds waited for a quiet machine before the step.
    pub waited_s: f64,
    /// Why this step is discarded and run again: a first failure (a rate fails only
    /// when two runs of it fail), or other processes busy during it.
    pub discarded: Option<&'static str>,
}

/// The users and conversations of a load, made in SQL (`db`, already migrated by a
/// node), or made up for the ceiling (`None`): `n` users in groups of 10, or in
/// pairs. Returns the population and the (conversation, member ids) list.
pub async fn population(
    db: Option<&TestDb>,
    variant: Variant,
    n: usize,
) -> Result<(Population, Vec<(i64, Vec<i64>)>)> {
    let users = match db {
        Some(db) => bulk_users(db, "u", n as i64, "1").await?,
        None => (1..=n as i64).collect(),
    };
    let size = match variant {
        Variant::Group => 10,
        Variant::Direct => 2,
    };
    let member_idx: Vec<Vec<u32>> = (0..n / size)
        .map(|k| ((k * size) as u32..((k + 1) * size) as u32).collect())
        .collect();
    let member_ids: Vec<Vec<i64>> = member_idx
        .iter()
        .map(|ms| ms.iter().map(|m| users[*m as usize]).collect())
        .collect();
    let convs = match (db, variant) {
        (None, _) => (1..=member_ids.len() as i64).collect(),
        (Some(db), Variant::Group) => bulk_groups(db, &member_ids).await?,
        (Some(db), Variant::Direct) => {
            let pairs: Vec<(i64, i64)> = member_ids.iter().map(|m| (m[0], m[1])).collect();
            bulk_directs(db, &pairs).await?
        }
    };
    let groups = convs.iter().copied().zip(member_ids).collect();
    Ok((Population::new(users, convs, member_idx), groups))
}

/// Starts `kind` and makes its population: a node first (it migrates the database),
/// the ceiling after (it is told the groups at start).
pub async fn start_with_population(
    kind: Kind,
    db: &TestDb,
    variant: Variant,
    n: usize,
) -> Result<(Target, Population)> {
    if kind == Kind::Ceiling {
        let (pop, groups) = population(None, variant, n).await?;
        let target = Target::start(kind, None, &groups, load_env).await?;
        Ok((target, pop))
    } else {
        let target = Target::start(kind, Some(db), &[], load_env).await?;
        let (pop, _) = population(Some(db), variant, n).await?;
        Ok((target, pop))
    }
}

/// The rates to try: the given ones, or doubling from `first` up to `max`.
pub fn ladder(opts: &Opts, first: u64, smoke_rate: u64) -> Vec<u64> {
    if opts.smoke {
        return vec![smoke_rate];
    }
    if !opts.rates.is_empty() {
        return opts.rates.clone();
    }
    let mut v = Vec::new();
    let mut r = first;
    while r <= opts.max_rate {
        v.push(r);
        r *= 2;
    }
    v
}

/// Runs one step at `rate` over `order` and settles it. `latency_limit_ms` applies to
/// pushes when `pushes` is true, to acks otherwise.
pub async fn run_step(
    fleet: &Fleet,
    target: &Target,
    order: &[u32],
    rate: u64,
    opts: &Opts,
    pushes: bool,
    latency_limit_ms: f64,
) -> Step {
    let waited_s = opts.quiet().await;
    let secs = opts.step_seconds();
    fleet
        .book
        .borrow_mut()
        .begin_step((rate as f64 * secs) as usize + 16);
    let probe = CpuProbe::start(&target.pids, &target.other_pids);
    let started = std::time::Instant::now();
    let backlog = rate.max(2_000);
    let completed = fleet
        .drive(order, rate as f64, Duration::from_secs_f64(secs), backlog)
        .await;
    let cpu = probe.stop();
    let seconds = started.elapsed().as_secs_f64();
    let settled = fleet.settle(Duration::from_secs(5)).await;
    let mut book = fleet.book.borrow_mut();
    let counts = book.finish_step();
    let p50_ms = pct_ms(&mut book.push_us, 0.5);
    let p99_ms = pct_ms(&mut book.push_us, 0.99);
    let ack_p50_ms = pct_ms(&mut book.ack_us, 0.5);
    let ack_p99_ms = pct_ms(&mut book.ack_us, 0.99);
    drop(book);
    let correct = counts.lost == 0
        && counts.dup == 0
        && counts.out_of_order == 0
        && counts.own == 0
        && counts.errors == 0
        && counts.closed == 0;
    let enough = counts.sent as f64 >= 0.95 * rate as f64 * secs;
    let latency = if pushes { p99_ms } else { ack_p99_ms };
    let pass = completed && settled && correct && enough && latency < latency_limit_ms;
    Step {
        rate,
        counts,
        p50_ms,
        p99_ms,
        ack_p50_ms,
        ack_p99_ms,
        cpu,
        completed,
        settled,
        correct,
        pass,
        seconds,
        waited_s,
        discarded: None,
    }
}

/// Before the first measured step: every sender of `order` sends about once, at 1,000/s
/// (200/s in a smoke run), so that every conversation is loaded (on every node) when
/// the measurement starts; a first step would otherwise pay for those loads. Not a
/// step of the climb, but checked like one: returns false when a message was lost,
/// duplicated or reordered.
pub async fn warm_up(fleet: &Fleet, order: &[u32], opts: &Opts, label: &str) -> bool {
    let rate = if opts.smoke { 200.0 } else { 1_000.0 };
    let n = order.len() as f64;
    fleet.book.borrow_mut().begin_step(order.len() + 16);
    fleet
        .drive(order, rate, Duration::from_secs_f64(n / rate), u64::MAX)
        .await;
    let settled = fleet.settle(Duration::from_secs(10)).await;
    fleet
        .quiesce(Duration::from_millis(300), Duration::from_secs(10))
        .await;
    let c = fleet.book.borrow_mut().finish_step();
    let ok = settled
        && c.lost == 0
        && c.dup == 0
        && c.out_of_order == 0
        && c.own == 0
        && c.errors == 0
        && c.closed == 0;
    say(&format!(
        "  {label}: warm-up, {} sends at {rate}/s: {} acked, pushes {}/{}, lost {} dup {} ooo {}{}",
        c.sent,
        c.acked,
        c.delivered,
        c.expected,
        c.lost,
        c.dup,
        c.out_of_order,
        if ok { "" } else { "  FAIL (correctness)" }
    ));
    ok
}

/// Whether a failed step is run again, and why: a rate fails only when it fails twice
/// (a single stall must not end the climb; the discarded run is still reported), and
/// a failure while other processes took the CPU is not counted at all (at most three
/// runs). Correctness failures and closed sockets are never run again.
pub fn retry_reason(s: &Step, tries: u32) -> Option<&'static str> {
    if s.pass || !s.correct || s.counts.closed > 0 {
        None
    } else if s.cpu.rest() > NOISY_REST_PCT && tries < 3 {
        Some("DISCARDED (other processes busy; again)")
    } else if tries < 2 {
        Some("FAILED ONCE (again, to confirm)")
    } else {
        None
    }
}

/// After a failed step: lets the backlog drain, then counts again what was lost for
/// good (pushes that were only late are found now).
pub async fn drain_and_recount(fleet: &Fleet, step: &mut Step) {
    fleet
        .quiesce(Duration::from_secs(1), Duration::from_secs(30))
        .await;
    let c = fleet.book.borrow_mut().finish_step();
    step.counts.lost = c.lost;
    step.counts.expected = c.expected;
    step.counts.acked = c.acked;
    step.counts.dup = c.dup;
    step.counts.out_of_order = c.out_of_order;
    step.counts.delivered = c.delivered;
}

fn verdict(s: &Step) -> &'static str {
    if let Some(why) = s.discarded {
        why
    } else if s.pass {
        "PASS"
    } else if !s.correct {
        "FAIL (correctness)"
    } else if !s.completed {
        "FAIL (backlog)"
    } else if !s.settled {
        "FAIL (not settled in 5 s)"
    } else {
        "FAIL (latency)"
    }
}

fn report(variant: Variant, target: Kind, s: &Step, seconds: f64) {
    let c = &s.counts;
    say(&format!(
        "  {:<7} {:<7} {:>6}/s  sent {:>7} acked {:>7}  pushes {:>8}/{:<8} lost {} dup {} ooo {}  p50 {:>7.2} p99 {:>7.2} ms (ack p99 {:>7.2})  cpu node {:>5.1}% gen {:>5.1}% pg {:>5.1}% other {:>4.1}% rest {:>4.1}%  {}",
        variant.name(), target.name(), s.rate, c.sent, c.acked, c.delivered, c.expected,
        c.lost, c.dup, c.out_of_order, s.p50_ms, s.p99_ms, s.ack_p99_ms,
        s.cpu.target, s.cpu.gen, s.cpu.pg, s.cpu.other, s.cpu.rest(), verdict(s),
    ));
    if let Some(e) = &c.first_error {
        say(&format!("    first unexpected frame: {e}"));
    }
    emit(&json!({
        "scenario": "fanout", "variant": variant.name(), "target": target.name(),
        "rate": s.rate, "seconds": round(seconds, 2),
        "sent": c.sent, "acked": c.acked, "delivered": c.delivered, "expected": c.expected,
        "lost": c.lost, "dup": c.dup, "out_of_order": c.out_of_order, "stale": c.stale,
        "own": c.own, "errors": c.errors, "resyncs": c.resyncs, "closed": c.closed,
        "p50_ms": round(s.p50_ms, 2), "p99_ms": round(s.p99_ms, 2),
        "ack_p50_ms": round(s.ack_p50_ms, 2), "ack_p99_ms": round(s.ack_p99_ms, 2),
        "pass": s.pass, "correct": s.correct,
        "cpu_node_pct": s.cpu.target, "cpu_gen_pct": s.cpu.gen, "cpu_pg_pct": s.cpu.pg,
        "cpu_other_pct": s.cpu.other, "cpu_machine_pct": s.cpu.machine,
        "cpu_rest_pct": s.cpu.rest(), "waited_s": s.waited_s, "discarded": s.discarded.is_some(),
    }));
}

/// Result of one target: the highest passing rate and its step's CPU.
pub struct Best {
    pub target: Kind,
    pub rate: u64,
    pub cpu: Cpu,
    pub p99_ms: f64,
    pub first_fail: Option<String>,
}

/// Steps the rate up on one running target until a step fails, then bisects between
/// the last pass and the failure `refine` times (to a multiple of 100).
pub struct Climb {
    ladder: Vec<u64>,
    i: usize,
    refine_left: u32,
    lo: u64,
    hi: Option<u64>,
    done: bool,
    pub best: u64,
    pub all_correct: bool,
}

impl Climb {
    pub fn new(ladder: Vec<u64>, refine: u32) -> Climb {
        Climb {
            ladder,
            i: 0,
            refine_left: refine,
            lo: 0,
            hi: None,
            done: false,
            best: 0,
            all_correct: true,
        }
    }

    /// The next rate to try, if any.
    pub fn next_rate(&self) -> Option<u64> {
        if self.done {
            return None;
        }
        match self.hi {
            None => self.ladder.get(self.i).copied(),
            Some(hi) => {
                let mid = ((self.lo + hi) / 2 / 100) * 100;
                (self.refine_left > 0 && mid > self.lo && mid < hi).then_some(mid)
            }
        }
    }

    /// What the step at `rate` gave; `go_on` false stops the climb (sockets closed).
    pub fn record(&mut self, rate: u64, pass: bool, correct: bool, go_on: bool) {
        self.all_correct &= correct;
        if self.hi.is_some() {
            self.refine_left = self.refine_left.saturating_sub(1);
        }
        if pass {
            self.best = self.best.max(rate);
            self.lo = self.lo.max(rate);
            if self.hi.is_none() {
                self.i += 1;
            }
        } else {
            self.hi = Some(rate);
            self.done |= !go_on;
        }
    }
}

async fn run_target(opts: &Opts, variant: Variant, kind: Kind) -> Result<(Best, bool)> {
    let n = if opts.smoke { 200 } else { 2_000 };
    let db = TestDb::create().await?;
    let (target, pop) = start_with_population(kind, &db, variant, n).await?;
    let users = pop.users.clone();
    let all: Vec<u32> = (0..n as u32).collect();
    let order = pop.round_robin(&all);
    let book = Book::new(pop);
    let fleet = Fleet::open(book, &all, |u| target.path(users[u as usize]), 64).await?;
    if target.nodes.len() > 1 {
        let mut per = Vec::new();
        for api in target.apis() {
            per.push(metric(&api, "chat_open_connections").await.to_string());
        }
        say(&format!(
            "  ({} sockets on {}: {} per node)",
            n,
            kind.name(),
            per.join(" / ")
        ));
    }
    let warm = warm_up(
        &fleet,
        &order,
        opts,
        &format!("{} {}", variant.name(), kind.name()),
    )
    .await;
    let mut climb = Climb::new(ladder(opts, 500, 200), opts.refine);
    climb.all_correct &= warm;
    let (mut first_fail, mut best_step) = (None, None);
    while let Some(rate) = climb.next_rate() {
        let mut tries = 0;
        let s = loop {
            let mut s = run_step(&fleet, &target, &order, rate, opts, true, 100.0).await;
            tries += 1;
            if !s.pass {
                drain_and_recount(&fleet, &mut s).await;
                s.discarded = if opts.smoke {
                    None
                } else {
                    retry_reason(&s, tries)
                };
            }
            report(variant, kind, &s, s.seconds);
            if s.discarded.is_none() {
                break s;
            }
        };
        if !s.pass && first_fail.is_none() {
            first_fail = Some(format!("{} at {rate}/s", verdict(&s)));
        }
        climb.record(rate, s.pass, s.correct, s.counts.closed == 0);
        if s.pass {
            best_step = Some(s);
        }
    }
    let (best, correct) = (climb.best, climb.all_correct);
    if !target.nodes.is_empty() {
        say(&format!("  counters: {}", trouble(&target).await));
    }
    fleet.close().await;
    target.stop().await;
    db.drop_now().await?;
    let (cpu, p99_ms) = best_step.map_or((Cpu::default(), 0.0), |s| (s.cpu, s.p99_ms));
    Ok((
        Best {
            target: kind,
            rate: best,
            cpu,
            p99_ms,
            first_fail,
        },
        correct,
    ))
}

/// Prints the summary of one variant: highest passing rate and ratio to the ceiling.
pub fn summary(scenario: &str, variant: &str, bests: &[Best], unit: &str) {
    let ceiling = bests
        .iter()
        .find(|b| b.target == Kind::Ceiling)
        .map(|b| b.rate);
    say(&format!("  {scenario} {variant}: highest passing rate"));
    for b in bests {
        let ratio = ceiling.filter(|c| *c > 0).map(|c| b.rate as f64 / c as f64);
        say(&format!(
            "    {:<8} {:>7} {unit}  {:>6}  of the ceiling  (cpu node {:.0}% gen {:.0}% pg {:.0}% other {:.0}% rest {:.0}%; p99 {:.1} ms){}",
            b.target.name(),
            b.rate,
            ratio.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0)),
            b.cpu.target, b.cpu.gen, b.cpu.pg, b.cpu.other, b.cpu.rest(), b.p99_ms,
            b.first_fail.as_ref().map_or(String::new(), |f| format!("; first failure: {f}")),
        ));
        emit(&json!({
            "scenario": format!("{scenario}-summary"), "variant": variant, "target": b.target.name(),
            "best_rate": b.rate, "ratio_to_ceiling": ratio.map(|r| round(r, 3)),
            "cpu_node_pct": b.cpu.target, "cpu_gen_pct": b.cpu.gen, "cpu_pg_pct": b.cpu.pg,
            "cpu_other_pct": b.cpu.other, "cpu_rest_pct": b.cpu.rest(), "p99_ms": round(b.p99_ms, 2),
            "first_fail": b.first_fail,
        }));
    }
}

/// The fanout scenario over the chosen targets and variants; returns false when a
/// step lost, duplicated or reordered a message.
pub async fn run(opts: &Opts, targets: &[Kind]) -> Result<bool> {
    let mut correct = true;
    for variant in opts.variants() {
        say(&format!(
            "fanout {}: {} users, every user online; {} s steps",
            variant.name(),
            if opts.smoke { 200 } else { 2_000 },
            opts.step_seconds()
        ));
        let mut bests = Vec::new();
        for kind in targets {
            let (best, ok) = run_target(opts, variant, *kind).await?;
            correct &= ok;
            bests.push(best);
        }
        summary("fanout", variant.name(), &bests, "sends/s");
    }
    Ok(correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climb_doubles_then_bisects() {
        let mut c = Climb::new(vec![500, 1000, 2000, 4000], 2);
        let mut tried = Vec::new();
        while let Some(r) = c.next_rate() {
            tried.push(r);
            c.record(r, r <= 2500, true, true);
        }
        assert_eq!(tried, vec![500, 1000, 2000, 4000, 3000, 2500]);
        assert_eq!(c.best, 2500);
    }

    #[test]
    fn climb_stops_when_told() {
        let mut c = Climb::new(vec![500, 1000], 2);
        assert_eq!(c.next_rate(), Some(500));
        c.record(500, false, false, false);
        assert_eq!(c.next_rate(), None);
        assert_eq!(c.best, 0);
        assert!(!c.all_correct);
    }
}
