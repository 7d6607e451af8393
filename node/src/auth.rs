//! Identity: argon2id password hashes, HS256 tokens, and the request extractors that
//! turn an `Authorization` header into a user or the service.

use crate::config::Settings;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use chat_wire::UserId;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Claims of a token. A company's backend mints the same with the shared secret:
/// `sub` is the user id as a decimal string, `iat` and `exp` are unix seconds, and
/// `iss`/`aud` are required when the node is configured with them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Why a token was refused. The message (what the caller is told) names the reason
/// where that tells nothing about the secret: an expired token, a wrong audience or
/// issuer, claims in the wrong shape. A bad signature or a string that is no JWT is
/// "invalid token"; [`TokenError::detail`] (what the node logs) says which.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYet,
    #[error("token has the wrong audience (aud)")]
    WrongAudience,
    #[error("token has the wrong issuer (iss)")]
    WrongIssuer,
    #[error("token claims are malformed: {0}")]
    Claims(String),
    #[error("invalid token")]
    Invalid(&'static str),
}

impl TokenError {
    /// The reason, for logs (never the token itself).
    pub fn detail(&self) -> String {
        match self {
            TokenError::Invalid(why) => format!("invalid token: {why}"),
            other => other.to_string(),
        }
    }
}

/// Issues and checks tokens. Only HS256 is accepted.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    issuer: Option<String>,
    audience: Option<String>,
}

/// A verified token: whose it is and when it stops being valid.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    pub user: UserId,
    pub expires_at: u64,
    /// When it was issued (unix seconds): a revocation refuses it if at or before.
    pub issued_at: i64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Tokens {
    pub fn new(settings: &Settings) -> Tokens {
        let secret = settings.auth.jwt_secret.as_bytes();
        let issuer = non_empty(&settings.auth.issuer);
        let audience = non_empty(&settings.auth.audience);
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = settings.auth.leeway.as_secs();
        // `sub` is checked below, with a message that says what is wrong with it.
        let mut required = vec!["exp"];
        if issuer.is_some() {
            required.push("iss");
        }
        if audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: settings.auth.token_ttl,
            issuer,
            audience,
        }
    }

    /// A token for `user`, valid for `auth.token_ttl`.
    pub fn issue(&self, user: UserId) -> Result<String, ApiError> {
        self.issue_for(user, self.ttl)
    }

    /// A token for `user`, valid for `ttl`.
    pub fn issue_for(&self, user: UserId, ttl: Duration) -> Result<String, ApiError> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.0.to_string(),
            iat,
            exp: iat + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            ApiError::unavailable("could not issue a token")
        })
    }

    /// Checks signature, algorithm, expiry (and issuer/audience when configured), then
    /// the shape of the claims: `sub` a decimal string of a positive id, `iat` unix
    /// seconds. A refusal is logged with its reason at info.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let checked = self.check(token);
        if let Err(e) = &checked {
            tracing::info!(reason = %e.detail(), "token refused");
        }
        checked
    }

    fn check(&self, token: &str) -> Result<Verified, TokenError> {
        use jsonwebtoken::errors::ErrorKind as K;
        // The signature is checked before the claims are read: what the claims say
        // below comes from a holder of the secret, and may be named in the answer.
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &self.validation)
                .map_err(|e| match e.kind() {
                    K::ExpiredSignature => TokenError::Expired,
                    K::ImmatureSignature => TokenError::NotYet,
                    K::InvalidAudience => TokenError::WrongAudience,
                    K::InvalidIssuer => TokenError::WrongIssuer,
                    K::MissingRequiredClaim(c) => TokenError::Claims(format!("{c} is missing")),
                    K::InvalidSignature => {
                        TokenError::Invalid("signature does not match auth.jwt_secret")
                    }
                    K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
                        TokenError::Invalid("algorithm is not HS256")
                    }
                    // The header is read before the signature is checked: say nothing more.
                    K::Json(_) => TokenError::Invalid("the header or the claims are not JSON"),
                    _ => TokenError::Invalid("not a JWT (three base64url parts)"),
                })?;
        let claims = &data.claims;
        let sub = match &claims["sub"] {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(_) => {
                return Err(TokenError::Claims(
                    "sub must be the user id as a decimal string (\"42\"), not a number".into(),
                ))
            }
            serde_json::Value::Null => return Err(TokenError::Claims("sub is missing".into())),
            _ => return Err(TokenError::Claims("sub must be a string".into())),
        };
        let id = sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| TokenError::Claims("sub must be a positive user id".into()))?;
        let iat = claims["iat"].as_i64().ok_or_else(|| {
            TokenError::Claims("iat (issued at, unix seconds) is missing or not a number".into())
        })?;
        let exp = claims["exp"]
            .as_u64()
            .ok_or_else(|| TokenError::Claims("exp must be unix seconds".into()))?;
        Ok(Verified {
            user: UserId(id),
            expires_at: exp,
            issued_at: iat,
        })
    }
}

/// OWASP's argon2id minimum: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Password hashes (register) and checks (login) running at once on this node, at
/// most one per core: each takes 19 MiB and a core for tens of milliseconds, so a burst
/// of logins must queue, not take every core and the memory with it.
static HASH_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(cores()));
/// Registers and logins admitted at once (running or waiting for a slot): four per
/// core. Past that a request is refused at once, so a burst holds no more than this.
static HASH_ADMITTED: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(4 * cores()));
/// How long an admitted register or login waits for a slot before `rate_limited`.
const HASH_WAIT: Duration = Duration::from_secs(2);

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A slot for one password hash, or `rate_limited` when too many wait already or none
/// frees up in time.
async fn hash_slot() -> Result<(SemaphorePermit<'static>, SemaphorePermit<'static>), ApiError> {
    let refused = || {
        metrics::counter!(chat_actors::metrics::PASSWORD_HASHES_REFUSED_TOTAL).increment(1);
        ApiError::rate_limited("too many logins at once on this node; retry shortly")
    };
    let admitted = HASH_ADMITTED.try_acquire().map_err(|_| refused())?;
    match tokio::time::timeout(HASH_WAIT, HASH_SLOTS.acquire()).await {
        Ok(Ok(slot)) => Ok((admitted, slot)),
        _ => Err(refused()),
    }
}

/// Hashes a password on a blocking thread (never on the async runtime's threads).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    // The slot goes with the hash: a client that hangs up does not free it while the
    // hash still runs on the blocking pool.
    let slot = hash_slot().await?;
    web::block(move || {
        let _slot = slot;
        argon2()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| ApiError::unavailable("password hashing failed"))?
    .map_err(|_| ApiError::unavailable("password hashing failed"))
}

/// A hash of a random password, verified against when the user does not exist so
/// that a login for an unknown name takes as long as one with a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1sYV0K6FG4nYDZ2tA8q2yYlVoYb0RkJiHu9n1m7Kq7A";

/// Checks a password against a stored PHC string on a blocking thread.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    let slot = hash_slot().await?;
    web::block(move || {
        let _slot = slot;
        let stored = hash.as_deref().unwrap_or(DUMMY_HASH);
        let ok = PasswordHash::new(stored)
            .map(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && hash.is_some()
    })
    .await
    .map_err(|_| ApiError::unavailable("password check failed"))
}

/// Who is calling.
#[derive(Debug, Clone, Copy)]
pub enum Principal {
    User(Verified),
    /// A bearer of one of `api.service_keys`: the company's backend.
    Service,
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares without an early exit, so timing does not reveal a key's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `token` is one of `api.service_keys`.
pub fn is_service_key(state: &AppState, token: &str) -> bool {
    state
        .settings
        .api
        .service_keys
        .iter()
        .any(|k| constant_time_eq(k.as_bytes(), token.as_bytes()))
}

/// Resolves the caller from the `Authorization` header.
pub fn principal(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let token = bearer(req).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    if is_service_key(state, token) {
        return Ok(Principal::Service);
    }
    state
        .tokens
        .verify(token)
        .map(Principal::User)
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

fn app_state(req: &HttpRequest) -> Result<&AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::unavailable("node is starting"))
}

/// Extractor: a user token is required, not revoked (see [`crate::state::TokenFloors`]).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .ok_or_else(|| ApiError::unavailable("node is starting"))
            .and_then(|s| match principal(&s, req)? {
                Principal::User(v) => Ok((s, v)),
                Principal::Service => Err(ApiError::forbidden("this call needs a user token")),
            });
        if let Ok((_, v)) = &checked {
            crate::access::note_caller(req, crate::access::Caller::User(v.user.0));
        }
        Box::pin(async move {
            let (state, verified) = checked?;
            state.floors.admit(&state.chat.store, verified).await?;
            Ok(AuthUser(verified.user))
        })
    }
}

/// Extractor: a service key is required.
#[derive(Debug, Clone, Copy)]
pub struct AuthService;

impl FromRequest for AuthService {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(app_state(req).and_then(|s| match principal(s, req)? {
            Principal::Service => {
                crate::access::note_caller(req, crate::access::Caller::Service);
                Ok(AuthService)
            }
            Principal::User(v) => {
                crate::access::note_caller(req, crate::access::Caller::User(v.user.0));
                Err(ApiError::forbidden("this call needs a service key"))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
