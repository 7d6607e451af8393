//! The ceiling: the plainest fan-out server this machine can run, to measure the chat
//! node against. tokio (multi-threaded) and tokio-tungstenite only: no actors, no
//! storage, no bus, no authentication. It speaks the node's frames for what the bench
//! uses, serialised with the node's own wire types:
//!
//! - `GET /ws?user=N` (any path; the query's `user` names the user, no token) is
//!   answered by `{"type":"hello","user":N,"node":"ceiling","heartbeat_s":30}`;
//! - `{"type":"send","conv":C,"cid":…,"body":…}` by `ack {cid,conv,seq,ts}` on the
//!   sending socket and a `msg` to every other socket of every member of C (the
//!   sender's other sockets included), with one seq counter per conversation kept in
//!   memory; pushes of a conversation leave in seq order (one lock per conversation
//!   around numbering and queueing);
//! - `{"type":"ping"}` by `pong`; an unknown conversation or a non-member by `error`.
//!
//! Membership is given at start: `--groups FILE`, a JSON object of conversation id →
//! member ids (`{"7": [1, 2, 3]}`), written by the bench from the same rows it put in
//! the node's database. Without it every send is answered `not_found`.
//!
//!   ceiling --bind 127.0.0.1:9000 --groups groups.json [--workers 2]

use chat_wire::{ConvId, ErrorCode, Message as ChatMessage, Seq, ServerFrame, Tier, UserId};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Parser)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
    /// JSON object: conversation id → member user ids.
    #[arg(long)]
    groups: Option<std::path::PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

struct Conv {
    members: Vec<i64>,
    /// The last seq given; held while a message is numbered and queued.
    seq: Mutex<i64>,
}

type Tx = mpsc::UnboundedSender<Message>;

struct State {
    convs: HashMap<i64, Conv>,
    /// user → (connection id, its queue).
    sockets: RwLock<HashMap<i64, Vec<(u64, Tx)>>>,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    conv: Option<i64>,
    #[serde(borrow)]
    cid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.to_text()))
}

fn error(code: ErrorCode, message: &str, reference: Option<&str>) -> Message {
    text(&ServerFrame::error(
        code,
        message,
        reference.map(String::from),
    ))
}

impl State {
    fn register(&self, user: i64, id: u64, tx: Tx) {
        if let Ok(mut s) = self.sockets.write() {
            s.entry(user).or_default().push((id, tx));
        }
    }

    fn unregister(&self, user: i64, id: u64) {
        if let Ok(mut s) = self.sockets.write() {
            if let Some(v) = s.get_mut(&user) {
                v.retain(|(i, _)| *i != id);
                if v.is_empty() {
                    s.remove(&user);
                }
            }
        }
    }

    /// One text frame of connection `id` of `user`; answers go to `tx`.
    fn handle(&self, user: i64, id: u64, tx: &Tx, frame: &str) {
        let Ok(f) = serde_json::from_str::<Incoming>(frame) else {
            let _ = tx.send(error(ErrorCode::BadRequest, "malformed frame", None));
            return;
        };
        match f.ty.as_ref() {
            "send" => {}
            "ping" => {
                let _ = tx.send(text(&ServerFrame::Pong));
                return;
            }
            _ => return,
        }
        let (Some(conv_id), Some(cid), Some(body)) = (f.conv, f.cid, f.body) else {
            let _ = tx.send(error(
                ErrorCode::BadRequest,
                "send needs conv, cid, body",
                None,
            ));
            return;
        };
        let Some(conv) = self.convs.get(&conv_id) else {
            let _ = tx.send(error(
                ErrorCode::NotFound,
                "no such conversation",
                Some(&cid),
            ));
            return;
        };
        if !conv.members.contains(&user) {
            let _ = tx.send(error(ErrorCode::NotMember, "not a member", Some(&cid)));
            return;
        }
        let Ok(mut last) = conv.seq.lock() else {
            return;
        };
        *last += 1;
        let seq = *last;
        let ts = chrono::Utc::now();
        let msg = text(&ServerFrame::Msg(ChatMessage {
            conv: ConvId(conv_id),
            seq: Seq(seq),
            sender: UserId(user),
            cid: cid.to_string(),
            body: body.into_owned(),
            tier: Tier::Normal,
            ts,
            reply_to: None,
            kind: Default::default(),
            attach: None,
            mentions: Vec::new(),
            target: None,
            system: None,
            reaction: None,
            edited: false,
            recalled: false,
            reactions: Vec::new(),
        }));
        let _ = tx.send(text(&ServerFrame::Ack {
            cid: cid.into_owned(),
            conv: ConvId(conv_id),
            seq: Seq(seq),
            ts,
        }));
        if let Ok(sockets) = self.sockets.read() {
            for m in &conv.members {
                for (sid, q) in sockets.get(m).map(Vec::as_slice).unwrap_or(&[]) {
                    if *sid != id {
                        let _ = q.send(msg.clone());
                    }
                }
            }
        }
        drop(last);
    }
}

fn user_of(req: &Request) -> Option<i64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("user="))
        .and_then(|v| v.parse().ok())
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(state: Arc<State>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let mut user = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        user = user_of(req);
        if user.is_some() {
            Ok(resp)
        } else {
            let mut refuse = ErrorResponse::new(Some("missing ?user=N".into()));
            *refuse.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refuse)
        }
    };
    // A small read buffer (it is allocated up front for every socket); writes are
    // buffered until the writer task flushes a batch.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
    else {
        return;
    };
    let Some(user) = user else {
        return;
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let _ = tx.send(text(&ServerFrame::Hello {
        user: UserId(user),
        node: "ceiling".into(),
        heartbeat_s: 30,
    }));
    state.register(user, id, tx.clone());
    let writer = tokio::spawn(async move {
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
    });
    while let Some(item) = stream.next().await {
        match item {
            Ok(Message::Text(t)) => state.handle(user, id, &tx, t.as_str()),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    state.unregister(user, id);
    drop(tx);
    let _ = writer.await;
}

fn load_groups(path: Option<&std::path::Path>) -> Result<HashMap<i64, Conv>, String> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw: HashMap<String, Vec<i64>> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    raw.into_iter()
        .map(|(k, members)| {
            let id = k
                .parse::<i64>()
                .map_err(|e| format!("conversation id {k:?}: {e}"))?;
            Ok((
                id,
                Conv {
                    members,
                    seq: Mutex::new(0),
                },
            ))
        })
        .collect()
}

fn main() {
    let args = Args::parse();
    let convs = match load_groups(args.groups.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ceiling: {e}");
            std::process::exit(2);
        }
    };
    let state = Arc::new(State {
        convs,
        sockets: RwLock::new(HashMap::new()),
        next_id: AtomicU64::new(1),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ceiling: runtime: {e}");
            std::process::exit(1);
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async move {
        let listener = TcpListener::bind(args.bind).await?;
        eprintln!(
            "ceiling: listening on {} ({} conversations)",
            args.bind,
            state.convs.len()
        );
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    tokio::spawn(serve(state.clone(), tcp));
                }
                // Out of file descriptors, for instance: wait a moment, go on.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    });
    if let Err(e) = result {
        eprintln!("ceiling: {e}");
        std::process::exit(1);
    }
}
