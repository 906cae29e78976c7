//! `POST /v1/tasks`: create a task, once per `Idempotency-Key`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;

use super::{check_spec, ACTOR};
use crate::admin::error::{ErrorBody, Result};
use crate::admin::extract::JsonBody;
use crate::admin::{idempotency, AdminState};
use crate::store;
use crate::task::{Task, TaskSpec};

/// Create a task.
#[utoipa::path(
    post, path = "/v1/tasks", tag = "tasks",
    request_body = TaskSpec,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes a retried create safe: the same key and body return the same task")),
    responses(
        (status = 201, description = "Created", body = Task),
        (status = 200, description = "Replayed: this Idempotency-Key created this task before", body = Task),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 409, description = "A task with this name exists", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_task(
    State(state): State<AdminState>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<TaskSpec>,
) -> Result<(StatusCode, Json<Task>)> {
    let key = idempotency::key_from(&headers)?;
    let Some(key) = key else {
        let valid = check_spec(&state, &spec).await?;
        let mut tx = state.pool.begin().await?;
        store::set_actor(&mut tx, ACTOR).await?;
        let task = store::create_task(&mut *tx, &valid, Utc::now()).await?;
        tx.commit().await?;
        return Ok((StatusCode::CREATED, Json(task)));
    };
    let mut tx = state.pool.begin().await?;
    store::set_actor(&mut tx, ACTOR).await?;
    match idempotency::claim(&mut tx, &key, &idempotency::fingerprint(&spec)).await? {
        idempotency::Claim::Replay(id) => {
            let task = store::get_task(&mut *tx, id).await?;
            Ok((StatusCode::OK, Json(task)))
        }
        idempotency::Claim::New => {
            let valid = check_spec(&state, &spec).await?;
            let task = store::create_task(&mut *tx, &valid, Utc::now()).await?;
            idempotency::complete(&mut tx, &key, task.id).await?;
            tx.commit().await?;
            Ok((StatusCode::CREATED, Json(task)))
        }
    }
}
