//! The workload: clients that behave as the contract asks of a real one (resend unacked
//! sends with their cid after every reconnect, sync on connect, on `resync` and on a
//! seq gap, reconnect on any close with backoff and jitter), and record everything:
//! each operation as invoked and then ok, failed or unknown, every connection, every
//! push, every signal that pushes may have been missed, and what reached the
//! application, in order.

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Seconds since the run started.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// When the load stops, and when clients must have settled.
pub struct Plan {
    pub clock: Clock,
    pub lb_port: u16,
    /// New sends stop (faults stop too).
    pub load_end: f64,
    /// Unacked sends are given up (outcome unknown) and the final sync starts.
    pub settle_end: f64,
    /// Seconds between two new sends of one client (jittered).
    pub send_every: f64,
}

/// How an operation ended, as Jepsen names it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        seq: i64,
        at: f64,
    },
    Fail {
        code: String,
        at: f64,
    },
    /// No definite answer before the run ended: it may or may not have happened.
    Unknown,
}

/// One send (all attempts with one cid).
#[derive(Debug, Clone, Serialize)]
pub struct SendOp {
    pub cid: String,
    pub conv: i64,
    pub invoked: f64,
    pub attempts: u32,
    /// Error answers on the way (time, code): `unavailable` claims nothing was stored.
    pub errors: Vec<(f64, String)>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conn {
    pub opened: f64,
    pub closed: Option<f64>,
    pub node: String,
    pub close_code: Option<u16>,
}

/// Something that tells a client pushes may have been missed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Resync,
    Gap,
    Connect,
}

/// A message as the application got it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub seq: i64,
    pub sender: i64,
    pub cid: String,
}

/// Everything one client recorded.
#[derive(Debug, Default, Serialize)]
pub struct ClientLog {
    pub user: i64,
    pub sends: Vec<SendOp>,
    pub conns: Vec<Conn>,
    pub failed_connects: u32,
    pub signals: Vec<(f64, Signal)>,
    /// Per conversation, what reached the application, in order.
    pub delivered: BTreeMap<i64, Vec<Delivered>>,
    /// When each (conv, seq) was first known to the client (push, sync or ack).
    #[serde(skip)]
    pub first_known: HashMap<(i64, i64), f64>,
    /// Pushes of a seq already pushed on the same connection (the contract allows it).
    pub pushed_twice: u64,
    /// Pushes of a seq below one pushed before on the same connection that was not
    /// known yet (pushes leave a node in seq order: this should not happen).
    pub pushed_out_of_order: u64,
    /// A sync answer that skipped a seq it should have held.
    pub sync_holes: u64,
    pub syncs: u64,
    /// Syncs answered with an error (asked again).
    pub sync_refusals: u64,
    /// Highest seq this client sent in a `read`, per conversation.
    pub read_sent: BTreeMap<i64, i64>,
    /// The client finished its final sync.
    pub settled: bool,
}

/// Most sends one client has in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// A connection with no frame for this long is dead (the node is paused or gone).
const SILENCE: Duration = Duration::from_secs(8);
/// A seq gap stays open this long before the client syncs (an ack may fill it).
const GAP_WAIT: f64 = 0.5;

struct Pending {
    op: usize,
    body: String,
    /// Not before this (after `unavailable` or `rate_limited`).
    retry_at: f64,
    /// Sent on the current connection.
    sent: bool,
}

pub struct Client {
    pub index: usize,
    pub user: i64,
    token: String,
    /// The conversations it writes to (direct and group).
    convs: Vec<i64>,
    cursors: BTreeMap<i64, i64>,
    /// Messages above a cursor, waiting for the hole below to fill.
    ahead: BTreeMap<i64, BTreeMap<i64, Delivered>>,
    pending: BTreeMap<String, Pending>,
    next_cid: u64,
    rng: StdRng,
    log: ClientLog,
    /// Per (connection, conversation), the highest seq pushed on it.
    last_pushed: HashMap<(usize, i64), i64>,
    /// What each connection had pushed.
    pushed_here: HashSet<(usize, i64, i64)>,
}

enum Ended {
    Lost(Option<u16>),
    Finished,
}

impl Client {
    pub fn new(index: usize, user: i64, token: String, convs: Vec<i64>, seed: u64) -> Client {
        Client {
            index,
            user,
            token,
            convs,
            cursors: BTreeMap::new(),
            ahead: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_cid: 0,
            rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            log: ClientLog {
                user,
                ..ClientLog::default()
            },
            last_pushed: HashMap::new(),
            pushed_here: HashSet::new(),
        }
    }

    /// Runs until the plan's end; returns what it recorded.
    pub async fn run(mut self, plan: Rc<Plan>) -> ClientLog {
        let clock = plan.clock;
        let mut backoff = 0.1f64;
        loop {
            if clock.now() > plan.settle_end + 60.0 {
                break;
            }
            let url = format!("ws://127.0.0.1:{}/ws?token={}", plan.lb_port, self.token);
            let connected = tokio::time::timeout(Duration::from_secs(5), async {
                let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.ok()?;
                let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
                    .await
                    .ok()??;
                let hello: Value = match first {
                    Ok(Message::Text(t)) => serde_json::from_str(t.as_str()).ok()?,
                    _ => return None,
                };
                (hello["type"] == "hello").then_some((ws, hello))
            })
            .await
            .ok()
            .flatten();
            let Some((ws, hello)) = connected else {
                self.log.failed_connects += 1;
                let jitter = self.rng.random_range(0.0..backoff);
                tokio::time::sleep(Duration::from_secs_f64(backoff + jitter)).await;
                backoff = (backoff * 2.0).min(3.0);
                continue;
            };
            backoff = 0.1;
            let now = clock.now();
            self.log.conns.push(Conn {
                opened: now,
                closed: None,
                node: hello["node"].as_str().unwrap_or("").to_owned(),
                close_code: None,
            });
            self.log.signals.push((now, Signal::Connect));
            let ended = self.session(ws, &plan).await;
            let now = clock.now();
            if let Some(c) = self.log.conns.last_mut() {
                c.closed = Some(now);
                if let Ended::Lost(code) = &ended {
                    c.close_code = *code;
                }
            }
            if matches!(ended, Ended::Finished) {
                break;
            }
            let pause = self.rng.random_range(0.05..0.4);
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        }
        // Whatever is still unanswered may or may not have been stored.
        for p in self.pending.values() {
            self.log.sends[p.op].outcome = Outcome::Unknown;
        }
        self.log
    }

    fn sync_frame(&mut self) -> Message {
        self.log.syncs += 1;
        let cursors: serde_json::Map<String, Value> = self
            .cursors
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        Message::text(json!({"type": "sync", "cursors": cursors, "limit": 200}).to_string())
    }

    fn send_frame(&self, cid: &str, p: &Pending) -> Message {
        let conv = self.log.sends[p.op].conv;
        Message::text(json!({"type": "send", "conv": conv, "cid": cid, "body": p.body}).to_string())
    }

    /// One connection, until it is lost or the client is done.
    async fn session(
        &mut self,
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        plan: &Plan,
    ) -> Ended {
        let clock = plan.clock;
        let (mut sink, mut stream) = ws.split();
        for p in self.pending.values_mut() {
            p.sent = false;
        }
        let mut sync_in_flight = true;
        let first = self.sync_frame();
        if sink.send(first).await.is_err() {
            return Ended::Lost(None);
        }
        let mut last_heard = Instant::now();
        let mut gap_since: Option<f64> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let first_send = self.rng.random_range(0.0..plan.send_every);
        let mut next_send = clock.now() + first_send;
        let mut next_read = clock.now() + self.rng.random_range(2.0..6.0);
        let mut next_ping = clock.now() + 3.0;
        let mut final_sync_done = false;
        loop {
            let mut out: Vec<Message> = Vec::new();
            tokio::select! {
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => return Ended::Lost(c.map(|c| u16::from(c.code))),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return Ended::Lost(None),
                    };
                    last_heard = Instant::now();
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    let now = clock.now();
                    match v["type"].as_str().unwrap_or("") {
                        "ack" => self.acked(&v, now),
                        // A refused sync (too many at once on the node, Postgres
                        // away) is asked again on the next tick.
                        "error" if v["ref"] == "sync" => {
                            self.log.sync_refusals += 1;
                            sync_in_flight = false;
                            if gap_since.is_none() && !final_sync_done {
                                gap_since = Some(now - GAP_WAIT);
                            }
                        }
                        "error" => self.refused(&v, now),
                        "msg" if self.pushed(&v, now) && gap_since.is_none() => {
                            gap_since = Some(now);
                        }
                        "sync" => {
                            self.synced(&v, now);
                            if v["more"] == json!(true) {
                                out.push(self.sync_frame());
                            } else {
                                sync_in_flight = false;
                                if now > plan.settle_end && self.pending.is_empty() {
                                    final_sync_done = true;
                                }
                            }
                        }
                        "resync" => {
                            self.log.signals.push((now, Signal::Resync));
                            if !sync_in_flight {
                                sync_in_flight = true;
                                out.push(self.sync_frame());
                            }
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    let now = clock.now();
                    if last_heard.elapsed() > SILENCE {
                        return Ended::Lost(None);
                    }
                    if now >= next_ping {
                        next_ping = now + 3.0;
                        out.push(Message::text(r#"{"type":"ping"}"#));
                    }
                    if let Some(since) = gap_since {
                        if !self.has_hole() {
                            gap_since = None;
                        } else if now - since > GAP_WAIT && !sync_in_flight {
                            self.log.signals.push((now, Signal::Gap));
                            gap_since = None;
                            sync_in_flight = true;
                            out.push(self.sync_frame());
                        }
                    }
                    if now < plan.load_end && now >= next_send && self.pending.len() < MAX_IN_FLIGHT && !self.convs.is_empty() {
                        next_send = now + plan.send_every * self.rng.random_range(0.5..1.5);
                        out.push(self.new_send(now));
                    }
                    if now < plan.load_end && now >= next_read {
                        next_read = now + self.rng.random_range(3.0..8.0);
                        if let Some(frame) = self.read_frame() {
                            out.push(frame);
                        }
                    }
                    // (Re)sends: every unacked one on a new connection, and those
                    // refused for a while once their pause is over.
                    let cids: Vec<String> = self
                        .pending
                        .iter()
                        .filter(|(_, p)| !p.sent && now >= p.retry_at)
                        .map(|(c, _)| c.clone())
                        .collect();
                    for cid in cids {
                        if let Some(p) = self.pending.get_mut(&cid) {
                            p.sent = true;
                            let op = p.op;
                            self.log.sends[op].attempts += 1;
                        }
                        if let Some(p) = self.pending.get(&cid) {
                            out.push(self.send_frame(&cid, p));
                        }
                    }
                    if now > plan.settle_end && !final_sync_done && !sync_in_flight {
                        // Give up on what is still unanswered, and read to the end.
                        for p in std::mem::take(&mut self.pending).into_values() {
                            self.log.sends[p.op].outcome = Outcome::Unknown;
                        }
                        sync_in_flight = true;
                        out.push(self.sync_frame());
                    }
                    if now > plan.settle_end + 45.0 {
                        // It never got to the end: the checker says so.
                        return Ended::Finished;
                    }
                    if final_sync_done && !self.has_hole() {
                        self.log.settled = true;
                        let _ = sink.send(Message::Close(None)).await;
                        return Ended::Finished;
                    }
                }
            }
            for m in out {
                if sink.send(m).await.is_err() {
                    return Ended::Lost(None);
                }
            }
        }
    }

    fn new_send(&mut self, now: f64) -> Message {
        let conv = self.convs[self.rng.random_range(0..self.convs.len())];
        self.next_cid += 1;
        let cid = format!("c{}-{}", self.index, self.next_cid);
        let op = self.log.sends.len();
        self.log.sends.push(SendOp {
            cid: cid.clone(),
            conv,
            invoked: now,
            attempts: 1,
            errors: Vec::new(),
            outcome: Outcome::Unknown,
        });
        let p = Pending {
            op,
            body: format!("{cid} from {}", self.user),
            retry_at: now,
            sent: true,
        };
        let frame = self.send_frame(&cid, &p);
        self.pending.insert(cid, p);
        frame
    }

    fn read_frame(&mut self) -> Option<Message> {
        let known: Vec<(i64, i64)> = self
            .cursors
            .iter()
            .filter(|(_, s)| **s > 0)
            .map(|(c, s)| (*c, *s))
            .collect();
        if known.is_empty() {
            return None;
        }
        let (conv, seq) = known[self.rng.random_range(0..known.len())];
        let e = self.log.read_sent.entry(conv).or_insert(0);
        *e = (*e).max(seq);
        Some(Message::text(
            json!({"type": "read", "conv": conv, "seq": seq}).to_string(),
        ))
    }

    fn acked(&mut self, v: &Value, now: f64) {
        let (Some(cid), Some(seq), Some(conv)) =
            (v["cid"].as_str(), v["seq"].as_i64(), v["conv"].as_i64())
        else {
            return;
        };
        let Some(p) = self.pending.remove(cid) else {
            return;
        };
        self.log.sends[p.op].outcome = Outcome::Ok { seq, at: now };
        let d = Delivered {
            seq,
            sender: self.user,
            cid: cid.to_owned(),
        };
        self.known(conv, d, now);
    }

    fn refused(&mut self, v: &Value, now: f64) {
        let Some(cid) = v["ref"].as_str() else { return };
        let code = v["code"].as_str().unwrap_or("").to_owned();
        let Some(p) = self.pending.get_mut(cid) else {
            return;
        };
        let op = p.op;
        self.log.sends[op].errors.push((now, code.clone()));
        if matches!(code.as_str(), "unavailable" | "rate_limited") {
            // Resent with the same cid after a pause (the contract's rule 9).
            p.sent = false;
            p.retry_at = now + 0.5;
        } else {
            self.pending.remove(cid);
            self.log.sends[op].outcome = Outcome::Fail { code, at: now };
        }
    }

    /// A push; returns whether it leaves a hole below it.
    fn pushed(&mut self, v: &Value, now: f64) -> bool {
        let (Some(conv), Some(seq)) = (v["conv"].as_i64(), v["seq"].as_i64()) else {
            return false;
        };
        let conn = self.log.conns.len();
        let key = (conv, seq);
        let already = self.log.first_known.contains_key(&key);
        let last = self.last_pushed.entry((conn, conv)).or_insert(0);
        if !self.pushed_here.insert((conn, conv, seq)) {
            self.log.pushed_twice += 1;
        } else if seq < *last && !already {
            self.log.pushed_out_of_order += 1;
        }
        *last = (*last).max(seq);
        let d = Delivered {
            seq,
            sender: v["sender"].as_i64().unwrap_or(-1),
            cid: v["cid"].as_str().unwrap_or("").to_owned(),
        };
        self.known(conv, d, now);
        // Still above the cursor once known: a hole below it.
        seq > self.cursors.get(&conv).copied().unwrap_or(0) + 1
    }

    fn synced(&mut self, v: &Value, now: f64) {
        for c in v["conversations"].as_array().into_iter().flatten() {
            let Some(conv) = c["id"].as_i64() else {
                continue;
            };
            let mut expect = self.cursors.get(&conv).copied().unwrap_or(0) + 1;
            for m in c["messages"].as_array().into_iter().flatten() {
                let Some(seq) = m["seq"].as_i64() else {
                    continue;
                };
                if seq > expect {
                    self.log.sync_holes += 1;
                }
                expect = expect.max(seq + 1);
                let d = Delivered {
                    seq,
                    sender: m["sender"].as_i64().unwrap_or(-1),
                    cid: m["cid"].as_str().unwrap_or("").to_owned(),
                };
                self.known(conv, d, now);
            }
        }
    }

    /// A message became known: to the application once everything below it is.
    fn known(&mut self, conv: i64, d: Delivered, now: f64) {
        self.log.first_known.entry((conv, d.seq)).or_insert(now);
        let cursor = self.cursors.entry(conv).or_insert(0);
        if d.seq <= *cursor {
            return;
        }
        let ahead = self.ahead.entry(conv).or_default();
        ahead.entry(d.seq).or_insert(d);
        let delivered = self.log.delivered.entry(conv).or_default();
        while let Some(next) = ahead.remove(&(*cursor + 1)) {
            *cursor += 1;
            delivered.push(next);
        }
    }

    fn has_hole(&self) -> bool {
        self.ahead.values().any(|a| !a.is_empty())
    }
}
