//! The load generator: a lean WebSocket client on tokio-tungstenite for thousands of
//! sockets on the bench's one (single-threaded) runtime, and the book-keeping that
//! checks every acked message reached every other online member once and in order.
//!
//! Frames are read without building JSON values: the few fields the checks need are
//! found by key in the text (the node and the ceiling write compact JSON). A send's
//! `cid` is `g<index>`, its index in the step's table of sends, so an ack or a push
//! finds its send (time, sender, conversation) without a map.

use crate::common::fail;
use chat_testkit::Result;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// The body of every bench send (an ordinary short chat line).
pub const BODY: &str = "a bench message of an ordinary length, about sixty bytes";

fn ws_config() -> WebSocketConfig {
    // The read buffer is allocated up front for every socket; writes wait in the
    // write buffer until the writer task flushes a batch.
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Sockets opened so far, to spread them over source addresses.
static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sockets per source address. Linux gives `connect` the even half of the ephemeral
/// port range first and searches the odd half slowly once that is used up (about
/// 14,000 sockets from one address here): connects per second would then fall ten
/// times for reasons of the generator's kernel, not of the server. Each batch of
/// sockets is bound to its own loopback address (127.0.0.2, .3, …) instead.
const PER_SOURCE: usize = 4_000;

/// Opens a WebSocket to `127.0.0.1:port` at `path` (`/ws?token=…`) and reads the
/// first frame, which must be `hello`.
pub async fn connect(port: u16, path: &str) -> Result<Ws> {
    let k = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + ((k / PER_SOURCE) % 250) as u8);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
        .await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| fail(format!("handshake: {e}")))?;
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| fail("no hello within 30 s"))?;
    match first {
        Some(Ok(Message::Text(t))) if str_field(t.as_str(), "\"type\":") == Some("hello") => Ok(ws),
        other => Err(fail(format!("expected hello, got {other:?}"))),
    }
}

/// Connects `paths` (port, path) with at most `parallel` handshakes at once; the
/// sockets come back in the order of `paths`.
pub async fn connect_all(paths: &[(u16, String)], parallel: usize) -> Result<Vec<Ws>> {
    let results: Vec<(usize, Result<Ws>)> = futures_util::stream::iter(
        paths
            .iter()
            .enumerate()
            .map(|(i, (port, path))| async move { (i, connect(*port, path).await) }),
    )
    .buffer_unordered(parallel.max(1))
    .collect()
    .await;
    let mut slots: Vec<Option<Ws>> = (0..paths.len()).map(|_| None).collect();
    for (i, r) in results {
        slots[i] = Some(r?);
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| fail("a socket is missing")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Frame fields

fn after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.find(key)?;
    Some(text[i + key.len()..].trim_start())
}

/// The string value of `key` (given as `"name":`); no escapes expected.
pub fn str_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = after(text, key)?.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// The integer value of `key` (given as `"name":`).
pub fn int_field(text: &str, key: &str) -> Option<i64> {
    let rest = after(text, key)?;
    let end = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------------------
// Book-keeping

/// One send of the current step.
#[derive(Clone, Copy)]
struct SendRec {
    /// Microseconds since the generator's start, when the frame was queued.
    at_us: u64,
    user: u32,
    conv: u32,
    /// 0 until acked.
    seq: i64,
}

/// What one user's socket has seen of its conversation in the current step.
#[derive(Default)]
struct Seen {
    /// Seqs at or below it belong to earlier steps.
    base: i64,
    max: i64,
    bits: Vec<u64>,
}

impl Seen {
    /// Marks `seq`; returns false when it was marked already.
    fn mark(&mut self, seq: i64) -> bool {
        // Bounded: a seq far past anything sent would be a bug, not a reason for a
        // gigabyte of bits.
        let i = ((seq - self.base - 1) as usize).min(1 << 26);
        let (w, b) = (i / 64, i % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        !had
    }

    fn has(&self, seq: i64) -> bool {
        let i = seq - self.base - 1;
        if i < 0 {
            return false;
        }
        let (w, b) = (i as usize / 64, i as usize % 64);
        self.bits.get(w).is_some_and(|x| x & (1 << b) != 0)
    }
}

/// The population of a load: users, their one conversation each, who is online.
pub struct Population {
    /// User ids, by user index.
    pub users: Vec<i64>,
    /// Conversation ids, by conversation index.
    pub convs: Vec<i64>,
    /// Members (user indexes) of each conversation.
    pub members: Vec<Vec<u32>>,
    /// Conversation index of each user.
    pub conv_of: Vec<u32>,
}

impl Population {
    pub fn new(users: Vec<i64>, convs: Vec<i64>, members: Vec<Vec<u32>>) -> Population {
        let mut conv_of = vec![u32::MAX; users.len()];
        for (c, ms) in members.iter().enumerate() {
            for m in ms {
                conv_of[*m as usize] = c as u32;
            }
        }
        Population {
            users,
            convs,
            members,
            conv_of,
        }
    }

    /// Users ordered so that consecutive sends go to different conversations: the
    /// first member of every conversation, then the second of every one, and so on.
    pub fn round_robin(&self, senders: &[u32]) -> Vec<u32> {
        let mut pos = vec![0u32; self.users.len()];
        for ms in &self.members {
            for (i, m) in ms.iter().enumerate() {
                pos[*m as usize] = i as u32;
            }
        }
        let mut order = senders.to_vec();
        order.sort_by_key(|u| (pos[*u as usize], self.conv_of[*u as usize]));
        order
    }
}

/// Counters of one step.
#[derive(Debug, Default, Clone)]
pub struct StepCounts {
    pub sent: u64,
    pub acked: u64,
    /// Push frames of this step's messages received (duplicates included).
    pub delivered: u64,
    /// Pushes owed: (acked messages) × (other online members), computed at the end.
    pub expected: u64,
    pub lost: u64,
    pub dup: u64,
    pub out_of_order: u64,
    /// Pushes of earlier steps' messages (late).
    pub stale: u64,
    /// Pushes of a user's own send to the sending socket (should never happen).
    pub own: u64,
    /// `error` frames, and frames that do not belong to the bench.
    pub errors: u64,
    pub first_error: Option<String>,
    pub resyncs: u64,
    /// Sockets that closed during the step.
    pub closed: u64,
}

/// The state shared by the generator's tasks (one thread: `RefCell`).
pub struct Book {
    t0: Instant,
    pop: Population,
    online: Vec<bool>,
    conv_index: HashMap<i64, u32>,
    /// Highest seq known per conversation (acks and pushes of every step).
    conv_hw: Vec<i64>,
    seen: Vec<Seen>,
    sends: Vec<SendRec>,
    /// Global index of the first send of the current step.
    offset: u64,
    pub counts: StepCounts,
    /// Unique pushes of this step, and pushes owed by the acks so far.
    unique: u64,
    owed: u64,
    pub push_us: Vec<u32>,
    pub ack_us: Vec<u32>,
    /// When the last frame of any kind arrived.
    last_frame: Instant,
}

pub type SharedBook = Rc<RefCell<Book>>;

impl Book {
    pub fn new(pop: Population) -> SharedBook {
        let conv_index = pop
            .convs
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as u32))
            .collect();
        let n = pop.users.len();
        let c = pop.convs.len();
        Rc::new(RefCell::new(Book {
            t0: Instant::now(),
            online: vec![false; n],
            conv_index,
            conv_hw: vec![0; c],
            seen: (0..n).map(|_| Seen::default()).collect(),
            sends: Vec::new(),
            offset: 0,
            counts: StepCounts::default(),
            unique: 0,
            owed: 0,
            push_us: Vec::new(),
            ack_us: Vec::new(),
            last_frame: Instant::now(),
            pop,
        }))
    }

    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Starts a step: forgets the last one's counters; seqs known so far belong to it.
    pub fn begin_step(&mut self, expected_sends: usize) {
        self.offset += self.sends.len() as u64;
        self.sends = Vec::with_capacity(expected_sends);
        for (u, s) in self.seen.iter_mut().enumerate() {
            let conv = self.pop.conv_of[u];
            let base = if conv == u32::MAX {
                0
            } else {
                self.conv_hw[conv as usize]
            };
            *s = Seen {
                base,
                max: base,
                bits: Vec::new(),
            };
        }
        let closed = self.counts.closed;
        self.counts = StepCounts::default();
        self.counts.closed = closed;
        self.unique = 0;
        self.owed = 0;
        self.push_us = Vec::with_capacity(expected_sends * 4);
        self.ack_us = Vec::with_capacity(expected_sends);
    }

    /// Records a send by `user` and returns its frame.
    fn record_send(&mut self, user: u32) -> String {
        let conv = self.pop.conv_of[user as usize];
        let idx = self.offset + self.sends.len() as u64;
        let at_us = self.now_us();
        self.sends.push(SendRec {
            at_us,
            user,
            conv,
            seq: 0,
        });
        self.counts.sent += 1;
        format!(
            r#"{{"type":"send","conv":{},"cid":"g{idx}","body":"{BODY}"}}"#,
            self.pop.convs[conv as usize]
        )
    }

    /// The current step's send of a cid, if it is one.
    fn send_of(&self, cid: &str) -> Option<usize> {
        let idx: u64 = cid.strip_prefix('g')?.parse().ok()?;
        let i = idx.checked_sub(self.offset)? as usize;
        (i < self.sends.len()).then_some(i)
    }

    fn on_error(&mut self, text: &str) {
        self.counts.errors += 1;
        if self.counts.first_error.is_none() {
            self.counts.first_error = Some(text.chars().take(300).collect());
        }
    }

    /// One text frame that arrived on the socket of user `user`.
    pub fn on_frame(&mut self, user: u32, text: &str) {
        self.last_frame = Instant::now();
        match str_field(text, "\"type\":") {
            Some("msg") => self.on_push(user, text),
            Some("ack") => self.on_ack(text),
            Some("resync") => self.counts.resyncs += 1,
            Some("pong") | Some("read") | Some("unread") | Some("typing") | Some("presence") => {}
            _ => self.on_error(text),
        }
    }

    fn on_ack(&mut self, text: &str) {
        let (Some(cid), Some(seq)) = (str_field(text, "\"cid\":"), int_field(text, "\"seq\":"))
        else {
            return self.on_error(text);
        };
        let Some(i) = self.send_of(cid) else {
            return;
        };
        let now = self.now_us();
        let rec = &mut self.sends[i];
        if rec.seq != 0 {
            return;
        }
        rec.seq = seq;
        let (conv, at) = (rec.conv as usize, rec.at_us);
        let sender = rec.user;
        self.counts.acked += 1;
        self.ack_us
            .push(now.saturating_sub(at).min(u32::MAX as u64) as u32);
        self.conv_hw[conv] = self.conv_hw[conv].max(seq);
        let online = &self.online;
        self.owed += self.pop.members[conv]
            .iter()
            .filter(|m| **m != sender && online[**m as usize])
            .count() as u64;
    }

    fn on_push(&mut self, user: u32, text: &str) {
        let (Some(conv), Some(seq), Some(cid)) = (
            int_field(text, "\"conv\":"),
            int_field(text, "\"seq\":"),
            str_field(text, "\"cid\":"),
        ) else {
            return self.on_error(text);
        };
        let Some(&c) = self.conv_index.get(&conv) else {
            return self.on_error(text);
        };
        self.conv_hw[c as usize] = self.conv_hw[c as usize].max(seq);
        let Some(i) = self.send_of(cid) else {
            self.counts.stale += 1;
            return;
        };
        let rec = self.sends[i];
        if rec.user == user {
            self.counts.own += 1;
            return;
        }
        let seen = &mut self.seen[user as usize];
        if seq <= seen.base {
            self.counts.stale += 1;
            return;
        }
        self.counts.delivered += 1;
        if !seen.mark(seq) {
            self.counts.dup += 1;
            return;
        }
        if seq < seen.max {
            self.counts.out_of_order += 1;
        }
        seen.max = seen.max.max(seq);
        self.unique += 1;
        let now = self.now_us();
        self.push_us
            .push(now.saturating_sub(rec.at_us).min(u32::MAX as u64) as u32);
    }

    /// Every send acked and every push owed so far arrived.
    pub fn settled(&self) -> bool {
        self.counts.acked == self.counts.sent && self.unique >= self.owed
    }

    pub fn backlog(&self) -> u64 {
        self.counts.sent - self.counts.acked
    }

    pub fn quiet_for(&self) -> Duration {
        self.last_frame.elapsed()
    }

    /// Ends a step: counts, for every acked send, the other online members that did
    /// not get it.
    pub fn finish_step(&mut self) -> StepCounts {
        let (mut expected, mut lost) = (0, 0);
        for rec in &self.sends {
            if rec.seq == 0 {
                continue;
            }
            for m in &self.pop.members[rec.conv as usize] {
                if *m == rec.user || !self.online[*m as usize] {
                    continue;
                }
                expected += 1;
                if !self.seen[*m as usize].has(rec.seq) {
                    lost += 1;
                }
            }
        }
        self.counts.expected = expected;
        self.counts.lost = lost;
        self.counts.clone()
    }
}

// ---------------------------------------------------------------------------------------
// Sockets

/// The generator's end of one user's socket: frames to write go through `tx` to the
/// socket's writer task.
pub struct Conn {
    tx: mpsc::UnboundedSender<Message>,
}

async fn writer(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(m) = rx.recv().await {
        if sink.feed(m).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn reader(mut stream: SplitStream<Ws>, user: u32, book: SharedBook) {
    while let Some(item) = stream.next().await {
        match item {
            Ok(Message::Text(t)) => book.borrow_mut().on_frame(user, t.as_str()),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    book.borrow_mut().counts.closed += 1;
}

/// The sockets of a load, each with its reader and writer task.
pub struct Fleet {
    pub book: SharedBook,
    conns: Vec<Option<Conn>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Connects the users `online` (indexes into the population) through `path_of`
    /// (user index → (port, path)).
    pub async fn open(
        book: SharedBook,
        online: &[u32],
        path_of: impl Fn(u32) -> (u16, String),
        parallel: usize,
    ) -> Result<Fleet> {
        let paths: Vec<(u16, String)> = online.iter().map(|u| path_of(*u)).collect();
        let sockets = connect_all(&paths, parallel).await?;
        let n = book.borrow().pop.users.len();
        let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
        let mut readers = Vec::new();
        for (u, ws) in online.iter().zip(sockets) {
            let (sink, stream) = ws.split();
            let (tx, rx) = mpsc::unbounded_channel();
            actix_rt::spawn(writer(sink, rx));
            readers.push(actix_rt::spawn(reader(stream, *u, book.clone())));
            conns[*u as usize] = Some(Conn { tx });
            book.borrow_mut().online[*u as usize] = true;
        }
        Ok(Fleet {
            book,
            conns,
            readers,
        })
    }

    /// Queues a send of `user` to its conversation.
    fn send(&self, user: u32) -> bool {
        let Some(conn) = self.conns[user as usize].as_ref() else {
            return false;
        };
        let frame = self.book.borrow_mut().record_send(user);
        conn.tx.send(Message::text(frame)).is_ok()
    }

    /// Open loop: `rate` sends per second for `length`, by a 1 ms timer, each send by
    /// the next user of `order`. Stops early (returns false) when more than `backlog`
    /// sends are waiting for their ack.
    pub async fn drive(&self, order: &[u32], rate: f64, length: Duration, backlog: u64) -> bool {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut sent, mut k) = (0u64, 0usize);
        loop {
            tick.tick().await;
            let el = start.elapsed();
            if el >= length {
                return true;
            }
            let due = (rate * el.as_secs_f64()) as u64;
            while sent < due {
                let u = order[k % order.len()];
                k += 1;
                sent += 1;
                self.send(u);
            }
            if self.book.borrow().backlog() > backlog {
                return false;
            }
        }
    }

    /// Closed loop: one send in flight per user of `senders`, for `length`.
    pub async fn closed_loop(&self, senders: &[u32], length: Duration) {
        let start = Instant::now();
        for u in senders {
            self.send(*u);
        }
        let mut acked_seen = 0;
        while start.elapsed() < length {
            tokio::time::sleep(Duration::from_micros(200)).await;
            let acked = self.book.borrow().counts.acked;
            if acked > acked_seen {
                // One new send per new ack, by the senders in turn (one sender here).
                for i in acked_seen..acked {
                    self.send(senders[i as usize % senders.len()]);
                }
                acked_seen = acked;
            }
        }
    }

    /// Sends `total` messages of `user`, `window` in flight; returns whether all were
    /// acked within `limit`.
    pub async fn pipeline(&self, user: u32, total: u64, window: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let acked = self.book.borrow().counts.acked;
            if acked >= total {
                return true;
            }
            while sent < total && sent - acked < window {
                self.send(user);
                sent += 1;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        false
    }

    /// Waits until the step settled (every send acked, every owed push arrived) or
    /// `limit` passed; returns whether it settled.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.book.borrow().settled() {
                return true;
            }
            if self.book.borrow().counts.closed > 0 {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.book.borrow().settled()
    }

    /// Waits until no frame arrived for `quiet` (at most `limit`): lets a backlog drain.
    pub async fn quiesce(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && self.book.borrow().quiet_for() < quiet {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes every socket (close frames) and waits a bounded time for the readers.
    pub async fn close(mut self) {
        self.conns.clear();
        let readers = std::mem::take(&mut self.readers);
        let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
        let all = futures_util::future::join_all(readers);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            for a in aborts {
                a.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_key() {
        let msg = r#"{"type":"msg","conv":7,"seq":12,"sender":42,"cid":"g5","body":"x","tier":"normal","ts":"2025-03-01T09:30:12Z","reply_to":null}"#;
        assert_eq!(str_field(msg, "\"type\":"), Some("msg"));
        assert_eq!(int_field(msg, "\"conv\":"), Some(7));
        assert_eq!(int_field(msg, "\"seq\":"), Some(12));
        assert_eq!(str_field(msg, "\"cid\":"), Some("g5"));
        assert_eq!(int_field(r#"{"read_seq":3}"#, "\"seq\":"), None);
        assert_eq!(int_field(r#"{"a": -4}"#, "\"a\":"), Some(-4));
    }

    #[test]
    fn pushes_are_checked_once_and_in_order() {
        let pop = Population::new(vec![10, 11, 12], vec![100], vec![vec![0, 1, 2]]);
        let book = Book::new(pop);
        let mut b = book.borrow_mut();
        b.online = vec![true, true, true];
        b.begin_step(4);
        let _ = b.record_send(0);
        let _ = b.record_send(1);
        b.on_frame(0, r#"{"type":"ack","cid":"g0","conv":100,"seq":1}"#);
        b.on_frame(1, r#"{"type":"ack","cid":"g1","conv":100,"seq":2}"#);
        // User 2 gets 2 before 1, and 2 twice; user 1 gets 1; user 0 never gets 2.
        b.on_frame(2, r#"{"type":"msg","conv":100,"seq":2,"cid":"g1"}"#);
        b.on_frame(2, r#"{"type":"msg","conv":100,"seq":1,"cid":"g0"}"#);
        b.on_frame(2, r#"{"type":"msg","conv":100,"seq":2,"cid":"g1"}"#);
        b.on_frame(1, r#"{"type":"msg","conv":100,"seq":1,"cid":"g0"}"#);
        let c = b.finish_step();
        assert_eq!((c.sent, c.acked, c.expected), (2, 2, 4));
        assert_eq!((c.delivered, c.dup, c.out_of_order, c.lost), (4, 1, 1, 1));
        // The next step starts above what was seen.
        b.begin_step(1);
        let _ = b.record_send(2);
        b.on_frame(2, r#"{"type":"ack","cid":"g2","conv":100,"seq":3}"#);
        b.on_frame(0, r#"{"type":"msg","conv":100,"seq":3,"cid":"g2"}"#);
        b.on_frame(1, r#"{"type":"msg","conv":100,"seq":3,"cid":"g2"}"#);
        b.on_frame(1, r#"{"type":"msg","conv":100,"seq":2,"cid":"g1"}"#);
        let c = b.finish_step();
        assert_eq!((c.expected, c.lost, c.dup, c.stale), (2, 0, 0, 1));
        assert!(b.settled());
    }
}
