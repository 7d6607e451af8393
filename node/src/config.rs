//! Settings: built-in defaults (`config/default.toml`), then `--config FILE`, then
//! `CHAT__SECTION__KEY` environment variables, later ones winning.

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const DEFAULTS: &str = include_str!("../../config/default.toml");

/// A setting that is missing or wrong; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: Server,
    pub node: Node,
    pub database: Database,
    pub bus: Bus,
    pub redis: Redis,
    pub auth: Auth,
    pub api: Api,
    pub limits: Limits,
    pub retention: Retention,
    pub chat: ChatRules,
    pub presence: PresenceSettings,
    pub service: ServiceRules,
    pub notify: NotifySettings,
    pub log: Log,
}

/// Offline notifications: POSTs to the company's endpoint for members without an
/// open socket.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Where notifications are POSTed (`http://`); empty = none are queued or sent.
    pub url: String,
    /// Key of the body's HMAC-SHA256 in `X-Chat-Signature`.
    pub secret: String,
    /// Members with a socket open when a message is stored are looked at again this
    /// long after it, and told if they still have not read it; empty = never told.
    #[serde(deserialize_with = "optional_duration")]
    pub delay: Option<Duration>,
    /// Most notifications in one POST.
    pub batch: usize,
    /// Longest a POST may take before it counts as failed.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Longest wait before a failed notification is tried again (the wait doubles
    /// from one second, with jitter, up to this).
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// A notification not taken this long after its message was stored is dropped.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    /// Most notifications waiting in the cluster; the oldest past it are dropped.
    pub max_pending: i64,
    /// How often a node looks for work it was not woken for: retries, second looks,
    /// notifications of nodes that stopped.
    #[serde(deserialize_with = "duration")]
    pub poll: Duration,
}

impl NotifySettings {
    /// Whether notifications are queued and sent.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("delay", &self.delay)
            .field("batch", &self.batch)
            .field("timeout", &self.timeout)
            .field("max_backoff", &self.max_backoff)
            .field("max_age", &self.max_age)
            .field("max_pending", &self.max_pending)
            .field("poll", &self.poll)
            .finish()
    }
}

/// Who is online, across the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSettings {
    /// How long a node's presence lease lives in Redis (renewed at a third of it): a
    /// node killed with -9 stops counting after it, and its users are announced
    /// offline at the next sweep of another node (within a third more).
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// How long after a user's last socket closed they are announced offline; a
    /// reconnect within it announces nothing.
    #[serde(deserialize_with = "duration")]
    pub offline_grace: Duration,
    /// Members of groups up to this size see each other's presence pushed; in larger
    /// groups clients ask (`POST /presence`).
    pub group_max_members: i64,
}

/// How the server API's calls behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRules {
    /// `DELETE /service/users/{id}`: `keep` leaves a deleted user's messages as they
    /// were (shown as from "Deleted user"); `erase` blanks their content too.
    pub delete_user: chat_wire::moderation::DeleteMode,
}

/// What members may do with messages and groups, and users with each other.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRules {
    /// How long after sending a message its sender may edit it; empty = no limit.
    #[serde(deserialize_with = "optional_duration")]
    pub edit_window: Option<Duration>,
    /// How long after sending a message its sender may recall it; empty = no limit.
    /// Group admins recall any message at any time.
    #[serde(deserialize_with = "optional_duration")]
    pub recall_window: Option<Duration>,
    /// In groups of more members than this, only admins and the owner mention @all.
    pub mention_all_max_members: usize,
    /// Only contacts (an accepted friend request) may open a direct conversation.
    pub direct_requires_friendship: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub bind: SocketAddr,
    pub workers: usize,
    pub heartbeat_s: u64,
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    #[serde(deserialize_with = "string_list")]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    /// After how long without activity a conversation's actor stops (it starts again
    /// on the next send or event).
    #[serde(deserialize_with = "duration")]
    pub conversation_idle: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub url: String,
    pub pool_size: usize,
    pub write_pool_size: usize,
    #[serde(deserialize_with = "duration")]
    pub acquire_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// Migrate a database that holds tables of something else (refused by default).
    pub allow_foreign_schema: bool,
}

/// Which bus carries events between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Local,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bus {
    pub kind: BusKind,
    /// The first word of every Redis channel and key of this cluster: clusters that
    /// share one Redis with different prefixes never hear each other.
    pub channel_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub jwt_secret: String,
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    pub issuer: String,
    pub audience: String,
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt_secret", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    #[serde(deserialize_with = "string_list")]
    pub service_keys: Vec<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Api {{ service_keys: <{} redacted> }}",
            self.service_keys.len()
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub max_sync_bytes: usize,
    pub sends_per_sec: u32,
    pub http_writes_per_sec: u32,
    pub max_connections_per_user: usize,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub max_group_members: usize,
    pub max_attachment_size: i64,
    pub max_attachment_json_bytes: usize,
    pub max_mentions: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(deserialize_with = "duration")]
    pub normal_ttl: Duration,
    #[serde(deserialize_with = "optional_duration")]
    pub important_ttl: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub upkeep_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub partition_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub dedupe_window: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// Parses `10s`, `30d`, `250ms`, `1h`: a number and a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {s:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrText {
    List(Vec<String>),
    Text(String),
}

/// A list from a config file, or a comma-separated string from the environment.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match ListOrText::deserialize(d)? {
        ListOrText::List(v) => v,
        ListOrText::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

impl Settings {
    /// Loads and checks the settings. Environment values are read as text (never
    /// re-typed), so a secret such as `00123` stays as written.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("CHAT")
                .prefix_separator("__")
                .separator("__"),
        );
        Self::finish(builder)
    }

    /// The built-in defaults with `overrides` (`("limits.sends_per_sec", "5")`, values
    /// as text, as from the environment) and nothing else: no file, no environment.
    /// For a node run inside another program, such as a test.
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        for (key, value) in overrides {
            builder = builder
                .set_override(*key, *value)
                .map_err(|e| ConfigError(format!("{key}: {e}")))?;
        }
        Self::finish(builder)
    }

    fn finish(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
    ) -> Result<Settings, ConfigError> {
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.auth.jwt_secret.len() < 16 {
            return fail("auth.jwt_secret", "must be set, at least 16 bytes");
        }
        if self.node.id.is_empty() || self.node.id.len() > 64 {
            return fail("node.id", "must be 1..64 characters");
        }
        if self.node.conversation_idle.is_zero() {
            return fail("node.conversation_idle", "must be more than 0");
        }
        if self.server.heartbeat_s == 0 {
            return fail("server.heartbeat_s", "must be at least 1");
        }
        if self.database.pool_size == 0 {
            return fail("database.pool_size", "must be at least 1");
        }
        if self.database.write_pool_size == 0 {
            return fail("database.write_pool_size", "must be at least 1");
        }
        if self.limits.sends_per_sec == 0 {
            return fail("limits.sends_per_sec", "must be at least 1");
        }
        if self.limits.http_writes_per_sec == 0 {
            return fail("limits.http_writes_per_sec", "must be at least 1");
        }
        if self.limits.outbound_queue == 0 {
            return fail("limits.outbound_queue", "must be at least 1");
        }
        if self.limits.outbound_queue_bytes < 65_536 {
            return fail("limits.outbound_queue_bytes", "must be at least 65536");
        }
        if self.limits.max_sync_bytes == 0
            || self.limits.max_sync_bytes > self.limits.outbound_queue_bytes / 4
        {
            return fail(
                "limits.max_sync_bytes",
                "must be more than 0 and at most a quarter of limits.outbound_queue_bytes",
            );
        }
        if self.limits.max_frame_bytes < 256 {
            return fail("limits.max_frame_bytes", "must be at least 256");
        }
        if self.retention.partition_interval < Duration::from_secs(1) {
            return fail("retention.partition_interval", "must be at least 1s");
        }
        if self.retention.upkeep_interval < Duration::from_millis(100) {
            return fail("retention.upkeep_interval", "must be at least 100ms");
        }
        // A resend found by its cid must be a message still retained: an expired one
        // would be acked with a seq nobody can read, and stored again once its
        // partition is dropped.
        let shortest_ttl = match self.retention.important_ttl {
            Some(i) => i.min(self.retention.normal_ttl),
            None => self.retention.normal_ttl,
        };
        if self.retention.dedupe_window > shortest_ttl {
            return fail(
                "retention.dedupe_window",
                "must not exceed retention.normal_ttl or retention.important_ttl",
            );
        }
        let prefix = &self.bus.channel_prefix;
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return fail(
                "bus.channel_prefix",
                "must be 1..32 characters of letters, digits, '_', '-' or '.'",
            );
        }
        if self.presence.lease < Duration::from_secs(1) {
            return fail("presence.lease", "must be at least 1s");
        }
        if self.presence.group_max_members < 0 {
            return fail("presence.group_max_members", "must not be negative");
        }
        if self.notify.enabled() {
            let url = self.notify.url.trim();
            if !url.starts_with("http://") || url.parse::<awc::http::Uri>().is_err() {
                return fail("notify.url", "must be an http:// URL (or empty)");
            }
            if self.notify.secret.len() < 16 {
                return fail(
                    "notify.secret",
                    "must be at least 16 bytes when notify.url is set",
                );
            }
        }
        if self.notify.batch == 0 || self.notify.batch > 1000 {
            return fail("notify.batch", "must be 1..1000");
        }
        if self.notify.timeout < Duration::from_millis(100) {
            return fail("notify.timeout", "must be at least 100ms");
        }
        if self.notify.max_backoff < Duration::from_secs(1) {
            return fail("notify.max_backoff", "must be at least 1s");
        }
        if self.notify.max_pending < 1 {
            return fail("notify.max_pending", "must be at least 1");
        }
        if self.notify.poll < Duration::from_millis(10) {
            return fail("notify.poll", "must be at least 10ms");
        }
        if self.api.service_keys.iter().any(|k| k.len() < 8) {
            return fail("api.service_keys", "each key must be at least 8 bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn overrides_are_typed_like_the_environment() {
        let s = Settings::with_overrides(&[
            ("auth.jwt_secret", "0123456789abcdef0123"),
            ("limits.sends_per_sec", "7"),
            ("api.service_keys", "key-one-1,key-two-2"),
        ])
        .expect("valid overrides");
        assert_eq!(s.limits.sends_per_sec, 7);
        assert_eq!(s.auth.jwt_secret, "0123456789abcdef0123");
        assert_eq!(s.api.service_keys, vec!["key-one-1", "key-two-2"]);
        let err =
            Settings::with_overrides(&[("auth.jwt_secret", "short")]).expect_err("short secret");
        assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
    }

    #[test]
    fn the_dedupe_window_stays_inside_retention() {
        let secret = ("auth.jwt_secret", "0123456789abcdef0123");
        for (key, ttl) in [
            ("retention.normal_ttl", "12h"),
            ("retention.important_ttl", "2h"),
        ] {
            let err = Settings::with_overrides(&[secret, (key, ttl)])
                .expect_err("a window longer than a TTL");
            assert!(err.to_string().contains("retention.dedupe_window"), "{err}");
        }
        let ok = Settings::with_overrides(&[
            secret,
            ("retention.normal_ttl", "12h"),
            ("retention.dedupe_window", "12h"),
        ])
        .expect("a window as long as the TTL");
        assert_eq!(ok.retention.dedupe_window, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn defaults_parse_but_need_a_secret() {
        let err = Settings::load(None).expect_err("no secret by default");
        assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
    }
}
