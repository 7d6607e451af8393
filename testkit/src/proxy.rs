//! A TCP fault proxy on loopback, in front of Postgres or Redis for one node: it passes
//! bytes through, or cuts every connection (and refuses new ones), or black-holes them
//! (connections stay open, nothing arrives), or delays each chunk, or (in front of
//! Postgres) loses the answer to the next COMMIT: the statement reaches Postgres and
//! commits, and the connection is cut before its answer can come back. A test puts a
//! node's database or bus URL on the proxy's port and changes the mode while the node
//! runs.

use crate::Result;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass through.
    Pass,
    /// Open connections are closed; new ones are closed on accept.
    Cut,
    /// Connections stay open (and new ones are accepted), but nothing is carried
    /// until the fault ends: then what was held goes on, as TCP would retransmit it.
    BlackHole,
    /// Each chunk waits this long before it is carried on.
    Delay(Duration),
    /// Bytes pass through until a client sends `COMMIT` (as a simple query, as
    /// tokio-postgres does): that is carried to Postgres, then the connection is cut
    /// before the answer, and the proxy passes again.
    LoseCommitAnswer,
}

/// `COMMIT` as a simple-query message of the Postgres protocol: `Q`, the length
/// (4 + 7), the text and its terminating NUL.
const COMMIT_QUERY: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// A running proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Fault>>,
    lost_commits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a spare loopback port and carries connections to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Fault::Pass);
        let mode = Arc::new(mode);
        let lost_commits = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(
            listener,
            upstream,
            mode.clone(),
            lost_commits.clone(),
        ));
        Ok(FaultProxy {
            port,
            mode,
            lost_commits,
            task,
        })
    }

    /// COMMITs whose answer this proxy lost so far.
    pub fn lost_commits(&self) -> u64 {
        self.lost_commits.load(Ordering::SeqCst)
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    /// `scheme://127.0.0.1:<port>/rest`: a URL of the upstream's kind through this proxy.
    pub fn url(&self, scheme: &str, rest: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{rest}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end with the watch channel.
        self.mode.send_replace(Fault::Cut);
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<watch::Sender<Fault>>,
    lost_commits: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == Fault::Cut {
            drop(client);
            continue;
        }
        let (mode, lost_commits) = (mode.clone(), lost_commits.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Whichever direction ends first ends the other: both sockets close.
            let to_server = Pump {
                mode: mode.clone(),
                lost_commits: Some(lost_commits),
            };
            let to_client = Pump {
                mode,
                lost_commits: None,
            };
            tokio::select! {
                () = to_server.run(cr, sw) => {}
                () = to_client.run(sr, cw) => {}
            }
        });
    }
}

/// One direction of a connection.
struct Pump {
    mode: Arc<watch::Sender<Fault>>,
    /// Set on the client-to-server direction, where a COMMIT is seen.
    lost_commits: Option<Arc<AtomicU64>>,
}

impl Pump {
    async fn run(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut mode = self.mode.subscribe();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = from.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // Held (and nothing more read) while the link is a black hole.
                    while *mode.borrow_and_update() == Fault::BlackHole {
                        if mode.changed().await.is_err() {
                            return;
                        }
                    }
                    let fault = *mode.borrow();
                    match fault {
                        Fault::Cut | Fault::BlackHole => return,
                        Fault::Delay(d) => tokio::time::sleep(d).await,
                        Fault::Pass => {}
                        Fault::LoseCommitAnswer => {
                            if let Some(lost) = &self.lost_commits {
                                let commit = buf[..n]
                                    .windows(COMMIT_QUERY.len())
                                    .any(|w| w == COMMIT_QUERY);
                                if commit {
                                    // Once: the statement goes, the answer never comes.
                                    self.mode.send_replace(Fault::Pass);
                                    let _ = to.write_all(&buf[..n]).await;
                                    let _ = to.flush().await;
                                    lost.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                            }
                        }
                    }
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() || *mode.borrow() == Fault::Cut {
                        return;
                    }
                }
            }
        }
    }
}
