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
//! * a status line every few seconds; the run-history purge runs in each
//!   scanner tick ([`crate::scan::tick`]), as in the scanner Lambda.
//!
//! The in-process queue is not durable, so a graceful shutdown hands every
//! occurrence it did not settle back to the database: it stops claiming and
//! receiving, gives in-flight requests a grace period, aborts the rest and
//! releases the leases of everything in flight or still queued
//! ([`store::release`]). A restart fires them: nothing lost, nothing left
//! leased. (A hard kill loses nothing either: leases lapse after
//! `SUNDIAL_LEASE_SECS` and the scanner dispatches again.)
//!
//! `--demo` adds a built-in echo endpoint ([`DemoServer`]) and a
//! task `sundial-demo` firing it every 10 seconds. The target guard has no
//! per-port entries, so the demo opens `127.0.0.1/32` (every port on that
//! one address, for this process only) when the allow-list does not.
//!
//! A task with `overlap = allow` moves on as soon as its occurrence is
//! queued; handing such an occurrence back at shutdown moves the task back
//! to it (see [`crate::store::release`]), so it fires after a restart too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde::Serialize;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, Queue, QueueNeed, StartError};
use crate::config::{ConfigError, Settings};
use crate::fire::{GuardError, TargetGuard};
use crate::process::{ProcessReport, Processor, SetupError};
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::SqsQueue;
use crate::queue::DispatchQueue;
use crate::scan::ScanOptions;
use crate::store::StoreError;
use crate::task::Task;

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

mod admin;
mod demo;
mod loops;
mod memory;

pub use demo::DemoServer;
use demo::{demo_server, ensure_demo_task};
pub(crate) use loops::grace_over;
use loops::{bounded, consume_sqs_with_grace, scan_loop, serve_admin, status_loop};

pub use admin::{admin_router, AdminContext, AdminRouterFn};
pub use memory::{consume_memory, MemoryConsumeOptions, MemoryConsumeReport};

/// Why `sundial dev` could not start or stop cleanly. Variants with a
/// source leave it out of their message: print the chain (`{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A setting is missing or invalid (names the variable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The processor could not be built from the settings.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The allow-list could not be turned into a target guard.
    #[error("invalid setting SUNDIAL_ALLOW_TARGETS")]
    Guard(#[from] GuardError),
    /// Postgres is unreachable.
    #[error("cannot connect to DATABASE_URL")]
    Connect(#[source] StoreError),
    /// Migrations could not be applied.
    #[error("cannot apply migrations")]
    Migrate(#[source] StoreError),
    /// The admin API cannot listen on the port.
    #[error("cannot listen on 127.0.0.1:{port} (pick another with --port)")]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The parts of the process could not be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The demo echo endpoint could not start.
    #[error("cannot start the demo echo endpoint")]
    Demo(#[source] std::io::Error),
    /// A store call failed (registering the demo task).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Leases could not be handed back at shutdown; they lapse after
    /// `SUNDIAL_LEASE_SECS` and the occurrences are dispatched again then.
    #[error("cannot release {pending} leases at shutdown (they lapse after SUNDIAL_LEASE_SECS)")]
    Release {
        /// Occurrences whose lease is still held.
        pending: usize,
        /// The database error.
        #[source]
        source: StoreError,
    },
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
            admin_router,
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
    demo: Option<(DemoServer, Task)>,
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
    settings.require_database_url()?;
    let (token, token_generated) = match settings.admin_token {
        Some(_) => (settings.require_admin_token()?.to_string(), false),
        None => (generate_token(), true),
    };
    // Check the allow-list before touching anything.
    TargetGuard::new(&settings.allow_targets)?;
    let (listener, addr) = bind_admin(opts.port).await?;
    let mut notes = Vec::new();
    let demo_server = demo_server(opts.demo, &mut settings, &mut notes).await?;

    // One process hosts everything, and dev always migrates.
    settings.db_pool_size = settings.db_pool_size.max(defaults::MIN_POOL_SIZE);
    settings.migrate_on_start = true;
    let app = App::start(settings, QueueNeed::SqsOrMemory)
        .await
        .map_err(|err| match err {
            StartError::Database(e) => DevError::Connect(e),
            other => DevError::Start(other),
        })?;
    let processor = Arc::new(app.processor()?);
    let demo = match demo_server {
        Some(server) => {
            let task = ensure_demo_task(&app.pool, &server.url("/echo")).await?;
            Some((server, task))
        }
        None => None,
    };
    let router = (opts.admin_router)(AdminContext {
        pool: app.pool.clone(),
        queue: app.queue.dispatch(),
        guard: app.guard.clone(),
        token: token.clone(),
        pipeline: crate::health::PipelineCheck::from_app(&app),
    });
    let queue = match &app.queue {
        Queue::Sqs(q) => QueueMode::Sqs(q.clone()),
        Queue::Memory(q) => QueueMode::Memory(q.clone()),
    };
    Ok(DevRunner {
        opts: DevOptions {
            settings: app.settings.clone(),
            ..opts
        },
        pool: app.pool,
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

/// The admin API's port on 127.0.0.1 (0: any free port).
async fn bind_admin(port: u16) -> Result<(TcpListener, SocketAddr), DevError> {
    let bind_error = |source| DevError::Bind { port, source };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// 32 random bytes, hex: the admin token when none is configured.
fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl DevReport {
    /// The scanner loop's figures.
    fn count_scans(&mut self, scans: &crate::scan::TickTotals) {
        self.scans = scans.ticks;
        self.scan_errors = scans.errors;
        self.claimed = scans.claimed;
        self.enqueued = scans.enqueued;
        self.purged_runs = scans.purged_runs;
    }
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
        let mut lines = vec![
            format!("admin API listening on {}", self.admin_url()),
            format!(
                "console: {}/ui (log in with the admin token)",
                self.admin_url()
            ),
        ];
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
        let mut scan_opts = ScanOptions::from_settings(settings, owner);
        scan_opts.notifier = processor.notifier().cloned();
        let scanner = tokio::spawn(scan_loop(
            pool.clone(),
            dispatch,
            scan_opts,
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

        let (process, handed_back) = consume(&queue, &processor, &pool, &opts, shutdown).await?;
        let mut report = DevReport {
            process,
            shutdown: handed_back,
            ..Default::default()
        };

        // Everything below has been told to stop; none of it should take
        // long, but a stuck database must not keep the process alive.
        let (scans, _, _) = tokio::join!(
            bounded(scanner, Duration::from_secs(5)),
            bounded(admin, Duration::from_secs(1)),
            bounded(status, Duration::from_secs(1)),
        );
        if let Some(scans) = scans {
            report.count_scans(&scans);
        }
        drop(demo);
        Ok(report)
    }
}

/// Runs the processor on the queue until shutdown (and its grace).
async fn consume(
    queue: &QueueMode,
    processor: &Processor,
    pool: &PgPool,
    opts: &DevOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(ProcessReport, MemoryConsumeReport), DevError> {
    match queue {
        QueueMode::Memory(q) => {
            let consume = MemoryConsumeOptions {
                max_outstanding: opts.settings.concurrency.saturating_mul(2),
                grace: opts.grace,
                redeliver_delay: defaults::REDELIVER_DELAY,
            };
            // The scanner may still finish a scan after the queue is
            // closed: its sends then fail and it releases those leases.
            consume_memory(processor, pool, q.clone(), &consume, shutdown).await
        }
        QueueMode::Sqs(q) => {
            let process = consume_sqs_with_grace(processor, q, opts.grace, shutdown).await;
            Ok((process, MemoryConsumeReport::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::demo::open_for_demo;
    use super::*;

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
}
