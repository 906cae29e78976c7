//! Operator routes: system status, schedule preview and the health check.

use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::error::{AdminError, ErrorBody, Result};
use super::extract::{instant_in_range, last_showable_instant, JsonBody};
use super::AdminState;
use crate::health::{self, PipelineHealth, ScannerStatus};
use crate::schedule;
use crate::store::{self, FlowCounts, RunStats, TaskFigures};

pub use crate::store::TaskCounts;

/// `GET /v1/status`: is Sundial keeping up?
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub now: DateTime<Utc>,
    /// Occurrences due now that nobody has claimed.
    pub backlog: i64,
    /// Age of the oldest of them, in seconds (0 when none).
    pub oldest_due_age_secs: f64,
    /// Of them, occurrences overdue beyond the grace
    /// (`SUNDIAL_MISSED_GRACE_SECS`, default 120 s) that nothing holds:
    /// what the scanner reports as `MissedOccurrences`.
    pub missed: i64,
    /// Enabled tasks whose lease lapsed without their run being recorded.
    pub leases_overdue: i64,
    /// Messages in the dead-letter queue; absent when `SUNDIAL_DLQ_URL` is
    /// not set or the depth cannot be read (then `health` says why).
    pub dead_letters: Option<i64>,
    /// When a scanner last ran.
    pub scanner: ScannerStatus,
    /// Whether the pipeline is healthy, and if not, why.
    pub health: PipelineHealth,
    /// Runs finished in the last hour, and their fire lag.
    pub last_hour: RunStats,
    /// Over the same hour: the tasks with the worst lateness p99 and the
    /// tasks with the most failures (up to 5 each).
    pub last_hour_tasks: TaskFigures,
    pub tasks: TaskCounts,
    /// Flows whose breaker is open, and flows in shared backoff.
    pub flows: FlowCounts,
}

/// Backlog, lag, failures, open flows; when the scanner last ran and
/// whether the pipeline is healthy (with the reasons when it is not).
#[utoipa::path(
    get, path = "/v1/status", tag = "status",
    responses((status = 200, body = Status)),
    security(("bearer" = []))
)]
pub async fn status(State(state): State<AdminState>) -> Result<Json<Status>> {
    Ok(Json(current_status(&state).await?))
}

/// What `GET /v1/status` answers (the console's overview shows the same).
/// The queries do not depend on each other: they run at once, each on a
/// connection of its own, so the answer takes as long as the slowest.
pub async fn current_status(state: &AdminState) -> Result<Status> {
    let now = Utc::now();
    let check = &state.pipeline;
    let pool = &state.pool;
    let hour_ago = now - Duration::hours(1);
    let (backlog, last_hour, last_hour_tasks, tasks, flows, facts, dead_letters) = tokio::try_join!(
        store::backlog_with_grace(pool, now, check.settings.missed_grace),
        store::run_stats(pool, hour_ago),
        store::task_figures(pool, hour_ago),
        store::task_counts(pool),
        store::flow_counts(pool, now),
        store::pipeline_facts(pool, now),
        async { Ok::<_, store::StoreError>(check.dead_letters().await) },
    )?;
    let observed = health::Observed {
        now,
        last_tick: facts.last_tick,
        missed: backlog.missed,
        leases_overdue: facts.leases_overdue,
        dead_letters,
    };
    Ok(Status {
        now,
        backlog: backlog.due,
        oldest_due_age_secs: backlog.oldest_due_age_secs,
        missed: backlog.missed,
        leases_overdue: facts.leases_overdue,
        dead_letters: match observed.dead_letters {
            health::DeadLetters::Depth(n) => Some(n),
            _ => None,
        },
        scanner: health::scanner_status(&observed, &check.settings),
        health: health::assess(&observed, &check.settings),
        last_hour,
        last_hour_tasks,
        tasks,
        flows,
    })
}

/// Body of `POST /v1/schedules/preview`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Any schedule a task accepts.
    pub schedule: String,
    /// IANA zone the schedule is read in (default UTC).
    pub timezone: Option<String>,
    /// How many occurrences, 1 to 100 (default 10).
    pub count: Option<usize>,
    /// Occurrences after this instant (default now).
    pub from: Option<DateTime<Utc>>,
    /// An exclusion, as a task's `exclude`: matching occurrences are listed
    /// in `entries` as not firing.
    pub exclude: Option<String>,
    /// The active window, as a task's `start_at` and `end_at`.
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
}

/// The occurrences of a schedule, explained.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub schedule: String,
    pub timezone: String,
    /// The schedule in words, e.g. "at 09:00 on Monday to Friday,
    /// Europe/Berlin".
    pub description: String,
    /// The exclusion in words, when one was given.
    pub exclude_description: Option<String>,
    /// The instants that fire, in order (`count` of them unless the
    /// schedule or the window ends first).
    pub occurrences: Vec<DateTime<Utc>>,
    /// Every listed occurrence with its local time and DST note; excluded
    /// ones (the first of each excluded span) with `fires: false`.
    pub entries: Vec<crate::schedule::preview::PreviewEntry>,
    /// The active window and the end of the schedule, in words.
    pub notes: Vec<String>,
}

/// Most occurrences one preview lists.
pub const MAX_PREVIEW: usize = 100;

/// When would this schedule fire?
#[utoipa::path(
    post, path = "/v1/schedules/preview", tag = "schedules",
    request_body = PreviewRequest,
    responses(
        (status = 200, body = Preview),
        (status = 400, description = "Invalid schedule, timezone, count, from, exclude, start_at or end_at", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn preview(JsonBody(req): JsonBody<PreviewRequest>) -> Result<Json<Preview>> {
    let count = req.count.unwrap_or(10);
    if !(1..=MAX_PREVIEW).contains(&count) {
        return Err(AdminError::invalid(
            "count",
            format!("{count} is out of range 1..={MAX_PREVIEW}"),
        ));
    }
    if req.schedule.len() > 200 {
        return Err(AdminError::invalid(
            "schedule",
            "longer than 200 characters",
        ));
    }
    let timezone = req.timezone.unwrap_or_else(|| "UTC".to_string());
    let from = match req.from {
        Some(from) => instant_in_range("from", from)?,
        None => Utc::now(),
    };
    if req.exclude.as_ref().is_some_and(|e| e.len() > 200) {
        return Err(AdminError::invalid("exclude", "longer than 200 characters"));
    }
    let start_at = req
        .start_at
        .map(|t| instant_in_range("start_at", t))
        .transpose()?;
    let end_at = req
        .end_at
        .map(|t| instant_in_range("end_at", t))
        .transpose()?;
    let input = schedule::preview::PreviewInput {
        schedule: &req.schedule,
        timezone: &timezone,
        exclude: req.exclude.as_deref(),
        start_at,
        end_at,
        from,
        count,
    };
    let mut explained = schedule::preview::explain(&input)
        .map_err(|err| AdminError::invalid(err.field, err.reason))?;
    // Past year 9999 an instant has no RFC 3339 form: the list ends there.
    if let Some(last) = last_showable_instant() {
        explained.occurrences.retain(|t| *t <= last);
        explained.entries.retain(|e| e.at <= last);
    }
    Ok(Json(Preview {
        schedule: req.schedule,
        timezone,
        description: explained.description,
        exclude_description: explained.exclude_description,
        occurrences: explained.occurrences,
        entries: explained.entries,
        notes: explained.notes,
    }))
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness and database reachability; needs no token.
#[utoipa::path(
    get, path = "/healthz", tag = "status",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    )
)]
pub async fn healthz(State(state): State<AdminState>) -> Result<Json<Health>> {
    let ping = store::ping(&state.pool);
    match tokio::time::timeout(StdDuration::from_secs(3), ping).await {
        Ok(Ok(_)) => Ok(Json(Health { status: "ok" })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health check: database failed");
            Err(AdminError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("health check: database did not answer in 3s");
            Err(AdminError::Unavailable)
        }
    }
}
