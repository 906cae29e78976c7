//! The task store: every query Sundial runs against Postgres.
//!
//! Functions take `impl PgExecutor` so callers can compose them in one
//! transaction, and an explicit `now` so tests control the clock. Batch
//! operations are single statements over `UNNEST` arrays.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use crate::task::{InvalidField, Overlap, Task, TaskSpec, Timing};

/// Migrations, embedded so every binary can apply them on start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused a statement.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(i64),
    /// Another task already has this name.
    #[error("a task named `{0}` already exists")]
    DuplicateName(String),
    /// A setting needed to reach the database is missing or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The input does not describe a valid task.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the one pool a process uses.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await?;
    Ok(pool)
}

/// Connects with the process settings and, when `SUNDIAL_MIGRATE_ON_START`
/// asks for it, applies pending migrations: what every binary does first.
pub async fn connect_from_settings(settings: &crate::config::Settings) -> Result<PgPool> {
    let url = settings.require_database_url()?;
    let pool = connect(url, settings.db_pool_size).await?;
    if settings.migrate_on_start {
        migrate(&pool).await?;
    }
    Ok(pool)
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The columns of [`Task`], as a literal so queries stay `&'static str`.
macro_rules! task_columns {
    () => {
        "id, name, schedule, timezone, method, url, headers, body, timeout_ms, \
     max_attempts, retry_backoff_ms, catch_up, catch_up_max_age_secs, overlap, jitter_secs, \
     enabled, next_run_at, lease_until, version, schedule_error, last_run_at, last_status, \
     last_error, consecutive_failures, created_at, updated_at"
    };
}

fn duplicate_name(err: sqlx::Error, name: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("tasks_name_unique") => {
            StoreError::DuplicateName(name.to_string())
        }
        _ => StoreError::Database(err),
    }
}

/// Creates a task from a validated spec; its first occurrence is computed now.
pub async fn create_task(
    db: impl PgExecutor<'_>,
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> Result<Task> {
    let mut spec = spec.clone();
    let (schedule, zone) = spec.validate()?;
    let next = schedule
        .next_after(now, zone)
        .ok_or_else(|| InvalidField::new("schedule", "has no occurrence in the future"))?;
    let sql = concat!(
        "INSERT INTO tasks (name, schedule, timezone, method, url, headers, body, timeout_ms, \
         max_attempts, retry_backoff_ms, catch_up, catch_up_max_age_secs, overlap, jitter_secs, \
         enabled, next_run_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         RETURNING ",
        task_columns!(),
        ""
    );
    bind_spec(sqlx::query_as::<_, Task>(sql), &spec, Some(next))
        .fetch_one(db)
        .await
        .map_err(|e| duplicate_name(e, &spec.name))
}

/// Binds a spec's columns as `$1..$15` and the next run as `$16`, in the
/// order of the INSERT and UPDATE statements above.
fn bind_spec<'q>(
    query: sqlx::query::QueryAs<'q, Postgres, Task, sqlx::postgres::PgArguments>,
    spec: &'q TaskSpec,
    next: Option<DateTime<Utc>>,
) -> sqlx::query::QueryAs<'q, Postgres, Task, sqlx::postgres::PgArguments> {
    let headers = serde_json::to_value(&spec.headers).unwrap_or_default();
    query
        .bind(&spec.name)
        .bind(spec.schedule.trim())
        .bind(&spec.timezone)
        .bind(&spec.method)
        .bind(spec.url.trim())
        .bind(sqlx::types::Json(headers))
        .bind(&spec.body)
        .bind(spec.timeout_ms)
        .bind(spec.max_attempts)
        .bind(spec.retry_backoff_ms)
        .bind(spec.catch_up)
        .bind(spec.catch_up_max_age_secs)
        .bind(spec.overlap)
        .bind(spec.jitter_secs)
        .bind(spec.enabled)
        .bind(next)
}

/// One task by id.
pub async fn get_task(db: impl PgExecutor<'_>, id: i64) -> Result<Task> {
    let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");
    sqlx::query_as::<_, Task>(sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(StoreError::NotFound(id))
}

/// One task by name.
pub async fn get_task_by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Task>> {
    let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1");
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(name)
        .fetch_optional(db)
        .await?)
}

/// The tasks of a batch, in one query.
pub async fn load_tasks(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<Task>> {
    let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ANY($1)");
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(ids)
        .fetch_all(db)
        .await?)
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only enabled (true) or paused/disabled (false) tasks.
    pub enabled: Option<bool>,
    /// Only tasks whose last run failed (true) or did not (false).
    pub failing: Option<bool>,
    /// Cursor: tasks with an id greater than this.
    pub after_id: Option<i64>,
    /// Page size (clamped to 1..=500).
    pub limit: i64,
}

/// A page of tasks ordered by id, for cursor pagination.
pub async fn list_tasks(db: impl PgExecutor<'_>, filter: &TaskFilter) -> Result<Vec<Task>> {
    let sql = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks \
         WHERE ($1::boolean IS NULL OR enabled = $1) \
           AND ($2::boolean IS NULL OR (consecutive_failures > 0) = $2) \
           AND ($3::bigint IS NULL OR id > $3) \
         ORDER BY id LIMIT $4"
    );
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(filter.enabled)
        .bind(filter.failing)
        .bind(filter.after_id)
        .bind(filter.limit.clamp(1, 500))
        .fetch_all(db)
        .await?)
}

/// Replaces a task's definition (the version is bumped by trigger). When
/// the timing changed, or the task is being enabled, the next run is
/// computed afresh from `now`.
pub async fn update_task(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> Result<Task> {
    let sql = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1 FOR UPDATE"
    );
    let current = sqlx::query_as::<_, Task>(sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let mut spec = spec.clone();
    let (schedule, zone) = spec.validate()?;
    let retimed = spec.schedule.trim() != current.schedule
        || spec.timezone != current.timezone
        || (spec.enabled && !current.enabled);
    let next = if retimed {
        Some(
            schedule
                .next_after(now, zone)
                .ok_or_else(|| InvalidField::new("schedule", "has no occurrence in the future"))?,
        )
    } else {
        current.next_run_at
    };
    // The next run is computed here; the change trigger must keep it even
    // when it happens to equal the old one.
    sqlx::query("SET LOCAL sundial.next_run_computed = 'on'")
        .execute(&mut **tx)
        .await?;
    let sql = concat!(
        "UPDATE tasks SET name = $1, schedule = $2, timezone = $3, method = $4, url = $5, \
         headers = $6, body = $7, timeout_ms = $8, max_attempts = $9, retry_backoff_ms = $10, \
         catch_up = $11, catch_up_max_age_secs = $12, overlap = $13, jitter_secs = $14, \
         enabled = $15, next_run_at = $16, \
         schedule_error = CASE WHEN $18 THEN NULL ELSE schedule_error END, \
         lease_until = CASE WHEN $18 THEN NULL ELSE lease_until END \
         WHERE id = $17 RETURNING ",
        task_columns!(),
        ""
    );
    bind_spec(sqlx::query_as::<_, Task>(sql), &spec, next)
        .bind(id)
        .bind(retimed)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| duplicate_name(e, &spec.name))
}

/// Deletes a task and its history. Returns whether it existed.
pub async fn delete_task(db: impl PgExecutor<'_>, id: i64) -> Result<bool> {
    let done = sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Pauses (false) or resumes (true) a task. A resumed task continues from
/// its next occurrence after `now`, not with what it missed while paused.
pub async fn set_enabled(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    enabled: bool,
    now: DateTime<Utc>,
) -> Result<Task> {
    let current = get_task(&mut **tx, id).await?;
    if current.enabled == enabled {
        return Ok(current);
    }
    let mut spec = TaskSpec::of(&current)?;
    spec.enabled = enabled;
    update_task(tx, id, &spec, now).await
}

/// Result of [`schedule_new`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScheduledNew {
    /// Rows that got their first occurrence.
    pub scheduled: u64,
    /// Rows disabled because their schedule or zone is invalid.
    pub invalid: u64,
}

/// Computes the first occurrence of rows inserted with plain SQL
/// (`next_run_at IS NULL`). A row whose schedule cannot be evaluated is
/// disabled with the reason in `schedule_error`; it never stops the scan.
pub async fn schedule_new(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<ScheduledNew> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, schedule, timezone FROM tasks \
         WHERE enabled AND next_run_at IS NULL \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(ScheduledNew::default());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut nexts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(rows.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(rows.len());
    let mut report = ScheduledNew::default();
    for (id, schedule, zone) in rows {
        let first = Timing::parse(&schedule, &zone, Default::default(), 0).and_then(|t| {
            t.first_after(now)
                .ok_or_else(|| InvalidField::new("schedule", "has no occurrence in the future"))
        });
        ids.push(id);
        match first {
            Ok(next) => {
                report.scheduled += 1;
                nexts.push(Some(next));
                errors.push(None);
            }
            Err(err) => {
                report.invalid += 1;
                tracing::warn!(task_id = id, error = %err, "disabling task with an invalid schedule");
                nexts.push(None);
                errors.push(Some(err.to_string()));
            }
        }
    }
    sqlx::query(
        "UPDATE tasks t SET next_run_at = u.next_run_at, \
             schedule_error = u.error, \
             enabled = u.error IS NULL \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[]) AS u(id, next_run_at, error) \
         WHERE t.id = u.id",
    )
    .bind(&ids)
    .bind(&nexts)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// An occurrence claimed for dispatch.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claimed {
    pub task_id: i64,
    pub version: i64,
    pub occurrence: DateTime<Utc>,
    pub schedule: String,
    pub timezone: String,
    pub overlap: Overlap,
    pub jitter_secs: i32,
}

/// How to claim.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// Claim occurrences due up to `now + lookahead`.
    pub lookahead: Duration,
    /// At most this many rows.
    pub limit: i64,
    /// Lease kept past the occurrence and its timeout.
    pub lease: Duration,
    /// Who claims (for operators reading `lease_owner`).
    pub owner: String,
}

/// Claims due occurrences: locks them with `FOR UPDATE SKIP LOCKED`, so
/// concurrent scanners never claim the same row, and leases them until
/// `max(occurrence, now) + jitter + timeout + lease`.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    opts: &ClaimOptions,
) -> Result<Vec<Claimed>> {
    let horizon = now + opts.lookahead;
    let lease_secs = opts.lease.num_milliseconds() as f64 / 1000.0;
    Ok(sqlx::query_as::<_, Claimed>(
        "WITH due AS ( \
             SELECT id FROM tasks \
             WHERE enabled AND next_run_at <= $1 \
               -- Is nobody holding it, or has their lease expired?
               AND (lease_until IS NULL OR lease_until < $2) \
             ORDER BY next_run_at \
             LIMIT $3 \
             FOR UPDATE SKIP LOCKED \
         ) \
         UPDATE tasks t SET \
             lease_until = GREATEST(t.next_run_at, $2) \
                 + make_interval(secs => t.jitter_secs + t.timeout_ms / 1000.0 + $4), \
             lease_owner = $5 \
         FROM due WHERE t.id = due.id \
         RETURNING t.id AS task_id, t.version, t.next_run_at AS occurrence, t.schedule, \
                   t.timezone, t.overlap, t.jitter_secs",
    )
    .bind(horizon)
    .bind(now)
    .bind(opts.limit)
    .bind(lease_secs)
    .bind(&opts.owner)
    .fetch_all(db)
    .await?)
}

/// Hands occurrences back that were claimed but not handled (the send
/// failed, or a process shut down before firing them), so the next scan
/// dispatches them: the lease is dropped where the task still waits on the
/// occurrence. A task with `overlap = allow` has already moved past it at
/// dispatch; unless its run is recorded, it is moved back to the earliest
/// such occurrence (catch-up then applies as after any outage).
pub async fn release(db: impl PgExecutor<'_>, occurrences: &[(i64, DateTime<Utc>)]) -> Result<u64> {
    if occurrences.is_empty() {
        return Ok(0);
    }
    let (ids, occs): (Vec<i64>, Vec<DateTime<Utc>>) = occurrences.iter().copied().unzip();
    let done = sqlx::query(
        "WITH r AS ( \
             SELECT id, min(occurrence) AS occurrence \
             FROM UNNEST($1::bigint[], $2::timestamptz[]) AS r(id, occurrence) GROUP BY id \
         ) \
         UPDATE tasks t SET next_run_at = r.occurrence, lease_until = NULL, lease_owner = NULL \
         FROM r \
         WHERE t.id = r.id AND ( \
             t.next_run_at = r.occurrence \
             OR (t.overlap = 'allow' AND t.enabled AND t.next_run_at > r.occurrence \
                 AND NOT EXISTS (SELECT 1 FROM task_runs x \
                                 WHERE x.task_id = r.id AND x.scheduled_for = r.occurrence)))",
    )
    .bind(&ids)
    .bind(&occs)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Moves tasks with `overlap = allow` past occurrences that are now safely
/// on the queue, and drops their lease, so the next occurrence is
/// dispatched on time even while this one runs. Guarded: only where the
/// occurrence and version are still those dispatched.
pub async fn advance_dispatched(db: impl PgExecutor<'_>, advances: &[Advance]) -> Result<u64> {
    if advances.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = advances.iter().map(|a| a.task_id).collect();
    let occs: Vec<DateTime<Utc>> = advances.iter().map(|a| a.occurrence).collect();
    let versions: Vec<i64> = advances.iter().map(|a| a.version).collect();
    let nexts: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.next_run_at).collect();
    let done = sqlx::query(
        "UPDATE tasks t SET next_run_at = a.next_run_at, lease_until = NULL, lease_owner = NULL, \
             enabled = t.enabled AND a.next_run_at IS NOT NULL \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[], $4::timestamptz[]) \
             AS a(id, occurrence, version, next_run_at) \
         WHERE t.id = a.id AND t.next_run_at = a.occurrence AND t.version = a.version",
    )
    .bind(&ids)
    .bind(&occs)
    .bind(&versions)
    .bind(&nexts)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A schedule advance for [`advance_dispatched`].
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    pub task_id: i64,
    pub occurrence: DateTime<Utc>,
    pub version: i64,
    /// `None` ends a one-shot schedule (the task is disabled).
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Of the given occurrences, those that already have a recorded run.
pub async fn recorded_occurrences(
    db: impl PgExecutor<'_>,
    occurrences: &[(i64, DateTime<Utc>)],
) -> Result<Vec<(i64, DateTime<Utc>)>> {
    if occurrences.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, occs): (Vec<i64>, Vec<DateTime<Utc>>) = occurrences.iter().copied().unzip();
    Ok(sqlx::query_as(
        "SELECT r.task_id, r.scheduled_for FROM task_runs r \
         JOIN UNNEST($1::bigint[], $2::timestamptz[]) AS q(task_id, scheduled_for) \
           ON r.task_id = q.task_id AND r.scheduled_for = q.scheduled_for",
    )
    .bind(&ids)
    .bind(&occs)
    .fetch_all(db)
    .await?)
}

/// Final status of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Skipped => "skipped",
        }
    }
}

/// What the processor learned about one occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub task_id: i64,
    /// The task version the processor worked from.
    pub version: i64,
    pub occurrence: DateTime<Utc>,
    pub kind: OutcomeKind,
}

/// The write an outcome asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// The occurrence is finished: record its run (unless one is recorded
    /// already) and, if the task still waits on this occurrence, move it to
    /// `next_run_at` and drop the lease.
    Finished {
        run: RunRecord,
        /// `None` ends the schedule (one-shot done): the task is disabled.
        next_run_at: Option<DateTime<Utc>>,
        /// Manual firings are recorded but never move the schedule.
        manual: bool,
        /// Chain the next occurrence: if the task moves on to
        /// `next_run_at`, lease that occurrence at once until this instant
        /// (in the same statement, so no scanner can claim it too); the
        /// caller then enqueues it. See [`Recorded::chained`].
        chain_lease: Option<DateTime<Utc>>,
    },
    /// The occurrence is already recorded but the task still waits on it
    /// (an earlier write-back was refused by the version guard): move on.
    AlreadyRecorded { next_run_at: Option<DateTime<Utc>> },
    /// Another attempt is coming: keep the lease until then.
    Retrying { lease_until: DateTime<Utc> },
    /// The message was dropped (stale): let the scanner dispatch the
    /// occurrence again from the current definition.
    Released,
}

/// One row of `task_runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub status: RunStatus,
    pub attempts: i32,
    pub fired_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    /// Start of the target's answer (at most 1 KiB).
    pub response_excerpt: Option<String>,
}

/// What [`record_outcomes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Recorded {
    /// New rows in `task_runs`.
    pub runs_inserted: i64,
    /// Tasks moved to their next occurrence.
    pub advanced: i64,
    /// Leases extended for retries or released.
    pub leases_changed: i64,
    /// Tasks that moved on and whose next occurrence was leased for
    /// chaining (`chain_lease`): the caller must enqueue it, or release it.
    pub chained: Vec<i64>,
}

/// Writes back all outcomes of a batch in one statement.
///
/// Runs are inserted with `ON CONFLICT DO NOTHING` on (task, occurrence),
/// so a duplicate delivery records nothing new. A task moves on only where
/// `next_run_at` still equals the occurrence and the version matches, so a
/// schedule never advances twice for one occurrence and a stale worker
/// cannot overwrite a newer definition.
pub async fn record_outcomes(db: impl PgExecutor<'_>, outcomes: &[Outcome]) -> Result<Recorded> {
    if outcomes.is_empty() {
        return Ok(Recorded::default());
    }
    let n = outcomes.len();
    let mut task_ids = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut occurrences = Vec::with_capacity(n);
    let mut kinds: Vec<&str> = Vec::with_capacity(n);
    let mut statuses: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut attempts: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut fired: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut finished: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut http: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut latency: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut excerpts: Vec<Option<String>> = Vec::with_capacity(n);
    let mut nexts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut leases: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut chains: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    for o in outcomes {
        task_ids.push(o.task_id);
        versions.push(o.version);
        occurrences.push(o.occurrence);
        let (kind, run, next, lease, chain) = match &o.kind {
            OutcomeKind::Finished {
                run,
                next_run_at,
                manual,
                chain_lease,
            } => (
                if *manual { "manual" } else { "finished" },
                Some(run),
                *next_run_at,
                None,
                chain_lease.filter(|_| !*manual && next_run_at.is_some()),
            ),
            OutcomeKind::AlreadyRecorded { next_run_at } => {
                ("recorded", None, *next_run_at, None, None)
            }
            OutcomeKind::Retrying { lease_until } => {
                ("retrying", None, None, Some(*lease_until), None)
            }
            OutcomeKind::Released => ("released", None, None, None, None),
        };
        kinds.push(kind);
        statuses.push(run.map(|r| r.status.as_str()));
        attempts.push(run.map(|r| r.attempts));
        fired.push(run.and_then(|r| r.fired_at));
        finished.push(run.map(|r| r.finished_at));
        http.push(run.and_then(|r| r.http_status));
        latency.push(run.and_then(|r| r.latency_ms));
        errors.push(run.and_then(|r| r.error.as_deref().map(truncate_error)));
        excerpts.push(run.and_then(|r| r.response_excerpt.as_deref().map(truncate_error)));
        nexts.push(next);
        leases.push(lease);
        chains.push(chain);
    }
    let recorded = sqlx::query_as::<_, Recorded>(RECORD_OUTCOMES_SQL)
        .bind(&task_ids)
        .bind(&versions)
        .bind(&occurrences)
        .bind(&kinds)
        .bind(&statuses)
        .bind(&attempts)
        .bind(&fired)
        .bind(&finished)
        .bind(&http)
        .bind(&latency)
        .bind(&errors)
        .bind(&nexts)
        .bind(&leases)
        .bind(&excerpts)
        .bind(&chains)
        .fetch_one(db)
        .await?;
    Ok(recorded)
}

/// What [`record_outcomes_isolating`] wrote and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IsolatedWrite {
    /// Totals over every statement that succeeded.
    pub recorded: Recorded,
    /// Indexes (into the given outcomes) that Postgres refused as they were
    /// and that were recorded instead as a failed run saying why.
    pub rewritten: Vec<usize>,
    /// Indexes that could not be stored in any form: nothing was written
    /// for them. Retrying them cannot help; the caller drops them (with a
    /// log line) rather than handing them back forever.
    pub refused: Vec<usize>,
}

impl Recorded {
    fn add(&mut self, other: Recorded) {
        self.runs_inserted += other.runs_inserted;
        self.advanced += other.advanced;
        self.leases_changed += other.leases_changed;
        self.chained.extend(other.chained);
    }
}

/// Is this a refusal of the data (SQLSTATE class 22 data exception or 23
/// integrity violation) rather than an outage? Only data errors are worth
/// isolating: splitting a batch cannot help against a lost connection.
pub fn is_data_error(err: &StoreError) -> bool {
    match err {
        StoreError::Database(sqlx::Error::Database(db)) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

/// [`record_outcomes`], but one poisoned outcome never fails the others.
///
/// The whole batch is tried in one statement first (the usual case costs
/// nothing extra). When Postgres refuses it for its *data*
/// ([`is_data_error`]), the batch is bisected and the halves retried, so
/// every good row is written in `O(bad · log n)` statements. A row refused
/// alone is rewritten as a failed run whose error says why it could not be
/// stored, and tried once more; if that is refused too, it is reported in
/// [`IsolatedWrite::refused`]. Any other error (connection lost, pool
/// timeout) is returned as is: the caller hands everything back, as after
/// [`record_outcomes`] (rows already written stay; the write is idempotent).
pub async fn record_outcomes_isolating(
    pool: &PgPool,
    outcomes: &[Outcome],
) -> Result<IsolatedWrite> {
    let mut write = IsolatedWrite::default();
    // Ranges of `outcomes` still to write, the next one last.
    let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
    pending.push(0..outcomes.len());
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        let err = match record_outcomes(pool, &outcomes[range.clone()]).await {
            Ok(recorded) => {
                write.recorded.add(recorded);
                continue;
            }
            Err(err) if !is_data_error(&err) => return Err(err),
            Err(err) => err,
        };
        if range.len() > 1 {
            let mid = range.start + range.len() / 2;
            // Popped in order: the first half is tried first.
            pending.push(mid..range.end);
            pending.push(range.start..mid);
            continue;
        }
        let index = range.start;
        let poisoned = &outcomes[index];
        let Some(rewrite) = unstorable_as_failed(poisoned, &err) else {
            tracing::error!(task_id = poisoned.task_id, occurrence = %poisoned.occurrence,
                error = %err, "outcome refused by the database; dropping it");
            write.refused.push(index);
            continue;
        };
        match record_outcomes(pool, std::slice::from_ref(&rewrite)).await {
            Ok(recorded) => {
                tracing::warn!(task_id = poisoned.task_id, occurrence = %poisoned.occurrence,
                    error = %err, "outcome refused by the database; recorded as a failed run");
                write.recorded.add(recorded);
                write.rewritten.push(index);
            }
            Err(again) if is_data_error(&again) => {
                tracing::error!(task_id = poisoned.task_id, occurrence = %poisoned.occurrence,
                    error = %err, rewrite_error = %again,
                    "outcome refused by the database, even as a failed run; dropping it");
                write.refused.push(index);
            }
            Err(outage) => return Err(outage),
        }
    }
    write.rewritten.sort_unstable();
    write.refused.sort_unstable();
    Ok(write)
}

/// A finished outcome that Postgres refused, rewritten with only values
/// Sundial controls: a failed run (attempts at least 1, finished now) whose
/// error says why the original could not be stored. The occurrence, the
/// next run and the manual flag are kept: they identify the run and move
/// the schedule on. Other kinds carry no run to rewrite.
fn unstorable_as_failed(outcome: &Outcome, err: &StoreError) -> Option<Outcome> {
    let OutcomeKind::Finished {
        run,
        next_run_at,
        manual,
        chain_lease,
    } = &outcome.kind
    else {
        return None;
    };
    let code = match err {
        StoreError::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let reason = format!(
        "the outcome ({}, HTTP {}) could not be stored (SQLSTATE {}: {err}); recorded as failed",
        run.status.as_str(),
        run.http_status
            .map_or_else(|| "none".to_owned(), |s| s.to_string()),
        code.as_deref().unwrap_or("?"),
    );
    Some(Outcome {
        kind: OutcomeKind::Finished {
            run: RunRecord {
                status: RunStatus::Failed,
                attempts: run.attempts.max(1),
                fired_at: None,
                finished_at: Utc::now(),
                http_status: None,
                latency_ms: None,
                error: Some(truncate_error(&reason)),
                response_excerpt: None,
            },
            next_run_at: *next_run_at,
            manual: *manual,
            chain_lease: *chain_lease,
        },
        ..outcome.clone()
    })
}

const RECORD_OUTCOMES_SQL: &str = "\
WITH input AS (
    SELECT * FROM UNNEST(
        $1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::int[],
        $7::timestamptz[], $8::timestamptz[], $9::int[], $10::int[], $11::text[],
        $12::timestamptz[], $13::timestamptz[], $14::text[], $15::timestamptz[]
    ) AS i(task_id, version, occurrence, kind, status, attempts, fired_at, finished_at,
           http_status, latency_ms, error, next_run_at, lease_until, response_excerpt,
           chain_lease)
),
runs AS (
    INSERT INTO task_runs (task_id, scheduled_for, attempts, fired_at, finished_at, status,
                           http_status, latency_ms, error, manual, response_excerpt)
    SELECT i.task_id, i.occurrence, i.attempts, i.fired_at, i.finished_at, i.status,
           i.http_status, i.latency_ms, i.error, i.kind = 'manual', i.response_excerpt
    FROM input i
    WHERE i.kind IN ('finished', 'manual')
      -- The task may have been deleted while its occurrence was in flight.
      AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = i.task_id)
    ON CONFLICT (task_id, scheduled_for) DO NOTHING
    RETURNING task_id, scheduled_for
),
advanced AS (
    -- Does the task still wait on exactly this occurrence of this version?
    -- The test sits in WHERE so that a concurrent duplicate re-checks it
    -- against the row it waited for.
    UPDATE tasks t SET
        next_run_at = i.next_run_at,
        enabled     = t.enabled AND i.next_run_at IS NOT NULL,
        -- Chaining: the next occurrence is leased in this very statement.
        lease_until = i.chain_lease,
        lease_owner = CASE WHEN i.chain_lease IS NULL THEN NULL ELSE 'sundial-processor' END,
        last_run_at = CASE WHEN r.task_id IS NOT NULL THEN i.finished_at ELSE t.last_run_at END,
        last_status = CASE WHEN r.task_id IS NOT NULL THEN i.status ELSE t.last_status END,
        last_error  = CASE WHEN r.task_id IS NOT NULL THEN i.error ELSE t.last_error END,
        consecutive_failures = CASE
            WHEN r.task_id IS NULL OR i.status = 'skipped' THEN t.consecutive_failures
            WHEN i.status = 'succeeded' THEN 0
            ELSE t.consecutive_failures + 1 END
    FROM input i
    LEFT JOIN runs r ON r.task_id = i.task_id AND r.scheduled_for = i.occurrence
    WHERE t.id = i.task_id AND i.kind IN ('finished', 'recorded')
      AND t.next_run_at = i.occurrence AND t.version = i.version
    RETURNING t.id, i.chain_lease IS NOT NULL AND t.enabled AS chained
),
noted AS (
    -- Runs recorded for occurrences the task no longer waits on (manual
    -- firings, overlap = allow) still update the last outcome.
    UPDATE tasks t SET
        last_run_at = i.finished_at,
        last_status = i.status,
        last_error  = i.error,
        consecutive_failures = CASE
            WHEN i.status = 'skipped' THEN t.consecutive_failures
            WHEN i.status = 'succeeded' THEN 0
            ELSE t.consecutive_failures + 1 END
    FROM input i
    JOIN runs r ON r.task_id = i.task_id AND r.scheduled_for = i.occurrence
    WHERE t.id = i.task_id
      AND (i.kind IN ('finished', 'recorded') AND t.next_run_at = i.occurrence
           AND t.version = i.version) IS NOT TRUE
    RETURNING t.id
),
leased AS (
    UPDATE tasks t SET
        lease_until = i.lease_until,
        lease_owner = CASE WHEN i.lease_until IS NULL THEN NULL ELSE t.lease_owner END
    FROM input i
    WHERE i.kind IN ('retrying', 'released')
      AND t.id = i.task_id AND t.next_run_at = i.occurrence
      AND (i.kind = 'released' OR t.version = i.version)
    RETURNING t.id
)
SELECT (SELECT count(*) FROM runs) AS runs_inserted,
       (SELECT count(*) FROM advanced) AS advanced,
       (SELECT count(*) FROM leased) AS leases_changed,
       ARRAY(SELECT id FROM advanced WHERE chained) AS chained";

/// Error texts and excerpts as stored: sanitised again (no NUL, no control
/// characters but `\n` and `\t`, see [`crate::sanitise`]) whoever produced
/// them, as the last line of defence for the batch statement, and bounded
/// well inside the columns' CHECK constraints.
fn truncate_error(error: &str) -> String {
    const MAX: usize = 2000;
    crate::sanitise::clean_text(error, MAX)
}

/// Due work not yet claimed by anyone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct Backlog {
    /// Occurrences due now and not leased.
    pub due: i64,
    /// Age of the oldest such occurrence, in seconds (0 when none).
    pub oldest_due_age_secs: f64,
}

/// Backlog figures for metrics and `/v1/status`.
pub async fn backlog(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<Backlog> {
    Ok(sqlx::query_as::<_, Backlog>(
        "SELECT count(*) AS due, \
                COALESCE(EXTRACT(EPOCH FROM $1 - min(next_run_at))::float8, 0) AS oldest_due_age_secs \
         FROM tasks \
         WHERE enabled AND next_run_at <= $1 AND (lease_until IS NULL OR lease_until < $1)",
    )
    .bind(now)
    .fetch_one(db)
    .await?)
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub task_id: i64,
    pub scheduled_for: DateTime<Utc>,
    pub attempts: i32,
    pub fired_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub status: String,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    pub manual: bool,
    pub response_excerpt: Option<String>,
}

/// A task's runs, newest occurrence first; `before` is the cursor (an
/// occurrence) for the next page.
pub async fn list_runs(
    db: impl PgExecutor<'_>,
    task_id: i64,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Run>> {
    Ok(sqlx::query_as::<_, Run>(
        "SELECT id, task_id, scheduled_for, attempts, fired_at, finished_at, status, \
                http_status, latency_ms, error, manual, response_excerpt \
         FROM task_runs \
         WHERE task_id = $1 AND ($2::timestamptz IS NULL OR scheduled_for < $2) \
         ORDER BY scheduled_for DESC LIMIT $3",
    )
    .bind(task_id)
    .bind(before)
    .bind(limit.clamp(1, 500))
    .fetch_all(db)
    .await?)
}

/// Run figures over a window, for `/v1/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunStats {
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub skipped: i64,
    /// Fire lag (fired_at − scheduled_for) percentiles in milliseconds.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
}

/// Figures for runs finished since `since`.
pub async fn run_stats(db: impl PgExecutor<'_>, since: DateTime<Utc>) -> Result<RunStats> {
    Ok(sqlx::query_as::<_, RunStats>(
        "SELECT count(*) AS runs, \
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
                count(*) FILTER (WHERE status = 'failed') AS failed, \
                count(*) FILTER (WHERE status = 'timed_out') AS timed_out, \
                count(*) FILTER (WHERE status = 'skipped') AS skipped, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) \
                    FILTER (WHERE lag_ms IS NOT NULL) AS lag_p50_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) \
                    FILTER (WHERE lag_ms IS NOT NULL) AS lag_p99_ms \
         FROM ( \
             SELECT status, \
                    CASE WHEN attempts = 1 AND NOT manual THEN \
                        EXTRACT(EPOCH FROM fired_at - scheduled_for)::float8 * 1000 END AS lag_ms \
             FROM task_runs WHERE finished_at >= $1 \
         ) r",
    )
    .bind(since)
    .fetch_one(db)
    .await?)
}

/// Deletes runs finished before `cutoff`, at most `limit` at a time (so a
/// large purge never holds long locks). Returns how many went.
pub async fn purge_runs(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM task_runs WHERE id IN ( \
             SELECT id FROM task_runs WHERE finished_at < $1 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
