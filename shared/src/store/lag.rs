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

/// Bins per unit of `ln(1 + lag_ms)` in [`lag_series`]: neighbouring bins
/// differ by 1 %, so its percentiles are within 1 % of the exact ones.
const BINS_PER_LN: f64 = 100.0;

/// Lateness p50/p99 of every run finished since `since`, per `bucket`
/// (buckets start at `since`; empty ones are left out). Over all tasks a
/// window holds tens of thousands of runs, so the percentiles come from a
/// histogram with 1 % wide bins (one hash aggregate, no sort), not from
/// sorting every run as [`run_stats`](super::run_stats) does for its exact
/// figures.
pub async fn lag_series(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    bucket: Duration,
) -> Result<Vec<LagPoint>> {
    let rows: Vec<(DateTime<Utc>, i32, i64)> = sqlx::query_as(concat!(
        "SELECT date_bin(make_interval(secs => $2), finished_at, $1) AS bucket, \
                floor(ln(1 + lag_ms) * $3)::int AS bin, count(*) AS runs \
         FROM (SELECT finished_at, ",
        run_lag_ms!(),
        " AS lag_ms FROM task_runs WHERE finished_at >= $1) r \
         WHERE lag_ms IS NOT NULL \
         GROUP BY 1, 2"
    ))
    .bind(since)
    .bind(bucket_secs(bucket))
    .bind(BINS_PER_LN)
    .fetch_all(db)
    .await?;
    Ok(from_histogram(rows))
}

/// Percentiles per bucket from `(bucket, bin, runs)` rows, by nearest rank;
/// a bin stands for the middle of its range.
fn from_histogram(mut rows: Vec<(DateTime<Utc>, i32, i64)>) -> Vec<LagPoint> {
    rows.sort_unstable();
    let value = |bin: i32| ((f64::from(bin) + 0.5) / BINS_PER_LN).exp_m1().max(0.0);
    let mut points = Vec::new();
    for group in rows.chunk_by(|a, b| a.0 == b.0) {
        let runs: i64 = group.iter().map(|r| r.2).sum();
        let rank = |p: f64| ((p * runs as f64).ceil() as i64).clamp(1, runs.max(1));
        let at_rank = |rank: i64| {
            let mut seen = 0;
            group
                .iter()
                .find(|r| {
                    seen += r.2;
                    seen >= rank
                })
                .map_or(0.0, |r| value(r.1))
        };
        points.push(LagPoint {
            bucket: group[0].0,
            runs,
            p50_ms: at_rank(rank(0.5)),
            p99_ms: at_rank(rank(0.99)),
        });
    }
    points
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(lag_ms: f64) -> i32 {
        ((1.0 + lag_ms).ln() * BINS_PER_LN).floor() as i32
    }

    #[test]
    fn histogram_percentiles_are_within_a_percent() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        // 1..=1000 ms, one run each: p50 = 500, p99 = 990 (nearest rank).
        let mut counts = std::collections::BTreeMap::new();
        for lag in 1..=1000 {
            *counts.entry(bin(f64::from(lag))).or_insert(0i64) += 1;
        }
        let rows = counts.into_iter().map(|(b, n)| (t, b, n)).collect();
        let points = from_histogram(rows);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].runs, 1000);
        assert!((points[0].p50_ms - 500.0).abs() <= 5.0, "{:?}", points[0]);
        assert!((points[0].p99_ms - 990.0).abs() <= 10.0, "{:?}", points[0]);
    }

    #[test]
    fn buckets_stay_apart_and_zero_stays_zero() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let later = t + Duration::minutes(15);
        let points = from_histogram(vec![(later, bin(100.0), 3), (t, bin(0.0), 2)]);
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].bucket, points[0].runs), (t, 2));
        assert!(points[0].p99_ms < 0.01, "{:?}", points[0]);
        assert!((points[1].p50_ms - 100.0).abs() <= 1.0, "{:?}", points[1]);
    }
}
