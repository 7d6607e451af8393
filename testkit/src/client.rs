//! HTTP and WebSocket clients of the public contract.

use crate::{HarnessError, Result};
use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An HTTP client of one base address.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: awc::Client,
}

fn http_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Http(e.to_string())
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        token: Option<&str>,
    ) -> awc::ClientRequest {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        req
    }

    async fn finish(
        mut resp: awc::ClientResponse<
            impl futures_util::Stream<
                    Item = std::result::Result<bytes::Bytes, awc::error::PayloadError>,
                > + Unpin,
        >,
    ) -> Result<(u16, Value)> {
        let status = resp.status().as_u16();
        let body = resp.body().limit(64 << 20).await.map_err(http_err)?;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        };
        Ok((status, value))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::GET, path, token)
            .send()
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::POST, path, token)
            .send_json(body)
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::PUT, path, token)
            .send_json(body)
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    pub async fn patch(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::PATCH, path, token)
            .send_json(body)
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::DELETE, path, token)
            .send()
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    /// A PUT without a body (`PUT /blocks/{user}`).
    pub async fn put_empty(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::PUT, path, token)
            .send()
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    /// A POST with a raw body (malformed JSON, wrong content type, oversized).
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Value)> {
        let resp = self
            .request(awc::http::Method::POST, path, token)
            .insert_header(("Content-Type", content_type))
            .send_body(body)
            .await
            .map_err(http_err)?;
        Self::finish(resp).await
    }

    /// Registers `username` (password `password-<username>`); returns id and token.
    pub async fn register(&self, username: &str) -> Result<(i64, String)> {
        let (status, body) = self
            .post(
                "/api/v1/auth/register",
                None,
                &json!({"username": username, "password": format!("password-{username}")}),
            )
            .await?;
        if status != 201 {
            return Err(HarnessError::Http(format!(
                "register {username}: {status} {body}"
            )));
        }
        let id = body["user_id"]
            .as_i64()
            .ok_or_else(|| http_err("no user_id"))?;
        let token = body["token"]
            .as_str()
            .ok_or_else(|| http_err("no token"))?
            .to_string();
        Ok((id, token))
    }

    /// Opens (or finds) the direct conversation with `peer`; returns its id.
    pub async fn direct(&self, token: &str, peer: i64) -> Result<i64> {
        let (status, body) = self
            .post(
                "/api/v1/conversations",
                Some(token),
                &json!({"kind": "direct", "peer": peer}),
            )
            .await?;
        if status != 201 && status != 200 {
            return Err(HarnessError::Http(format!("direct: {status} {body}")));
        }
        body["conversation"]["id"]
            .as_i64()
            .ok_or_else(|| http_err("no conversation id"))
    }

    /// Creates a group; returns its id.
    pub async fn group(&self, token: &str, title: &str, members: &[i64]) -> Result<i64> {
        let (status, body) = self
            .post(
                "/api/v1/conversations",
                Some(token),
                &json!({"kind": "group", "title": title, "members": members}),
            )
            .await?;
        if status != 201 {
            return Err(HarnessError::Http(format!("group: {status} {body}")));
        }
        body["conversation"]["id"]
            .as_i64()
            .ok_or_else(|| http_err("no conversation id"))
    }

    /// Sends over HTTP; returns (status, body).
    pub async fn send(
        &self,
        token: &str,
        conv: i64,
        cid: &str,
        body: &str,
    ) -> Result<(u16, Value)> {
        self.post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(token),
            &json!({"cid": cid, "body": body}),
        )
        .await
    }

    /// Moves the read cursor; returns (status, body).
    pub async fn read(&self, token: &str, conv: i64, seq: i64) -> Result<(u16, Value)> {
        self.post(
            &format!("/api/v1/conversations/{conv}/read"),
            Some(token),
            &json!({ "seq": seq }),
        )
        .await
    }

    /// Syncs from `cursors` until `more` is false; returns every message seen, per
    /// conversation, in the order received.
    pub async fn sync_all(
        &self,
        token: &str,
        cursors: &mut std::collections::BTreeMap<i64, i64>,
        limit: i64,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let body = json!({
                "cursors": cursors.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "limit": limit,
            });
            let (status, resp) = self.post("/api/v1/sync", Some(token), &body).await?;
            if status != 200 {
                return Err(HarnessError::Http(format!("sync: {status} {resp}")));
            }
            for conv in resp["conversations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let id = conv["id"].as_i64().unwrap_or_default();
                for m in conv["messages"].as_array().cloned().unwrap_or_default() {
                    let seq = m["seq"].as_i64().unwrap_or_default();
                    let cur = cursors.entry(id).or_insert(0);
                    *cur = (*cur).max(seq);
                    out.push(m);
                }
            }
            if resp["more"] != json!(true) {
                return Ok(out);
            }
        }
        Err(HarnessError::Timeout("sync never finished".into()))
    }
}

/// What arrived on a WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Json(Value),
    /// The server closed, with this code.
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Eof,
}

type Framed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// A WebSocket client.
pub struct WsClient {
    framed: Framed,
}

impl WsClient {
    /// Connects; a refused handshake gives `Err(Http("status NNN"))`.
    pub async fn connect(url: &str) -> Result<WsClient> {
        Self::connect_with(url, None).await
    }

    pub async fn connect_with(url: &str, origin: Option<&str>) -> Result<WsClient> {
        Self::connect_headers(url, origin, None).await
    }

    /// Connects with the token in an `Authorization: Bearer` header instead of the URL.
    pub async fn connect_bearer(url: &str, token: &str) -> Result<WsClient> {
        Self::connect_headers(url, None, Some(token)).await
    }

    async fn connect_headers(
        url: &str,
        origin: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<WsClient> {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let mut req = client.ws(url).max_frame_size(64 << 20);
        if let Some(o) = origin {
            req = req.origin(o);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        match req.connect().await {
            Ok((_, framed)) => Ok(WsClient { framed }),
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) => {
                Err(HarnessError::Http(format!("status {}", s.as_u16())))
            }
            Err(e) => Err(HarnessError::Ws(e.to_string())),
        }
    }

    /// Connects and reads `hello`.
    pub async fn connect_hello(url: &str) -> Result<(WsClient, Value)> {
        let mut ws = Self::connect(url).await?;
        let hello = ws.expect("hello", Duration::from_secs(10)).await?;
        Ok((ws, hello))
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.framed
            .send(Message::Text(text.to_string().into()))
            .await
            .map_err(|e| HarnessError::Ws(e.to_string()))
    }

    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        self.send_text(&value.to_string()).await
    }

    pub async fn send_message(&mut self, msg: Message) -> Result<()> {
        self.framed
            .send(msg)
            .await
            .map_err(|e| HarnessError::Ws(e.to_string()))
    }

    /// Sends a message frame.
    pub async fn send_msg(&mut self, conv: i64, cid: &str, body: &str) -> Result<()> {
        self.send_json(&json!({"type": "send", "conv": conv, "cid": cid, "body": body}))
            .await
    }

    /// The next JSON frame, close or end, within `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<Incoming> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let item = tokio::time::timeout(left, self.framed.next())
                .await
                .map_err(|_| HarnessError::Timeout("no frame".into()))?;
            match item {
                None => return Ok(Incoming::Eof),
                Some(Err(_)) => return Ok(Incoming::Eof),
                Some(Ok(Frame::Text(t))) => return Ok(Incoming::Json(serde_json::from_slice(&t)?)),
                Some(Ok(Frame::Close(r))) => {
                    return Ok(Incoming::Close(r.map(|r| u16::from(r.code))))
                }
                Some(Ok(Frame::Ping(p))) => {
                    let _ = self.framed.send(Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next frame of type `ty`, skipping others; fails on close or time-out.
    pub async fn expect(&mut self, ty: &str, limit: Duration) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Incoming::Json(v) if v["type"] == ty => return Ok(v),
                Incoming::Json(_) => {}
                other => return Err(HarnessError::Ws(format!("expected {ty}, got {other:?}"))),
            }
        }
    }

    /// Frames until the server closes; returns the close code (None for a bare end).
    pub async fn until_close(&mut self, limit: Duration) -> Result<Option<u16>> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Incoming::Json(_) => {}
                Incoming::Close(code) => return Ok(code),
                Incoming::Eof => return Ok(None),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.framed.send(Message::Close(None)).await;
    }
}
