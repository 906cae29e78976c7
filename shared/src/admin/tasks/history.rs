//! What became of a task's occurrences: `GET /v1/tasks/{id}/runs` (the
//! recorded runs, newest first) and `GET /v1/tasks/{id}/occurrences`
//! (the ledger of a range, [`crate::ledger`]).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{page_limit, DEFAULT_LEDGER_RANGE};
use crate::admin::error::{AdminError, ErrorBody, Result};
use crate::admin::extract::{instant_in_range, last_showable_instant, QueryParams, TaskId};
use crate::admin::AdminState;
use crate::store::{self, Ledger, Run};

/// Query of `GET /v1/tasks/{id}/runs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// Only runs of occurrences before this instant (RFC 3339); pass
    /// `next_before` of the previous page.
    pub before: Option<DateTime<Utc>>,
}

/// A page of runs, newest occurrence first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<DateTime<Utc>>,
}

/// Run history of a task.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/runs", tag = "tasks",
    params(("id" = i64, Path, description = "Task id"), ListRunsQuery),
    responses(
        (status = 200, body = RunPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_runs(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
    QueryParams(query): QueryParams<ListRunsQuery>,
) -> Result<Json<RunPage>> {
    let limit = page_limit(query.limit)?;
    let before = query
        .before
        .map(|t| instant_in_range("before", t))
        .transpose()?;
    // An unknown task is a 404, not an empty history.
    store::get_task(&state.pool, id).await?;
    let mut runs = store::list_runs(&state.pool, id, before, limit + 1).await?;
    let next_before = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(|r| r.scheduled_for)
    } else {
        None
    };
    Ok(Json(RunPage { runs, next_before }))
}

/// Query of `GET /v1/tasks/{id}/occurrences`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OccurrencesQuery {
    /// Start of the range (RFC 3339; default `to` − 24 h). Must not be
    /// after `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range, included (RFC 3339; default now, or `from` + 24 h
    /// when `from` is in the future).
    pub to: Option<DateTime<Utc>>,
}

/// Every occurrence the task's schedule defined in a range (as of the
/// definition in force then) and what became of it: fired, skipped,
/// pending, in flight, not scheduled (paused), passed over, or missed.
/// At most 1000, the newest; `more_before` says where earlier ones start.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/occurrences", tag = "tasks",
    params(("id" = i64, Path, description = "Task id"), OccurrencesQuery),
    responses(
        (status = 200, body = Ledger),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_occurrences(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
    QueryParams(query): QueryParams<OccurrencesQuery>,
) -> Result<Json<Ledger>> {
    let now = Utc::now();
    let (from, to) = ledger_range(query, now)?;
    let grace = state.pipeline.settings.missed_grace;
    let ledger = store::task_ledger(&state.pool, id, from, to, now, grace).await?;
    Ok(Json(ledger))
}

/// The checked range of an occurrences query: both ends RFC 3339 instants
/// (clipped to what an answer can show), `from` not after `to`.
fn ledger_range(
    query: OccurrencesQuery,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let from = query
        .from
        .map(|t| instant_in_range("from", t))
        .transpose()?;
    let to = query.to.map(|t| instant_in_range("to", t)).transpose()?;
    let earliest = DateTime::parse_from_rfc3339("0000-01-01T00:00:00Z")
        .map(|t| t.to_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let latest = last_showable_instant().unwrap_or(DateTime::<Utc>::MAX_UTC);
    let span = DEFAULT_LEDGER_RANGE;
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (None, Some(to)) => (to.checked_sub_signed(span).unwrap_or(earliest), to),
        // A range starting in the future looks ahead from there.
        (Some(from), None) if from > now => (from, from.checked_add_signed(span).unwrap_or(latest)),
        (Some(from), None) => (from, now),
        (None, None) => (now - span, now),
    };
    let (from, to) = (from.clamp(earliest, latest), to.clamp(earliest, latest));
    if from > to {
        return Err(AdminError::invalid("from", "must not be after `to`"));
    }
    Ok((from, to))
}
