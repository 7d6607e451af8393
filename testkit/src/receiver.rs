//! An HTTP endpoint for offline notifications, as a company's backend runs one: it
//! takes `POST`s of `{"notifications": [...]}`, checks `X-Chat-Signature`, answers
//! 200 (or what the test says), and keeps what it took. It can go down (its port
//! refuses connections) and come back on the same port.

use crate::{HarnessError, Result};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One notification the receiver took, and when.
#[derive(Debug, Clone)]
pub struct Taken {
    pub at: Instant,
    /// The `X-Chat-Node` header of its POST.
    pub node: String,
    pub notification: Value,
}

#[derive(Default)]
struct State {
    taken: Vec<Taken>,
    posts: usize,
    refused: usize,
    bad_signatures: usize,
    /// Answer to give instead of 200 (the body is not kept then).
    answer: Option<u16>,
}

/// A notification endpoint on a loopback port.
pub struct Receiver {
    port: u16,
    secret: Vec<u8>,
    state: Arc<Mutex<State>>,
    server: Option<actix_rt::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts listening on a free port; POSTs are checked against `secret`.
    pub async fn start(secret: &str) -> Result<Receiver> {
        let mut r = Receiver {
            port: crate::free_port(),
            secret: secret.as_bytes().to_vec(),
            state: Arc::default(),
            server: None,
        };
        r.resume().await?;
        Ok(r)
    }

    /// `http://127.0.0.1:<port>/notify`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/notify", self.port)
    }

    /// Goes down: the port refuses connections, and open ones are cut.
    pub async fn stop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Comes back on the same port.
    pub async fn resume(&mut self) -> Result<()> {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let state = self.state.clone();
        let secret = self.secret.clone();
        self.server = Some(actix_rt::spawn(async move {
            // Aborting this task drops `conns`, which cuts every connection.
            let mut conns = AbortOnDrop(Vec::new());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let state = state.clone();
                let secret = secret.clone();
                conns.0.retain(|c| !c.is_finished());
                conns.0.push(actix_rt::spawn(async move {
                    let _ = serve(stream, &state, &secret).await;
                }));
            }
        }));
        Ok(())
    }

    /// From now on, answers `status` without keeping anything (`None`: 200 again).
    pub fn answer(&self, status: Option<u16>) {
        if let Ok(mut s) = self.state.lock() {
            s.answer = status;
        }
    }

    /// Every notification taken so far, in the order taken.
    pub fn taken(&self) -> Vec<Taken> {
        self.state
            .lock()
            .map(|s| s.taken.clone())
            .unwrap_or_default()
    }

    /// POSTs seen, POSTs answered with an error, POSTs with a wrong signature.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.state
            .lock()
            .map(|s| (s.posts, s.refused, s.bad_signatures))
            .unwrap_or_default()
    }

    /// Waits until `done` holds for what was taken, or `limit` passes.
    pub async fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&[Taken]) -> bool,
    ) -> Result<Vec<Taken>> {
        let deadline = Instant::now() + limit;
        loop {
            let taken = self.taken();
            if done(&taken) {
                return Ok(taken);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "notifications: {} taken, condition not met",
                    taken.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

struct AbortOnDrop(Vec<actix_rt::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for c in &self.0 {
            c.abort();
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Serves the requests of one keep-alive connection.
async fn serve(mut stream: TcpStream, state: &Mutex<State>, secret: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);

        let status = {
            let mut s = state
                .lock()
                .map_err(|_| HarnessError::Http("receiver state poisoned".into()))?;
            s.posts += 1;
            let signed = header("x-chat-signature").unwrap_or_default();
            if !head.starts_with("POST /notify ") {
                404
            } else if signed != sign(secret, &body) {
                s.bad_signatures += 1;
                401
            } else if let Some(code) = s.answer {
                s.refused += 1;
                code
            } else {
                let parsed: Value = serde_json::from_slice(&body)?;
                let node = header("x-chat-node").unwrap_or_default();
                let at = Instant::now();
                for n in parsed["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    s.taken.push(Taken {
                        at,
                        node: node.clone(),
                        notification: n,
                    });
                }
                200
            }
        };
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        stream.write_all(answer.as_bytes()).await?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
