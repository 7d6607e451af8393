//! A TCP fault proxy on loopback, in front of Postgres or Redis for one node: it passes
//! bytes through, or cuts every connection (and refuses new ones), or black-holes them
//! (connections stay open, nothing arrives), or delays each chunk. A test puts a node's
//! database or bus URL on the proxy's port and changes the mode while the node runs.

use crate::Result;
use std::net::SocketAddr;
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
    /// Connections stay open (and new ones are accepted), but nothing is carried.
    BlackHole,
    /// Each chunk waits this long before it is carried on.
    Delay(Duration),
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Fault>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a spare loopback port and carries connections to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Fault::Pass);
        let mode = Arc::new(mode);
        let task = tokio::spawn(accept(listener, upstream, mode.clone()));
        Ok(FaultProxy { port, mode, task })
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.mode.borrow()
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

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: Arc<watch::Sender<Fault>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == Fault::Cut {
            drop(client);
            continue;
        }
        let rx = mode.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Whichever direction ends first ends the other: both sockets close.
            tokio::select! {
                () = pump(cr, sw, rx.clone()) => {}
                () = pump(sr, cw, rx) => {}
            }
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let fault = *mode.borrow();
                match fault {
                    Fault::Cut => return,
                    Fault::BlackHole => continue,
                    Fault::Delay(d) => tokio::time::sleep(d).await,
                    Fault::Pass => {}
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
