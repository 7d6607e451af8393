//! The node's Prometheus metrics: every name in one place, and [`register`], which
//! makes each counter and gauge (and each label value known in advance) show at 0
//! from the first scrape, so `rate()` and alerts work before any traffic.

use chat_wire::ErrorCode;

/// Open WebSocket connections on this node.
pub const OPEN_CONNECTIONS: &str = "chat_open_connections";
/// Users with at least one connection on this node.
pub const ONLINE_USERS: &str = "chat_online_users";
/// Online users by their number of connections here (`sessions` = 1, 2, 3, 4+).
pub const USERS_BY_SESSIONS: &str = "chat_users_by_sessions";
/// The label values of [`USERS_BY_SESSIONS`].
pub const SESSION_BUCKETS: [&str; 4] = ["1", "2", "3", "4+"];
/// Conversation actors alive on this node.
pub const CONVERSATION_ACTORS: &str = "chat_conversation_actors";
/// Sends acknowledged (stored now or found stored by their cid).
pub const SENDS_ACKED_TOTAL: &str = "chat_sends_acked_total";
/// Frames handed to local sessions.
pub const DELIVERIES_TOTAL: &str = "chat_deliveries_total";
/// Connections closed because their outbound queue was full (4001).
pub const SLOW_CONSUMER_CLOSES_TOTAL: &str = "chat_slow_consumer_closes_total";
/// Joins a node found by reading Postgres, not by hearing them on the bus.
pub const JOINS_RECONCILED_TOTAL: &str = "chat_joins_reconciled_total";
/// Events of other nodes a Conversation actor's full mailbox did not take (its
/// members here were told to `resync`).
pub const REMOTE_EVENTS_REFUSED_TOTAL: &str = "chat_remote_events_refused_total";
/// Registers and logins answered `rate_limited`: every password-hash slot was busy.
pub const PASSWORD_HASHES_REFUSED_TOTAL: &str = "chat_password_hashes_refused_total";
/// Errors answered to clients, by `code`.
pub const ERRORS_TOTAL: &str = "chat_errors_total";
/// Sends per group commit.
pub const GROUP_COMMIT_BATCH_SIZE: &str = "chat_group_commit_batch_size";
/// Time of one group commit, pool wait included.
pub const STORE_APPEND_SECONDS: &str = "chat_store_append_seconds";
/// Conversations in one transaction of the node's writer.
pub const COMMIT_CONVERSATIONS: &str = "chat_commit_conversations";
/// Sends in one transaction of the node's writer.
pub const COMMIT_ROWS: &str = "chat_commit_rows";
/// Conversations a transaction found held by another writer and left for the next.
pub const COMMIT_BUSY_TOTAL: &str = "chat_commit_busy_total";
/// 1 while this node runs retention upkeep.
pub const UPKEEP_LEADER: &str = "chat_upkeep_leader";
/// Expired partitions dropped, by `tier`.
pub const PARTITIONS_DROPPED_TOTAL: &str = "chat_partitions_dropped_total";
/// Time of one partition drop.
pub const PARTITION_DROP_SECONDS: &str = "chat_partition_drop_seconds";

/// Offline notifications put in the outbox (one per message and member to tell).
pub const NOTIFY_QUEUED_TOTAL: &str = "chat_notify_queued_total";
/// Offline notifications the endpoint took (a 2xx answer to their POST).
pub const NOTIFY_DELIVERED_TOTAL: &str = "chat_notify_delivered_total";
/// POSTs to `notify.url` that failed (no answer in time, or not 2xx); their
/// notifications are retried.
pub const NOTIFY_FAILED_POSTS_TOTAL: &str = "chat_notify_failed_posts_total";
/// Offline notifications (and queued messages) dropped: older than `notify.max_age`.
pub const NOTIFY_DROPPED_TOTAL: &str = "chat_notify_dropped_total";
/// Rows waiting in the notification queue (`stage` = `messages` or `notifications`),
/// for the whole cluster.
pub const NOTIFY_PENDING: &str = "chat_notify_pending";
/// The two label values of [`NOTIFY_PENDING`].
pub const NOTIFY_STAGES: [&str; 2] = ["messages", "notifications"];
/// Time from a message stored to its notification taken by the endpoint.
pub const NOTIFY_DELIVERY_SECONDS: &str = "chat_notify_delivery_seconds";

/// HTTP requests answered, by `method`, `route` (the pattern, e.g.
/// `/api/v1/conversations/{id}/messages`; `unmatched` for no route) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "chat_http_requests_total";
/// Time to answer one HTTP request (a WebSocket: its handshake), by `method` and
/// `route`.
pub const HTTP_REQUEST_SECONDS: &str = "chat_http_request_duration_seconds";

/// Describes every metric and sets every counter and gauge to 0. Call once, after the
/// recorder is installed.
pub fn register() {
    use chat_bus::metrics as bus;
    for (name, help) in [
        (SENDS_ACKED_TOTAL, "sends acknowledged"),
        (
            COMMIT_BUSY_TOTAL,
            "conversations left for a later transaction: another writer held them",
        ),
        (DELIVERIES_TOTAL, "frames handed to local sessions"),
        (
            PRESENCE_CHANGES_TOTAL,
            "socket openings and closings applied to presence",
        ),
        (
            PRESENCE_ANNOUNCEMENTS_TOTAL,
            "users announced online or offline, by state",
        ),
        (
            PRESENCE_FRAMES_TOTAL,
            "presence frames written to this node's sessions for its announcements",
        ),
        (
            PRESENCE_PUBLISHES_TOTAL,
            "presence events published, one per watcher online per tick",
        ),
        (PRESENCE_ERRORS_TOTAL, "presence calls that failed"),
        (
            SLOW_CONSUMER_CLOSES_TOTAL,
            "connections closed as slow consumers",
        ),
        (
            JOINS_RECONCILED_TOTAL,
            "joins found in Postgres that the bus did not announce",
        ),
        (
            REMOTE_EVENTS_REFUSED_TOTAL,
            "events of other nodes refused by a full conversation mailbox (members resync)",
        ),
        (
            PASSWORD_HASHES_REFUSED_TOTAL,
            "registers and logins refused: every password-hash slot was busy",
        ),
        (bus::PUBLISHES_TOTAL, "events published on the bus"),
        (
            bus::PUBLISH_DROPPED_TOTAL,
            "events the bus could not publish",
        ),
        (bus::RECEIVES_TOTAL, "events received from other nodes"),
        (
            bus::DROP_NOTICES_SENT_TOTAL,
            "notices told to the other nodes that events were dropped",
        ),
        (
            bus::DROP_NOTICES_RECEIVED_TOTAL,
            "notices of other nodes that their events were dropped",
        ),
        (bus::RECONNECTS_TOTAL, "bus reconnections"),
        (
            NOTIFY_QUEUED_TOTAL,
            "offline notifications put in the outbox",
        ),
        (
            NOTIFY_DELIVERED_TOTAL,
            "offline notifications the endpoint took",
        ),
        (
            NOTIFY_FAILED_POSTS_TOTAL,
            "POSTs of notifications that failed (retried)",
        ),
        (
            NOTIFY_DROPPED_TOTAL,
            "notifications and queued messages dropped past notify.max_age",
        ),
    ] {
        metrics::describe_counter!(name, help);
        metrics::counter!(name).absolute(0);
    }
    metrics::describe_counter!(ERRORS_TOTAL, "errors answered to clients, by code");
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by method, route pattern and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_SECONDS,
        "time to answer an HTTP request (a WebSocket: its handshake), by method and route"
    );
    for code in ErrorCode::ALL {
        metrics::counter!(ERRORS_TOTAL, "code" => code.as_str()).absolute(0);
    }
    metrics::describe_counter!(PARTITIONS_DROPPED_TOTAL, "expired partitions dropped");
    for tier in chat_store::partitions::TIERS {
        metrics::counter!(PARTITIONS_DROPPED_TOTAL, "tier" => tier).absolute(0);
    }
    for (name, help) in [
        (OPEN_CONNECTIONS, "open WebSocket connections"),
        (ONLINE_USERS, "users with a connection on this node"),
        (CONVERSATION_ACTORS, "conversation actors alive"),
        (UPKEEP_LEADER, "1 while this node runs retention upkeep"),
        (
            chat_bus::metrics::UP,
            "1 while the bus reaches the other nodes (1 on the local bus)",
        ),
    ] {
        metrics::describe_gauge!(name, help);
        metrics::gauge!(name).set(0.0);
    }
    metrics::describe_gauge!(NOTIFY_PENDING, "rows waiting in the notification queue");
    for stage in NOTIFY_STAGES {
        metrics::gauge!(NOTIFY_PENDING, "stage" => stage).set(0.0);
    }
    metrics::describe_gauge!(USERS_BY_SESSIONS, "online users by connections here");
    for label in SESSION_BUCKETS {
        metrics::gauge!(USERS_BY_SESSIONS, "sessions" => label).set(0.0);
    }
    for (name, help) in [
        (GROUP_COMMIT_BATCH_SIZE, "sends per group commit"),
        (STORE_APPEND_SECONDS, "time of one group commit"),
        (COMMIT_CONVERSATIONS, "conversations per writer transaction"),
        (COMMIT_ROWS, "sends per writer transaction"),
        (PARTITION_DROP_SECONDS, "time of one partition drop"),
        (
            NOTIFY_DELIVERY_SECONDS,
            "time from a message stored to its notification taken",
        ),
    ] {
        metrics::describe_histogram!(name, help);
    }
}
/// Socket openings and closings applied to the cluster's presence.
pub const PRESENCE_CHANGES_TOTAL: &str = "chat_presence_changes_total";
/// Users announced online / offline by this node (`state`).
pub const PRESENCE_ANNOUNCEMENTS_TOTAL: &str = "chat_presence_announcements_total";
/// `presence` frames this node wrote to its own sessions for its announcements.
pub const PRESENCE_FRAMES_TOTAL: &str = "chat_presence_frames_total";
/// Presence bus events this node published (one per watcher online per tick).
pub const PRESENCE_PUBLISHES_TOTAL: &str = "chat_presence_publishes_total";
/// Presence calls to Redis or Postgres that failed.
pub const PRESENCE_ERRORS_TOTAL: &str = "chat_presence_errors_total";
