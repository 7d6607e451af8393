//! notify: offline notifications under a steady load of sends into direct
//! conversations whose peers are offline (every message is one notification). Three
//! runs per target, each on a fresh database: notifications off (the ceiling of this
//! scenario: the write path without the queue), the receiver up, the receiver down
//! (its port refuses connections) and then back. Prints the sends' ack p50/p99 of
//! each run and its ratio to the run with notifications off, the time from a send to
//! its notification taken by the receiver (p50/p99, an upper bound of stored → POST
//! received), and checks that every notification arrived once, also those due while
//! the receiver was down.

use crate::common::{emit, load_env, pct_ms, round, say};
use crate::fanout::{population, Variant};
use crate::targets::{Kind, Target};
use crate::Opts;
use chat_testkit::{Receiver, Result, TestDb, WsClient};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-notify-secret-0123";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    Up,
    Down,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Up => "up",
            Mode::Down => "down",
        }
    }
}

/// What one run measured.
struct Run {
    acked: usize,
    sent: usize,
    ack_p50: f64,
    ack_p99: f64,
    notify_p50: f64,
    notify_p99: f64,
    /// Notifications expected, taken (distinct), taken more than once.
    expected: usize,
    taken: usize,
    dup: usize,
    /// Seconds from the receiver's return to the last notification taken (down only).
    recovered_s: f64,
}

/// One sender: its socket, its conversation, its peer.
struct Sender {
    ws: WsClient,
    conv: i64,
    peer: i64,
}

async fn one_run(opts: &Opts, kind: Kind, mode: Mode) -> Result<Run> {
    let (convs, rate) = if opts.smoke {
        (20, 100.0)
    } else {
        (200, 1_000.0)
    };
    let db = TestDb::create().await?;
    let mut receiver = Receiver::start(SECRET).await?;
    let url = receiver.url();
    let target = Target::start(kind, Some(&db), &[], |o| {
        let o = load_env(o);
        if mode == Mode::Off {
            o
        } else {
            o.set("CHAT__NOTIFY__URL", &url)
                .set("CHAT__NOTIFY__SECRET", SECRET)
                .set("CHAT__NOTIFY__MAX_BACKOFF", "2s")
                .set("CHAT__NOTIFY__POLL", "250ms")
        }
    })
    .await?;
    let (pop, _) = population(Some(&db), Variant::Direct, convs * 2).await?;
    let mut senders = Vec::with_capacity(convs);
    for (k, m) in pop.members.iter().enumerate() {
        let id = pop.users[m[0] as usize];
        let (port, path) = target.path(id);
        let (ws, _) = WsClient::connect_hello(&format!("ws://127.0.0.1:{port}{path}")).await?;
        senders.push(Sender {
            ws,
            conv: pop.convs[k],
            peer: pop.users[m[1] as usize],
        });
    }
    if mode == Mode::Down {
        receiver.stop().await;
    }
    // A warm-up send each, then the measured step: every sender at rate / senders.
    let secs = opts.step_seconds();
    let interval = Duration::from_secs_f64(convs as f64 / rate);
    let started = Instant::now();
    let results =
        futures_util::future::join_all(senders.iter_mut().enumerate().map(|(k, s)| async move {
            let mut out: Vec<(i64, i64, Instant, u32)> = Vec::new();
            let mut sent = 0usize;
            let _ = s.ws.send_msg(s.conv, &format!("w{k}"), "warm").await;
            let warm = s.ws.expect("ack", Duration::from_secs(10)).await;
            let mut next = Instant::now() + interval.mul_f64((k as f64) / convs as f64);
            let end = started + Duration::from_secs_f64(secs) + Duration::from_secs(1);
            let mut i = 0;
            while warm.is_ok() && Instant::now() < end {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                i += 1;
                let t0 = Instant::now();
                sent += 1;
                if s.ws
                    .send_msg(s.conv, &format!("s{k}-{i}"), "a message for you")
                    .await
                    .is_err()
                {
                    break;
                }
                match s.ws.expect("ack", Duration::from_secs(10)).await {
                    Ok(a) => {
                        let ms = t0.elapsed().as_micros() as u32;
                        out.push((s.conv, a["seq"].as_i64().unwrap_or(0), t0, ms));
                    }
                    Err(_) => break,
                }
            }
            (
                out,
                sent,
                warm.ok().and_then(|a| a["seq"].as_i64()),
                s.conv,
                s.peer,
            )
        }))
        .await;
    let mut ack_us: Vec<u32> = Vec::new();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut expected: HashSet<String> = HashSet::new();
    let mut sent = 0;
    for (acks, n, warm_seq, conv, peer) in &results {
        sent += n;
        if let Some(seq) = warm_seq {
            expected.insert(format!("{conv}:{seq}:{peer}"));
        }
        for (conv, seq, t0, us) in acks {
            ack_us.push(*us);
            let id = format!("{conv}:{seq}:{peer}");
            sent_at.insert(id.clone(), *t0);
            expected.insert(id);
        }
    }
    let acked = ack_us.len();
    let mut recovered_s = 0.0;
    if mode == Mode::Down {
        // Nothing was taken while down; everything comes once it is back.
        receiver.resume().await?;
        let back = Instant::now();
        let _ = receiver
            .wait_until(Duration::from_secs(60), |t| distinct(t) >= expected.len())
            .await;
        recovered_s = back.elapsed().as_secs_f64();
    } else if mode == Mode::Up {
        let _ = receiver
            .wait_until(Duration::from_secs(60), |t| distinct(t) >= expected.len())
            .await;
    }
    let taken = receiver.taken();
    let mut seen: HashSet<String> = HashSet::new();
    let mut dup = 0;
    let mut notify_us: Vec<u32> = Vec::new();
    for t in &taken {
        let id = t.notification["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(t0) = sent_at.get(&id) {
            if mode == Mode::Up && !seen.contains(&id) {
                notify_us.push(t.at.saturating_duration_since(*t0).as_micros() as u32);
            }
        }
        if !seen.insert(id) {
            dup += 1;
        }
    }
    let taken_expected = seen.intersection(&expected).count();
    for s in senders {
        s.ws.close().await;
    }
    target.stop().await;
    drop(receiver);
    db.drop_now().await?;
    let p = |v: &mut Vec<u32>, q: f64| pct_ms(v, q);
    Ok(Run {
        acked,
        sent,
        ack_p50: p(&mut ack_us, 0.50),
        ack_p99: p(&mut ack_us, 0.99),
        notify_p50: p(&mut notify_us, 0.50),
        notify_p99: p(&mut notify_us, 0.99),
        expected: if mode == Mode::Off { 0 } else { expected.len() },
        taken: taken_expected,
        dup,
        recovered_s,
    })
}

fn distinct(t: &[chat_testkit::Taken]) -> usize {
    t.iter()
        .filter_map(|t| t.notification["id"].as_str())
        .collect::<HashSet<_>>()
        .len()
}

/// The notify scenario on each node target of `targets`.
pub async fn run(opts: &Opts, targets: &[Kind]) -> Result<bool> {
    let (convs, rate) = if opts.smoke { (20, 100) } else { (200, 1_000) };
    say(&format!(
        "notify: {convs} direct conversations, the sender online, the peer offline; {rate} sends/s for {} s; notifications off, receiver up, receiver down then back",
        opts.step_seconds()
    ));
    let mut correct = true;
    for kind in targets.iter().copied().filter(|k| *k != Kind::Ceiling) {
        let mut off_p99 = f64::NAN;
        let mut off_p50 = f64::NAN;
        for mode in [Mode::Off, Mode::Up, Mode::Down] {
            let waited = opts.quiet().await;
            let r = one_run(opts, kind, mode).await?;
            if mode == Mode::Off {
                off_p50 = r.ack_p50;
                off_p99 = r.ack_p99;
            }
            let ok =
                r.acked == r.sent && (mode == Mode::Off || (r.taken == r.expected && r.dup == 0));
            correct &= ok;
            say(&format!(
                "  notify {:<6} receiver {:<4} sent {:>6} acked {:>6}  ack p50 {:>6.2} p99 {:>6.2} ms (x{:.2} / x{:.2} of off)  notifications {:>6}/{:<6} dup {}  send->POST p50 {:>7.1} p99 {:>7.1} ms{}  {}",
                kind.name(), mode.name(), r.sent, r.acked, r.ack_p50, r.ack_p99,
                r.ack_p50 / off_p50, r.ack_p99 / off_p99, r.taken, r.expected, r.dup,
                r.notify_p50, r.notify_p99,
                if mode == Mode::Down { format!("  all taken {:.1} s after it came back", r.recovered_s) } else { String::new() },
                if ok { "OK" } else { "LOST OR DUPLICATED" },
            ));
            emit(&json!({
                "scenario": "notify", "target": kind.name(), "receiver": mode.name(),
                "sent": r.sent, "acked": r.acked,
                "ack_p50_ms": round(r.ack_p50, 2), "ack_p99_ms": round(r.ack_p99, 2),
                "ack_p50_ratio_to_off": round(r.ack_p50 / off_p50, 2),
                "ack_p99_ratio_to_off": round(r.ack_p99 / off_p99, 2),
                "notifications_expected": r.expected, "notifications_taken": r.taken,
                "duplicates": r.dup,
                "send_to_post_p50_ms": round(r.notify_p50, 1),
                "send_to_post_p99_ms": round(r.notify_p99, 1),
                "recovered_s": round(r.recovered_s, 1), "waited_s": waited, "correct": ok,
            }));
        }
    }
    Ok(correct)
}
