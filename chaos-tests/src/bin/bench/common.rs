//! What every scenario uses: node settings, tokens, bulk set-up in SQL, `/metrics`
//! readings, CPU and memory readings from `/proc`, and the report lines.

use chat_testkit::process::TEST_SECRET;
use chat_testkit::{Api, HarnessError, NodeOptions, Result, TestDb};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Node settings of every bench: no rate limit in the way, deep queues, quiet logs.
pub fn bench_env(opts: NodeOptions) -> NodeOptions {
    opts.set("CHAT__LIMITS__SENDS_PER_SEC", "100000")
        .set("CHAT__LIMITS__MAX_CONNECTIONS_PER_USER", "64")
        .set("CHAT__LIMITS__OUTBOUND_QUEUE", "65536")
        .set("CHAT__DATABASE__POOL_SIZE", "16")
        .set("CHAT__LOG__LEVEL", "warn")
        .set("RUST_LOG", "warn")
}

/// [`bench_env`] plus a long heartbeat: the load generator's sockets of the new
/// scenarios never ping, and some of them stay silent for the whole run.
pub fn load_env(opts: NodeOptions) -> NodeOptions {
    bench_env(opts).set("CHAT__SERVER__HEARTBEAT_S", "3600")
}

/// A token of user `id`, minted with the test secret, valid for a day.
pub fn token(id: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": id.to_string(), "iat": now, "exp": now + 86_400}),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

/// Makes `n` users in SQL (fast), returns their ids in ascending order.
pub async fn bulk_users(db: &TestDb, prefix: &str, n: i64, org: &str) -> Result<Vec<i64>> {
    let c = db.client().await?;
    let rows = c
        .query(
            "INSERT INTO users (username, display_name, org, roles)
             SELECT $1 || g, $1 || g, $3, ARRAY['3'] FROM generate_series(1, $2::bigint) g RETURNING id",
            &[&prefix, &n, &org],
        )
        .await?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A group of `members` made in SQL (the members must exist).
pub async fn bulk_group(db: &TestDb, members: &[i64]) -> Result<i64> {
    let c = db.client().await?;
    let id: i64 = c
        .query_one(
            "INSERT INTO conversations (kind, title, created_by) VALUES ('group', 'bench', $1) RETURNING id",
            &[&members[0]],
        )
        .await?
        .get(0);
    c.execute(
        "INSERT INTO members (conv, user_id) SELECT $1, unnest($2::bigint[])",
        &[&id, &members],
    )
    .await?;
    Ok(id)
}

/// Many groups in two statements: `groups[k]` are the members of group k. Returns the
/// conversation ids in the same order.
pub async fn bulk_groups(db: &TestDb, groups: &[Vec<i64>]) -> Result<Vec<i64>> {
    let c = db.client().await?;
    let creators: Vec<i64> = groups.iter().map(|g| g[0]).collect();
    let rows = c
        .query(
            "INSERT INTO conversations (kind, title, created_by)
             SELECT 'group', 'bench', u FROM unnest($1::bigint[]) WITH ORDINALITY AS t(u, n)
             ORDER BY n RETURNING id",
            &[&creators],
        )
        .await?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    let (mut conv, mut user) = (Vec::new(), Vec::new());
    for (id, g) in ids.iter().zip(groups) {
        for m in g {
            conv.push(*id);
            user.push(*m);
        }
    }
    c.execute(
        "INSERT INTO members (conv, user_id) SELECT unnest($1::bigint[]), unnest($2::bigint[])",
        &[&conv, &user],
    )
    .await?;
    Ok(ids)
}

/// Many direct conversations in two statements: one per pair (the pair's ids must
/// differ). Returns the conversation ids in the order of `pairs`.
pub async fn bulk_directs(db: &TestDb, pairs: &[(i64, i64)]) -> Result<Vec<i64>> {
    let c = db.client().await?;
    let a: Vec<i64> = pairs.iter().map(|(x, y)| *x.min(y)).collect();
    let b: Vec<i64> = pairs.iter().map(|(x, y)| *x.max(y)).collect();
    let rows = c
        .query(
            "INSERT INTO conversations (kind, direct_a, direct_b, created_by)
             SELECT 'direct', a, b, a FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS t(a, b, n)
             ORDER BY n RETURNING id",
            &[&a, &b],
        )
        .await?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    let (mut conv, mut user) = (Vec::new(), Vec::new());
    for (id, (x, y)) in ids.iter().zip(pairs) {
        conv.extend([*id, *id]);
        user.extend([*x, *y]);
    }
    c.execute(
        "INSERT INTO members (conv, user_id) SELECT unnest($1::bigint[]), unnest($2::bigint[])",
        &[&conv, &user],
    )
    .await?;
    Ok(ids)
}

/// Sum and count of a Prometheus histogram or summary in the node's /metrics.
pub async fn histogram(api: &Api, name: &str) -> (f64, f64) {
    let Ok((_, body)) = api.get("/metrics", None).await else {
        return (0.0, 0.0);
    };
    let text = body.as_str().unwrap_or("");
    let get = |suffix: &str| {
        let key = format!("{name}{suffix}");
        text.lines()
            .filter(|l| {
                l.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|v| v.parse::<f64>().ok())
            .sum::<f64>()
    };
    (get("_sum"), get("_count"))
}

/// Mean of a histogram between two readings of (sum, count).
pub fn mean_between(before: (f64, f64), after: (f64, f64)) -> f64 {
    let n = after.1 - before.1;
    if n > 0.0 {
        (after.0 - before.0) / n
    } else {
        0.0
    }
}

/// p-th percentile of microsecond samples (sorted in place), in milliseconds.
pub fn pct_ms(samples: &mut [u32], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    f64::from(samples[idx.min(samples.len() - 1)]) / 1e3
}

/// Mean of microsecond samples, in milliseconds.
pub fn mean_ms(samples: &[u32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|s| f64::from(*s)).sum::<f64>() / samples.len() as f64 / 1e3
}

/// Rounds to `d` decimals for the JSON lines.
pub fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (x * f).round() / f
}

// ---------------------------------------------------------------------------------------
// Report lines

static JSON_OUT: OnceLock<PathBuf> = OnceLock::new();

/// Also append every JSON line to this file.
pub fn set_json_out(path: PathBuf) {
    let _ = JSON_OUT.set(path);
}

/// One JSON line on stdout (and in the `--json` file).
pub fn emit(v: &Value) {
    println!("{v}");
    if let Some(path) = JSON_OUT.get() {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{v}");
        }
    }
}

/// A human line on stdout.
pub fn say(line: &str) {
    println!("{line}");
}

// ---------------------------------------------------------------------------------------
// /proc readings

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Pids of every process whose command name is `comm`.
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// The pid of a process named `comm` whose command line contains `needle`.
pub fn pid_with_arg(comm: &str, needle: &str) -> Option<u32> {
    pids_named(comm).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}

/// The soft limit of open files of this process, and how many it has open now.
pub fn open_files() -> (u64, u64) {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024);
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (limit, open)
}

/// CPU time of three groups of processes between two moments: the target (node
/// processes or the ceiling), this process, Postgres, and the rest (Redis, HAProxy).
pub struct CpuProbe {
    target: Vec<u32>,
    other: Vec<u32>,
    start: std::time::Instant,
    t0: Vec<(u32, u64)>,
    g0: u64,
    pg0: Vec<(u32, u64)>,
    o0: Vec<(u32, u64)>,
    m0: (u64, u64),
}

/// A failing step during which other processes took more than this (% of one core)
/// is run again (at most twice) once the machine is quiet.
pub const NOISY_REST_PCT: f64 = 25.0;

/// CPU% of one step: 100 is one core busy for the whole step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub target: f64,
    pub gen: f64,
    pub pg: f64,
    pub other: f64,
    /// The whole machine (all cores: at most 100 × cores), from /proc/stat.
    pub machine: f64,
}

impl Cpu {
    /// What the machine spent outside the measured processes (the kernel's own work
    /// for them, and anything else running: a build, another test).
    pub fn rest(&self) -> f64 {
        round(
            (self.machine - self.target - self.gen - self.pg - self.other).max(0.0),
            1,
        )
    }
}

/// Busy and total clock ticks of all cores, from the first line of /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user). Busy
    // is user + nice + system: this kernel charges interrupt work to the task it
    // interrupts, and ticks that land in softirq (loopback traffic) are left out, so
    // that what remains beyond the measured processes is other processes.
    let total: u64 = v.iter().take(8).sum();
    let busy = v.iter().take(3).sum();
    (busy, total)
}

fn sample(pids: &[u32]) -> Vec<(u32, u64)> {
    pids.iter()
        .filter_map(|p| cpu_ticks(*p).map(|t| (*p, t)))
        .collect()
}

fn delta(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    after
        .iter()
        .map(|(p, t)| {
            let b = before.iter().find(|(q, _)| q == p).map_or(0, |(_, t0)| *t0);
            t.saturating_sub(b)
        })
        .sum()
}

impl CpuProbe {
    pub fn start(target: &[u32], other: &[u32]) -> CpuProbe {
        CpuProbe {
            target: target.to_vec(),
            other: other.to_vec(),
            start: std::time::Instant::now(),
            t0: sample(target),
            g0: cpu_ticks(std::process::id()).unwrap_or(0),
            pg0: sample(&pids_named("postgres")),
            o0: sample(other),
            m0: machine_ticks(),
        }
    }

    pub fn stop(&self) -> Cpu {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let pct = |ticks: u64| round(ticks as f64 / clk_tck() / secs * 100.0, 1);
        Cpu {
            target: pct(delta(&self.t0, &sample(&self.target))),
            gen: pct(cpu_ticks(std::process::id())
                .unwrap_or(0)
                .saturating_sub(self.g0)),
            pg: pct(delta(&self.pg0, &sample(&pids_named("postgres")))),
            other: pct(delta(&self.o0, &sample(&self.other))),
            machine: pct(machine_ticks().0.saturating_sub(self.m0.0)),
        }
    }
}

/// Waits (at most `max`) until the whole machine has been nearly idle for a second:
/// less than 30% of one core busy while the bench itself is between steps. Another
/// build or test on the machine would otherwise take its CPU from the figures. Returns
/// the seconds waited.
pub async fn wait_quiet(max: std::time::Duration) -> f64 {
    if max.is_zero() {
        return 0.0;
    }
    let start = std::time::Instant::now();
    let mut told = false;
    loop {
        let (b0, _) = machine_ticks();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (b1, _) = machine_ticks();
        let busy = b1.saturating_sub(b0) as f64 / clk_tck() * 100.0;
        let waited = start.elapsed().as_secs_f64();
        if busy < 30.0 {
            if told {
                eprintln!("  (the machine is quiet again after {waited:.0} s)");
            }
            return round(waited - 1.0, 0).max(0.0);
        }
        if start.elapsed() >= max {
            eprintln!("  (the machine is still busy ({busy:.0}% of a core) after {waited:.0} s: going on; see cpu_rest_pct)");
            return round(waited, 0);
        }
        if !told {
            eprintln!("  (something else keeps the machine busy ({busy:.0}% of a core): waiting up to {} s)", max.as_secs());
            told = true;
        }
    }
}

/// Fails with a message.
pub fn fail(msg: impl Into<String>) -> HarnessError {
    HarnessError::Ws(msg.into())
}
