//! The bench's environment: a scratch database, bulk task inserts, and
//! the dev-mode pipeline (scanner → in-process queue → processor) with a
//! completion tracker, composed from the same `sundial` parts as
//! `sundial dev`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, DurationRound, Utc};
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use sundial::config::Settings;
use sundial::fire::{ClientOptions, FireRequest, Firer, Signer, TargetGuard};
use sundial::process::{Disposition, ProcessReport, Processor, ProcessorOptions};
use sundial::queue::memory::MemoryQueue;
use sundial::scan::ScanOptions;
use sundial::store;
use sundial::worker::{run_worker, Inbox, InboxError, MemoryInbox, Received, WorkerOptions};
use tokio::sync::watch;

/// Signs the bench's requests, as production would (signing is part of
/// the cost of a firing).
const BENCH_SECRET: &str = "whsec_sundial_bench";

/// Where the scratch database lives.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// The `DATABASE_URL` connection (used to drop and create the scratch one).
    admin: PgConnectOptions,
    /// Name of the scratch database.
    name: String,
}

impl DbTarget {
    /// Checks the URL and the scratch name; the scratch database must not
    /// be the one `DATABASE_URL` points at (it is dropped).
    pub fn new(url: Option<&str>, name: &str) -> Result<DbTarget> {
        let Some(url) = url else {
            bail!("missing setting DATABASE_URL: the Postgres server to benchmark against (the bench creates its own database there)");
        };
        let admin = PgConnectOptions::from_str(url)
            .context("invalid setting DATABASE_URL")?
            .disable_statement_logging();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("--bench-db {name:?}: use lower-case letters, digits and underscores");
        }
        if admin.get_database() == Some(name) {
            bail!("--bench-db {name:?} is the database of DATABASE_URL; the bench drops its database, pick another name");
        }
        Ok(DbTarget {
            admin,
            name: name.to_string(),
        })
    }

    /// Drops and recreates the scratch database, migrates it and opens a
    /// pool of `connections`.
    pub async fn fresh(&self, connections: u32) -> Result<PgPool> {
        let mut admin = sqlx::PgConnection::connect_with(&self.admin)
            .await
            .context("cannot connect to DATABASE_URL")?;
        // The name was checked to be a plain identifier.
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await?;
        let create = format!("CREATE DATABASE \"{}\"", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create database {}", self.name))?;
        admin.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(self.admin.clone().database(&self.name))
            .await?;
        store::migrate(&pool).await?;
        Ok(pool)
    }

    /// Drops the scratch database (at the end of a scenario; its pools
    /// must be closed).
    pub async fn drop_database(&self) -> Result<()> {
        let mut admin = sqlx::PgConnection::connect_with(&self.admin).await?;
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await?;
        Ok(())
    }
}

/// Processor and scanner settings for a bench run: targets on loopback
/// allowed, one signing secret, `concurrency` both globally and per host
/// (every bench request goes to the one target host).
pub fn settings(concurrency: usize, lookahead_secs: u64) -> Result<Settings> {
    settings_per_host(concurrency, concurrency, lookahead_secs)
}

/// [`settings`] with a per-host (and per-flow) cap of its own.
pub fn settings_per_host(
    concurrency: usize,
    per_host: usize,
    lookahead_secs: u64,
) -> Result<Settings> {
    let env: HashMap<String, String> = [
        ("SUNDIAL_ALLOW_TARGETS", "127.0.0.1/32".to_string()),
        ("SUNDIAL_SIGNING_SECRETS", BENCH_SECRET.to_string()),
        ("SUNDIAL_CONCURRENCY", concurrency.to_string()),
        ("SUNDIAL_PER_HOST_CONCURRENCY", per_host.to_string()),
        ("SUNDIAL_LOOKAHEAD_SECS", lookahead_secs.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(Settings::from_map(&env)?)
}

/// A batch of tasks to insert with one `INSERT ... SELECT generate_series`.
#[derive(Debug, Clone)]
pub struct TaskBatch<'a> {
    pub prefix: &'a str,
    pub count: i64,
    /// Due time of the first task.
    pub first_due: DateTime<Utc>,
    /// Gap between consecutive due times.
    pub spacing: Duration,
    pub url: &'a str,
    /// Every n-th task (n > 0) gets this URL instead.
    pub every_nth: Option<(i64, &'a str)>,
    pub timeout_ms: i32,
    pub max_attempts: i32,
}

/// `n` tasks at `path`, all due at `due`, spread evenly over the target's
/// hosts (the first hosts take the remainder); names `<prefix><host>-<i>`.
pub async fn insert_over_hosts(
    pool: &PgPool,
    target: &super::target::Target,
    prefix: &str,
    path: &str,
    n: u64,
    due: DateTime<Utc>,
    timeout_ms: i32,
) -> Result<()> {
    let hosts = target.hosts().max(1) as u64;
    for host in 0..hosts {
        let url = target.url_on(host as usize, path);
        let prefix = format!("{prefix}{host}-");
        let batch = TaskBatch {
            prefix: &prefix,
            count: (n / hosts + u64::from(host < n % hosts)) as i64,
            first_due: due,
            spacing: Duration::ZERO,
            url: &url,
            every_nth: None,
            timeout_ms,
            max_attempts: 1,
        };
        insert_tasks(pool, &batch).await?;
    }
    Ok(())
}

/// Inserts the batch. Tasks run `rate(1 day)`: each fires once during a
/// bench, and its write-back moves it a day on.
pub async fn insert_tasks(pool: &PgPool, batch: &TaskBatch<'_>) -> Result<()> {
    let (nth, other_url) = batch.every_nth.unwrap_or((0, ""));
    sqlx::query(
        "INSERT INTO tasks (name, schedule, url, next_run_at, timeout_ms, max_attempts) \
         SELECT $1 || g, 'rate(1 day)', \
                CASE WHEN $5::bigint > 0 AND g % $5::bigint = 0 THEN $6 ELSE $4 END, \
                $3::timestamptz + ((g - 1) * $7::bigint) * interval '1 microsecond', \
                $8, $9 \
         FROM generate_series(1, $2::bigint) g",
    )
    .bind(batch.prefix)
    .bind(batch.count)
    .bind(batch.first_due)
    .bind(batch.url)
    .bind(nth)
    .bind(other_url)
    .bind(batch.spacing.as_micros() as i64)
    .bind(batch.timeout_ms)
    .bind(batch.max_attempts)
    .execute(pool)
    .await
    .context("cannot insert bench tasks")?;
    Ok(())
}

/// `now + lead`, on a whole millisecond (what Postgres stores exactly).
pub fn due_in(lead: Duration) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::from_std(lead).unwrap_or_default();
    t.duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap_or(t)
}

/// One recorded run, as the figures need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub scheduled_for: DateTime<Utc>,
    /// fired_at − scheduled_for, ms (first attempt's start).
    pub lag_ms: Option<f64>,
    /// finished_at − fired_at, ms.
    pub latency_ms: Option<f64>,
    pub finished_at: DateTime<Utc>,
    pub status: String,
}

/// Every run recorded in the scratch database.
pub async fn recorded_runs(pool: &PgPool) -> Result<Vec<RunRow>> {
    Ok(sqlx::query_as::<_, RunRow>(
        "SELECT scheduled_for, \
                (EXTRACT(EPOCH FROM fired_at - scheduled_for) * 1000)::float8 AS lag_ms, \
                (EXTRACT(EPOCH FROM finished_at - fired_at) * 1000)::float8 AS latency_ms, \
                finished_at, status \
         FROM task_runs",
    )
    .fetch_all(pool)
    .await?)
}

/// Counts settled messages and says when to stop consuming.
#[derive(Debug)]
pub struct Completion {
    base: Instant,
    expected: u64,
    settled: AtomicU64,
    /// Nanoseconds after `base` of the latest settlement.
    last_ns: AtomicU64,
    stop: AtomicBool,
}

impl Completion {
    pub fn new(expected: u64) -> Arc<Completion> {
        Arc::new(Completion {
            base: Instant::now(),
            expected,
            settled: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn settle(&self) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.last_ns.fetch_max(ns, Ordering::Relaxed);
        if self.settled.fetch_add(1, Ordering::Relaxed) + 1 >= self.expected {
            self.stop();
        }
    }

    pub fn settled(&self) -> u64 {
        self.settled.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// When the latest message was settled (its outcome durable).
    pub fn last_settled(&self) -> Option<Instant> {
        match self.last_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns)),
        }
    }
}

/// The in-process inbox, counting settlements for [`Completion`].
struct CountingInbox {
    inner: MemoryInbox,
    completion: Arc<Completion>,
}

#[async_trait::async_trait]
impl Inbox for CountingInbox {
    type Receipt = u64;

    async fn receive(&self, max: usize) -> Result<Received<u64>, InboxError> {
        if self.completion.stopped() {
            return Ok(Received::Ended);
        }
        self.inner.receive(max).await
    }

    async fn settle(&self, settled: Vec<(u64, Disposition)>) {
        for _ in &settled {
            self.completion.settle();
        }
        self.inner.settle(settled).await;
    }
}

/// The dev-mode pipeline: the in-process queue between the scanner and
/// the real processor (which also sends its retries to that queue).
pub struct Pipeline {
    pub pool: PgPool,
    pub queue: Arc<MemoryQueue>,
    pub processor: Processor,
    pub scan: ScanOptions,
    /// Messages received and not yet settled, at most (as `sundial dev`).
    max_outstanding: usize,
    /// The processor's firer (built here, as `Processor::from_settings`
    /// does, so its connection pool can be warmed up).
    firer: Arc<Firer>,
}

/// The firer a processor builds from `settings`.
pub fn firer(settings: &Settings) -> Result<Firer> {
    let guard = Arc::new(TargetGuard::new(&settings.allow_targets)?);
    let signer = Signer::new(settings.signing_secrets.clone())?;
    Ok(Firer::build(
        guard,
        signer,
        &ClientOptions::from_settings(settings),
    )?)
}

impl Pipeline {
    pub fn new(pool: PgPool, settings: &Settings) -> Result<Pipeline> {
        let queue = Arc::new(MemoryQueue::default());
        let firer = Arc::new(firer(settings)?);
        let processor = Processor::new(
            pool.clone(),
            firer.clone(),
            queue.clone(),
            ProcessorOptions::from_settings(settings),
        );
        Ok(Pipeline {
            pool,
            queue,
            processor,
            scan: ScanOptions::from_settings(settings, "sundial-bench"),
            max_outstanding: settings.concurrency.saturating_mul(2),
            firer,
        })
    }

    /// Opens the connections a busy, long-running processor would have to
    /// the target: one request to `url`, then `n - 1` at once (HTTP/1.1: up
    /// to `n` connections; HTTP/2: the one).
    pub async fn warm_up(&self, url: &str, n: usize) {
        let request = FireRequest {
            method: "GET".into(),
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(10),
            idempotency_key: "warm-up".into(),
            flow: None,
        };
        // One first: over HTTPS, requests started before the first ALPN
        // answer each open a connection of their own, even where HTTP/2
        // would then carry them all on one.
        self.firer.fire(&request).await;
        let requests = vec![request; n.saturating_sub(1)];
        futures::stream::iter(&requests)
            .map(|r| self.firer.fire(r))
            .buffer_unordered(n.max(1))
            .collect::<Vec<_>>()
            .await;
    }

    /// Feeds the processor from the queue through the worker every
    /// driver uses ([`sundial::worker::run_worker`] over the in-process
    /// inbox) until `completion` says stop (all expected messages settled)
    /// or `deadline` passes; returns once every started request has
    /// finished and been written back.
    pub async fn consume(&self, completion: Arc<Completion>, deadline: Instant) -> ProcessReport {
        let inbox = Arc::new(CountingInbox {
            inner: MemoryInbox::new(self.queue.clone()),
            completion: completion.clone(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let watch_completion = async move {
            while !completion.stopped() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            completion.stop();
            let _ = stop_tx.send(true);
        };
        let opts = WorkerOptions {
            max_outstanding: self.max_outstanding,
            deadline: None,
        };
        let (report, ()) = tokio::join!(
            run_worker(&self.processor, inbox, &opts, stop_rx),
            watch_completion
        );
        report
    }

    /// Runs [`sundial::scan::scan`] once.
    pub async fn scan_once(&self) -> Result<sundial::scan::ScanSummary> {
        Ok(sundial::scan::scan(&self.pool, &*self.queue, &self.scan).await?)
    }
}
