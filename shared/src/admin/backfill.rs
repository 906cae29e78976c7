//! `POST /v1/tasks/{id}/backfill` and `GET /v1/backfills/{id}`: fire the
//! occurrences of a past range (see [`crate::backfill`]) and follow them.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::{AdminError, ErrorBody, Result};
use super::extract::{instant_in_range, parse_json, RawBody, TaskId};
use super::tasks::ACTOR;
use super::AdminState;
use crate::backfill::{self, PlanError};
use crate::store::{self, BackfillMode, BackfillProgress, NewBackfill};
use crate::task::Timing;

/// How long the request itself dispatches before answering; the scanner
/// continues the rest on its next ticks.
pub const INLINE_BUDGET: Duration = Duration::from_secs(5);

/// What to backfill.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// Start of the range, included (RFC 3339).
    pub from: DateTime<Utc>,
    /// End of the range, excluded (RFC 3339); not in the future.
    pub to: DateTime<Utc>,
    /// `missing` (default): only occurrences without a recorded run;
    /// `all`: every occurrence, recorded ones again as re-runs.
    #[serde(default)]
    pub mode: Option<BackfillMode>,
}

/// The `{id}` of a backfill route: a positive integer, else a 400 naming `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for BackfillId {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        super::extract::positive_id(parts, state, "backfill")
            .await
            .map(BackfillId)
    }
}

/// Fire every occurrence the task's schedule defines in `[from, to)`:
/// those without a recorded run (`missing`) or all of them (`all`), at
/// most 10,000, through the queue and the flow's limits. Answers once the
/// first chunks are on the queue; `GET /v1/backfills/{id}` follows the rest.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/backfill", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    request_body(content = BackfillRequest, description = "The range and the mode"),
    responses(
        (status = 202, description = "Stored, and dispatching", body = BackfillProgress),
        (status = 400, description = "Invalid field: `from`/`to` not RFC 3339, `to` not after `from` or in the future, more than 10,000 occurrences in the range (`invalid_field`, field `to`)", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is paused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn backfill_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<BackfillProgress>)> {
    let request = backfill_request(&body)?;
    let from = instant_in_range("from", request.from)?;
    let to = instant_in_range("to", request.to)?;
    let task = store::get_task(&state.pool, id).await?;
    if !task.enabled {
        return Err(AdminError::TaskPaused(id));
    }
    let timing = Timing::of(&task)
        .map_err(|e| AdminError::invalid("id", format!("the task's schedule: {}", e.reason)))?;
    let now = Utc::now();
    let requested = backfill::plan(&timing.schedule, timing.zone, &timing.bounds, from, to, now)
        .map_err(|e| match e {
            PlanError::Empty | PlanError::Future { .. } | PlanError::TooMany { .. } => {
                AdminError::invalid("to", e.to_string())
            }
        })?;
    let new = NewBackfill {
        task_id: id,
        from,
        to,
        mode: request.mode.unwrap_or_default(),
        schedule: &task.schedule,
        timezone: &task.timezone,
        requested: i32::try_from(requested).unwrap_or(i32::MAX),
        actor: ACTOR,
    };
    let lease = store::lease_from(now, backfill::LEASE);
    let row = store::create_backfill(&state.pool, &new, lease).await?;
    let backfill_id = row.id;
    if row.state == "dispatching" {
        // A failure here leaves the stored backfill to the scanner.
        if let Err(err) =
            backfill::dispatch(&state.pool, state.queue.as_ref(), row, INLINE_BUDGET).await
        {
            tracing::warn!(backfill = backfill_id, error = %err, "backfill dispatch stopped; the scanner continues it");
        }
    }
    let progress = store::backfill_progress(&state.pool, backfill_id)
        .await?
        .ok_or(AdminError::BackfillNotFound(backfill_id))?;
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

/// OpenAPI links for the backfill routes: a created task's id is a
/// backfill's task, a backfill's id is what `GET /v1/backfills/{id}`
/// shows (clients, and schemathesis's stateful phase, follow them).
pub fn document_links(doc: &mut serde_json::Value) {
    let link = |operation: &str| serde_json::json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}});
    let paths = &mut doc["paths"];
    if let Some(created) = paths["/v1/tasks"]["post"]["responses"]["201"].as_object_mut() {
        created.insert(
            "links".into(),
            serde_json::json!({"BackfillTask": link("backfill_task")}),
        );
    }
    let started = &mut paths["/v1/tasks/{id}/backfill"]["post"]["responses"]["202"];
    if let Some(started) = started.as_object_mut() {
        started.insert(
            "links".into(),
            serde_json::json!({"ShowBackfill": link("show_backfill")}),
        );
    }
}

/// Only a JSON object will do (serde would read a struct from an array).
fn backfill_request(body: &[u8]) -> Result<BackfillRequest> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if !value.is_object() {
            return Err(AdminError::invalid(
                "body",
                "must be a JSON object such as {\"from\": \"...\", \"to\": \"...\", \"mode\": \"missing\"}",
            ));
        }
    }
    parse_json(body)
}

/// A backfill's progress: what it dispatched, what it passed over, and
/// what became of the runs it sent.
#[utoipa::path(
    get, path = "/v1/backfills/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Backfill id")),
    responses(
        (status = 200, body = BackfillProgress),
        (status = 400, description = "The `{id}` is not a backfill id (`invalid_field`, field `id`)", body = ErrorBody),
        (status = 404, description = "No such backfill (`backfill_not_found`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show_backfill(
    State(state): State<AdminState>,
    BackfillId(id): BackfillId,
) -> Result<Json<BackfillProgress>> {
    store::backfill_progress(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(AdminError::BackfillNotFound(id))
}
