//! What the scanner does to due rows: claim them under a lease, hand them
//! back when they could not be queued, move `overlap = allow` rows past
//! what is queued; and the backlog figures of due, unclaimed work (and
//! of missed occurrences, overdue beyond the grace).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::Result;
use crate::task::Overlap;

/// An occurrence claimed for dispatch.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claimed {
    pub task_id: i64,
    pub version: i64,
    pub occurrence: DateTime<Utc>,
    pub schedule: String,
    pub timezone: String,
    pub overlap: Overlap,
    pub jitter_secs: i32,
    /// The task's flow (pacing, backoff).
    pub flow: String,
    pub timeout_ms: i32,
    /// The active window and exclusion (an `allow` row's window of
    /// occurrences honours them).
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub exclude: Option<String>,
}

/// How to claim.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// Claim occurrences due up to `now + lookahead`.
    pub lookahead: Duration,
    /// At most this many rows.
    pub limit: i64,
    /// Lease kept past the occurrence and its timeout.
    pub lease: Duration,
    /// Who claims (for operators reading `lease_owner`).
    pub owner: String,
}

/// Claims due occurrences: locks them with `FOR UPDATE SKIP LOCKED`, so
/// concurrent scanners never claim the same row, and leases them until
/// `max(occurrence, now) + jitter + timeout + lease`. Rows of flows that
/// hold their work are left alone: an open breaker whose probe is not due
/// yet, or a backoff beyond the lookahead (the flow's own bookkeeping
/// says when they go; the rows stay due and unleased, so nothing is lost).
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    opts: &ClaimOptions,
) -> Result<Vec<Claimed>> {
    let horizon = now + opts.lookahead;
    let lease_secs = opts.lease.num_milliseconds() as f64 / 1000.0;
    Ok(sqlx::query_as::<_, Claimed>(
        "WITH due AS ( \
             SELECT id FROM tasks \
             WHERE enabled AND next_run_at <= $1 \
               -- Is nobody holding it, or has their lease expired?
               AND (lease_until IS NULL OR lease_until < $2) \
               AND NOT EXISTS (SELECT 1 FROM flow_state s WHERE s.key = tasks.flow \
                   AND ((s.breaker = 'open' AND s.probe_at > $2) OR s.not_before > $1)) \
             ORDER BY next_run_at \
             LIMIT $3 \
             FOR UPDATE SKIP LOCKED \
         ) \
         UPDATE tasks t SET \
             lease_until = GREATEST(t.next_run_at, $2) \
                 + make_interval(secs => t.jitter_secs + t.timeout_ms / 1000.0 + $4), \
             lease_owner = $5 \
         FROM due WHERE t.id = due.id \
         RETURNING t.id AS task_id, t.version, t.next_run_at AS occurrence, t.schedule, \
                   t.timezone, t.overlap, t.jitter_secs, t.flow, t.timeout_ms, \
                   t.start_at, t.end_at, t.exclude",
    )
    .bind(horizon)
    .bind(now)
    .bind(opts.limit)
    .bind(lease_secs)
    .bind(&opts.owner)
    .fetch_all(db)
    .await?)
}

/// Hands occurrences back that were claimed but not handled (the send
/// failed, or a process shut down before firing them), so the next scan
/// dispatches them: the lease is dropped where the task still waits on the
/// occurrence. A task with `overlap = allow` has already moved past it at
/// dispatch; unless its run is recorded, it is moved back to the earliest
/// such occurrence (catch-up then applies as after any outage).
pub async fn release(db: impl PgExecutor<'_>, occurrences: &[(i64, DateTime<Utc>)]) -> Result<u64> {
    if occurrences.is_empty() {
        return Ok(0);
    }
    let (ids, occs): (Vec<i64>, Vec<DateTime<Utc>>) = occurrences.iter().copied().unzip();
    let done = sqlx::query(
        "WITH r AS ( \
             SELECT id, min(occurrence) AS occurrence \
             FROM UNNEST($1::bigint[], $2::timestamptz[]) AS r(id, occurrence) GROUP BY id \
         ) \
         UPDATE tasks t SET next_run_at = r.occurrence, lease_until = NULL, lease_owner = NULL \
         FROM r \
         WHERE t.id = r.id AND ( \
             t.next_run_at = r.occurrence \
             OR (t.overlap = 'allow' AND t.enabled AND t.next_run_at > r.occurrence \
                 AND NOT EXISTS (SELECT 1 FROM task_runs x \
                                 WHERE x.task_id = r.id AND x.scheduled_for = r.occurrence)))",
    )
    .bind(&ids)
    .bind(&occs)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Moves tasks with `overlap = allow` past occurrences that are now safely
/// on the queue, and drops their lease, so the next occurrence is
/// dispatched on time even while this one runs. Guarded: only where the
/// occurrence and version are still those dispatched.
pub async fn advance_dispatched(db: impl PgExecutor<'_>, advances: &[Advance]) -> Result<u64> {
    if advances.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = advances.iter().map(|a| a.task_id).collect();
    let occs: Vec<DateTime<Utc>> = advances.iter().map(|a| a.occurrence).collect();
    let versions: Vec<i64> = advances.iter().map(|a| a.version).collect();
    let nexts: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.next_run_at).collect();
    let leases: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.lease_until).collect();
    let done = sqlx::query(
        "UPDATE tasks t SET next_run_at = a.next_run_at, lease_until = a.lease_until, \
             lease_owner = CASE WHEN a.lease_until IS NULL THEN NULL ELSE t.lease_owner END, \
             enabled = t.enabled AND a.next_run_at IS NOT NULL \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[], $4::timestamptz[], \
                     $5::timestamptz[]) \
             AS a(id, occurrence, version, next_run_at, lease_until) \
         WHERE t.id = a.id AND t.next_run_at = a.occurrence AND t.version = a.version",
    )
    .bind(&ids)
    .bind(&occs)
    .bind(&versions)
    .bind(&nexts)
    .bind(&leases)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A schedule advance for [`advance_dispatched`].
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    pub task_id: i64,
    pub occurrence: DateTime<Utc>,
    pub version: i64,
    /// `None` ends a one-shot schedule (the task is disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Keep a lease until then (the row waits on its last occurrence, see
    /// `scan::ending`); `None` drops the lease.
    pub lease_until: Option<DateTime<Utc>>,
}

/// Due work not yet claimed by anyone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct Backlog {
    /// Occurrences due now and not leased.
    pub due: i64,
    /// Age of the oldest such occurrence, in seconds (0 when none).
    pub oldest_due_age_secs: f64,
    /// Flows whose circuit breaker is open.
    pub open_flows: i64,
    /// Of the due occurrences, those overdue by more than the grace
    /// (`SUNDIAL_MISSED_GRACE_SECS`) whose flow does not hold them on
    /// purpose: nothing is working on them (a stuck pipeline).
    pub missed: i64,
}

/// Backlog figures with the default grace ([`crate::ledger::MISSED_GRACE`]).
pub async fn backlog(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<Backlog> {
    backlog_with_grace(db, now, crate::ledger::MISSED_GRACE).await
}

/// Backlog figures for metrics and `/v1/status`; `missed` counts what is
/// overdue by more than `grace` (`SUNDIAL_MISSED_GRACE_SECS`).
pub async fn backlog_with_grace(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Backlog> {
    Ok(sqlx::query_as::<_, Backlog>(
        "SELECT count(*) AS due, \
                COALESCE(EXTRACT(EPOCH FROM $1 - min(next_run_at))::float8, 0) AS oldest_due_age_secs, \
                (SELECT count(*) FROM flow_state WHERE breaker = 'open') AS open_flows, \
                count(*) FILTER (WHERE next_run_at < $1 - make_interval(secs => $2) \
                    -- Held by an open breaker or a backoff? Then it waits on purpose.
                    AND NOT EXISTS (SELECT 1 FROM flow_state s WHERE s.key = tasks.flow \
                        AND ((s.breaker = 'open' AND s.probe_at > $1) OR s.not_before > $1))) \
                    AS missed \
         FROM tasks \
         WHERE enabled AND next_run_at <= $1 AND (lease_until IS NULL OR lease_until < $1)",
    )
    .bind(now)
    .bind(grace.num_milliseconds() as f64 / 1000.0)
    .fetch_one(db)
    .await?)
}
