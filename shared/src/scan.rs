//! The scan: move due occurrences from Postgres onto the dispatch queue.
//!
//! 1. Compute first runs of rows inserted with plain SQL.
//! 2. Claim due occurrences page by page (`FOR UPDATE SKIP LOCKED` + lease),
//!    looking ahead so an occurrence is sent with `DelaySeconds` and fires
//!    on its second instead of on the scanner's tick.
//! 3. Release the lease of every message the queue did not accept, so
//!    nothing is lost when the queue is down.
//! 4. Stop when nothing is due or the time budget is spent, and report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::firetime;
use crate::message::DispatchMessage;
use crate::queue::{DispatchQueue, Outgoing};
use crate::store::{self, Advance, ClaimOptions, Claimed, StoreError};
use crate::task::{Overlap, Timing};

mod ending;

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
    // Newly inserted rows first, so they can be claimed in this very scan.
    loop {
        let page = store::schedule_new(pool, Utc::now(), opts.page_size).await?;
        summary.scheduled += page.scheduled;
        summary.invalid += page.invalid;
        if page.scheduled + page.invalid + page.ended < opts.page_size as u64
            || started.elapsed() >= opts.budget
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
        // Claim and pace in one transaction: the flows' pacing slots move
        // only for occurrences that are really claimed.
        let mut tx = pool.begin().await.map_err(StoreError::from)?;
        let mut claimed = store::claim_due(&mut *tx, now, &claim).await?;
        if claimed.is_empty() {
            tx.commit().await.map_err(StoreError::from)?;
            break;
        }
        claimed.sort_by_key(|c| (c.occurrence, c.task_id));
        let late = crate::health::late_claims(&mut tx, &claimed, now, opts.missed_grace).await?;
        summary.pages += 1;
        summary.claimed += claimed.len() as u64;
        let page_was_full = claimed.len() as i64 >= opts.page_size;
        let horizon = now + claim.lookahead;
        let windows: Vec<Window> = claimed.iter().map(|c| window(c, now, horizon)).collect();
        // Delays count from now, after the claim query, so that messages are
        // not late by the time the claim took.
        let send_now = Utc::now();
        let (mut outgoing, owner) = messages_of(&claimed, &windows, send_now);
        summary.paced += pace(
            &mut tx,
            &claimed,
            &owner,
            &mut outgoing,
            send_now,
            opts.lease,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let sent_ok = dispatch_page(
            pool,
            queue,
            &claimed,
            &windows,
            outgoing,
            &owner,
            &mut summary,
        )
        .await?;
        // Late occurrences of a refused page were released: the backlog
        // below counts them.
        if sent_ok {
            summary.late_claimed += late;
        }
        // A queue that refuses messages is down or throttling hard: stop
        // instead of claiming (and releasing) page after page.
        if !sent_ok || !page_was_full {
            break;
        }
    }

    let grace =
        chrono::Duration::from_std(opts.missed_grace).unwrap_or(crate::ledger::MISSED_GRACE);
    let backlog = store::backlog_with_grace(pool, Utc::now(), grace).await?;
    summary.backlog = backlog.due;
    summary.oldest_due_age_secs = backlog.oldest_due_age_secs;
    summary.missed = backlog.missed + i64::try_from(summary.late_claimed).unwrap_or(i64::MAX);
    summary.flows_open = backlog.open_flows;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
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
    if let Some(notifier) = &opts.notifier {
        let deadline = tokio::time::Instant::from_std(started + opts.budget);
        summary.notifications = notifier.scanner_round(deadline).await;
    }
    crate::health::record_tick(pool, &opts.owner, started_at, &summary).await;
    Ok(summary)
}

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

/// Deletes run history older than the retention, one bounded chunk.
/// Returns the rows deleted.
pub async fn purge_history(pool: &PgPool, retention_days: u32) -> Result<u64, ScanError> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
    Ok(store::purge_runs(pool, cutoff, PURGE_CHUNK).await?)
}

/// Most occurrences of one `overlap = allow` task sent per claim: enough
/// for a per-second schedule across the longest lookahead SQS can delay.
pub const MAX_OCCURRENCES_PER_TASK: usize = 900;

/// The occurrences of one claimed row that this scan sends, and where the
/// task continues afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Occurrences to send, in order; the first is the claimed one.
    pub occurrences: Vec<DateTime<Utc>>,
    /// For `overlap = allow`: the next occurrence after the window (`None`
    /// when the schedule ends). `forbid` tasks move on when their run is
    /// recorded instead.
    pub next: Option<Option<DateTime<Utc>>>,
}

/// Which occurrences of a claimed row go out now.
///
/// A `forbid` task sends only its claimed occurrence: the next one is
/// dispatched when this one is recorded (by the processor, within the
/// lookahead, or by a later scan). An `allow` task sends every occurrence
/// due up to `horizon` (so sub-minute schedules fire at full rate although
/// the scanner runs once a minute), after firing an overdue one once
/// (catch-up `skip`: the rest continues from `now`).
pub fn window(c: &Claimed, now: DateTime<Utc>, horizon: DateTime<Utc>) -> Window {
    let mut occurrences = vec![c.occurrence];
    if c.overlap != Overlap::Allow {
        return Window {
            occurrences,
            next: None,
        };
    }
    let bounds = crate::window::TaskWindow {
        start_at: c.start_at,
        end_at: c.end_at,
        exclude: c.exclude.clone(),
    }
    .bounds();
    let timing = Timing::parse(&c.schedule, &c.timezone, Default::default(), 0)
        .and_then(|t| Ok(t.within(bounds?)));
    let Ok(timing) = timing else {
        // Unreadable schedules only come from plain SQL; the processor
        // drops the message and the row is disabled on its next edit.
        return Window {
            occurrences,
            next: Some(None),
        };
    };
    // Window and exclusion apply here as everywhere a next run is computed.
    let mut next = timing.next_after(c.occurrence.max(now)).at();
    while let Some(at) = next {
        if at > horizon || occurrences.len() >= MAX_OCCURRENCES_PER_TASK {
            break;
        }
        occurrences.push(at);
        next = timing.next_after(at).at();
    }
    Window {
        occurrences,
        next: Some(next),
    }
}

/// Moves the fire times of a page's messages as their flows ask (pacing,
/// backoff; see [`store::pace_dispatch`]), in the claim transaction, and
/// keeps the leases of `forbid` rows until after their new fire time.
/// Returns how many messages it moved.
async fn pace(
    tx: &mut sqlx::PgConnection,
    claimed: &[Claimed],
    owner: &[usize],
    outgoing: &mut [Outgoing],
    send_now: DateTime<Utc>,
    lease: Duration,
) -> Result<u64, ScanError> {
    let wants: Vec<(&str, DateTime<Utc>)> = outgoing
        .iter()
        .zip(owner)
        .map(|(o, &i)| {
            let at = o.message.fire_at.unwrap_or(o.message.occurrence);
            (claimed[i].flow.as_str(), at)
        })
        .collect();
    let paced = store::pace_dispatch(tx, send_now, &wants).await?;
    let mut moved = 0;
    let mut leases = Vec::new();
    for ((out, &i), at) in outgoing.iter_mut().zip(owner).zip(paced) {
        let wanted = out.message.fire_at.unwrap_or(out.message.occurrence);
        if at <= wanted {
            continue;
        }
        moved += 1;
        out.message = out.message.held_until(at);
        out.delay = firetime::paced_delay(at, send_now);
        let c = &claimed[i];
        if c.overlap != Overlap::Allow {
            let keep = Duration::from_millis(c.timeout_ms.max(0) as u64) + lease;
            leases.push((
                c.task_id,
                at + chrono::Duration::from_std(keep).unwrap_or_default(),
            ));
        }
    }
    store::extend_leases(&mut *tx, &leases).await?;
    Ok(moved)
}

/// Sends one claimed page; returns false when the queue refused messages.
async fn dispatch_page(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    claimed: &[Claimed],
    windows: &[Window],
    outgoing: Vec<Outgoing>,
    owner: &[usize],
    summary: &mut ScanSummary,
) -> Result<bool, ScanError> {
    let report = queue.send(&outgoing).await;
    summary.send_calls += report.calls as u64;
    summary.failed += report.failed.len() as u64;
    summary.enqueued += (outgoing.len() - report.failed.len()) as u64;
    // The first refused occurrence of each row.
    let mut first_failed: HashMap<usize, DateTime<Utc>> = HashMap::new();
    for &k in &report.failed {
        if let (Some(&i), Some(out)) = (owner.get(k), outgoing.get(k)) {
            first_failed.entry(i).or_insert(out.message.occurrence);
        }
    }
    if !report.failed.is_empty() {
        tracing::warn!(
            failed = report.failed.len(),
            error = report.first_error.as_deref().unwrap_or("unknown"),
            "queue refused messages; releasing their leases"
        );
        if summary.first_error.is_none() {
            summary.first_error = report.first_error.clone();
        }
        // `forbid` rows: drop the lease, the next scan sends it again.
        let released: Vec<(i64, DateTime<Utc>)> = first_failed
            .iter()
            .filter(|(i, _)| windows[**i].next.is_none())
            .map(|(i, at)| (claimed[*i].task_id, *at))
            .collect();
        store::release(pool, &released).await?;
    }
    store::advance_dispatched(pool, &advances(claimed, windows, &first_failed)).await?;
    Ok(report.failed.is_empty())
}

/// One message per occurrence of each window, timed to fire at its
/// occurrence plus jitter; with the index of the claimed row it belongs to.
fn messages_of(
    claimed: &[Claimed],
    windows: &[Window],
    send_now: DateTime<Utc>,
) -> (Vec<Outgoing>, Vec<usize>) {
    let mut outgoing = Vec::new();
    let mut owner = Vec::new();
    for (i, (c, w)) in claimed.iter().zip(windows).enumerate() {
        for &occurrence in &w.occurrences {
            let at = firetime::fire_at(c.task_id, occurrence, c.jitter_secs);
            outgoing.push(Outgoing {
                message: DispatchMessage::new(c.task_id, occurrence, c.version).firing_at(at),
                delay: firetime::delay_until(at, send_now),
            });
            owner.push(i);
        }
    }
    (outgoing, owner)
}

/// `allow` rows move on past what is safely queued: to the first refused
/// occurrence if any (it goes out again next scan), else past the window.
fn advances(
    claimed: &[Claimed],
    windows: &[Window],
    first_failed: &HashMap<usize, DateTime<Utc>>,
) -> Vec<Advance> {
    claimed
        .iter()
        .zip(windows)
        .enumerate()
        .filter_map(|(i, (c, w))| {
            let next = w.next?;
            let failed = first_failed.get(&i).copied();
            let (next_run_at, lease_until) = match (failed, ending::hold_last(c, w)) {
                (None, Some((last, lease))) => (Some(last), Some(lease)),
                _ => (failed.or(next), None),
            };
            Some(Advance {
                task_id: c.task_id,
                occurrence: c.occurrence,
                version: c.version,
                next_run_at,
                lease_until,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(schedule: &str, overlap: Overlap, occurrence: DateTime<Utc>) -> Claimed {
        Claimed {
            task_id: 9,
            version: 1,
            occurrence,
            schedule: schedule.into(),
            timezone: "UTC".into(),
            overlap,
            jitter_secs: 0,
            flow: "example.com:443".into(),
            timeout_ms: 1000,
            start_at: None,
            end_at: None,
            exclude: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn forbid_sends_only_the_claimed_occurrence() {
        let now = t("2026-12-01T09:00:00.550Z");
        let c = claimed(
            "rate(10 seconds)",
            Overlap::Forbid,
            t("2026-12-01T09:00:10Z"),
        );
        let w = window(&c, now, now + chrono::Duration::seconds(75));
        assert_eq!(w.occurrences, vec![t("2026-12-01T09:00:10Z")]);
        assert_eq!(w.next, None);
    }

    #[test]
    fn allow_sends_every_occurrence_within_the_lookahead() {
        let now = t("2026-12-01T09:00:00.550Z");
        let c = claimed(
            "rate(10 seconds)",
            Overlap::Allow,
            t("2026-12-01T09:00:10Z"),
        );
        let w = window(&c, now, now + chrono::Duration::seconds(75));
        let expected: Vec<_> = (1..=7)
            .map(|k| t("2026-12-01T09:00:00Z") + chrono::Duration::seconds(10 * k))
            .collect();
        assert_eq!(w.occurrences, expected);
        assert_eq!(w.next, Some(Some(t("2026-12-01T09:01:20Z"))));
    }

    #[test]
    fn allow_fires_an_overdue_occurrence_once_then_continues_from_now() {
        let now = t("2026-12-01T09:00:00.550Z");
        let c = claimed("rate(1 minute)", Overlap::Allow, t("2026-12-01T07:00:00Z"));
        let w = window(&c, now, now + chrono::Duration::seconds(75));
        assert_eq!(
            w.occurrences,
            vec![t("2026-12-01T07:00:00Z"), t("2026-12-01T09:01:00Z")]
        );
        assert_eq!(w.next, Some(Some(t("2026-12-01T09:02:00Z"))));
    }

    #[test]
    fn a_window_is_bounded() {
        let now = t("2026-12-01T09:00:00Z");
        let c = claimed("rate(1 second)", Overlap::Allow, now);
        let w = window(&c, now, now + chrono::Duration::hours(1));
        assert_eq!(w.occurrences.len(), MAX_OCCURRENCES_PER_TASK);
    }
}
