//! Small things most tests need: a user, a minted token, the clock, row counts.

use crate::process::{TestDb, TEST_SECRET};
use crate::{Api, Result};
use serde_json::{json, Value};
use std::time::Duration;

/// The default bound of one wait in a test.
pub const T: Duration = Duration::from_secs(10);

/// A user of a node: id and token.
pub struct User {
    pub id: i64,
    pub token: String,
}

/// Registers `name` (with a fixed password) and returns it.
pub async fn user(api: &Api, name: &str) -> Result<User> {
    let (id, token) = api.register(name).await?;
    Ok(User { id, token })
}

/// Mints a token as a company's backend would, with the shared test secret.
pub fn mint(sub: &str, iat: i64, exp: i64) -> Result<String> {
    let claims = json!({"sub": sub, "iat": iat, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .map_err(|e| crate::HarnessError::Http(format!("signing a token: {e}")))
}

/// Provisions `name` with `attrs` as the company's backend would (service key,
/// external id `ext-<name>`) and mints it a token for ten minutes.
pub async fn provision(api: &Api, name: &str, attrs: Value) -> Result<User> {
    let (status, body) = api
        .post(
            "/api/v1/users",
            Some(crate::process::SERVICE_KEY),
            &json!({"external_id": format!("ext-{name}"), "username": name, "attributes": attrs}),
        )
        .await?;
    let id = match (status, body["user_id"].as_i64()) {
        (201, Some(id)) => id,
        _ => {
            return Err(crate::HarnessError::Http(format!(
                "provision {name}: {status} {body}"
            )))
        }
    };
    let token = mint(&id.to_string(), now(), now() + 600)?;
    Ok(User { id, token })
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Number of stored message rows of a conversation.
pub async fn rows(db: &TestDb, conv: i64) -> Result<i64> {
    db.count("SELECT count(*) FROM messages WHERE conv = $1", conv)
        .await
}

/// The error code of an HTTP error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
