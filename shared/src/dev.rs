//! `sundial dev`: the whole system in one local process.
//!
//! One process runs what AWS runs as three functions and a queue:
//!
//! * the **admin API** on `127.0.0.1` (see [`admin_router`], the point
//!   where the real admin router plugs in);
//! * the **scanner** every second, with the same lookahead and leases as
//!   the Lambda, so sub-minute schedules fire on their second;
//! * an in-process [`MemoryQueue`] (or SQS when `SUNDIAL_QUEUE_URL` is
//!   set), and a **processor** worker with the same firing code as the
//!   Lambda, fed as a continuous stream ([`consume_memory`]): no batch
//!   barriers;
//! * a status line every few seconds, and the run-history purge.
//!
//! The in-process queue is not durable, so a graceful shutdown hands every
//! occurrence it did not settle back to the database: it stops claiming and
//! receiving, gives in-flight requests a grace period, aborts the rest and
//! releases the leases of everything in flight or still queued
//! ([`store::release`]). A restart fires them: nothing lost, nothing left
//! leased. (A hard kill loses nothing either: leases lapse after
//! `SUNDIAL_LEASE_SECS` and the scanner dispatches again.)
//!
//! `--demo` adds a built-in echo endpoint ([`crate::target_server`]) and a
//! task `sundial-demo` firing it every 10 seconds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ConfigError, Settings};
use crate::consume::{consume_sqs, ConsumeOptions};
use crate::fire::{GuardError, TargetGuard};
use crate::message::DispatchMessage;
use crate::process::{Disposition, ProcessReport, Processor, SetupError};
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::{client_from_env, SqsQueue};
use crate::queue::{DispatchQueue, Outgoing};
use crate::scan::{scan, ScanOptions};
use crate::store::{self, StoreError};
use crate::target_server::{self, TargetConfig, TargetServer};
use crate::task::{Task, TaskSpec};

/// Defaults of `sundial dev` (the flags document the same values).
pub mod defaults {
    use std::time::Duration;

    /// Admin API port (`--port`).
    pub const PORT: u16 = 8080;
    /// Grace period for in-flight requests at shutdown (`--grace`).
    pub const GRACE: Duration = Duration::from_secs(10);
    /// Interval of the status line (`--status-every`).
    pub const STATUS_EVERY: Duration = Duration::from_secs(5);
    /// Interval between scans: the Lambda scans every minute, dev every
    /// second (occurrences still fire on their second thanks to lookahead).
    pub const SCAN_EVERY: Duration = Duration::from_secs(1);
    /// Interval of the run-history purge (also run at start).
    pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
    /// Delay before a message the processor handed back is delivered again.
    pub const REDELIVER_DELAY: Duration = Duration::from_secs(1);
    /// Fewest Postgres connections in dev: one process hosts the scanner,
    /// the processor, the admin API and the status line.
    pub const MIN_POOL_SIZE: u32 = 10;
    /// The status line's figures cover at most this much recent history.
    pub const STATUS_WINDOW: Duration = Duration::from_secs(300);
    /// Name of the demo task.
    pub const DEMO_TASK: &str = "sundial-demo";
    /// Schedule of the demo task.
    pub const DEMO_SCHEDULE: &str = "rate(10 seconds)";
}

/// Runs deleted per purge statement.
const PURGE_BATCH: i64 = 5_000;
/// Most messages taken from the memory queue per receive.
const RECEIVE_MAX: usize = 100;
/// Longest wait of one memory-queue receive (shutdown ends it earlier).
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// Why `sundial dev` could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A setting is missing or invalid (names the variable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The processor could not be built from the settings.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The allow-list could not be turned into a target guard.
    #[error("invalid setting SUNDIAL_ALLOW_TARGETS: {0}")]
    Guard(#[from] GuardError),
    /// Postgres is unreachable.
    #[error("cannot connect to DATABASE_URL: {0}")]
    Connect(#[source] StoreError),
    /// Migrations could not be applied.
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] StoreError),
    /// The admin API cannot listen on the port.
    #[error("cannot listen on 127.0.0.1:{port} (pick another with --port): {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The demo echo endpoint could not start.
    #[error("cannot start the demo echo endpoint: {0}")]
    Demo(#[source] std::io::Error),
    /// A store call failed (registering the demo task).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Leases could not be handed back at shutdown; they lapse after
    /// `SUNDIAL_LEASE_SECS` and the occurrences are dispatched again then.
    #[error("cannot release {pending} leases at shutdown (they lapse after SUNDIAL_LEASE_SECS): {source}")]
    Release {
        /// Occurrences whose lease is still held.
        pending: usize,
        /// The database error.
        #[source]
        source: StoreError,
    },
    /// A background task of the dev process panicked.
    #[error("a background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How `sundial dev` runs.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Settings from the environment ([`Settings::from_env`]).
    pub settings: Settings,
    /// Admin API port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Time in-flight requests get to finish at shutdown.
    pub grace: Duration,
    /// Start the echo endpoint and the `sundial-demo` task.
    pub demo: bool,
    /// Interval of the status line.
    pub status_every: Duration,
    /// Interval between scans.
    pub scan_every: Duration,
    /// Interval of the run-history purge.
    pub purge_every: Duration,
    /// Builds the admin API; [`admin_router`] unless a caller plugs in
    /// another.
    pub admin_router: AdminRouterFn,
}

impl DevOptions {
    /// Options with every default, over the given settings.
    pub fn new(settings: Settings) -> Self {
        DevOptions {
            settings,
            port: defaults::PORT,
            grace: defaults::GRACE,
            demo: false,
            status_every: defaults::STATUS_EVERY,
            scan_every: defaults::SCAN_EVERY,
            purge_every: defaults::PURGE_EVERY,
            admin_router,
        }
    }
}

/// Builds the admin API from what the dev process shares with it.
pub type AdminRouterFn = fn(AdminContext) -> Router;

/// What the admin API gets from the dev process.
#[derive(Clone)]
pub struct AdminContext {
    /// The process's one pool.
    pub pool: PgPool,
    /// The dispatch queue (for `POST /v1/tasks/{id}/trigger`).
    pub queue: Arc<dyn DispatchQueue>,
    /// The same target guard the processor uses.
    pub guard: Arc<TargetGuard>,
    /// The bearer token every route but `/healthz` requires.
    pub token: String,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminContext").finish_non_exhaustive()
    }
}

/// MERGE POINT: the admin API served by `sundial dev`.
///
/// Until the admin branch lands this serves only `GET /healthz` and a
/// minimal `POST /v1/tasks` (bearer token, `TaskSpec` JSON body, target
/// guard, [`store::create_task`]). With the real router it becomes:
///
/// ```ignore
/// crate::admin::router(crate::admin::AdminState::new(
///     ctx.pool, ctx.queue, Arc::new(GuardCheck(ctx.guard)), &ctx.token,
/// ))
/// ```
/// where `GuardCheck` implements `admin::TargetCheck` with
/// `TargetGuard::check_url`.
pub fn admin_router(ctx: AdminContext) -> Router {
    let state = LocalAdmin {
        token_digest: Sha256::digest(ctx.token.as_bytes()).into(),
        ctx: Arc::new(ctx),
    };
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/v1/tasks", post(create_task))
        .with_state(state)
}

#[derive(Clone)]
struct LocalAdmin {
    ctx: Arc<AdminContext>,
    token_digest: [u8; 32],
}

impl LocalAdmin {
    /// Constant-time token check (digests have equal lengths).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest.ct_eq(&self.token_digest).into()
    }
}

fn api_error(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"field": field, "message": message.into()}});
    (status, Json(body)).into_response()
}

async fn create_task(State(admin): State<LocalAdmin>, headers: HeaderMap, body: Bytes) -> Response {
    if !admin.authorized(&headers) {
        return api_error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    let spec: TaskSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(err) => return api_error(StatusCode::BAD_REQUEST, None, err.to_string()),
    };
    if let Err(err) = admin.ctx.guard.check_url(spec.url.trim()).await {
        return api_error(StatusCode::BAD_REQUEST, Some("url"), err.to_string());
    }
    match store::create_task(&admin.ctx.pool, &spec, Utc::now()).await {
        Ok(task) => (StatusCode::CREATED, Json(task)).into_response(),
        Err(StoreError::Invalid(bad)) => {
            api_error(StatusCode::BAD_REQUEST, Some(bad.field), bad.reason)
        }
        Err(StoreError::DuplicateName(name)) => api_error(
            StatusCode::CONFLICT,
            Some("name"),
            format!("a task named `{name}` already exists"),
        ),
        Err(err) => {
            tracing::error!(error = %err, "cannot create task");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
        }
    }
}

/// What a dev run did, for the exit summary and tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DevReport {
    /// Scans run.
    pub scans: u64,
    /// Scans that failed (database errors; retried on the next tick).
    pub scan_errors: u64,
    /// Occurrences claimed by the scanner.
    pub claimed: u64,
    /// Occurrences the queue accepted.
    pub enqueued: u64,
    /// The processor's figures (complete unless requests were aborted).
    pub process: ProcessReport,
    /// What the shutdown handed back (in-process queue only).
    pub shutdown: MemoryConsumeReport,
    /// Runs deleted by the retention purge.
    pub purged_runs: u64,
}

/// The queue a dev process dispatches through.
enum QueueMode {
    Memory(Arc<MemoryQueue>),
    Sqs(SqsQueue),
}

/// A dev process that is set up (database migrated, port bound, demo
/// registered) and ready to [`DevRunner::run`].
pub struct DevRunner {
    opts: DevOptions,
    pool: PgPool,
    token: String,
    token_generated: bool,
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    queue: QueueMode,
    processor: Arc<Processor>,
    demo: Option<(TargetServer, Task)>,
    notes: Vec<String>,
}

/// Sets everything up and runs until `shutdown` turns true; prints the
/// banner (address, token, hints) on stdout first.
pub async fn run_dev(
    opts: DevOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<DevReport, DevError> {
    let runner = start(opts).await?;
    for line in runner.banner() {
        println!("{line}");
    }
    runner.run(shutdown).await
}

/// Sets a dev process up: settings, database and migrations, the admin
/// port, the queue, the processor, and the demo.
pub async fn start(opts: DevOptions) -> Result<DevRunner, DevError> {
    let mut settings = opts.settings.clone();
    let database_url = settings.require_database_url()?.to_string();
    let (token, token_generated) = match settings.admin_token {
        Some(_) => (settings.require_admin_token()?.to_string(), false),
        None => (generate_token(), true),
    };
    // Check the allow-list before touching anything.
    TargetGuard::new(&settings.allow_targets)?;
    let pool = store::connect(
        &database_url,
        settings.db_pool_size.max(defaults::MIN_POOL_SIZE),
    )
    .await
    .map_err(DevError::Connect)?;
    store::migrate(&pool).await.map_err(DevError::Migrate)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, opts.port))
        .await
        .map_err(|source| DevError::Bind {
            port: opts.port,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DevError::Bind {
        port: opts.port,
        source,
    })?;

    let mut notes = Vec::new();
    let demo_server = if opts.demo {
        let server = target_server::spawn(TargetConfig {
            secrets: settings.signing_secrets.clone(),
            record: false,
            ..Default::default()
        })
        .await
        .map_err(DevError::Demo)?;
        open_for_demo(&mut settings, server.addr.ip(), &mut notes)?;
        Some(server)
    } else {
        if settings.allow_targets.is_empty() {
            notes.push(
                "hint: targets on this machine are refused by the private-address guard; \
                 set SUNDIAL_ALLOW_TARGETS=127.0.0.1/32 to fire local endpoints"
                    .to_string(),
            );
        }
        None
    };

    let (queue, dispatch): (QueueMode, Arc<dyn DispatchQueue>) = match &settings.queue_url {
        Some(url) => {
            let q = SqsQueue::new(client_from_env().await, url, settings.send_concurrency);
            (QueueMode::Sqs(q.clone()), Arc::new(q))
        }
        None => {
            let q = Arc::new(MemoryQueue::default());
            (QueueMode::Memory(q.clone()), q)
        }
    };
    let processor = Arc::new(Processor::from_settings(
        pool.clone(),
        &settings,
        dispatch.clone(),
    )?);
    let guard = Arc::new(TargetGuard::new(&settings.allow_targets)?);
    let demo = match demo_server {
        Some(server) => {
            let task = ensure_demo_task(&pool, &server.url("/echo")).await?;
            Some((server, task))
        }
        None => None,
    };
    let router = (opts.admin_router)(AdminContext {
        pool: pool.clone(),
        queue: dispatch,
        guard,
        token: token.clone(),
    });
    Ok(DevRunner {
        opts: DevOptions { settings, ..opts },
        pool,
        token,
        token_generated,
        listener,
        addr,
        router,
        queue,
        processor,
        demo,
        notes,
    })
}

/// Opens the demo endpoint's address in the allow-list if it is not open
/// already. The guard matches addresses, not ports, so this opens
/// `127.0.0.1` on every port for this process: the narrowest entry it can
/// express. Local endpoints on other loopback addresses stay refused.
fn open_for_demo(
    settings: &mut Settings,
    ip: IpAddr,
    notes: &mut Vec<String>,
) -> Result<(), DevError> {
    if TargetGuard::new(&settings.allow_targets)?.is_ip_allowed(ip) {
        return Ok(());
    }
    let entry = match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    };
    notes.push(format!(
        "demo: allowing {entry} for the echo endpoint (the guard has no per-port entries, \
         so every port on {ip} is open for this process)"
    ));
    settings.allow_targets.push(entry);
    Ok(())
}

/// Registers the demo task, or resets it to its definition (the echo
/// endpoint's port changes on every start), by name: idempotent.
async fn ensure_demo_task(pool: &PgPool, url: &str) -> Result<Task, DevError> {
    let mut spec = TaskSpec::new(defaults::DEMO_TASK, defaults::DEMO_SCHEDULE, url);
    spec.body = Some(r#"{"hello":"from sundial dev"}"#.to_string());
    spec.headers
        .insert("content-type".into(), "application/json".into());
    spec.timeout_ms = 5_000;
    spec.validate().map_err(StoreError::from)?;
    let now = Utc::now();
    let existing = match store::get_task_by_name(pool, defaults::DEMO_TASK).await? {
        Some(task) => task,
        None => match store::create_task(pool, &spec, now).await {
            Ok(task) => return Ok(task),
            // Created meanwhile by another dev process: use theirs.
            Err(StoreError::DuplicateName(_)) => store::get_task_by_name(pool, defaults::DEMO_TASK)
                .await?
                .ok_or(StoreError::DuplicateName(defaults::DEMO_TASK.into()))?,
            Err(err) => return Err(err.into()),
        },
    };
    if TaskSpec::of(&existing).ok().as_ref() == Some(&spec) {
        return Ok(existing);
    }
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let task = store::update_task(&mut tx, existing.id, &spec, now).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(task)
}

/// 32 random bytes, hex: the admin token when none is configured.
fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl DevRunner {
    /// The admin API's base URL (`http://127.0.0.1:PORT`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token the admin API requires.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The demo task, with `--demo`.
    pub fn demo_task(&self) -> Option<&Task> {
        self.demo.as_ref().map(|(_, task)| task)
    }

    /// What to tell the user at start, one line each.
    pub fn banner(&self) -> Vec<String> {
        let mut lines = vec![format!("admin API listening on {}", self.admin_url())];
        if self.token_generated {
            lines.push(format!(
                "admin token (generated; set SUNDIAL_ADMIN_TOKEN to choose one): {}",
                self.token
            ));
        } else {
            lines.push("admin token: from SUNDIAL_ADMIN_TOKEN".to_string());
        }
        lines.push(match &self.queue {
            QueueMode::Memory(_) => {
                "queue: in-process (set SUNDIAL_QUEUE_URL to use SQS instead)".to_string()
            }
            QueueMode::Sqs(q) => format!("queue: SQS {}", q.queue_url()),
        });
        if let Some((server, task)) = &self.demo {
            lines.push(format!(
                "demo: task `{}` (id {}) fires {} every 10 seconds",
                task.name,
                task.id,
                server.url("/echo")
            ));
        }
        lines.extend(self.notes.iter().cloned());
        lines.push(format!(
            "register a task: curl -X POST {}/v1/tasks -H 'Authorization: Bearer <token>' \
             -H 'Content-Type: application/json' \
             -d '{{\"name\":\"hello\",\"schedule\":\"*/5 * * * * *\",\"url\":\"https://example.com/\"}}'",
            self.admin_url()
        ));
        lines.push("Ctrl-C to stop".to_string());
        lines
    }

    /// Runs until `shutdown` turns true (or its sender is dropped), then
    /// stops as described in the module docs.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<DevReport, DevError> {
        let DevRunner {
            opts,
            pool,
            listener,
            router,
            queue,
            processor,
            demo,
            ..
        } = self;
        let settings = &opts.settings;
        let owner = format!("sundial-dev-{}", std::process::id());
        let dispatch: Arc<dyn DispatchQueue> = match &queue {
            QueueMode::Memory(q) => q.clone(),
            QueueMode::Sqs(q) => Arc::new(q.clone()),
        };
        let admin = tokio::spawn(serve_admin(listener, router, shutdown.clone(), opts.grace));
        let scanner = tokio::spawn(scan_loop(
            pool.clone(),
            dispatch,
            ScanOptions::from_settings(settings, owner),
            opts.scan_every,
            shutdown.clone(),
        ));
        let status = tokio::spawn(status_loop(
            pool.clone(),
            match &queue {
                QueueMode::Memory(q) => Some(q.clone()),
                QueueMode::Sqs(_) => None,
            },
            opts.status_every,
            shutdown.clone(),
        ));
        let purge = tokio::spawn(purge_loop(
            pool.clone(),
            settings.run_retention_days,
            opts.purge_every,
            shutdown.clone(),
        ));

        let mut report = DevReport::default();
        match &queue {
            QueueMode::Memory(q) => {
                let consume = MemoryConsumeOptions {
                    max_outstanding: settings.concurrency.saturating_mul(2),
                    grace: opts.grace,
                    redeliver_delay: defaults::REDELIVER_DELAY,
                };
                // The scanner may still finish a scan after the queue is
                // closed: its sends then fail and it releases those leases.
                let (process, handed_back) =
                    consume_memory(&processor, &pool, q.clone(), &consume, shutdown.clone())
                        .await?;
                report.process = process;
                report.shutdown = handed_back;
            }
            QueueMode::Sqs(q) => {
                report.process = consume_sqs_with_grace(&processor, q, opts.grace, shutdown).await;
            }
        }

        // Everything below has been told to stop; none of it should take
        // long, but a stuck database must not keep the process alive.
        let (scans, _, _, _) = tokio::join!(
            bounded(scanner, Duration::from_secs(5)),
            bounded(admin, Duration::from_secs(1)),
            bounded(status, Duration::from_secs(1)),
            async {
                if let Some(purged) = bounded(purge, Duration::from_secs(1)).await {
                    report.purged_runs = purged;
                }
            },
        );
        if let Some(scans) = scans {
            report.scans = scans.scans;
            report.scan_errors = scans.errors;
            report.claimed = scans.claimed;
            report.enqueued = scans.enqueued;
        }
        drop(demo);
        Ok(report)
    }
}

/// Waits for a background task to end, aborting it after `limit`.
async fn bounded<T>(mut task: tokio::task::JoinHandle<T>, limit: Duration) -> Option<T> {
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "background task failed");
            None
        }
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves `grace` after shutdown is asked for.
async fn grace_over(shutdown: watch::Receiver<bool>, grace: Duration) {
    stopped(shutdown).await;
    tokio::time::sleep(grace).await;
}

async fn serve_admin(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let serve = axum::serve(listener, router).with_graceful_shutdown(stopped(shutdown.clone()));
    tokio::select! {
        result = std::future::IntoFuture::into_future(serve) => {
            if let Err(err) = result {
                tracing::error!(error = %err, "admin API stopped");
            }
        }
        () = grace_over(shutdown, grace) => {}
    }
}

/// Scanner figures over a dev run.
#[derive(Debug, Default)]
struct ScanTotals {
    scans: u64,
    errors: u64,
    claimed: u64,
    enqueued: u64,
}

/// Scans every `every` until shutdown. A scan in progress is finished,
/// never cancelled, so it cannot leave claimed rows behind.
async fn scan_loop(
    pool: PgPool,
    queue: Arc<dyn DispatchQueue>,
    opts: ScanOptions,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> ScanTotals {
    let mut totals = ScanTotals::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        match scan(&pool, queue.as_ref(), &opts).await {
            Ok(summary) => {
                totals.scans += 1;
                totals.claimed += summary.claimed;
                totals.enqueued += summary.enqueued;
                if summary.invalid > 0 {
                    tracing::warn!(
                        invalid = summary.invalid,
                        "tasks with invalid schedules disabled"
                    );
                }
                if summary.claimed > 0 {
                    tracing::debug!(
                        claimed = summary.claimed,
                        enqueued = summary.enqueued,
                        failed = summary.failed,
                        "scanned"
                    );
                }
            }
            Err(err) => {
                totals.errors += 1;
                tracing::warn!(error = %err, "scan failed; retrying on the next tick");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped(shutdown.clone()) => break,
        }
    }
    totals
}

/// Logs a compact status line every `every`.
async fn status_loop(
    pool: PgPool,
    queue: Option<Arc<MemoryQueue>>,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let started = Utc::now();
    let window = chrono::Duration::from_std(defaults::STATUS_WINDOW).unwrap_or_default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every.max(Duration::from_millis(100))) => {}
            () = stopped(shutdown.clone()) => return,
        }
        let now = Utc::now();
        let since = started.max(now - window);
        let figures =
            futures::try_join!(store::backlog(&pool, now), store::run_stats(&pool, since));
        let (backlog, stats) = match figures {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read status figures");
                continue;
            }
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        tracing::info!(
            backlog = backlog.due,
            queued = queue.as_ref().map(|q| q.len()),
            fired = stats.runs - stats.skipped,
            succeeded = stats.succeeded,
            failed = stats.failed,
            timeouts = stats.timed_out,
            lag_p50_ms = %ms(stats.lag_p50_ms),
            lag_p99_ms = %ms(stats.lag_p99_ms),
            window_secs = (now - since).num_seconds(),
            "status"
        );
    }
}

/// Deletes runs older than the retention, at start and every `every`.
async fn purge_loop(
    pool: PgPool,
    retention_days: u32,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> u64 {
    let mut purged = 0;
    loop {
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
        loop {
            match store::purge_runs(&pool, cutoff, PURGE_BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < PURGE_BATCH as u64 || *shutdown.borrow() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "run-history purge failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped(shutdown.clone()) => return purged,
        }
    }
}

/// The SQS consumer with a grace period: messages not finished by then
/// stay on the queue, which delivers them again after their visibility
/// timeout (no lease to release).
async fn consume_sqs_with_grace(
    processor: &Processor,
    queue: &SqsQueue,
    grace: Duration,
    shutdown: watch::Receiver<bool>,
) -> ProcessReport {
    let opts = ConsumeOptions {
        wait: Duration::from_secs(10),
        ..Default::default()
    };
    tokio::select! {
        report = consume_sqs(processor, queue, &opts, shutdown.clone()) => report,
        () = grace_over(shutdown, grace) => {
            tracing::warn!("grace period over; abandoning in-flight requests (SQS delivers them again)");
            ProcessReport::default()
        }
    }
}

/// How [`consume_memory`] runs.
#[derive(Debug, Clone)]
pub struct MemoryConsumeOptions {
    /// Messages received and not yet settled, at most.
    pub max_outstanding: usize,
    /// Time in-flight requests get after shutdown before they are aborted.
    pub grace: Duration,
    /// Delay before a handed-back message is delivered again.
    pub redeliver_delay: Duration,
}

impl Default for MemoryConsumeOptions {
    fn default() -> Self {
        MemoryConsumeOptions {
            max_outstanding: 400,
            grace: defaults::GRACE,
            redeliver_delay: defaults::REDELIVER_DELAY,
        }
    }
}

/// What [`consume_memory`] handed back at shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryConsumeReport {
    /// Whether the grace period ran out with requests in flight.
    pub aborted: bool,
    /// Messages received but not settled when processing stopped
    /// (aborted requests, and messages waiting for a slot).
    pub unsettled: u64,
    /// Messages still in the queue (not yet due, or not yet received).
    pub drained: u64,
    /// Messages handed back by the processor and queued again.
    pub redelivered: u64,
    /// Distinct occurrences handed back to the database.
    pub handed_back: u64,
    /// Of those, leases actually released; the others had moved on already
    /// (recorded meanwhile, task edited or deleted, or `overlap = allow`).
    pub released: u64,
    /// Manual firings dropped (they hold no lease, so nothing fires them
    /// again).
    pub manual_dropped: u64,
}

/// Messages received from the memory queue and not yet settled, by the id
/// given to the processor.
type Outstanding = Arc<Mutex<HashMap<u64, DispatchMessage>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert/remove/push.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Feeds `queue` to the processor as one continuous stream (no batch
/// barriers) until `shutdown`; a message handed back (`Redeliver`) is
/// queued again after `redeliver_delay`.
///
/// After shutdown it stops receiving, lets in-flight requests finish for
/// `grace`, aborts the rest, closes the queue, drains it, and releases the
/// lease of every occurrence not settled (aborted, or still queued), so the
/// scanner dispatches them again. The process report is complete unless
/// requests were aborted (then it is empty: the database has the truth).
pub async fn consume_memory(
    processor: &Processor,
    pool: &PgPool,
    queue: Arc<MemoryQueue>,
    opts: &MemoryConsumeOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(ProcessReport, MemoryConsumeReport), DevError> {
    let outstanding: Outstanding = Arc::default();
    let refused: Mutex<Vec<DispatchMessage>> = Mutex::default();
    let redelivered = AtomicU64::new(0);
    let inbound = receive_stream(
        queue.clone(),
        outstanding.clone(),
        opts.max_outstanding.max(1),
        shutdown.clone(),
    );
    let settle = |id: u64, disposition: Disposition| {
        let message = lock(&outstanding).remove(&id);
        if let (Disposition::Redeliver, Some(message)) = (disposition, message) {
            redelivered.fetch_add(1, Ordering::Relaxed);
            let sent = queue.push(&[Outgoing {
                message: message.clone(),
                delay: opts.redeliver_delay,
            }]);
            if !sent.failed.is_empty() {
                lock(&refused).push(message);
            }
        }
    };
    let mut processing = Box::pin(processor.process(inbound, None, settle));
    let (process, aborted) = tokio::select! {
        report = &mut processing => (report, false),
        () = grace_over(shutdown, opts.grace) => (ProcessReport::default(), true),
    };
    // Dropping the processing future cancels the requests still in flight.
    drop(processing);

    queue.close();
    let drained = queue.drain();
    let unsettled: Vec<DispatchMessage> = lock(&outstanding).drain().map(|(_, m)| m).collect();
    let refused = std::mem::take(&mut *lock(&refused));
    if aborted {
        tracing::warn!(
            aborted = unsettled.len(),
            "grace period over; aborting in-flight requests"
        );
    }
    let all = || drained.iter().chain(&unsettled).chain(&refused);
    let mut occurrences: Vec<(i64, DateTime<Utc>)> = all()
        .filter(|m| !m.manual)
        .map(|m| (m.task_id, m.occurrence))
        .collect();
    occurrences.sort_unstable();
    occurrences.dedup();
    let released = release_leases(pool, &occurrences).await?;
    let report = MemoryConsumeReport {
        aborted,
        unsettled: unsettled.len() as u64,
        drained: drained.len() as u64,
        redelivered: redelivered.load(Ordering::Relaxed),
        handed_back: occurrences.len() as u64,
        released,
        manual_dropped: all().filter(|m| m.manual).count() as u64,
    };
    if report.handed_back > 0 || report.manual_dropped > 0 {
        tracing::info!(
            unsettled = report.unsettled,
            queued = report.drained,
            released = report.released,
            manual_dropped = report.manual_dropped,
            "handed unsettled occurrences back to the database"
        );
    }
    Ok((process, report))
}

/// Releases leases, trying twice (a shutdown should not leave leases
/// behind because of one dropped connection).
async fn release_leases(
    pool: &PgPool,
    occurrences: &[(i64, DateTime<Utc>)],
) -> Result<u64, DevError> {
    if occurrences.is_empty() {
        return Ok(0);
    }
    match store::release(pool, occurrences).await {
        Ok(n) => Ok(n),
        Err(first) => {
            tracing::warn!(error = %first, "releasing leases failed; trying once more");
            store::release(pool, occurrences)
                .await
                .map_err(|source| DevError::Release {
                    pending: occurrences.len(),
                    source,
                })
        }
    }
}

/// Receives from the memory queue while fewer than `max_outstanding`
/// messages are unsettled, until shutdown or the queue closes.
fn receive_stream(
    queue: Arc<MemoryQueue>,
    outstanding: Outstanding,
    max_outstanding: usize,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = (u64, String)> + Send + 'static {
    let state = (queue, outstanding, shutdown, 0u64);
    futures::stream::unfold(
        state,
        move |(queue, outstanding, shutdown, mut seq)| async move {
            loop {
                if *shutdown.borrow() || queue.is_closed() {
                    return None;
                }
                let room = max_outstanding.saturating_sub(lock(&outstanding).len());
                if room == 0 {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                        () = stopped(shutdown.clone()) => return None,
                    }
                }
                let batch = tokio::select! {
                    batch = queue.receive(room.min(RECEIVE_MAX), RECEIVE_WAIT) => batch,
                    () = stopped(shutdown.clone()) => return None,
                };
                if batch.is_empty() {
                    continue;
                }
                let items: Vec<(u64, String)> = {
                    let mut map = lock(&outstanding);
                    batch
                        .into_iter()
                        .map(|message| {
                            seq += 1;
                            let body = message.to_json();
                            map.insert(seq, message);
                            (seq, body)
                        })
                        .collect()
                };
                return Some((
                    futures::stream::iter(items),
                    (queue, outstanding, shutdown, seq),
                ));
            }
        },
    )
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_map(&env).unwrap()
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn the_demo_opens_only_its_own_address() {
        let mut s = settings(&[]);
        let mut notes = Vec::new();
        open_for_demo(&mut s, IpAddr::V4(Ipv4Addr::LOCALHOST), &mut notes).unwrap();
        assert_eq!(s.allow_targets, vec!["127.0.0.1/32"]);
        assert_eq!(notes.len(), 1);
        let guard = TargetGuard::new(&s.allow_targets).unwrap();
        assert!(!guard.is_ip_allowed("127.0.0.2".parse().unwrap()));
        assert!(!guard.is_ip_allowed("10.0.0.1".parse().unwrap()));

        // Already open: nothing added.
        let mut s = settings(&[("SUNDIAL_ALLOW_TARGETS", "127.0.0.0/8")]);
        let mut notes = Vec::new();
        open_for_demo(&mut s, IpAddr::V4(Ipv4Addr::LOCALHOST), &mut notes).unwrap();
        assert_eq!(s.allow_targets, vec!["127.0.0.0/8"]);
        assert!(notes.is_empty());
    }

    #[tokio::test]
    async fn the_local_admin_api_requires_the_token() {
        // A lazy pool never connects: these requests stop before the store.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let router = admin_router(AdminContext {
            pool,
            queue: Arc::new(MemoryQueue::new(1)),
            guard: Arc::new(TargetGuard::default()),
            token: "a-token-of-sixteen-chars".into(),
        });
        let request = |auth: Option<&str>, body: &str| {
            let mut r = axum::http::Request::post("/v1/tasks");
            if let Some(auth) = auth {
                r = r.header(header::AUTHORIZATION, auth);
            }
            r.body(axum::body::Body::from(body.to_string())).unwrap()
        };
        let health = axum::http::Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = router.clone().oneshot(health).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = router.clone().oneshot(request(None, "{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = router
            .clone()
            .oneshot(request(Some("Bearer wrong-token-xxxxxxxx"), "{}"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = router
            .clone()
            .oneshot(request(Some("Bearer a-token-of-sixteen-chars"), "not json"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        // Loopback is refused by the guard, and the error names the field.
        let body = r#"{"name":"x","schedule":"rate(1 minute)","url":"http://127.0.0.1:9/"}"#;
        let res = router
            .oneshot(request(Some("bearer a-token-of-sixteen-chars"), body))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(res.into_body(), 10_000).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["field"], "url");
    }
}
