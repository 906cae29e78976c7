//! Occurrences recorded as skipped without a message of their own: those
//! of an `overlap = skip` task that came due while its previous run was in
//! flight (see [`crate::process::overlap`]), and manual triggers the policy
//! refused.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Result;

/// A skipped occurrence to record.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedOccurrence {
    pub task_id: i64,
    pub occurrence: DateTime<Utc>,
    /// Why, e.g. "overlap: the run of ... was still in flight".
    pub reason: String,
    /// A refused manual trigger rather than a scheduled occurrence.
    pub manual: bool,
}

/// Records skipped occurrences in one statement; an occurrence that has a
/// run already keeps it (a duplicate delivery records nothing twice).
/// Returns the rows inserted.
pub async fn record_skips(
    db: impl PgExecutor<'_>,
    skips: &[SkippedOccurrence],
    now: DateTime<Utc>,
) -> Result<u64> {
    if skips.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = skips.iter().map(|s| s.task_id).collect();
    let occs: Vec<DateTime<Utc>> = skips.iter().map(|s| s.occurrence).collect();
    let reasons: Vec<String> = skips
        .iter()
        .map(|s| crate::sanitise::clean_text(&s.reason, 512))
        .collect();
    let manual: Vec<bool> = skips.iter().map(|s| s.manual).collect();
    let done = sqlx::query(
        "INSERT INTO task_runs (task_id, scheduled_for, attempts, finished_at, status, error, manual, \
                                trigger) \
         SELECT s.id, s.occurrence, 1, $5, 'skipped', s.reason, s.manual, \
                CASE WHEN s.manual THEN 'manual' ELSE 'schedule' END \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::boolean[]) \
             AS s(id, occurrence, reason, manual) \
         -- A task deleted meanwhile has nothing to record.
         WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = s.id) \
         ON CONFLICT (task_id, scheduled_for, rerun) DO NOTHING",
    )
    .bind(&ids)
    .bind(&occs)
    .bind(&reasons)
    .bind(&manual)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
