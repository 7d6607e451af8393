//! The web chat page served by every node: `/`, its assets and the JavaScript client
//! library, with their content types and security headers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on any error

#[expect(dead_code, reason = "the in-process node only, no node processes")]
mod common;
use chat_testkit::Endpoint;
use common::node;
use std::time::Duration;

struct Answer {
    status: u16,
    headers: awc::http::header::HeaderMap,
    body: String,
}

async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut req = client.get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send().await.expect("GET");
    let body = resp.body().limit(1 << 20).await.expect("body");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[actix_rt::test]
async fn page_assets_and_client_library_with_their_headers() {
    let (_db, node) = node().await;
    let base = node.http();

    // The page: HTML, never cached without revalidation, a strict CSP with no inline script.
    for path in ["/", "/index.html"] {
        let a = get(&base, path, &[]).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(header(&a, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&a, "cache-control"), "no-cache");
        assert_eq!(header(&a, "x-content-type-options"), "nosniff");
        let csp = header(&a, "content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        let host = base.trim_start_matches("http://");
        assert!(
            csp.contains(&format!("connect-src 'self' ws://{host} wss://{host};")),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(a.body.contains("data-testid"), "the page's markup");
        assert!(a.body.contains(r#"<script type="module" src="/app.js">"#));
        // No inline script: every <script> has a src.
        assert_eq!(
            a.body.matches("<script").count(),
            a.body.matches("<script type=\"module\" src=").count()
        );
    }

    // The API viewer: HTML under the same policy, with its script and style.
    for path in ["/docs", "/docs/"] {
        let a = get(&base, path, &[]).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(header(&a, "content-type"), "text/html; charset=utf-8");
        assert!(header(&a, "content-security-policy").contains("script-src 'self';"));
        assert!(a
            .body
            .contains(r#"<script type="module" src="/docs/docs.js">"#));
    }
    for (path, ty) in [
        ("/docs/docs.js", "text/javascript; charset=utf-8"),
        ("/docs/docs.css", "text/css; charset=utf-8"),
    ] {
        let a = get(&base, path, &[]).await;
        assert_eq!((a.status, header(&a, "content-type")), (200, ty), "{path}");
    }

    // The page's script and style, and the client library it imports.
    for (path, ty, needle) in [
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "/client/index.js",
        ),
        ("/style.css", "text/css; charset=utf-8", "{"),
        (
            "/client/index.js",
            "text/javascript; charset=utf-8",
            "ChatClient",
        ),
        (
            "/client/chat.js",
            "text/javascript; charset=utf-8",
            "export class ChatClient",
        ),
        (
            "/client/http.js",
            "text/javascript; charset=utf-8",
            "export class ChatHttp",
        ),
    ] {
        let a = get(&base, path, &[]).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(header(&a, "content-type"), ty, "{path}");
        assert_eq!(header(&a, "x-content-type-options"), "nosniff", "{path}");
        assert!(a.headers.get("cache-control").is_some(), "{path}");
        assert!(a.body.contains(needle), "{path} holds {needle}");
        // Revalidation: the ETag answers 304 with no body.
        let etag = header(&a, "etag").to_string();
        let again = get(&base, path, &[("If-None-Match", &etag)]).await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
    }

    // A Host that is not a plain host[:port] is not written into the CSP.
    let a = get(&base, "/", &[("Host", "evil; script-src *")]).await;
    assert_eq!(a.status, 200);
    assert!(!header(&a, "content-security-policy").contains("evil"));

    // Everything else stays as it was: unknown paths 404 with the API's error body, the
    // API, operations and other methods untouched.
    for path in [
        "/app.js.map",
        "/client/",
        "/client/harness.js",
        "/web/index.html",
        "/favicon.ico",
        "/api/v1/nope",
    ] {
        let a = get(&base, path, &[]).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(a.body.contains("not_found"), "{path}: {}", a.body);
    }
    assert_eq!(get(&base, "/healthz", &[]).await.status, 200);
    let a = get(&base, "/api/v1/me", &[]).await;
    assert_eq!(a.status, 401);
    let client = awc::Client::default();
    let resp = client.post(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // HEAD answers the headers of GET, without the body.
    let mut resp = client.head(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    assert!(resp.headers().get("content-security-policy").is_some());
    assert!(resp.body().await.unwrap().is_empty());
}
