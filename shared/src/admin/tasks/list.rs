//! `GET /v1/tasks` (a filtered page, by id) and `GET /v1/tasks/{id}` (a
//! task with its next occurrences).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{page_limit, SHOWN_OCCURRENCES};
use crate::admin::error::{AdminError, ErrorBody, Result};
use crate::admin::extract::{QueryParams, TaskId};
use crate::admin::AdminState;
use crate::schedule::{parse_zone, Schedule};
use crate::store::{self, TaskFilter};
use crate::task::Task;

/// Query of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTasksQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only enabled (true) or paused (false) tasks.
    pub enabled: Option<bool>,
    /// Only tasks whose last run failed (true) or did not (false).
    pub failing: Option<bool>,
    /// Only the task with this name.
    pub name: Option<String>,
    /// Only tasks carrying this tag.
    pub tag: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List tasks, ordered by id.
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks",
    params(ListTasksQuery),
    responses(
        (status = 200, body = TaskPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_tasks(
    State(state): State<AdminState>,
    QueryParams(query): QueryParams<ListTasksQuery>,
) -> Result<Json<TaskPage>> {
    let limit = page_limit(query.limit)?;
    let after_id = query.cursor.as_deref().map(cursor_id).transpose()?;
    let name = query.name.as_deref().map(name_filter).transpose()?;
    let tag = query
        .tag
        .as_deref()
        .map(|tag| crate::task::validate_tag("tag", tag))
        .transpose()?;
    let filter = TaskFilter {
        enabled: query.enabled,
        failing: query.failing,
        after_id,
        name,
        tag,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
    };
    let mut tasks = store::list_tasks(&state.pool, &filter).await?;
    let next_cursor = if tasks.len() as i64 > limit {
        tasks.truncate(limit as usize);
        tasks.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(Json(TaskPage { tasks, next_cursor }))
}

/// The id a cursor stands for. The cursor is the last id seen; clients
/// treat it as opaque.
fn cursor_id(cursor: &str) -> Result<i64> {
    // At most 18 digits: every such number is an i64.
    Some(cursor)
        .filter(|c| (1..=18).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<i64>().ok())
        .ok_or_else(|| AdminError::invalid("cursor", "is not a cursor from a previous page"))
}

/// A `name` filter: trimmed, 1 to 200 characters, no control characters.
fn name_filter(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > crate::task::MAX_NAME_CHARS {
        Err(AdminError::invalid(
            "name",
            format!("must be 1 to {} characters", crate::task::MAX_NAME_CHARS),
        ))
    } else if name.chars().any(crate::task::is_unsafe_char) {
        Err(AdminError::invalid(
            "name",
            "must not contain control characters",
        ))
    } else {
        Ok(name.to_string())
    }
}

/// A task with its next occurrences.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    /// The next occurrences (up to 5), starting with `next_run_at`; empty
    /// while the task is paused or its schedule cannot be evaluated.
    pub next_occurrences: Vec<DateTime<Utc>>,
}

/// The occurrences a task will fire next, as far as they can be known.
fn next_occurrences(task: &Task, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    if !task.enabled {
        return Vec::new();
    }
    let (Ok(schedule), Ok(zone)) = (Schedule::parse(&task.schedule), parse_zone(&task.timezone))
    else {
        return Vec::new();
    };
    // The window and exclusion apply, as when the task runs.
    let bounds = task.window.bounds().unwrap_or_default();
    match task.next_run_at {
        Some(next) => {
            let mut out = vec![next];
            out.extend(bounds.upcoming(&schedule, next, zone, SHOWN_OCCURRENCES - 1));
            out
        }
        // Not scheduled yet (inserted with SQL): what the scanner will compute.
        None => bounds.upcoming(&schedule, now, zone, SHOWN_OCCURRENCES),
    }
}

/// Show a task and its next occurrences.
#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, body = TaskDetail),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show_task(
    State(state): State<AdminState>,
    TaskId(id): TaskId,
) -> Result<Json<TaskDetail>> {
    let task = store::get_task(&state.pool, id).await?;
    let next_occurrences = next_occurrences(&task, Utc::now());
    Ok(Json(TaskDetail {
        task,
        next_occurrences,
    }))
}
