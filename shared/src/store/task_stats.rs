//! Per-task figures over a window, for `GET /v1/status`: the tasks that
//! fired latest (lateness p99) and the tasks that failed most.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::Result;

/// A task's lateness over the window.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskLateness {
    pub task_id: i64,
    pub name: String,
    pub tags: Vec<String>,
    /// Scheduled first attempts the figures are taken over.
    pub runs: i64,
    /// Lateness percentiles and worst case, milliseconds (see
    /// [`run_stats`](super::run_stats) for what counts as lateness).
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
}

/// A task's failures over the window.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskFailures {
    pub task_id: i64,
    pub name: String,
    pub tags: Vec<String>,
    /// Runs finished in the window, and of them the ones that failed or
    /// timed out after their last attempt.
    pub runs: i64,
    pub failed: i64,
    /// The latest failure's error (sanitised when it was stored), or
    /// `HTTP <status>` when the target answered.
    pub last_error: Option<String>,
}

/// Tasks each list of [`TaskFigures`] shows.
pub const TASKS_SHOWN: i64 = 5;

/// The worst tasks over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskFigures {
    /// Up to 5 tasks, latest first (highest lateness p99).
    pub worst_lateness: Vec<TaskLateness>,
    /// Up to 5 tasks with failed runs, most failures first.
    pub most_failures: Vec<TaskFailures>,
}

/// The tasks with the worst lateness p99 and the most failures among runs
/// finished since `since`; ties go to the lower task id.
pub async fn task_figures(
    db: impl PgExecutor<'_> + Copy,
    since: DateTime<Utc>,
) -> Result<TaskFigures> {
    let worst_lateness = sqlx::query_as::<_, TaskLateness>(concat!(
        "SELECT t.id AS task_id, t.name, t.tags, l.runs, l.lag_p99_ms, l.lag_max_ms \
         FROM ( \
             SELECT task_id, count(*) AS runs, \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS lag_p99_ms, \
                    max(lag_ms) AS lag_max_ms \
             FROM (SELECT task_id, ",
        run_lag_ms!(),
        " AS lag_ms FROM task_runs WHERE finished_at >= $1) r \
             WHERE lag_ms IS NOT NULL \
             GROUP BY task_id \
         ) l JOIN tasks t ON t.id = l.task_id \
         ORDER BY l.lag_p99_ms DESC, t.id LIMIT $2"
    ))
    .bind(since)
    .bind(TASKS_SHOWN)
    .fetch_all(db)
    .await?;
    let most_failures = sqlx::query_as::<_, TaskFailures>(
        "SELECT t.id AS task_id, t.name, t.tags, f.runs, f.failed, \
                (SELECT coalesce(e.error, 'HTTP ' || e.http_status) FROM task_runs e \
                 WHERE e.task_id = f.task_id AND e.finished_at >= $1 \
                   AND e.status IN ('failed', 'timed_out') \
                 ORDER BY e.finished_at DESC LIMIT 1) AS last_error \
         FROM ( \
             SELECT task_id, count(*) AS runs, \
                    count(*) FILTER (WHERE status IN ('failed', 'timed_out')) AS failed \
             FROM task_runs WHERE finished_at >= $1 \
             GROUP BY task_id \
         ) f JOIN tasks t ON t.id = f.task_id \
         WHERE f.failed > 0 \
         ORDER BY f.failed DESC, t.id LIMIT $2",
    )
    .bind(since)
    .bind(TASKS_SHOWN)
    .fetch_all(db)
    .await?;
    Ok(TaskFigures {
        worst_lateness,
        most_failures,
    })
}
