//! Faults on a schedule drawn from a seed, so that a run can be repeated. Network
//! faults go through the fault proxies each node reaches Postgres and Redis by (see
//! `world`): a proxy cuts a node off from one of them alone, without touching the
//! other nodes or the test's own connections, and it can lose the answer to one
//! COMMIT, which a network namespace could not aim at.

use crate::workload::Clock;
use crate::world::World;
use chat_testkit::{Fault, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// SIGKILL a node, then start it again.
    Kill,
    /// SIGSTOP a node, then SIGCONT.
    Pause,
    RestartRedis,
    /// `pg_ctl stop -m fast`, then start.
    RestartPostgresFast,
    /// `pg_ctl stop -m immediate` (a crash), then start.
    RestartPostgresImmediate,
    /// SIGTERM every node in turn, each started again before the next.
    RollingRestart,
    /// One node's link to Redis cut, then healed.
    CutRedis,
    /// One node's link to Postgres cut, then healed.
    CutPostgres,
    /// Every chunk on one node's links to Postgres and Redis delayed.
    Delay,
    /// One node's links stall now and then (a lossy network seen through TCP: losses
    /// come back as stalls of a retransmission timeout).
    Stalls,
    /// The answer to one COMMIT of one node is lost: it committed, the node never
    /// hears so.
    LoseCommit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub kind: Kind,
    /// Index of the node concerned (unused by the kinds of the whole cluster).
    pub node: usize,
    /// Start, seconds after the run began.
    pub at: f64,
    /// How long the fault lasts, for kinds that last.
    pub hold: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub kind: Kind,
    pub node: Option<String>,
    pub start: f64,
    pub end: f64,
    pub note: String,
}

impl Kind {
    /// Whether pushes may be slow (not lost) while it lasts: the silence checker does
    /// not count a member stale in such a window.
    pub fn slows_pushes(self) -> bool {
        matches!(
            self,
            Kind::Pause | Kind::Delay | Kind::Stalls | Kind::CutRedis | Kind::RestartRedis
        )
    }

    fn whole_cluster(self) -> bool {
        matches!(
            self,
            Kind::RestartRedis
                | Kind::RestartPostgresFast
                | Kind::RestartPostgresImmediate
                | Kind::RollingRestart
        )
    }
}

/// The schedule of a run: the kinds `quick` must hold first (shuffled), then every
/// kind once in a shuffled round, round after round (so a soak meets each kind as
/// often as the others), spaced so that the cluster recovers between faults.
pub fn schedule(seed: u64, start: f64, end: f64, nodes: usize, must: &[Kind]) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    const ALL: [Kind; 11] = [
        Kind::Kill,
        Kind::Pause,
        Kind::RestartRedis,
        Kind::RestartPostgresFast,
        Kind::RestartPostgresImmediate,
        Kind::RollingRestart,
        Kind::CutRedis,
        Kind::CutPostgres,
        Kind::Delay,
        Kind::Stalls,
        Kind::LoseCommit,
    ];
    // Fisher-Yates with the run's rng, so the order is the seed's too.
    let shuffle = |rng: &mut StdRng, kinds: &mut Vec<Kind>| {
        for i in (1..kinds.len()).rev() {
            let j = rng.random_range(0..=i);
            kinds.swap(i, j);
        }
    };
    let mut kinds: Vec<Kind> = must.to_vec();
    shuffle(&mut rng, &mut kinds);
    let mut out = Vec::new();
    let mut at = start;
    let mut i = 0;
    loop {
        if i == kinds.len() {
            let mut round = ALL.to_vec();
            shuffle(&mut rng, &mut round);
            kinds.extend(round);
        }
        let kind = kinds[i];
        let hold = match kind {
            Kind::Pause => rng.random_range(10.0..20.0),
            Kind::CutRedis | Kind::CutPostgres => rng.random_range(3.0..10.0),
            Kind::Delay | Kind::Stalls => rng.random_range(5.0..12.0),
            Kind::Kill => rng.random_range(1.0..4.0),
            _ => 0.0,
        };
        // What a fault takes beyond its hold (restarts, drains).
        let takes = match kind {
            Kind::RollingRestart => 30.0,
            Kind::RestartPostgresFast | Kind::RestartPostgresImmediate => 6.0,
            Kind::Kill => 6.0,
            _ => 2.0,
        };
        if at + hold + takes > end {
            break;
        }
        out.push(Planned {
            kind,
            node: rng.random_range(0..nodes),
            at,
            hold,
        });
        // Time to recover before the next one.
        at += hold + takes + rng.random_range(3.0..8.0);
        i += 1;
    }
    out
}

/// Carries out one planned fault (waiting until its time), and logs it.
pub async fn inject(world: &mut World, clock: Clock, p: &Planned) -> Result<Done> {
    let wait = p.at - clock.now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let start = clock.now();
    let hold = Duration::from_secs_f64(p.hold);
    let node = (!p.kind.whole_cluster()).then(|| world.slots[p.node].name().to_owned());
    let mut note = String::new();
    match p.kind {
        Kind::Kill => {
            let slot = &mut world.slots[p.node];
            slot.node.kill().await?;
            tokio::time::sleep(hold).await;
            restart(slot).await?;
        }
        Kind::Pause => {
            let slot = &mut world.slots[p.node];
            slot.signal("STOP")?;
            slot.paused = true;
            tokio::time::sleep(hold).await;
            slot.signal("CONT")?;
            slot.paused = false;
        }
        Kind::RestartRedis => {
            let port = world.redis.port;
            world.redis.stop().await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            world.redis = chat_testkit::RedisServer::start_on(port).await?;
        }
        Kind::RestartPostgresFast | Kind::RestartPostgresImmediate => {
            let mode = if p.kind == Kind::RestartPostgresFast {
                "fast"
            } else {
                "immediate"
            };
            world.pg.stop(mode)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            world.pg.start()?;
        }
        Kind::RollingRestart => {
            for slot in world.slots.iter_mut() {
                slot.node.terminate()?;
                let clean = slot.node.wait_exit(Duration::from_secs(15)).await?;
                if !clean {
                    note.push_str(&format!("{} did not exit in 15 s; ", slot.name()));
                }
                restart(slot).await?;
                // HAProxy sees it back (check every 500 ms, rise 1).
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Kind::CutRedis => {
            let slot = &world.slots[p.node];
            slot.redis.set(Fault::Cut);
            tokio::time::sleep(hold).await;
            slot.redis.set(Fault::Pass);
        }
        Kind::CutPostgres => {
            let slot = &world.slots[p.node];
            slot.pg.set(Fault::Cut);
            tokio::time::sleep(hold).await;
            slot.pg.set(Fault::Pass);
        }
        Kind::Delay => {
            let slot = &world.slots[p.node];
            let d = Duration::from_millis(50 + (p.at as u64 % 150));
            note = format!("{} ms per chunk", d.as_millis());
            slot.pg.set(Fault::Delay(d));
            slot.redis.set(Fault::Delay(d));
            tokio::time::sleep(hold).await;
            slot.pg.set(Fault::Pass);
            slot.redis.set(Fault::Pass);
        }
        Kind::Stalls => {
            let slot = &world.slots[p.node];
            let end = clock.now() + p.hold;
            let mut stalls = 0;
            while clock.now() < end {
                slot.pg.set(Fault::BlackHole);
                slot.redis.set(Fault::BlackHole);
                tokio::time::sleep(Duration::from_millis(300)).await;
                slot.pg.set(Fault::Pass);
                slot.redis.set(Fault::Pass);
                tokio::time::sleep(Duration::from_millis(700)).await;
                stalls += 1;
            }
            note = format!("{stalls} stalls of 300 ms");
        }
        Kind::LoseCommit => {
            let slot = &world.slots[p.node];
            let before = slot.pg.lost_commits();
            slot.pg.set(Fault::LoseCommitAnswer);
            let deadline = clock.now() + 10.0;
            while slot.pg.lost_commits() == before && clock.now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slot.pg.set(Fault::Pass);
            note = if slot.pg.lost_commits() > before {
                "one COMMIT answer lost".into()
            } else {
                "no COMMIT came in 10 s".into()
            };
        }
    }
    Ok(Done {
        kind: p.kind,
        node,
        start,
        end: clock.now(),
        note,
    })
}

/// Starts a stopped node again on its port; retried while Postgres is not back.
async fn restart(slot: &mut crate::world::Slot) -> Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match slot.node.restart().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| chat_testkit::HarnessError::Timeout("restart".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_its_seeds_and_a_soak_meets_every_kind() {
        let a = schedule(42, 10.0, 595.0, 3, &[]);
        let b = schedule(42, 10.0, 595.0, 3, &[]);
        let key = |s: &[Planned]| {
            s.iter()
                .map(|p| (p.kind, p.node, p.at.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b), "the same seed, the same schedule");
        assert!(a.len() >= 30, "only {} faults in a soak", a.len());
        let kinds: std::collections::HashSet<Kind> = a.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.len(), 11, "kinds met: {kinds:?}");
        for w in a.windows(2) {
            assert!(w[1].at >= w[0].at + w[0].hold, "faults overlap: {w:?}");
        }
    }

    #[test]
    fn quick_holds_what_it_must() {
        let must = [
            Kind::Kill,
            Kind::Kill,
            Kind::Kill,
            Kind::Pause,
            Kind::LoseCommit,
        ];
        let s = schedule(1, 10.0, 145.0, 3, &must);
        let kills = s.iter().filter(|p| p.kind == Kind::Kill).count();
        assert!(kills >= 3, "{kills} kills");
        assert!(s.iter().any(|p| p.kind == Kind::Pause));
        assert!(s.iter().any(|p| p.kind == Kind::LoseCommit));
    }
}
