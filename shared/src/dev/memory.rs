//! [`consume_memory`]: the processor fed from the in-process queue as one
//! continuous stream, with the graceful shutdown that makes a non-durable
//! queue safe: unsettled occurrences are handed back to the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

use super::{defaults, grace_over, stopped, DevError};
use crate::message::DispatchMessage;
use crate::process::{Disposition, ProcessReport, Processor};
use crate::queue::memory::MemoryQueue;
use crate::queue::Outgoing;
use crate::store;

/// Most messages taken from the memory queue per receive.
const RECEIVE_MAX: usize = 100;
/// Longest wait of one memory-queue receive (shutdown ends it earlier).
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

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
    /// (recorded meanwhile, or the task was edited or deleted).
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
