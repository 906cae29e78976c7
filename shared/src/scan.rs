//! The scan: move due occurrences from Postgres onto the dispatch queue.
//!
//! 1. Compute first runs of rows inserted with plain SQL.
//! 2. Claim due occurrences page by page (`FOR UPDATE SKIP LOCKED` + lease),
//!    looking ahead so an occurrence is sent with `DelaySeconds` and fires
//!    on its second instead of on the scanner's tick.
//! 3. Release the lease of every message the queue did not accept, so
//!    nothing is lost when the queue is down.
//! 4. Stop when nothing is due or the time budget is spent, and report.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::message::DispatchMessage;
use crate::queue::{DispatchQueue, Outgoing, MAX_DELAY};
use crate::store::{self, Advance, ClaimOptions, Claimed, StoreError};
use crate::task::{Overlap, Timing};

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
    /// Occurrences accepted by the queue.
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
    /// Whether the time budget ended the scan.
    pub budget_exhausted: bool,
    /// The first queue error, if any.
    pub first_error: Option<String>,
    /// Wall time of the scan.
    pub elapsed_ms: u64,
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
    let mut summary = ScanSummary::default();

    // Newly inserted rows first, so they can be claimed in this very scan.
    loop {
        let page = store::schedule_new(pool, Utc::now(), opts.page_size).await?;
        summary.scheduled += page.scheduled;
        summary.invalid += page.invalid;
        if page.scheduled + page.invalid < opts.page_size as u64 || started.elapsed() >= opts.budget
        {
            break;
        }
    }

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
        let now = Utc::now();
        let claimed = store::claim_due(pool, now, &claim).await?;
        if claimed.is_empty() {
            break;
        }
        summary.pages += 1;
        summary.claimed += claimed.len() as u64;
        let page_was_full = claimed.len() as i64 >= opts.page_size;
        let sent_ok = dispatch_page(pool, queue, &claimed, now, &mut summary).await?;
        // A queue that refuses messages is down or throttling hard: stop
        // instead of claiming (and releasing) page after page.
        if !sent_ok || !page_was_full {
            break;
        }
    }

    let backlog = store::backlog(pool, Utc::now()).await?;
    summary.backlog = backlog.due;
    summary.oldest_due_age_secs = backlog.oldest_due_age_secs;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Deletes run history older than the retention, a bounded chunk per call
/// (the scanner calls it after each scan). Returns the rows deleted.
pub async fn purge_history(pool: &PgPool, retention_days: u32) -> Result<u64, ScanError> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
    Ok(store::purge_runs(pool, cutoff, 10_000).await?)
}

/// Sends one claimed page; returns false when the queue refused messages.
async fn dispatch_page(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    claimed: &[Claimed],
    now: DateTime<Utc>,
    summary: &mut ScanSummary,
) -> Result<bool, ScanError> {
    // Delays count from now, after the claim query, so that messages are
    // not late by the time the claim took.
    let send_now = Utc::now();
    let outgoing: Vec<Outgoing> = claimed
        .iter()
        .map(|c| Outgoing {
            message: DispatchMessage::new(c.task_id, c.occurrence, c.version),
            delay: delay_until(c, send_now),
        })
        .collect();
    let report = queue.send(&outgoing).await;
    summary.send_calls += report.calls as u64;
    summary.failed += report.failed.len() as u64;
    summary.enqueued += (claimed.len() - report.failed.len()) as u64;
    if !report.failed.is_empty() {
        tracing::warn!(
            failed = report.failed.len(),
            error = report.first_error.as_deref().unwrap_or("unknown"),
            "queue refused messages; releasing their leases"
        );
        if summary.first_error.is_none() {
            summary.first_error = report.first_error.clone();
        }
        let released: Vec<(i64, DateTime<Utc>)> = report
            .failed
            .iter()
            .filter_map(|&i| claimed.get(i))
            .map(|c| (c.task_id, c.occurrence))
            .collect();
        store::release(pool, &released).await?;
    }

    // Tasks that allow overlap move on now that their occurrence is queued.
    let failed: std::collections::HashSet<usize> = report.failed.iter().copied().collect();
    let advances: Vec<Advance> = claimed
        .iter()
        .enumerate()
        .filter(|(i, c)| c.overlap == Overlap::Allow && !failed.contains(i))
        .filter_map(|(_, c)| {
            let timing = Timing::parse(&c.schedule, &c.timezone, Default::default(), 0).ok()?;
            Some(Advance {
                task_id: c.task_id,
                occurrence: c.occurrence,
                version: c.version,
                next_run_at: timing
                    .schedule
                    .next_after(c.occurrence.max(now), timing.zone),
            })
        })
        .collect();
    store::advance_dispatched(pool, &advances).await?;
    Ok(report.failed.is_empty())
}

/// Time from `now` until the occurrence should fire: its due time plus the
/// task's jitter, capped to what SQS can delay.
pub fn delay_until(c: &Claimed, now: DateTime<Utc>) -> Duration {
    let fire_at = c.occurrence + chrono::Duration::milliseconds(jitter_ms(c));
    (fire_at - now).to_std().unwrap_or_default().min(MAX_DELAY)
}

/// A stable spread in `0..=jitter_secs` seconds: the same occurrence gets
/// the same jitter on every dispatch, different tasks different ones.
fn jitter_ms(c: &Claimed) -> i64 {
    if c.jitter_secs <= 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (c.task_id, c.occurrence.timestamp_millis()).hash(&mut h);
    (h.finish() % (c.jitter_secs as u64 * 1000 + 1)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(occurrence: DateTime<Utc>, jitter_secs: i32) -> Claimed {
        Claimed {
            task_id: 9,
            version: 1,
            occurrence,
            schedule: "rate(1 minute)".into(),
            timezone: "UTC".into(),
            overlap: Overlap::Forbid,
            jitter_secs,
        }
    }

    #[test]
    fn delay_matches_the_occurrence() {
        let now = Utc::now();
        let c = claimed(now + chrono::Duration::seconds(45), 0);
        assert_eq!(delay_until(&c, now), Duration::from_secs(45));
        // Overdue occurrences go at once; far ones are capped at 15 minutes.
        let c = claimed(now - chrono::Duration::seconds(5), 0);
        assert_eq!(delay_until(&c, now), Duration::ZERO);
        let c = claimed(now + chrono::Duration::hours(1), 0);
        assert_eq!(delay_until(&c, now), MAX_DELAY);
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let now = Utc::now();
        let c = claimed(now, 30);
        let a = delay_until(&c, now);
        assert_eq!(a, delay_until(&c, now));
        assert!(a <= Duration::from_secs(30));
    }
}
