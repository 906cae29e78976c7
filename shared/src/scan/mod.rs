//! The scan: move due occurrences from Postgres onto the dispatch queue.
//!
//! 1. Compute first runs of rows inserted with plain SQL.
//! 2. Claim due occurrences page by page (`FOR UPDATE SKIP LOCKED` + lease),
//!    looking ahead so an occurrence is sent with `DelaySeconds` and fires
//!    on its second instead of on the scanner's tick.
//! 3. Release the lease of every message the queue did not accept, so
//!    nothing is lost when the queue is down.
//! 4. Stop when nothing is due or the time budget is spent, and report.

//!
//! One file per part: `page` (claim, pace and send one page), `lookahead`
//! (which occurrences of a claimed row go out: [`window`]), `ending` (the
//! last occurrences of an `allow` row), `ticks` (the fixed-rate loop,
//! [`run_ticks`]).

use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;

use crate::queue::DispatchQueue;
use crate::store::{self, ClaimOptions, StoreError};

mod ending;
mod lookahead;
mod page;
mod ticks;

pub use lookahead::{window, Window, MAX_OCCURRENCES_PER_TASK};
pub use ticks::{run_ticks, TickTotals};

/// How a scan runs.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Claim occurrences due within this window from now.
    pub lookahead: Duration,
    /// Rows claimed per page.
    pub page_size: i64,
    /// Lease beyond the occurrence and its timeout.
    pub lease: Duration,
    /// Stop starting new pages after this long.
    pub budget: Duration,
    /// Written to `lease_owner`.
    pub owner: String,
    /// Run history kept by [`tick`]'s purge, in days.
    pub retention_days: u32,
    /// Delivers the notifications still due at the end of each [`tick`].
    pub notifier: Option<std::sync::Arc<crate::notify::Notifier>>,
    /// Overdue for longer, with nothing holding it, counts as missed
    /// (`SUNDIAL_MISSED_GRACE_SECS`).
    pub missed_grace: Duration,
}

impl ScanOptions {
    /// Options from the process settings.
    pub fn from_settings(settings: &crate::config::Settings, owner: impl Into<String>) -> Self {
        ScanOptions {
            lookahead: settings.lookahead,
            page_size: settings.page_size,
            lease: settings.lease,
            budget: settings.scan_budget,
            owner: owner.into(),
            retention_days: settings.run_retention_days,
            notifier: None,
            missed_grace: settings.missed_grace,
        }
    }
}

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScanSummary {
    /// SQL-inserted rows that got their first occurrence.
    pub scheduled: u64,
    /// SQL-inserted rows disabled for an invalid schedule.
    pub invalid: u64,
    /// Occurrences claimed.
    pub claimed: u64,
    /// Occurrences accepted by the queue (a claimed `overlap = allow` row
    /// sends every occurrence within the lookahead, so this can exceed
    /// `claimed`).
    pub enqueued: u64,
    /// Occurrences the queue refused (their leases were released).
    pub failed: u64,
    /// Claim pages.
    pub pages: u64,
    /// Calls made to the queue (`SendMessageBatch` calls on SQS).
    pub send_calls: u64,
    /// Due and unclaimed occurrences left after the scan.
    pub backlog: i64,
    /// Age of the oldest of them.
    pub oldest_due_age_secs: f64,
    /// Occurrences this scan found overdue beyond the grace
    /// (`SUNDIAL_MISSED_GRACE_SECS`) with nothing holding them
    /// (`MissedOccurrences`): those it claimed that late (`late_claimed`:
    /// after a scanner outage, say) plus those still unclaimed at the end.
    /// One per task: the occurrence the task waits on.
    pub missed: i64,
    /// Of `missed`, occurrences this scan claimed and sent (catch-up then
    /// applies to them).
    pub late_claimed: u64,
    /// Whether the time budget ended the scan.
    pub budget_exhausted: bool,
    /// The first queue error, if any.
    pub first_error: Option<String>,
    /// Wall time of the scan.
    pub elapsed_ms: u64,
    /// Runs deleted by the retention purge of this tick.
    pub purged_runs: u64,
    /// Messages whose fire time flow control moved (pacing, backoff).
    pub paced: u64,
    /// Flows whose circuit breaker is open after the scan.
    pub flows_open: i64,
    /// Paused tasks resumed because their pause's `until` passed.
    pub resumed: u64,
    /// Notifications delivered (or given up) by this tick.
    pub notifications: crate::notify::DeliveryReport,
    /// Backfill messages this tick sent ([`crate::backfill::continue_backfills`]).
    pub backfill_dispatched: u64,
}

/// A scan could not talk to the database.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs one scan.
pub async fn scan(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    opts: &ScanOptions,
) -> Result<ScanSummary, ScanError> {
    let started = Instant::now();
    // Pauses that ended resume first, and are scheduled below.
    let mut summary = ScanSummary {
        resumed: store::resume_expired(pool, Utc::now()).await?,
        ..Default::default()
    };
    schedule_new_rows(pool, opts, started, &mut summary).await?;
    let claim = ClaimOptions {
        lookahead: chrono::Duration::from_std(opts.lookahead).unwrap_or_default(),
        limit: opts.page_size,
        lease: chrono::Duration::from_std(opts.lease).unwrap_or_default(),
        owner: opts.owner.clone(),
    };
    loop {
        if started.elapsed() >= opts.budget {
            summary.budget_exhausted = true;
            break;
        }
        if !page::scan_page(pool, queue, opts, &claim, &mut summary).await? {
            break;
        }
    }
    count_backlog(pool, opts, &mut summary).await?;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Computes the first runs of rows inserted with plain SQL, page by page,
/// first: so they can be claimed in this very scan.
async fn schedule_new_rows(
    pool: &PgPool,
    opts: &ScanOptions,
    started: Instant,
    summary: &mut ScanSummary,
) -> Result<(), ScanError> {
    loop {
        let page = store::schedule_new(pool, Utc::now(), opts.page_size).await?;
        summary.scheduled += page.scheduled;
        summary.invalid += page.invalid;
        if page.scheduled + page.invalid + page.ended < opts.page_size as u64
            || started.elapsed() >= opts.budget
        {
            return Ok(());
        }
    }
}

/// What is left due after the scan: the backlog, its age, what is missed,
/// the open flows.
async fn count_backlog(
    pool: &PgPool,
    opts: &ScanOptions,
    summary: &mut ScanSummary,
) -> Result<(), ScanError> {
    let grace =
        chrono::Duration::from_std(opts.missed_grace).unwrap_or(crate::ledger::MISSED_GRACE);
    let backlog = store::backlog_with_grace(pool, Utc::now(), grace).await?;
    summary.backlog = backlog.due;
    summary.oldest_due_age_secs = backlog.oldest_due_age_secs;
    summary.missed = backlog.missed + i64::try_from(summary.late_claimed).unwrap_or(i64::MAX);
    summary.flows_open = backlog.open_flows;
    Ok(())
}

/// Runs deleted per tick at most (an indexed, bounded `DELETE`).
pub const PURGE_CHUNK: i64 = 10_000;

/// One scanner tick, the same for the scanner Lambda, `sundial scan` and
/// `sundial dev`: a [`scan`], then a bounded chunk of the run-history
/// purge, then the heartbeat ([`crate::health::record_tick`]). A failed
/// purge or heartbeat is logged and retried on the next tick; it never
/// fails the scan.
pub async fn tick(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    opts: &ScanOptions,
) -> Result<ScanSummary, ScanError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let mut summary = scan(pool, queue, opts).await?;
    // Unfinished backfills go on with what is left of the budget.
    let left = opts.budget.saturating_sub(started.elapsed());
    summary.backfill_dispatched = crate::backfill::continue_backfills(pool, queue, left)
        .await
        .dispatched;
    match purge_history(pool, opts.retention_days).await {
        Ok(n) => summary.purged_runs = n,
        Err(err) => tracing::warn!(error = %err, "cannot purge old runs; trying again next tick"),
    }
    if let Err(err) = store::forget_fire_claims(pool).await {
        tracing::warn!(error = %err, "cannot forget expired fire claims; trying again next tick");
    }
    if let Some(notifier) = &opts.notifier {
        let deadline = tokio::time::Instant::from_std(started + opts.budget);
        summary.notifications = notifier.scanner_round(deadline).await;
    }
    crate::health::record_tick(pool, &opts.owner, started_at, &summary).await;
    Ok(summary)
}

/// Deletes run history older than the retention, one bounded chunk.
/// Returns the rows deleted.
pub async fn purge_history(pool: &PgPool, retention_days: u32) -> Result<u64, ScanError> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
    Ok(store::purge_runs(pool, cutoff, PURGE_CHUNK).await?)
}

#[cfg(test)]
mod tests;
