//! The deployed shape for the flow-control scenarios (`throttled`,
//! `outage`): a fresh queue on the SQS emulator per run, the scanner's
//! tick ([`sundial::scan::run_ticks`], the scanner Lambda's code) and
//! several processors, each the worker of `sundial process`
//! ([`sundial::worker::run_worker`] over [`SqsInbox`]) with a firer of its
//! own, so per-processor state (connection pools, adaptive concurrency) is
//! not shared and whatever they share goes through Postgres.
//!
//! `--queue memory` puts the in-process queue in the emulator's place
//! (every processor its own [`MemoryInbox`] on the one queue): the
//! emulator delivers at most about ten messages per long poll and second
//! once a few hundred wait in one queue (docs/ARCHITECTURE.md, local
//! limits), so runs of more than a few hundred occurrences measure it
//! rather than Sundial.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sundial::config::Settings;
use sundial::process::{ProcessReport, Processor};
use sundial::queue::memory::MemoryQueue;
use sundial::queue::sqs::{client_from_env, create_queue, delete_queue, SqsQueue};
use sundial::queue::DispatchQueue;
use sundial::scan::{run_ticks, ScanOptions, TickTotals};
use sundial::worker::{run_worker, Inbox, MemoryInbox, SqsInbox, WorkerOptions};
use tokio::sync::watch;

/// The processors' long-poll wait. Shorter than `sundial process`'s 20 s
/// so that a run ends soon after its last message (a receive in progress
/// is always finished); it does not delay deliveries, which end a long
/// poll as soon as they are receivable.
pub const LONG_POLL: Duration = Duration::from_secs(5);

/// The scanner's cadence: EventBridge's once a minute.
pub const TICK_EVERY: Duration = Duration::from_secs(60);

/// Which queue carries the dispatch messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// The SQS adapter against the emulator (`AWS_ENDPOINT_URL_SQS`).
    #[default]
    Sqs,
    /// The in-process queue.
    Memory,
}

impl QueueKind {
    pub fn describe(self) -> &'static str {
        match self {
            QueueKind::Sqs => "SQS (emulator, a fresh queue per run)",
            QueueKind::Memory => "the in-process queue (instead of the emulator)",
        }
    }
}

/// The queue of one run.
pub enum RunQueue {
    Sqs(SqsQueue),
    Memory(Arc<MemoryQueue>),
}

impl RunQueue {
    /// A fresh queue of `kind`; SQS queues are named
    /// `sundial-bench-<label>-<pid>` (deep queues slow the emulator down,
    /// so every run gets its own).
    pub async fn create(kind: QueueKind, label: &str, settings: &Settings) -> Result<RunQueue> {
        match kind {
            QueueKind::Sqs => Ok(RunQueue::Sqs(fresh_sqs_queue(label, settings).await?)),
            QueueKind::Memory => Ok(RunQueue::Memory(Arc::new(MemoryQueue::default()))),
        }
    }

    fn dispatch(&self) -> Arc<dyn DispatchQueue> {
        match self {
            RunQueue::Sqs(q) => Arc::new(q.clone()),
            RunQueue::Memory(q) => q.clone(),
        }
    }

    /// Deletes an SQS queue (best effort: the emulator forgets it on restart).
    pub async fn delete(self) {
        if let RunQueue::Sqs(queue) = self {
            if let Err(err) = delete_queue(queue.client(), queue.queue_url()).await {
                tracing::warn!(error = %err, "cannot delete the bench queue");
            }
        }
    }
}

async fn fresh_sqs_queue(label: &str, settings: &Settings) -> Result<SqsQueue> {
    std::env::var("AWS_ENDPOINT_URL_SQS").context(
        "this scenario needs the SQS emulator: run it through `make bench` (or `eval \"$(scripts/services.sh env)\"`), or pass --queue memory",
    )?;
    let client = client_from_env().await;
    let name = format!("sundial-bench-{label}-{}", std::process::id());
    let url = create_queue(&client, &name)
        .await
        .context("cannot create a queue on the SQS emulator")?;
    Ok(SqsQueue::new(client, &url, settings.send_concurrency)
        .with_delivery_lead(settings.delivery_lead))
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
    queue: &RunQueue,
    processors: usize,
    until: impl Future<Output = ()>,
) -> Result<Driven> {
    let dispatch = queue.dispatch();
    let processors: Vec<Processor> = (0..processors.max(1))
        .map(|_| Processor::from_settings(pool.clone(), settings, dispatch.clone()))
        .collect::<Result<_, _>>()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = async {
        match queue {
            RunQueue::Sqs(q) => {
                let inbox = || Arc::new(SqsInbox::new(q.clone(), LONG_POLL, None));
                workers(&processors, inbox, &stop_rx).await
            }
            RunQueue::Memory(q) => {
                let inbox = || Arc::new(MemoryInbox::new(q.clone()));
                workers(&processors, inbox, &stop_rx).await
            }
        }
    };
    let opts = ScanOptions::from_settings(settings, "sundial-bench");
    let scanner = run_ticks(pool, &*dispatch, &opts, TICK_EVERY, stop_rx.clone(), |_| {});
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

/// Every processor's worker, each on an inbox of its own, until `stop`.
async fn workers<I: Inbox + 'static>(
    processors: &[Processor],
    inbox: impl Fn() -> Arc<I>,
    stop: &watch::Receiver<bool>,
) -> Vec<ProcessReport> {
    let opts = WorkerOptions::default();
    futures::future::join_all(
        processors
            .iter()
            .map(|processor| run_worker(processor, inbox(), &opts, stop.clone())),
    )
    .await
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
