//! [`consume_memory`]: the processor fed from the in-process queue as one
//! continuous stream, with the graceful shutdown that makes a non-durable
//! queue safe: unsettled occurrences are handed back to the database.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

use super::{defaults, grace_over, DevError};
use crate::process::{ProcessReport, Processor};
use crate::queue::memory::MemoryQueue;
use crate::store;
use crate::worker::{run_worker, MemoryInbox, WorkerOptions};

/// How [`consume_memory`] runs.
#[derive(Debug, Clone)]
pub struct MemoryConsumeOptions {
    /// Messages received and not yet settled, at most.
    pub max_outstanding: usize,
    /// Time in-flight requests get after shutdown before they are aborted.
    pub grace: Duration,
    /// Delay before a handed-back message is delivered again (at most:
    /// the processor may ask for less).
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
    /// (recorded meanwhile, or the task was edited or deleted).
    pub released: u64,
    /// Manual and backfill firings dropped (they hold no lease, so nothing
    /// fires them again).
    pub manual_dropped: u64,
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
    let inbox =
        Arc::new(MemoryInbox::new(queue.clone()).with_redeliver_delay(opts.redeliver_delay));
    let worker = WorkerOptions {
        max_outstanding: opts.max_outstanding.max(1),
        deadline: None,
    };
    let mut processing = Box::pin(run_worker(
        processor,
        inbox.clone(),
        &worker,
        shutdown.clone(),
    ));
    let (process, aborted) = tokio::select! {
        report = &mut processing => (report, false),
        () = grace_over(shutdown, opts.grace) => (ProcessReport::default(), true),
    };
    // Dropping the processing future cancels the requests still in flight.
    drop(processing);

    let report = hand_back(pool, &queue, &inbox, aborted).await?;
    Ok((process, report))
}

/// After processing stopped: closes and drains the queue, and releases
/// the lease of every occurrence not settled (aborted, refused, or still
/// queued), so the scanner dispatches them again; manual and backfill
/// firings hold no lease and are dropped.
async fn hand_back(
    pool: &PgPool,
    queue: &MemoryQueue,
    inbox: &MemoryInbox,
    aborted: bool,
) -> Result<MemoryConsumeReport, DevError> {
    queue.close();
    let drained = queue.drain();
    let (unsettled, refused) = inbox.take_unsettled();
    if aborted {
        tracing::warn!(
            aborted = unsettled.len(),
            "grace period over; aborting in-flight requests"
        );
    }
    let all = || drained.iter().chain(&unsettled).chain(&refused);
    let mut occurrences: Vec<(i64, DateTime<Utc>)> = all()
        .filter(|m| !m.off_schedule())
        .map(|m| (m.task_id, m.occurrence))
        .collect();
    occurrences.sort_unstable();
    occurrences.dedup();
    let released = release_leases(pool, &occurrences).await?;
    // The aborted ones were claimed for firing: a restart fires them at once.
    let claimed: Vec<String> = unsettled.iter().map(|m| m.claim_key()).collect();
    if let Err(err) = store::release_fire_claims(pool, &claimed).await {
        tracing::warn!(error = %err, "cannot release fire claims; a restart fires those after they expire");
    }
    let report = MemoryConsumeReport {
        aborted,
        unsettled: unsettled.len() as u64,
        drained: drained.len() as u64,
        redelivered: inbox.redelivered(),
        handed_back: occurrences.len() as u64,
        released,
        manual_dropped: all().filter(|m| m.off_schedule()).count() as u64,
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
    Ok(report)
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
