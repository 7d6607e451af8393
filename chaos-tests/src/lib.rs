//! The fault-injection suite's client: a chat client that behaves as the contract asks
//! of a real one. It resends unacked sends with the same cid after reconnecting,
//! answers `resync` and seq gaps with `sync`, and remembers everything it was told,
//! so a test can check that nothing acked was lost, duplicated or reordered.

use chat_testkit::{HarnessError, Incoming, Result, WsClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One client device of one user.
pub struct Chatter {
    pub user: i64,
    pub token: String,
    ws: Option<WsClient>,
    /// The node the socket is on (from `hello`).
    pub node: Option<String>,
    /// cid → (conv, body) of sends not acked yet.
    pub unacked: BTreeMap<String, (i64, String)>,
    /// cid → seq of acked sends.
    pub acked: BTreeMap<String, i64>,
    /// conv → seq → message, from pushes and syncs.
    pub received: BTreeMap<i64, BTreeMap<i64, Value>>,
    /// conv → seqs in the order pushes arrived (to check push order).
    pub push_order: BTreeMap<i64, Vec<i64>>,
    pub cursors: BTreeMap<i64, i64>,
    pub resyncs: usize,
    /// Sync requests sent (at connect, on gaps, on resync, while `more`).
    pub syncs: usize,
    /// Since when a gap has been open (a push past a seq we do not know).
    gap_since: Option<Instant>,
    pub closes: Vec<Option<u16>>,
    /// Push latency samples: (sent-at in the body, received-at) in microseconds.
    pub latencies_us: Vec<u64>,
}

/// How long a seq gap may stay open before the client syncs.
const GAP_WAIT: Duration = Duration::from_millis(500);

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

impl Chatter {
    pub fn new(user: i64, token: String) -> Chatter {
        Chatter {
            user,
            token,
            ws: None,
            node: None,
            unacked: BTreeMap::new(),
            acked: BTreeMap::new(),
            received: BTreeMap::new(),
            push_order: BTreeMap::new(),
            cursors: BTreeMap::new(),
            resyncs: 0,
            syncs: 0,
            gap_since: None,
            closes: Vec::new(),
            latencies_us: Vec::new(),
        }
    }

    pub fn connected(&self) -> bool {
        self.ws.is_some()
    }

    /// Connects to `base` (`ws://host:port`), resends every unacked send with its cid,
    /// and syncs from the cursors.
    pub async fn connect(&mut self, base: &str) -> Result<()> {
        let url = format!("{base}/ws?token={}", self.token);
        let (ws, hello) = WsClient::connect_hello(&url).await?;
        self.node = hello["node"].as_str().map(String::from);
        self.ws = Some(ws);
        let pending: Vec<(String, (i64, String))> = self
            .unacked
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (cid, (conv, body)) in pending {
            self.write(&json!({"type": "send", "conv": conv, "cid": cid, "body": body}))
                .await?;
        }
        self.request_sync().await
    }

    async fn write(&mut self, frame: &Value) -> Result<()> {
        let Some(ws) = self.ws.as_mut() else {
            return Err(HarnessError::Ws("not connected".into()));
        };
        if let Err(e) = ws.send_json(frame).await {
            self.ws = None;
            self.closes.push(None);
            return Err(e);
        }
        Ok(())
    }

    /// Sends a message (remembered as unacked until its ack arrives). The body carries
    /// the send time so receivers can measure push latency.
    pub async fn send(&mut self, conv: i64, cid: &str) -> Result<()> {
        let body = format!("t={} {cid}", now_us());
        self.unacked.insert(cid.to_string(), (conv, body.clone()));
        self.write(&json!({"type": "send", "conv": conv, "cid": cid, "body": body}))
            .await
    }

    pub async fn request_sync(&mut self) -> Result<()> {
        self.syncs += 1;
        let cursors: serde_json::Map<String, Value> = self
            .cursors
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.write(&json!({"type": "sync", "cursors": cursors, "limit": 200}))
            .await
    }

    fn record(&mut self, m: &Value, pushed: bool) {
        let (Some(conv), Some(seq)) = (m["conv"].as_i64(), m["seq"].as_i64()) else {
            return;
        };
        if pushed {
            self.push_order.entry(conv).or_default().push(seq);
            if let Some(t) = m["body"]
                .as_str()
                .and_then(|b| b.strip_prefix("t="))
                .and_then(|b| b.split(' ').next())
                .and_then(|t| t.parse::<u64>().ok())
            {
                self.latencies_us.push(now_us().saturating_sub(t));
            }
        }
        self.received
            .entry(conv)
            .or_default()
            .insert(seq, m.clone());
    }

    /// Handles one incoming frame; returns false when the connection ended.
    async fn handle(&mut self, item: Incoming) -> Result<bool> {
        match item {
            Incoming::Json(v) => {
                match v["type"].as_str().unwrap_or("") {
                    "ack" => {
                        if let (Some(cid), Some(seq), Some(conv)) =
                            (v["cid"].as_str(), v["seq"].as_i64(), v["conv"].as_i64())
                        {
                            let body = self.unacked.remove(cid).map(|(_, b)| b).unwrap_or_default();
                            self.acked.insert(cid.to_string(), seq);
                            // Our own message: known without a push.
                            let own = json!({"conv": conv, "seq": seq, "sender": self.user, "cid": cid, "body": body});
                            self.record(&own, false);
                            self.advance(conv);
                        }
                    }
                    "msg" => {
                        let conv = v["conv"].as_i64().unwrap_or_default();
                        let seq = v["seq"].as_i64().unwrap_or_default();
                        self.record(&v, true);
                        let cursor = self.advance(conv);
                        // A gap in what we know: sync fills it (the contract's rule). Our
                        // own acks travel apart from pushes and may come a little later,
                        // so a gap must stay open a moment before it counts.
                        if seq > cursor + 1 && self.gap_since.is_none() {
                            self.gap_since = Some(Instant::now());
                        }
                    }
                    "sync" => {
                        for c in v["conversations"].as_array().cloned().unwrap_or_default() {
                            let conv = c["id"].as_i64().unwrap_or_default();
                            for m in c["messages"].as_array().cloned().unwrap_or_default() {
                                self.record(&m, false);
                                let seq = m["seq"].as_i64().unwrap_or_default();
                                let cur = self.cursors.entry(conv).or_insert(0);
                                *cur = (*cur).max(seq);
                            }
                        }
                        if v["more"] == json!(true) {
                            self.request_sync().await?;
                        }
                    }
                    "resync" => {
                        self.resyncs += 1;
                        self.request_sync().await?;
                    }
                    _ => {}
                }
                if let Some(since) = self.gap_since {
                    let open = self.received.iter().any(|(conv, known)| {
                        let cursor = self.cursors.get(conv).copied().unwrap_or(0);
                        known.keys().next_back().is_some_and(|last| *last > cursor)
                    });
                    if !open {
                        self.gap_since = None;
                    } else if since.elapsed() > GAP_WAIT {
                        self.gap_since = None;
                        self.request_sync().await?;
                    }
                }
                Ok(true)
            }
            Incoming::Close(code) => {
                self.closes.push(code);
                self.ws = None;
                Ok(false)
            }
            Incoming::Eof => {
                self.closes.push(None);
                self.ws = None;
                Ok(false)
            }
        }
    }

    /// Moves the cursor of `conv` over every seq known without a gap; returns it.
    fn advance(&mut self, conv: i64) -> i64 {
        let known = self.received.get(&conv);
        let cursor = self.cursors.entry(conv).or_insert(0);
        while known.is_some_and(|k| k.contains_key(&(*cursor + 1))) {
            *cursor += 1;
        }
        *cursor
    }

    /// Reads frames for up to `limit`; returns false if the connection ended.
    pub async fn pump(&mut self, limit: Duration) -> Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            let Some(ws) = self.ws.as_mut() else {
                return Ok(false);
            };
            match ws.recv(left).await {
                Ok(item) => {
                    if !self.handle(item).await? {
                        return Ok(false);
                    }
                }
                Err(HarnessError::Timeout(_)) => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until every send is acked (true), or `limit` passes or the connection
    /// ends (false). Returns as soon as the last ack arrives.
    pub async fn wait_acked(&mut self, limit: Duration) -> Result<bool> {
        let deadline = Instant::now() + limit;
        while !self.unacked.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(ws) = self.ws.as_mut() else {
                return Ok(false);
            };
            if left.is_zero() {
                return Ok(false);
            }
            match ws.recv(left).await {
                Ok(item) => {
                    if !self.handle(item).await? {
                        return Ok(false);
                    }
                }
                Err(HarnessError::Timeout(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads until nothing is unacked and `conv` is known up to `last_seq`, or `limit`.
    pub async fn settle(&mut self, conv: i64, last_seq: i64, limit: Duration) -> Result<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let have = self.received.get(&conv).map_or(0, |m| m.len() as i64);
            if self.unacked.is_empty() && have >= last_seq {
                return Ok(true);
            }
            if !self.pump(Duration::from_millis(200)).await? {
                return Ok(false);
            }
            if have < last_seq {
                self.request_sync().await?;
            }
        }
        Ok(false)
    }

    /// Seqs this client knows of `conv`, ascending.
    pub fn seqs(&self, conv: i64) -> Vec<i64> {
        self.received
            .get(&conv)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    pub async fn close(&mut self) {
        if let Some(ws) = self.ws.take() {
            ws.close().await;
        }
    }
}

/// p-th percentile of `samples` (sorted in place), in the samples' unit.
pub fn percentile(samples: &mut [u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}
