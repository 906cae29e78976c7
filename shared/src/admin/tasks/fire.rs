//! `POST /v1/tasks/{id}/trigger`: fire a task once now, outside its
//! schedule (the overlap policy decides while a run is in flight:
//! [`crate::admin::trigger`]).

use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::admin::error::{AdminError, ErrorBody, Result};
use crate::admin::extract::{RawBody, TaskId};
use crate::admin::AdminState;
use crate::message::DispatchMessage;
use crate::queue::Outgoing;
use crate::store;

/// What `POST /v1/tasks/{id}/trigger` queued.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Triggered {
    pub task_id: i64,
    /// The occurrence recorded for this firing (now, to the millisecond).
    pub occurrence: DateTime<Utc>,
    pub task_version: i64,
    /// The `Idempotency-Key` header the target will see.
    pub idempotency_key: String,
}

/// Fire a task once now, outside its schedule (which does not move). A
/// `forbid` or `skip` task whose run is in flight is refused (409
/// `run_in_flight`; `skip` records it as skipped) unless `force` is true.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/trigger", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    request_body(content = Option<crate::admin::trigger::TriggerRequest>, description = "Optional: `force` fires even while a run is in flight"),
    responses(
        (status = 202, description = "Queued", body = Triggered),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is paused (`task_paused`), or its run is in flight and the overlap policy refuses (`run_in_flight`)", body = ErrorBody),
        (status = 503, description = "The queue refused the message", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Triggered>)> {
    let request = crate::admin::trigger::trigger_request(&body)?;
    let task = store::get_task(&state.pool, id).await?;
    if !task.enabled {
        return Err(AdminError::TaskPaused(id));
    }
    let now = Utc::now();
    // Occurrences are keyed to the millisecond (see `idempotency_key`).
    let occurrence = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    crate::admin::trigger::admit(&state.pool, &task, &request, occurrence).await?;
    let message = DispatchMessage {
        manual: true,
        ..DispatchMessage::new(id, occurrence, task.version)
    };
    let report = state
        .queue
        .send(&[Outgoing {
            message: message.clone(),
            delay: StdDuration::ZERO,
        }])
        .await;
    if !report.failed.is_empty() {
        let reason = report
            .first_error
            .unwrap_or_else(|| "no reason given".to_string());
        tracing::warn!(task_id = id, %reason, "manual trigger not queued");
        return Err(AdminError::QueueRefused { reason });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Triggered {
            task_id: id,
            occurrence,
            task_version: task.version,
            idempotency_key: message.idempotency_key(),
        }),
    ))
}
