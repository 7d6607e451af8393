//! The chat node: configuration, wiring of store, bus and actors, the HTTP server,
//! and the graceful drain.

pub mod access;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod notifier;
pub mod openapi;
pub mod ops;
pub mod state;
pub mod web;
pub mod ws;

use crate::config::{BusKind, LogFormat, Settings};
use crate::state::AppState;
use actix::{Actor, Arbiter};
use actix_web::{App, HttpServer};
use chat_actors::conversation::Rules;
use chat_actors::directory::Directory;
use chat_actors::maintenance::{self, partitions_ahead, UpkeepConfig};
use chat_actors::messages::{Drain, FromBus, OpenSessions, UseArbiter};
use chat_actors::metrics as m;
use chat_actors::presence::{LeavePresence, PresenceConfig, PresenceHub};
use chat_actors::registry::Registry;
use chat_actors::writer::{Writer, WriterConfig};
use chat_actors::Chat;
use chat_bus::presence::Presence;
use chat_bus::{Bus, LocalBus, RedisBus};
use chat_store::{EntryWindows, Retention, Store, StoreConfig};
use chat_wire::{AttachLimits, CloseCode, DraftLimits};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("postgres: {0}")]
    Store(#[from] chat_store::StoreError),
    #[error("bus: {0}")]
    Bus(#[from] chat_bus::BusError),
    #[error("presence: {0}")]
    Presence(#[from] chat_bus::presence::PresenceError),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("notifications: {0}")]
    Notify(String),
    #[error("database: {0}")]
    Database(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Sets up `tracing`: human-readable or JSON lines; `RUST_LOG` wins over `log.level`.
pub fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into files or log shippers.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match settings.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The Prometheus recorder is global to the process: installed by the first node
/// built in it, shared by any later one (tests run several nodes in one process).
static METRICS: std::sync::Mutex<Option<PrometheusHandle>> = std::sync::Mutex::new(None);

fn install_metrics() -> Result<PrometheusHandle, NodeError> {
    let mut installed = METRICS
        .lock()
        .map_err(|_| NodeError::Metrics("metrics lock poisoned".into()))?;
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let batch = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
    ];
    let latency = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    // A notification waits for its endpoint: seconds to hours while it is down.
    let slow = [
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(m::NOTIFY_DELIVERY_SECONDS.into()), &slow)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(m::GROUP_COMMIT_BATCH_SIZE.into()), &batch)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::COMMIT_ROWS.into()), &batch))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(m::COMMIT_CONVERSATIONS.into()), &batch)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency))
        .and_then(|b| b.install_recorder())
        .map_err(|e| NodeError::Metrics(e.to_string()))?;
    m::register();
    *installed = Some(handle.clone());
    Ok(handle)
}

async fn connect_store(settings: &Settings) -> Result<Store, NodeError> {
    let cfg = StoreConfig {
        url: settings.database.url.clone(),
        pool_size: settings.database.pool_size,
        acquire_timeout: settings.database.acquire_timeout,
        statement_timeout: settings.database.statement_timeout,
        retention: Retention {
            normal: settings.retention.normal_ttl,
            important: settings.retention.important_ttl,
        },
        write_pool_size: settings.database.write_pool_size,
        dedupe_window: settings.retention.dedupe_window,
        entry_windows: EntryWindows {
            edit: settings.chat.edit_window,
            recall: settings.chat.recall_window,
        },
    };
    // Postgres may still be starting (containers, a fresh machine): retry a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::connect(&cfg).await {
            Ok(store) => return Ok(store),
            Err(chat_store::StoreError::NoDatabase(why)) => {
                let name = settings
                    .database
                    .url
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.split('?').next())
                    .unwrap_or("chat")
                    .to_string();
                return Err(NodeError::Database(format!(
                    "{why}: the server at database.url answers but has no database {name:?}; \
                     create it (e.g. `createdb {name}` or `psql -c 'CREATE DATABASE {name}'` \
                     as a user allowed to) or point database.url at one"
                )));
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "postgres not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs the node on `server.bind` until SIGTERM or SIGINT, then drains.
pub async fn run(settings: Settings) -> Result<(), NodeError> {
    let node = ChatNode::build(settings).await?;
    let listener = std::net::TcpListener::bind(node.settings.server.bind)?;
    node.serve(listener, wait_for_signal()).await
}

/// A node with its store migrated, its bus connected and its actors started, ready to
/// serve. [`run`] binds `server.bind` and serves until a signal; a program that runs a
/// node inside itself (a test) serves on a listener of its own and says when to stop.
pub struct ChatNode {
    settings: Arc<Settings>,
    state: AppState,
    arbiters: Vec<Arbiter>,
    /// Tasks that live as long as the node: bus notices, upkeep, metrics upkeep.
    tasks: Vec<actix_web::rt::task::JoinHandle<()>>,
}

impl ChatNode {
    /// Connects to Postgres (migrating it) and the bus, and starts the actors.
    pub async fn build(settings: Settings) -> Result<ChatNode, NodeError> {
        let settings = Arc::new(settings);
        let metrics = install_metrics()?;
        let mut store = connect_store(&settings).await?;
        // Before the store is cloned: every clone's commits queue notifications.
        let notify_wake = settings
            .notify
            .enabled()
            .then(|| store.queue_notifications());
        if let Some(tables) = store.foreign_tables().await? {
            if settings.database.allow_foreign_schema {
                tracing::warn!(
                    tables = %tables.join(", "),
                    "the database holds tables of something else; migrating it anyway \
                     (database.allow_foreign_schema)"
                );
            } else {
                return Err(NodeError::Database(format!(
                    "the database holds tables the node did not make ({}) and no record of \
                     its migrations: point database.url at an empty database of its own, or \
                     set database.allow_foreign_schema = true to migrate this one anyway",
                    tables.join(", ")
                )));
            }
        }
        let applied = store.migrate().await?;
        store
            .ensure_partitions(
                chrono::Utc::now(),
                settings.retention.partition_interval,
                partitions_ahead(
                    settings.retention.partition_interval,
                    settings.retention.upkeep_interval,
                ),
            )
            .await?;
        tracing::info!(applied, node = %settings.node.id, "database ready");

        let (notice_tx, mut notice_rx) = tokio::sync::mpsc::unbounded_channel();
        let bus: Arc<dyn Bus> = match settings.bus.kind {
            BusKind::Local => {
                metrics::gauge!(chat_bus::metrics::UP).set(1.0);
                Arc::new(LocalBus)
            }
            BusKind::Redis => Arc::new(
                RedisBus::start(
                    &settings.redis.url,
                    &settings.bus.channel_prefix,
                    settings.node.id.clone(),
                    notice_tx,
                )
                .await?,
            ),
        };

        // The writer has a thread of its own: group commits never wait behind fan-out.
        let writer_thread = Arbiter::new();
        let writer = Writer::start(
            store.clone(),
            WriterConfig {
                in_flight: settings.database.write_pool_size,
                ..WriterConfig::default()
            },
            Some(&writer_thread.handle()),
        );
        let directory = Directory::new();
        let presence = match settings.bus.kind {
            BusKind::Local => Presence::local(settings.node.id.clone()),
            BusKind::Redis => {
                Presence::redis(
                    &settings.redis.url,
                    &settings.bus.channel_prefix,
                    settings.node.id.clone(),
                    settings.presence.lease,
                )
                .await?
            }
        };
        let presence_hub = PresenceHub::new(
            presence.clone(),
            store.clone(),
            bus.clone(),
            directory.clone(),
            PresenceConfig {
                offline_grace: settings.presence.offline_grace,
                group_max_members: settings.presence.group_max_members,
            },
        )
        .start();
        let registry = Registry::new(
            store.clone(),
            writer,
            directory.clone(),
            bus.clone(),
            settings.limits.max_connections_per_user,
            settings.node.conversation_idle,
        )
        .with_rules(Rules {
            mention_all_max_members: settings.chat.mention_all_max_members,
        })
        .with_presence(presence_hub.clone())
        .start();
        let arbiters = vec![writer_thread];
        let mut tasks = Vec::new();
        {
            let registry = registry.clone();
            tasks.push(actix_web::rt::spawn(async move {
                while let Some(n) = notice_rx.recv().await {
                    registry.do_send(FromBus(n));
                }
            }));
        }
        tasks.push(actix_web::rt::spawn(maintenance::run(
            store.clone(),
            UpkeepConfig {
                node: settings.node.id.clone(),
                database_url: settings.database.url.clone(),
                interval: settings.retention.upkeep_interval,
                partition_width: settings.retention.partition_interval,
                retention: store.retention(),
            },
        )));
        if let Some(wake) = notify_wake {
            let notifier = notifier::Notifier::new(
                store.clone(),
                Arc::new(presence.clone()),
                wake,
                settings.notify.clone(),
                settings.node.id.clone(),
            )
            .map_err(|e| NodeError::Notify(format!("notify.secret: {e}")))?;
            tasks.push(actix_web::rt::spawn(notifier.run()));
        }
        {
            let metrics = metrics.clone();
            tasks.push(actix_web::rt::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    metrics.run_upkeep();
                }
            }));
        }

        let state = AppState {
            settings: settings.clone(),
            tokens: Arc::new(auth::Tokens::new(&settings)),
            chat: Chat {
                store,
                registry,
                bus,
                directory,
                presence,
                presence_hub,
                limits: DraftLimits {
                    max_body_bytes: settings.limits.max_message_bytes,
                    attach: AttachLimits {
                        max_file_bytes: settings.limits.max_attachment_size,
                        max_json_bytes: settings.limits.max_attachment_json_bytes,
                    },
                    max_mentions: settings.limits.max_mentions,
                },
                max_group_members: settings.limits.max_group_members,
                max_sync_bytes: settings.limits.max_sync_bytes,
                sync_slots: Arc::new(tokio::sync::Semaphore::new(
                    (settings.database.pool_size / 2).max(1),
                )),
            },
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            floors: Arc::new(state::TokenFloors::default()),
            writes: Arc::new(state::WriteLimiter::new(
                settings.limits.http_writes_per_sec,
            )),
        };
        Ok(ChatNode {
            settings,
            state,
            arbiters,
            tasks,
        })
    }

    /// Serves HTTP and WebSockets on `listener` until `shutdown` completes, then
    /// drains: readiness turns 503, sockets close with 1012 once their in-flight sends
    /// are answered, and the server stops within `server.drain_timeout`.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + 'static,
    ) -> Result<(), NodeError> {
        // The actix module, not this crate's page module `web`.
        use actix_web::web;
        let ChatNode {
            settings,
            state,
            arbiters,
            tasks,
        } = self;
        let session_cfg = ws::session_config(&settings);
        let max_body = settings.limits.max_body_bytes;
        let registry = state.chat.registry.clone();
        let presence_hub = state.chat.presence_hub.clone();
        let bus = state.chat.bus.clone();
        let worker_registry = registry.clone();
        let draining = state.draining.clone();
        let data = web::Data::new(state);
        let workers = workers(&settings);
        let server = HttpServer::new(move || {
            // Conversation actors run on the HTTP workers' threads, beside the sessions
            // they push to: no threads of their own to wake for every push.
            worker_registry.do_send(UseArbiter(Arbiter::current()));
            App::new()
                .wrap(actix_web::middleware::from_fn(access::observe))
                .app_data(data.clone())
                .app_data(web::Data::from(session_cfg.clone()))
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(error::extract::json),
                )
                .app_data(web::PayloadConfig::default().limit(max_body))
                .app_data(web::QueryConfig::default().error_handler(error::extract::query))
                .app_data(web::PathConfig::default().error_handler(error::extract::path))
                .route("/healthz", web::get().to(ops::healthz))
                .route("/readyz", web::get().to(ops::readyz))
                .route("/metrics", web::get().to(ops::metrics))
                .route("/ws", web::get().to(ws::upgrade))
                .configure(api::configure)
                .configure(crate::web::configure)
                .default_service(web::to(error::extract::not_found))
        })
        // Small frames go out at once: without TCP_NODELAY a push written right after
        // another waits for the client's delayed ACK (up to 40 ms on Linux).
        .on_connect(|conn, _ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(settings.server.drain_timeout.as_secs().max(1));
        let addr = listener.local_addr()?;
        let server = server.listen(listener)?.run();
        let handle = server.handle();
        tracing::info!(bind = %addr, workers, "chat node listening");

        let drain_timeout = settings.server.drain_timeout;
        let drain = actix_web::rt::spawn(async move {
            shutdown.await;
            tracing::info!("drain: readiness off, closing sockets with 1012");
            draining.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + drain_timeout;
            let _ = registry
                .send(Drain {
                    code: CloseCode::Draining,
                })
                .await;
            while Instant::now() < deadline {
                match registry.send(OpenSessions).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            // This node's sockets leave presence now, not when its lease ends.
            let _ = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                presence_hub.send(LeavePresence),
            )
            .await;
            // Keep answering 503 on /readyz a moment (a quarter of the drain timeout,
            // at most DRAIN_LINGER), so the load balancer's health check sees the
            // drain before the port goes away. HAProxy's check in config/haproxy.cfg
            // needs two failures a second apart.
            let linger = (drain_timeout / 4).min(DRAIN_LINGER);
            tokio::time::sleep(linger.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            tracing::info!("drain: stopping the HTTP server");
            handle.stop(true).await;
        });
        let result = server.await;
        drain.abort();
        // Events queued by the last sends go out before the process does (bounded: a
        // bus that cannot take them has told them as dropped, or never will).
        let (tx, rx) = tokio::sync::oneshot::channel();
        bus.flush(tx);
        if tokio::time::timeout(BUS_FLUSH_LIMIT, rx).await.is_err() {
            tracing::warn!("drain: bus events still queued at exit");
        }
        for task in tasks {
            task.abort();
        }
        for arbiter in arbiters {
            arbiter.stop();
        }
        tracing::info!("chat node stopped");
        Ok(result?)
    }
}

/// Longest a stopping node waits for its queued bus events to go out.
const BUS_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Longest the drain keeps answering 503 on `/readyz` after the last socket closed.
pub const DRAIN_LINGER: Duration = Duration::from_millis(2500);

/// HTTP workers (whose threads also run the Conversation actors): `server.workers`,
/// or one per core when 0.
fn workers(settings: &Settings) -> usize {
    if settings.server.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        settings.server.workers
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
