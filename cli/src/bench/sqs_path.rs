//! The deployed shape for the flow-control scenarios (`throttled`,
//! `outage`): a fresh queue on the SQS emulator per run, the scanner's
//! tick ([`sundial::scan::run_ticks`], the scanner Lambda's code) and
//! several processors, each the worker of `sundial process`
//! ([`sundial::worker::run_worker`] over [`SqsInbox`]) with a firer of its
//! own, so per-processor state (connection pools, adaptive concurrency) is
//! not shared and whatever they share goes through Postgres.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgPool;
use sundial::config::Settings;
use sundial::process::{ProcessReport, Processor};
use sundial::queue::sqs::{client_from_env, create_queue, delete_queue, SqsQueue};
use sundial::scan::{run_ticks, ScanOptions, TickTotals};
use sundial::worker::{run_worker, SqsInbox, WorkerOptions};
use tokio::sync::watch;

/// The processors' long-poll wait. Shorter than `sundial process`'s 20 s
/// so that a run ends soon after its last message (a receive in progress
/// is always finished); it does not delay deliveries, which end a long
/// poll as soon as they are receivable.
pub const LONG_POLL: Duration = Duration::from_secs(5);

/// The scanner's cadence: EventBridge's once a minute.
pub const TICK_EVERY: Duration = Duration::from_secs(60);

/// A fresh queue on the emulator, deleted by [`FreshQueue::delete`].
pub struct FreshQueue {
    pub queue: SqsQueue,
}

impl FreshQueue {
    /// Creates `sundial-bench-<label>-<pid>` (deep queues slow the
    /// emulator down, so every run gets its own).
    pub async fn create(label: &str, settings: &Settings) -> Result<FreshQueue> {
        std::env::var("AWS_ENDPOINT_URL_SQS").context(
            "this scenario needs the SQS emulator: run it through `make bench` (or `eval \"$(scripts/services.sh env)\"`)",
        )?;
        let client = client_from_env().await;
        let name = format!("sundial-bench-{label}-{}", std::process::id());
        let url = create_queue(&client, &name)
            .await
            .context("cannot create a queue on the SQS emulator")?;
        let queue = SqsQueue::new(client.clone(), &url, settings.send_concurrency)
            .with_delivery_lead(settings.delivery_lead);
        Ok(FreshQueue { queue })
    }

    /// Deletes the queue (best effort: the emulator forgets it on restart).
    pub async fn delete(self) {
        if let Err(err) = delete_queue(self.queue.client(), self.queue.queue_url()).await {
            tracing::warn!(error = %err, "cannot delete the bench queue");
        }
    }
}

/// What one drive did.
pub struct Driven {
    /// The processors' reports, merged.
    pub report: ProcessReport,
    pub ticks: TickTotals,
}

/// Runs the scanner (a tick at once, then every [`TICK_EVERY`]) and
/// `processors` long-polling processors until `until` completes; then
/// stops them and returns once every received message is settled.
pub async fn drive(
    pool: &PgPool,
    settings: &Settings,
    queue: &SqsQueue,
    processors: usize,
    until: impl Future<Output = ()>,
) -> Result<Driven> {
    let processors: Vec<Processor> = (0..processors.max(1))
        .map(|_| Processor::from_settings(pool.clone(), settings, Arc::new(queue.clone())))
        .collect::<Result<_, _>>()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = WorkerOptions::default();
    let workers = futures::future::join_all(processors.iter().map(|processor| {
        let inbox = Arc::new(SqsInbox::new(queue.clone(), LONG_POLL, None));
        run_worker(processor, inbox, &worker, stop_rx.clone())
    }));
    let opts = ScanOptions::from_settings(settings, "sundial-bench");
    let scanner = run_ticks(pool, queue, &opts, TICK_EVERY, stop_rx, |_| {});
    let clock = async {
        until.await;
        let _ = stop_tx.send(true);
    };
    let (reports, ticks, ()) = tokio::join!(workers, scanner, clock);
    let mut report = ProcessReport::default();
    for r in &reports {
        report.merge(r);
    }
    Ok(Driven { report, ticks })
}

/// The flow key of a task firing at `url` (the `host:port` the schema's
/// `sundial_url_flow` gives it), read back from the database so the
/// bench's `flows` rows always name the flow the tasks are in.
pub async fn flow_of(pool: &PgPool, url: &str) -> Result<String> {
    Ok(sqlx::query_scalar("SELECT sundial_url_flow($1)")
        .bind(url)
        .fetch_one(pool)
        .await?)
}

/// The shared state of a flow (its `flow_state` row) as JSON, for the
/// results file: what the engine believed when the figures were taken.
pub async fn flow_state(pool: &PgPool, key: &str) -> Result<Option<serde_json::Value>> {
    Ok(
        sqlx::query_scalar("SELECT to_jsonb(s) FROM flow_state s WHERE key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?,
    )
}

/// A PASS/FAIL line of a report: what is promised, what was measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

impl Check {
    pub fn new(target: impl Into<String>, measured: impl Into<String>, pass: bool) -> Check {
        Check {
            target: target.into(),
            measured: measured.into(),
            pass,
        }
    }

    pub fn verdict(&self) -> &'static str {
        if self.pass {
            "PASS"
        } else {
            "FAIL"
        }
    }
}
