//! Benchmarks of the chat node that print figures. Each scenario starts what it needs
//! (databases, Redis, HAProxy, node processes, the `ceiling` server) on loopback, runs
//! bounded loads that stop by themselves, and prints a human table and one JSON line
//! per step (lines starting with `{`).
//!
//! `scripts/bench.sh all`, or after `cargo build --release -p chat-node -p chat-chaos --bins`:
//! `target/release/bench fanout durable --seconds 5`. The node and the ceiling are taken
//! from the directory of this binary (`CHAT_NODE_BIN` overrides the node), so the debug
//! bench runs the debug node: `target/debug/bench --smoke all-new` is the CI smoke.
//!
//! See docs/BENCHMARKS.md for what each scenario measures and the figures.

mod common;
mod durable;
mod fanout;
mod idle;
mod legacy;
mod load;
mod notify;
mod partitions;
mod presence;
mod targets;

use clap::{Parser, ValueEnum};
use fanout::Variant;
use std::path::PathBuf;
use targets::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One HTTP send, then 1,000 sequential HTTP sends.
    Http,
    /// Acked WebSocket sends per second: 1, 10, 100 senders into one conversation,
    /// and 1,000 senders across 1,000 conversations, with group-commit batch sizes.
    Throughput,
    /// Push latency, same node and across nodes, at a light and a heavy rate.
    Latency,
    /// A broadcast to a 100,000-user audience with 1,000 members online on 2 nodes.
    Broadcast,
    /// Sends while upkeep drops a partition of 1,000,000 expired messages.
    Drop,
    /// fanout, durable and idle against the ceiling server only.
    Ceiling,
    /// 2,000 users online in groups of 10 (or 1,000 direct pairs), open-loop rate
    /// stepped up until a step fails: ceiling, 1 node, 2 nodes, 3 nodes behind HAProxy.
    Fanout,
    /// 1,000 direct conversations, one sender each: highest acked sends/s at p99 ack
    /// <= 50 ms, with group-commit batch size and append time.
    Durable,
    /// As many idle sockets as this process may open: node memory per connection and
    /// connects per second, against the ceiling's.
    Idle,
    /// Append, history paging and sync with the node's own partitions and with 400
    /// per tier.
    Partitions,
    /// Presence traffic per connect and disconnect with 10,000 users online on two
    /// nodes, 50 contacts each, and a reconnect storm of 5,000 sockets.
    Presence,
    /// Offline notifications: sends' ack latency with notifications off, the
    /// receiver up and the receiver down; send → POST latency; none lost.
    Notify,
    /// fanout, durable, idle, partitions, notify.
    AllNew,
    /// Every scenario.
    All,
}

#[derive(Parser)]
#[command(about = "Benchmarks of the chat node (see docs/BENCHMARKS.md)")]
struct Args {
    /// Scenarios to run, in order.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    scenarios: Vec<Scenario>,
    /// Seconds each step (and each throughput/latency run) lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// One short low-rate step of each new scenario with a few hundred users, for CI:
    /// asserts nothing about speed, fails when a message is lost, duplicated or
    /// reordered, or the run errors.
    #[arg(long)]
    smoke: bool,
    /// Targets of fanout (default all four), durable (default ceiling, node1, node2) and
    /// idle (default ceiling, node1).
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Kind>,
    /// Conversation shapes of fanout.
    #[arg(long, value_enum, value_delimiter = ',')]
    variants: Vec<Variant>,
    /// Rates (sends/s) to step through instead of doubling from the first one.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// Bisections between the last passing and the first failing rate.
    #[arg(long, default_value_t = 3)]
    refine: u32,
    /// Highest rate the doubling goes to.
    #[arg(long, default_value_t = 64_000)]
    max_rate: u64,
    /// At most this many idle sockets (default: as many as the open-files limit allows).
    #[arg(long)]
    idle_max: Option<usize>,
    /// Also append every JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Before each step, wait up to this many seconds for the machine to be idle (other
    /// builds or tests); 0: never wait. Smoke runs never wait.
    #[arg(long, default_value_t = 600)]
    quiet_wait: u64,
}

/// The options the new scenarios read.
pub struct Opts {
    pub seconds: u64,
    pub smoke: bool,
    pub targets: Vec<Kind>,
    pub variants: Vec<Variant>,
    pub rates: Vec<u64>,
    pub refine: u32,
    pub max_rate: u64,
    pub idle_max: Option<usize>,
    pub quiet_wait: u64,
}

impl Opts {
    /// Waits for the machine to be quiet before a step (not in smoke runs); returns
    /// the seconds waited.
    pub async fn quiet(&self) -> f64 {
        let max = if self.smoke { 0 } else { self.quiet_wait };
        common::wait_quiet(std::time::Duration::from_secs(max)).await
    }

    /// Seconds of one step (2 in a smoke run).
    pub fn step_seconds(&self) -> f64 {
        if self.smoke {
            2.0
        } else {
            self.seconds.max(1) as f64
        }
    }

    pub fn variants(&self) -> Vec<Variant> {
        if self.variants.is_empty() {
            vec![Variant::Group, Variant::Direct]
        } else {
            self.variants.clone()
        }
    }

    fn targets_or(&self, default: &[Kind]) -> Vec<Kind> {
        if self.targets.is_empty() {
            default.to_vec()
        } else {
            self.targets.clone()
        }
    }
}

async fn run(args: Args) -> chat_testkit::Result<bool> {
    let opts = Opts {
        seconds: args.seconds,
        smoke: args.smoke,
        targets: args.targets.clone(),
        variants: args.variants.clone(),
        rates: args.rates.clone(),
        refine: args.refine,
        max_rate: args.max_rate,
        idle_max: args.idle_max,
        quiet_wait: args.quiet_wait,
    };
    let legacy_seconds = if args.smoke { 1 } else { args.seconds };
    let mut list = Vec::new();
    for s in &args.scenarios {
        match s {
            Scenario::All => list.extend([
                Scenario::Http,
                Scenario::Throughput,
                Scenario::Latency,
                Scenario::Broadcast,
                Scenario::Drop,
                Scenario::Fanout,
                Scenario::Durable,
                Scenario::Idle,
                Scenario::Partitions,
                Scenario::Notify,
            ]),
            Scenario::AllNew => list.extend([
                Scenario::Fanout,
                Scenario::Durable,
                Scenario::Idle,
                Scenario::Partitions,
                Scenario::Notify,
            ]),
            other => list.push(*other),
        }
    }
    let mut correct = true;
    for s in list {
        let t = std::time::Instant::now();
        match s {
            Scenario::Http => legacy::http(legacy_seconds).await?,
            Scenario::Throughput => legacy::throughput(legacy_seconds).await?,
            Scenario::Latency => legacy::latency(legacy_seconds).await?,
            Scenario::Broadcast => legacy::broadcast().await?,
            Scenario::Drop => legacy::drop_partition().await?,
            Scenario::Ceiling => {
                let only = [Kind::Ceiling];
                correct &= fanout::run(&opts, &only).await?;
                correct &= durable::run(&opts, &only).await?;
                correct &= idle::run(&opts, &only).await?;
            }
            Scenario::Fanout => correct &= fanout::run(&opts, &opts.targets_or(&Kind::ALL)).await?,
            Scenario::Durable => {
                correct &= durable::run(
                    &opts,
                    &opts.targets_or(&[Kind::Ceiling, Kind::Node1, Kind::Node2]),
                )
                .await?
            }
            Scenario::Idle => {
                correct &= idle::run(&opts, &opts.targets_or(&[Kind::Ceiling, Kind::Node1])).await?
            }
            Scenario::Partitions => correct &= partitions::run(&opts).await?,
            Scenario::Presence => correct &= presence::run(&opts).await?,
            Scenario::Notify => {
                correct &= notify::run(&opts, &opts.targets_or(&[Kind::Node1, Kind::Node2])).await?
            }
            Scenario::All | Scenario::AllNew => {}
        }
        eprintln!("  ({s:?} took {:.1} s)", t.elapsed().as_secs_f64());
    }
    Ok(correct)
}

fn main() {
    let args = Args::parse();
    if std::env::var_os("CHAT_NODE_BIN").is_none() {
        std::env::set_var("CHAT_NODE_BIN", targets::sibling("chat-node"));
    }
    if let Some(path) = &args.json {
        common::set_json_out(path.clone());
    }
    let smoke = args.smoke;
    let result = actix_rt::System::new().block_on(run(args));
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("bench: a step lost, duplicated or reordered messages (see the lines above)");
            if smoke {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
