//! `POST /v1/tasks/{id}/pause` and `/resume`. A pause records who (the
//! admin API), why (`reason`) and, with `until`, when it ends by itself;
//! a resume clears the pause and the failure count (see [`crate::pause`]).

use axum::extract::State;
use axum::Json;
use chrono::Utc;

use super::error::{AdminError, ErrorBody, Result};
use super::extract::{instant_in_range, parse_json, RawBody, TaskId};
use super::tasks::ACTOR;
use super::AdminState;
use crate::pause::{Pause, PauseRequest};
use crate::store;
use crate::task::Task;

/// Pause a task: nothing fires until it is resumed (by hand, or by itself
/// at `until`). The body is optional; pausing a paused task replaces its
/// reason and `until`.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/pause", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    request_body(content = Option<PauseRequest>, description = "Why, and until when (both optional)"),
    responses(
        (status = 200, body = Task),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pause_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
    RawBody(body): RawBody,
) -> Result<Json<Task>> {
    let request = pause_request(&body)?;
    let until = request
        .until
        .map(|t| instant_in_range("until", t))
        .transpose()?;
    let pause = Pause::new(ACTOR, request.reason.as_deref(), until);
    let mut tx = state.pool.begin().await?;
    store::set_actor(&mut tx, ACTOR).await?;
    let task = store::pause_task(&mut tx, id, &pause, Utc::now()).await?;
    tx.commit().await?;
    Ok(Json(task))
}

/// An empty body (or `null`) is a pause without reason or end.
fn pause_request(body: &[u8]) -> Result<PauseRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PauseRequest::default());
    }
    // serde would read a struct from an array too: only an object will do.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if !value.is_object() && !value.is_null() {
            return Err(AdminError::invalid(
                "body",
                "must be a JSON object such as {\"reason\": \"...\", \"until\": \"...\"}",
            ));
        }
    }
    let request: Option<PauseRequest> = parse_json(body)?;
    let request = request.unwrap_or_default();
    if let Some(reason) = &request.reason {
        if reason.len() > 64 * 1024 {
            return Err(AdminError::invalid("reason", "longer than 64 KiB"));
        }
    }
    Ok(request)
}

/// Resume a paused task from its next occurrence after now (what it
/// missed while paused is not fired); its pause and failure count are
/// cleared.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/resume", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, body = Task),
        (status = 400, description = "The stored schedule is invalid", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resume_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
) -> Result<Json<Task>> {
    let mut tx = state.pool.begin().await?;
    store::set_actor(&mut tx, ACTOR).await?;
    let task = store::set_enabled(&mut tx, id, true, Utc::now()).await?;
    tx.commit().await?;
    Ok(Json(task))
}
