//! The scanner's fixed-rate loop ([`run_ticks`]) of `sundial scan --loop`
//! and `sundial dev`: one [`tick`] every interval, a failed one retried
//! after a capped, jittered backoff, and the figures over all ticks.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use super::{tick, ScanOptions, ScanSummary};
use crate::queue::DispatchQueue;

/// Scanner figures over many ticks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickTotals {
    /// Ticks that completed.
    pub ticks: u64,
    /// Ticks that failed (database errors); each was retried after a backoff.
    pub errors: u64,
    /// Occurrences claimed.
    pub claimed: u64,
    /// Occurrences the queue accepted.
    pub enqueued: u64,
    /// Runs deleted by the purges.
    pub purged_runs: u64,
}

/// First wait after a failed tick; doubled per failure, with jitter.
const TICK_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait after failed ticks.
const TICK_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Ticks every `every` until `shutdown` turns true (or its sender is
/// gone): the loop of `sundial scan --loop` and `sundial dev`. A failed
/// tick (database down) is logged and retried after a capped, jittered
/// backoff; the loop never ends by itself. A tick in progress is finished,
/// never cancelled, so it cannot leave claimed rows behind.
pub async fn run_ticks(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    opts: &ScanOptions,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut each: impl FnMut(&ScanSummary),
) -> TickTotals {
    let mut totals = TickTotals::default();
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Fixed-rate, as EventBridge ticks: the next tick is due `every`
        // after this one started, however long it took.
        let started = tokio::time::Instant::now();
        let wait = match tick(pool, queue, opts).await {
            Ok(summary) => {
                failures = 0;
                totals.ticks += 1;
                totals.claimed += summary.claimed;
                totals.enqueued += summary.enqueued;
                totals.purged_runs += summary.purged_runs;
                each(&summary);
                every.saturating_sub(started.elapsed())
            }
            Err(err) => {
                totals.errors += 1;
                let wait = crate::worker::backoff(failures, TICK_BACKOFF, TICK_BACKOFF_MAX);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "scan failed; retrying");
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    totals
}
