//! Presence traffic: 10,000 users online on two nodes (Redis bus), each with 50
//! contacts (user i befriends i±1..25 in a ring). Counts, from the nodes' `/metrics`,
//! what one connect and one disconnect cost once everyone is online (announcements,
//! presence bus events, frames written), and what a reconnect storm of 5,000 sockets
//! costs (closed and opened again at once, faster than the offline grace).
//!
//! The figures are counts, not speeds: the same in a debug and a release build.

use crate::common::{bulk_users, emit, load_env, round, say, token};
use crate::load::{connect_all, Ws};
use crate::targets::{metric, Kind, Target};
use crate::Opts;
use chat_testkit::{Result, TestDb};
use serde_json::json;
use std::time::Duration;

const CONTACTS_EACH_SIDE: i64 = 25;
const PARALLEL: usize = 200;

/// Counters summed over the nodes.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    online: f64,
    offline: f64,
    publishes: f64,
    frames: f64,
    bus: f64,
    changes: f64,
}

impl Counts {
    fn minus(self, o: Counts) -> Counts {
        Counts {
            online: self.online - o.online,
            offline: self.offline - o.offline,
            publishes: self.publishes - o.publishes,
            frames: self.frames - o.frames,
            bus: self.bus - o.bus,
            changes: self.changes - o.changes,
        }
    }
}

async fn counts(t: &Target) -> Counts {
    let mut c = Counts::default();
    for api in t.apis() {
        c.changes += metric(&api, "chat_presence_changes_total").await;
        c.publishes += metric(&api, "chat_presence_publishes_total").await;
        c.frames += metric(&api, "chat_presence_frames_total").await;
        c.bus += metric(&api, "chat_bus_publishes_total").await;
        let (_, body) = api.get("/metrics", None).await.unwrap_or_default();
        for line in body.as_str().unwrap_or("").lines() {
            let value = || {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("chat_presence_announcements_total{state=\"online\"}") {
                c.online += value();
            } else if line.starts_with("chat_presence_announcements_total{state=\"offline\"}") {
                c.offline += value();
            }
        }
    }
    c
}

/// Waits until the counters stop moving (the grace and the ticks have passed).
async fn settled(t: &Target, at_least: Duration) -> Counts {
    tokio::time::sleep(at_least).await;
    let mut last = counts(t).await;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counts(t).await;
        if now.changes == last.changes && now.publishes == last.publishes {
            return now;
        }
        last = now;
    }
    last
}

fn report(what: &str, per: f64, d: Counts) -> serde_json::Value {
    let n = per.max(1.0);
    say(&format!(
        "  presence {what:<26} per socket: announced {:>6.2} online {:>6.2} offline, {:>7.2} presence events, {:>7.2} bus publishes, {:>7.2} frames written here",
        d.online / n, d.offline / n, d.publishes / n, d.bus / n, d.frames / n
    ));
    json!({
        "scenario": "presence", "step": what, "sockets": per,
        "announced_online": d.online, "announced_offline": d.offline,
        "presence_events": d.publishes, "bus_publishes": d.bus, "frames_here": d.frames,
        "presence_events_per_socket": round(d.publishes / n, 2),
        "bus_publishes_per_socket": round(d.bus / n, 2),
    })
}

pub async fn run(opts: &Opts) -> Result<bool> {
    let (n, late, storm) = if opts.smoke {
        (400_i64, 20_usize, 200_usize)
    } else {
        (10_000, 100, 5_000)
    };
    say(&format!(
        "presence: {n} users with {} contacts each on two nodes; {late} connect and disconnect once all are online; a storm of {storm} reconnects",
        2 * CONTACTS_EACH_SIDE
    ));
    let db = TestDb::create().await?;
    let target = Target::start(Kind::Node2, Some(&db), &[], |o| {
        load_env(o)
            .set("CHAT__PRESENCE__OFFLINE_GRACE", "2s")
            .set("CHAT__LIMITS__MAX_CONNECTIONS_PER_USER", "4")
    })
    .await?;
    let users = bulk_users(&db, "p", n, "1").await?;
    {
        let c = db.client().await?;
        c.execute(
            "INSERT INTO contacts (user_id, peer)
             SELECT u.id, v.id FROM users u
               JOIN generate_series(1, $1::bigint) d ON true
               JOIN users v ON v.username = 'p' || (((substr(u.username, 2)::bigint - 1 + d) % $2) + 1)
              WHERE u.username ~ '^p[0-9]+$'
             ON CONFLICT DO NOTHING",
            &[&CONTACTS_EACH_SIDE, &n],
        )
        .await?;
        c.execute(
            "INSERT INTO contacts (user_id, peer) SELECT peer, user_id FROM contacts ON CONFLICT DO NOTHING",
            &[],
        )
        .await?;
    }
    let paths: Vec<(u16, String)> = users
        .iter()
        .map(|u| target.path_with(*u, &token(*u)))
        .collect();
    let (first, rest) = paths.split_at(paths.len() - late);

    // Everyone but `late` comes online.
    let before = counts(&target).await;
    let mut open: Vec<Ws> = connect_all(first, PARALLEL).await?;
    let after = settled(&target, Duration::from_secs(1)).await;
    let mut lines = vec![report(
        "mass connect",
        first.len() as f64,
        after.minus(before),
    )];

    // One at a time, so no tick coalesces two.
    let before = after;
    let mut late_open = Vec::new();
    for p in rest {
        late_open.extend(connect_all(std::slice::from_ref(p), 1).await?);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let after = settled(&target, Duration::from_millis(500)).await;
    lines.push(report(
        "connect, all online",
        late as f64,
        after.minus(before),
    ));

    let before = after;
    for ws in late_open.drain(..) {
        drop(ws);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let after = settled(&target, Duration::from_secs(3)).await;
    lines.push(report(
        "disconnect, all online",
        late as f64,
        after.minus(before),
    ));

    // The storm: `storm` sockets close and open again at once.
    let before = after;
    let storm = storm.min(open.len());
    let again: Vec<(u16, String)> = first[..storm].to_vec();
    let started = std::time::Instant::now();
    open.drain(..storm);
    let mut back = connect_all(&again, PARALLEL).await?;
    let took = started.elapsed().as_secs_f64();
    let after = settled(&target, Duration::from_secs(4)).await;
    say(&format!(
        "  presence reconnect storm: {storm} sockets closed and open again in {took:.1} s (offline grace 2 s)"
    ));
    let mut storm_line = report("reconnect storm", storm as f64, after.minus(before));
    storm_line["storm_seconds"] = json!(round(took, 2));
    lines.push(storm_line);
    for l in &lines {
        emit(l);
    }
    back.clear();
    drop(open);
    target.stop().await;
    let _ = db.drop_now().await;
    Ok(true)
}
