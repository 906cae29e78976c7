//! `PATCH /v1/tasks/{id}` (a partial edit: [`TaskPatch`] applied to the
//! stored definition and checked as a whole) and `DELETE /v1/tasks/{id}`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use sqlx::{Postgres, Transaction};

use super::{check_notify_url, ACTOR};
use crate::admin::error::{AdminError, ErrorBody, Result};
use crate::admin::extract::{JsonBody, TaskId};
use crate::admin::AdminState;
use crate::store;
use crate::task::{header_map, validate_url, CatchUp, Overlap, Task, TaskSpec};

/// A partial edit: any field of [`TaskSpec`]; absent fields keep their
/// value, `"body": null` removes the body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    pub name: Option<String>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub body: Option<Option<String>>,
    pub timeout_ms: Option<i32>,
    pub max_attempts: Option<i32>,
    pub retry_backoff_ms: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub catch_up: Option<CatchUp>,
    pub catch_up_max_age_secs: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub overlap: Option<Overlap>,
    pub jitter_secs: Option<i32>,
    pub enabled: Option<bool>,
    /// `null` goes back to the URL's `host:port`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub flow_key: Option<Option<String>>,
    /// `null` turns auto-pause off.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
    pub pause_after_failures: Option<Option<i32>>,
    /// `null` removes the task's notify URL.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub notify_url: Option<Option<String>>,
    /// Replaces the task's tags (`[]` removes them all).
    pub tags: Option<Vec<String>>,
    /// `null` removes the start of the active window.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub start_at: Option<Option<DateTime<Utc>>>,
    /// `null` removes the end of the active window.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub end_at: Option<Option<DateTime<Utc>>>,
    /// `null` removes the exclusion.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub exclude: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
fn present<'de, D, T>(de: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

impl TaskPatch {
    /// The definition of `task` with this patch applied.
    pub fn apply(self, task: &Task) -> Result<TaskSpec> {
        // Headers stored by plain SQL may not be strings; they only block a
        // patch that keeps them.
        let headers = match self.headers {
            Some(headers) => headers,
            None => header_map(&task.headers)?,
        };
        Ok(TaskSpec {
            name: self.name.unwrap_or_else(|| task.name.clone()),
            schedule: self.schedule.unwrap_or_else(|| task.schedule.clone()),
            timezone: self.timezone.unwrap_or_else(|| task.timezone.clone()),
            method: self.method.unwrap_or_else(|| task.method.clone()),
            url: self.url.unwrap_or_else(|| task.url.clone()),
            headers,
            body: self.body.unwrap_or_else(|| task.body.clone()),
            timeout_ms: self.timeout_ms.unwrap_or(task.timeout_ms),
            max_attempts: self.max_attempts.unwrap_or(task.max_attempts),
            retry_backoff_ms: self.retry_backoff_ms.unwrap_or(task.retry_backoff_ms),
            catch_up: self.catch_up.unwrap_or(task.catch_up),
            catch_up_max_age_secs: self
                .catch_up_max_age_secs
                .unwrap_or(task.catch_up_max_age_secs),
            overlap: self.overlap.unwrap_or(task.overlap),
            jitter_secs: self.jitter_secs.unwrap_or(task.jitter_secs),
            enabled: self.enabled.unwrap_or(task.enabled),
            flow_key: self.flow_key.unwrap_or_else(|| task.flow_key.clone()),
            pause_after_failures: self
                .pause_after_failures
                .unwrap_or(task.alerting.pause_after_failures),
            notify_url: self
                .notify_url
                .unwrap_or_else(|| task.alerting.notify_url.clone()),
            tags: self.tags.unwrap_or_else(|| task.tags.clone()),
            start_at: self.start_at.unwrap_or(task.window.start_at),
            end_at: self.end_at.unwrap_or(task.window.end_at),
            exclude: self.exclude.unwrap_or_else(|| task.window.exclude.clone()),
        })
    }
}

/// Locks a task row for the rest of the transaction; 404 if it is gone.
async fn lock_task(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Task> {
    store::lock_task(tx, id)
        .await?
        .ok_or(AdminError::TaskNotFound(id))
}

/// Edit some fields of a task.
#[utoipa::path(
    patch, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    request_body = TaskPatch,
    responses(
        (status = 200, description = "The edited task (version bumped when anything changed)", body = Task),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Another task has this name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
    JsonBody(patch): JsonBody<TaskPatch>,
) -> Result<Json<Task>> {
    // The target check may resolve DNS: do it before any row is locked.
    if let Some(url) = &patch.url {
        let url = validate_url(url)?;
        state
            .targets
            .check(url.as_str())
            .await
            .map_err(|reason| AdminError::invalid("url", reason))?;
    }
    if let Some(Some(url)) = &patch.notify_url {
        let url = validate_url(url).map_err(|e| AdminError::invalid("notify_url", e.reason))?;
        check_notify_url(&state, url.as_str()).await?;
    }
    let mut tx = state.pool.begin().await?;
    store::set_actor(&mut tx, ACTOR).await?;
    let current = lock_task(&mut tx, id).await?;
    let valid = patch.apply(&current)?.into_valid()?;
    let task = store::update_task(&mut tx, id, &valid, Utc::now()).await?;
    tx.commit().await?;
    Ok(Json(task))
}

/// Delete a task and its run history.
#[utoipa::path(
    delete, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
) -> Result<StatusCode> {
    if store::delete_task(&state.pool, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::TaskNotFound(id))
    }
}
