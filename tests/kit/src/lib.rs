//! The test kit: one row factory for `tasks` ([`TaskBuilder`]), the
//! history of the occurrence ledger ([`ledger_scenario`]), and the
//! database helpers ([`database_url`], [`database_url_for`]).
//!
//! Every field of a task is optional and the defaults are sane: a unique
//! name, `rate(1 hour)`, the URL `http://127.0.0.1:9/` (nothing listens
//! there), `next_run_at` left NULL (the scanner computes it, as for rows
//! registered with plain SQL). A field that is not set is left out of the
//! `INSERT`, so the column default of the migration applies.
//!
//! This crate does not depend on `sundial` (the shared crate uses it as a
//! dev-dependency): enums are plain strings, as in the table.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

/// The URL a task gets when none is given: a closed port on loopback.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9/";
/// The schedule a task gets when none is given: weekly, aligned to the
/// Unix epoch (Thursdays 00:00 UTC), so a task a test fires does not come
/// due again while the test runs. (`rate(1 hour)` did: a run that crossed
/// the top of an hour fired every such task a second time.)
pub const DEFAULT_SCHEDULE: &str = "rate(7 days)";

/// `DATABASE_URL`, with a hint when it is not set.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run `eval \"$(make -s services)\"` or `make test`")
    })
}

/// The URL of the fresh database behind a `#[sqlx::test]` pool, for the
/// processes a test starts (sqlx creates and removes that database): the
/// server and query of `DATABASE_URL`, the path of the pool's database.
pub fn database_url_for(pool: &PgPool) -> String {
    let base = database_url();
    let db = pool
        .connect_options()
        .get_database()
        .expect("test database name")
        .to_string();
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(&db);
    url.to_string()
}

/// What an insert returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertedTask {
    pub id: i64,
    pub version: i64,
    pub next_run_at: Option<DateTime<Utc>>,
}

type PerIndex = std::sync::Arc<dyn Fn(i64, TaskBuilder) -> TaskBuilder + Send + Sync>;

/// One row of `tasks`, every field optional.
#[derive(Clone, Default)]
pub struct TaskBuilder {
    name: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    method: Option<String>,
    url: Option<String>,
    headers: Option<serde_json::Value>,
    body: Option<String>,
    timeout_ms: Option<i32>,
    max_attempts: Option<i32>,
    retry_backoff_ms: Option<i32>,
    catch_up: Option<String>,
    catch_up_max_age_secs: Option<i32>,
    overlap: Option<String>,
    jitter_secs: Option<i32>,
    enabled: Option<bool>,
    next_run_at: Option<DateTime<Utc>>,
    lease_until: Option<DateTime<Utc>>,
    lease_owner: Option<String>,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    exclude: Option<String>,
    tags: Option<Vec<String>>,
    // Only for insert_many.
    spread: Option<Duration>,
    per_index: Option<PerIndex>,
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "task-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TaskBuilder {
    pub fn new() -> TaskBuilder {
        TaskBuilder::default()
    }

    /// The name; for [`TaskBuilder::insert_many`], the prefix of the names
    /// (`<prefix><index>`, index from 1).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn schedule(mut self, schedule: impl Into<String>) -> Self {
        self.schedule = Some(schedule.into());
        self
    }
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    pub fn headers(mut self, headers: serde_json::Value) -> Self {
        self.headers = Some(headers);
        self
    }
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
    pub fn timeout_ms(mut self, ms: i32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
    pub fn max_attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }
    pub fn retry_backoff_ms(mut self, ms: i32) -> Self {
        self.retry_backoff_ms = Some(ms);
        self
    }
    /// `skip`, `all` or `none`.
    pub fn catch_up(mut self, catch_up: impl Into<String>) -> Self {
        self.catch_up = Some(catch_up.into());
        self
    }
    pub fn catch_up_max_age_secs(mut self, secs: i32) -> Self {
        self.catch_up_max_age_secs = Some(secs);
        self
    }
    /// `allow` or `forbid`.
    pub fn overlap(mut self, overlap: impl Into<String>) -> Self {
        self.overlap = Some(overlap.into());
        self
    }
    pub fn jitter_secs(mut self, secs: i32) -> Self {
        self.jitter_secs = Some(secs);
        self
    }
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }
    /// `None` (the default) leaves `next_run_at` NULL: the scanner computes
    /// it, as for a row registered with plain SQL.
    pub fn next_run_at(mut self, at: impl Into<Option<DateTime<Utc>>>) -> Self {
        self.next_run_at = at.into();
        self
    }
    /// A lease already held until `until` (as if a scanner had claimed the
    /// occurrence at `next_run_at`).
    pub fn lease_until(mut self, until: impl Into<Option<DateTime<Utc>>>) -> Self {
        self.lease_until = until.into();
        self
    }
    pub fn lease_owner(mut self, owner: impl Into<String>) -> Self {
        self.lease_owner = Some(owner.into());
        self
    }
    /// The start of the active window (no occurrence before it).
    pub fn start_at(mut self, at: DateTime<Utc>) -> Self {
        self.start_at = Some(at);
        self
    }
    /// The end of the active window (no occurrence at or after it).
    pub fn end_at(mut self, at: DateTime<Utc>) -> Self {
        self.end_at = Some(at);
        self
    }
    /// The exclusion: a schedule expression whose matches are skipped.
    pub fn exclude(mut self, expr: impl Into<String>) -> Self {
        self.exclude = Some(expr.into());
        self
    }

    /// The task's tags (`tags text[]`).
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = Some(tags.iter().map(|t| t.to_string()).collect());
        self
    }

    /// For [`TaskBuilder::insert_many`]: row `g` (from 1) is due at
    /// `next_run_at + g * step`.
    pub fn spread(mut self, step: Duration) -> Self {
        self.spread = Some(step);
        self
    }
    /// For [`TaskBuilder::insert_many`]: row `g` (from 1) is this builder
    /// (with its name and spread applied) passed through `f(g, builder)`.
    pub fn each(
        mut self,
        f: impl Fn(i64, TaskBuilder) -> TaskBuilder + Send + Sync + 'static,
    ) -> Self {
        self.per_index = Some(std::sync::Arc::new(f));
        self
    }

    /// Inserts the row; panics on error.
    pub async fn insert(self, pool: &PgPool) -> InsertedTask {
        let what = self.describe();
        self.try_insert(pool)
            .await
            .unwrap_or_else(|e| panic!("insert {what}: {e}"))
    }

    /// Inserts the row; the database error (a check constraint, say) is
    /// returned.
    pub async fn try_insert<'e, E>(self, executor: E) -> Result<InsertedTask, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        let mut query = self.query();
        let (id, version, next_run_at) = query
            .build_query_as::<(i64, i64, Option<DateTime<Utc>>)>()
            .fetch_one(executor)
            .await?;
        Ok(InsertedTask {
            id,
            version,
            next_run_at,
        })
    }

    /// Inserts `n` rows in one transaction, as the `generate_series` inserts
    /// did: row `g` (1..=n) is named `<name><g>` (the name is the prefix,
    /// a unique one when unset), due at `next_run_at + g * spread` when a
    /// spread is set, and passed through the [`TaskBuilder::each`] closure.
    pub async fn insert_many(self, pool: &PgPool, n: i64) -> Vec<InsertedTask> {
        let prefix = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-", unique_name()));
        let mut tx = pool.begin().await.expect("begin");
        let mut inserted = Vec::with_capacity(n.max(0) as usize);
        for g in 1..=n {
            let mut row = self.clone();
            row.name = Some(format!("{prefix}{g}"));
            if let (Some(step), Some(at)) = (self.spread, self.next_run_at) {
                row.next_run_at = Some(at + step * g as i32);
            }
            if let Some(f) = &self.per_index {
                row = f(g, row);
            }
            let what = row.describe();
            let task = row
                .try_insert(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("insert {what}: {e}"));
            inserted.push(task);
        }
        tx.commit().await.expect("commit");
        inserted
    }

    fn describe(&self) -> String {
        format!("task {:?}", self.name.as_deref().unwrap_or("<unnamed>"))
    }

    fn query(self) -> QueryBuilder<Postgres> {
        let mut columns: Vec<&'static str> = Vec::new();
        let mut q = QueryBuilder::<Postgres>::new("");
        // Only the columns that were set: the others keep the defaults of
        // the migration. Collect them, then write both lists.
        enum V {
            Text(String),
            Int(i32),
            Bool(bool),
            Time(DateTime<Utc>),
            Json(serde_json::Value),
            Texts(Vec<String>),
        }
        let mut values: Vec<V> = Vec::new();
        let mut push = |column: &'static str, value: V| {
            columns.push(column);
            values.push(value);
        };
        push("name", V::Text(self.name.unwrap_or_else(unique_name)));
        push(
            "schedule",
            V::Text(
                self.schedule
                    .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string()),
            ),
        );
        push(
            "url",
            V::Text(self.url.unwrap_or_else(|| DEFAULT_URL.to_string())),
        );
        let texts = [
            ("timezone", self.timezone),
            ("method", self.method),
            ("body", self.body),
            ("catch_up", self.catch_up),
            ("overlap", self.overlap),
            ("lease_owner", self.lease_owner),
            ("exclude", self.exclude),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                push(column, V::Text(value));
            }
        }
        let ints = [
            ("timeout_ms", self.timeout_ms),
            ("max_attempts", self.max_attempts),
            ("retry_backoff_ms", self.retry_backoff_ms),
            ("catch_up_max_age_secs", self.catch_up_max_age_secs),
            ("jitter_secs", self.jitter_secs),
        ];
        for (column, value) in ints {
            if let Some(value) = value {
                push(column, V::Int(value));
            }
        }
        if let Some(enabled) = self.enabled {
            push("enabled", V::Bool(enabled));
        }
        if let Some(headers) = self.headers {
            push("headers", V::Json(headers));
        }
        if let Some(tags) = self.tags {
            push("tags", V::Texts(tags));
        }
        let times = [
            ("next_run_at", self.next_run_at),
            ("lease_until", self.lease_until),
            ("start_at", self.start_at),
            ("end_at", self.end_at),
        ];
        for (column, value) in times {
            if let Some(value) = value {
                push(column, V::Time(value));
            }
        }
        q.push("INSERT INTO tasks (");
        q.push(columns.join(", "));
        q.push(") VALUES (");
        let mut list = q.separated(", ");
        for value in values {
            match value {
                V::Text(v) => list.push_bind(v),
                V::Int(v) => list.push_bind(v),
                V::Bool(v) => list.push_bind(v),
                V::Time(v) => list.push_bind(v),
                V::Json(v) => list.push_bind(v),
                V::Texts(v) => list.push_bind(v),
            };
        }
        q.push(") RETURNING id, version, next_run_at");
        q
    }
}

/// A task with a history for the occurrence ledger: hourly (`0 * * * *`,
/// UTC, catch-up `skip`, 3 attempts), in existence since an hour before
/// `hours[0]`, which is eight hours before the current hour. Its runs:
///
/// * `hours[0]` succeeded (fired 4 ms late, 200 in 83 ms);
/// * `hours[1]` failed after 3 attempts (500 in 12 ms, error `HTTP 500`);
/// * `hours[2]` skipped (catch-up `none`'s reason);
/// * `hours[3]` has no run: catch-up fired `hours[4]` (10 minutes late);
/// * `hours[5]` and later have no run; the task waits on `hours[6]`,
///   unleased.
///
/// Pausing it around `hours[5]` is the caller's part (through the API
/// under test, then [`backdate_event`]).
#[derive(Debug, Clone)]
pub struct LedgerScenario {
    pub id: i64,
    pub name: String,
    /// `hours[k]` = eight hours before the current hour, plus `k` hours
    /// (`k` = 0..=8).
    pub hours: Vec<DateTime<Utc>>,
}

/// Inserts the task and runs of [`LedgerScenario`].
pub async fn ledger_scenario(pool: &PgPool) -> LedgerScenario {
    let now = Utc::now();
    let hour = now.timestamp() - now.timestamp().rem_euclid(3600);
    let base = DateTime::from_timestamp(hour, 0).expect("an instant") - Duration::hours(8);
    let hours: Vec<DateTime<Utc>> = (0..=8).map(|k| base + Duration::hours(k)).collect();
    let name = unique_name();
    let task = TaskBuilder::new()
        .name(name.clone())
        .schedule("0 * * * *")
        .catch_up("skip")
        .max_attempts(3)
        .next_run_at(hours[6])
        .insert(pool)
        .await;
    sqlx::query("UPDATE task_definitions SET valid_from = $2 WHERE task_id = $1")
        .bind(task.id)
        .bind(base - Duration::hours(1))
        .execute(pool)
        .await
        .expect("backdate the definition");
    let ms = Duration::milliseconds;
    // (occurrence, status, attempts, fired_at, http_status, latency_ms, error)
    type Row = (
        DateTime<Utc>,
        &'static str,
        i32,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<i32>,
        Option<&'static str>,
    );
    let rows: [Row; 4] = [
        (
            hours[0],
            "succeeded",
            1,
            Some(hours[0] + ms(4)),
            Some(200),
            Some(83),
            None,
        ),
        (
            hours[1],
            "failed",
            3,
            Some(hours[1] + ms(2000)),
            Some(500),
            Some(12),
            Some("HTTP 500"),
        ),
        (
            hours[2],
            "skipped",
            1,
            None,
            None,
            None,
            Some("missed its time; catch-up policy is `none`"),
        ),
        (
            hours[4],
            "succeeded",
            1,
            Some(hours[4] + Duration::minutes(10)),
            Some(200),
            Some(50),
            None,
        ),
    ];
    for (at, status, attempts, fired_at, http_status, latency_ms, error) in rows {
        sqlx::query(
            "INSERT INTO task_runs (task_id, scheduled_for, status, attempts, fired_at, \
             finished_at, http_status, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, COALESCE($5, $2) + interval '1 second', $6, $7, $8)",
        )
        .bind(task.id)
        .bind(at)
        .bind(status)
        .bind(attempts)
        .bind(fired_at)
        .bind(http_status)
        .bind(latency_ms)
        .bind(error)
        .execute(pool)
        .await
        .expect("insert a run");
    }
    LedgerScenario {
        id: task.id,
        name,
        hours,
    }
}

/// Moves the latest event of `kind` (`paused`, `resumed`, ...) of a task
/// to `at`, as if it had happened then.
pub async fn backdate_event(pool: &PgPool, task_id: i64, kind: &str, at: DateTime<Utc>) {
    let done = sqlx::query(
        "UPDATE task_events SET at = $3 WHERE id = ( \
             SELECT id FROM task_events WHERE task_id = $1 AND kind = $2 \
             ORDER BY id DESC LIMIT 1)",
    )
    .bind(task_id)
    .bind(kind)
    .bind(at)
    .execute(pool)
    .await
    .expect("backdate an event");
    assert_eq!(
        done.rows_affected(),
        1,
        "task {task_id} has no `{kind}` event"
    );
}
