//! Fire lag over time, for the console's charts: lateness percentiles per
//! time bucket, over all runs (by when they finished, on
//! `task_runs_finished_idx`) or over one task's (by occurrence, on
//! `task_runs_task_recent_idx`). Lateness is [`run_stats`](super::run_stats)'s.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::Result;

/// Lateness of the runs of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LagPoint {
    /// Start of the bucket.
    pub bucket: DateTime<Utc>,
    /// Runs with a lateness figure in it.
    pub runs: i64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn bucket_secs(bucket: Duration) -> f64 {
    bucket.num_seconds().max(1) as f64
}

/// Lateness p50/p99 of every run finished since `since`, per `bucket`
/// (buckets start at `since`; empty ones are left out).
pub async fn lag_series(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    bucket: Duration,
) -> Result<Vec<LagPoint>> {
    Ok(sqlx::query_as::<_, LagPoint>(concat!(
        "SELECT date_bin(make_interval(secs => $2), finished_at, $1) AS bucket, \
                count(*) AS runs, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99_ms \
         FROM (SELECT finished_at, ",
        run_lag_ms!(),
        " AS lag_ms FROM task_runs WHERE finished_at >= $1) r \
         WHERE lag_ms IS NOT NULL \
         GROUP BY 1 ORDER BY 1"
    ))
    .bind(since)
    .bind(bucket_secs(bucket))
    .fetch_all(db)
    .await?)
}

/// Lateness p50/p99 of one task's runs of occurrences since `since`, per
/// `bucket` of occurrence time.
pub async fn task_lag_series(
    db: impl PgExecutor<'_>,
    task_id: i64,
    since: DateTime<Utc>,
    bucket: Duration,
) -> Result<Vec<LagPoint>> {
    Ok(sqlx::query_as::<_, LagPoint>(concat!(
        "SELECT date_bin(make_interval(secs => $3), scheduled_for, $2) AS bucket, \
                count(*) AS runs, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99_ms \
         FROM (SELECT scheduled_for, ",
        run_lag_ms!(),
        " AS lag_ms FROM task_runs WHERE task_id = $1 AND scheduled_for >= $2) r \
         WHERE lag_ms IS NOT NULL \
         GROUP BY 1 ORDER BY 1"
    ))
    .bind(task_id)
    .bind(since)
    .bind(bucket_secs(bucket))
    .fetch_all(db)
    .await?)
}
