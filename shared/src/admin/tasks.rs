//! The `/v1/tasks` routes: create, list, show, edit, delete, fire by hand,
//! run history, and the occurrence ledger (pause and resume: [`super::pause`]).

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::{Postgres, Transaction};

use super::error::{AdminError, ErrorBody, Result};
use super::extract::{instant_in_range, last_showable_instant, JsonBody, QueryParams, TaskId};
use super::{idempotency, AdminState};
use crate::message::DispatchMessage;
use crate::queue::Outgoing;
use crate::schedule::{parse_zone, Schedule};
use crate::store::{self, Ledger, Run, TaskFilter};
use crate::task::{header_map, validate_url, CatchUp, Overlap, Task, TaskSpec, ValidTask};

/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest `limit` accepted.
pub const MAX_PAGE: i64 = 200;
/// What the admin API records as the actor of the changes it makes.
pub const ACTOR: &str = "admin API";
/// The range `GET /v1/tasks/{id}/occurrences` covers when `from` is not given.
pub const DEFAULT_LEDGER_RANGE: chrono::Duration = chrono::Duration::hours(24);
/// How many occurrences `GET /v1/tasks/{id}` shows.
pub const SHOWN_OCCURRENCES: usize = 5;

/// Checks a spec and its target address, everything short of the
/// database, and returns the checked definition the store takes.
async fn check_spec(state: &AdminState, spec: &TaskSpec) -> Result<ValidTask> {
    let valid = spec.clone().into_valid()?;
    state
        .targets
        .check(valid.spec().url.trim())
        .await
        .map_err(|reason| AdminError::invalid("url", reason))?;
    if let Some(url) = &valid.spec().notify_url {
        check_notify_url(state, url).await?;
    }
    Ok(valid)
}

/// A notify URL must pass the target guard as a target URL does.
async fn check_notify_url(state: &AdminState, url: &str) -> Result<()> {
    state
        .targets
        .check(url)
        .await
        .map_err(|reason| AdminError::invalid("notify_url", reason))
}

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

fn page_limit(limit: Option<i64>) -> Result<i64> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(AdminError::invalid(
            "limit",
            format!("{n} is out of range 1..={MAX_PAGE}"),
        )),
    }
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
    // The cursor is the last id seen; clients treat it as opaque.
    let after_id = query
        .cursor
        .as_deref()
        .map(|c| {
            // At most 18 digits: every such number is an i64.
            Some(c)
                .filter(|c| (1..=18).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<i64>().ok())
                .ok_or_else(|| {
                    AdminError::invalid("cursor", "is not a cursor from a previous page")
                })
        })
        .transpose()?;
    let name = query
        .name
        .as_deref()
        .map(|name| {
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
        })
        .transpose()?;
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
    request_body(content = Option<super::trigger::TriggerRequest>, description = "Optional: `force` fires even while a run is in flight"),
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
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Triggered>)> {
    let request = super::trigger::trigger_request(&body)?;
    let task = store::get_task(&state.pool, id).await?;
    if !task.enabled {
        return Err(AdminError::TaskPaused(id));
    }
    let now = Utc::now();
    // Occurrences are keyed to the millisecond (see `idempotency_key`).
    let occurrence = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    super::trigger::admit(&state.pool, &task, &request, occurrence).await?;
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
