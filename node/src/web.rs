//! The web chat page: `/` and its assets (`web/` of the repository), the JavaScript
//! client library it runs on (`/client/*.js`, from `clients/js/src`), and a viewer of
//! the OpenAPI document at `/docs` (`web/docs/`).
//!
//! The files are embedded in the binary at compile time with `include_bytes!` and a
//! small table, so the single `chat-node` binary serves the page wherever it runs, with
//! nothing to install beside it. A table of ten files needs no crate: `rust-embed`
//! would add a dependency (and its proc-macro build time) for what is a handful of
//! lines here, and `include_bytes!` makes cargo rebuild the node when one of the files
//! changes. Only the paths in the table are served; every other path keeps the node's
//! 404.
//!
//! Every answer carries `X-Content-Type-Options: nosniff` and an `ETag` (a hash of the
//! file, so a new build's files are seen at once with `Cache-Control: no-cache`). The
//! HTML also carries a strict `Content-Security-Policy`: scripts and styles only from
//! this origin (no inline script anywhere), connections only to this origin and its
//! WebSocket, no framing.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr, $file:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $file)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("/", HTML, "web/index.html"),
    asset!("/app.js", JS, "web/app.js"),
    asset!("/style.css", CSS, "web/style.css"),
    asset!("/client/chat.js", JS, "clients/js/src/chat.js"),
    asset!("/client/http.js", JS, "clients/js/src/http.js"),
    asset!("/client/index.js", JS, "clients/js/src/index.js"),
    asset!("/docs", HTML, "web/docs/index.html"),
    asset!("/docs/docs.js", JS, "web/docs/docs.js"),
    asset!("/docs/docs.css", CSS, "web/docs/docs.css"),
];

/// The paths served, for the router.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS
        .iter()
        .map(|a| a.path)
        .chain(["/index.html", "/docs/"])
}

/// Registers GET (and HEAD, for `curl -I`) routes per embedded file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in paths() {
        cfg.route(path, web::get().to(serve))
            .route(path, web::head().to(serve));
    }
}

fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The host the browser used, if it is a plain `host[:port]`: it goes into the CSP, so
/// anything else (a space, a `;`) is left out rather than written into the header.
fn clean_host(req: &HttpRequest) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| host.to_string())
}

/// The page's Content-Security-Policy. `connect-src` names the WebSocket of the same
/// host explicitly (`ws:` and `wss:`), for browsers that do not count it as `'self'`.
fn csp(req: &HttpRequest) -> String {
    let ws = clean_host(req)
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
         connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

async fn serve(req: HttpRequest) -> HttpResponse {
    let path = match req.path() {
        "/index.html" => "/",
        "/docs/" => "/docs",
        p => p,
    };
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return crate::error::extract::not_found().await;
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if asset.content_type == HTML {
        resp.insert_header((header::X_FRAME_OPTIONS, "DENY"));
        if let Ok(v) = HeaderValue::from_str(&csp(&req)) {
            resp.insert_header((header::CONTENT_SECURITY_POLICY, v));
        }
    }
    if fresh {
        return resp.finish();
    }
    resp.content_type(asset.content_type).body(asset.body)
}
