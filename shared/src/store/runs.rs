//! Run history: a task's runs page by page, figures over a window, and the
//! bounded retention purge.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::Result;

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub task_id: i64,
    pub scheduled_for: DateTime<Utc>,
    pub attempts: i32,
    pub fired_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub status: String,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    pub manual: bool,
    pub response_excerpt: Option<String>,
}

/// A task's runs, newest occurrence first; `before` is the cursor (an
/// occurrence) for the next page.
pub async fn list_runs(
    db: impl PgExecutor<'_>,
    task_id: i64,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Run>> {
    Ok(sqlx::query_as::<_, Run>(
        "SELECT id, task_id, scheduled_for, attempts, fired_at, finished_at, status, \
                http_status, latency_ms, error, manual, response_excerpt \
         FROM task_runs \
         WHERE task_id = $1 AND ($2::timestamptz IS NULL OR scheduled_for < $2) \
         ORDER BY scheduled_for DESC LIMIT $3",
    )
    .bind(task_id)
    .bind(before)
    .bind(limit.clamp(1, 500))
    .fetch_all(db)
    .await?)
}

/// Run figures over a window, for `/v1/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunStats {
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub skipped: i64,
    /// Lateness percentiles in milliseconds: first attempts of scheduled
    /// runs, fired_at − scheduled_for − pacing (the EMF `FireLagMs`).
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
}

/// Figures for runs finished since `since`.
pub async fn run_stats(db: impl PgExecutor<'_>, since: DateTime<Utc>) -> Result<RunStats> {
    Ok(sqlx::query_as::<_, RunStats>(concat!(
        "SELECT count(*) AS runs, \
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
                count(*) FILTER (WHERE status = 'failed') AS failed, \
                count(*) FILTER (WHERE status = 'timed_out') AS timed_out, \
                count(*) FILTER (WHERE status = 'skipped') AS skipped, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) \
                    FILTER (WHERE lag_ms IS NOT NULL) AS lag_p50_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) \
                    FILTER (WHERE lag_ms IS NOT NULL) AS lag_p99_ms \
         FROM ( \
             SELECT status, ",
        run_lag_ms!(),
        " AS lag_ms \
             FROM task_runs WHERE finished_at >= $1 \
         ) r"
    ))
    .bind(since)
    .fetch_one(db)
    .await?)
}

/// Deletes runs finished before `cutoff`, at most `limit` at a time (so a
/// large purge never holds long locks). Returns how many went.
pub async fn purge_runs(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM task_runs WHERE id IN ( \
             SELECT id FROM task_runs WHERE finished_at < $1 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
