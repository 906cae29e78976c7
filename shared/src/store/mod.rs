//! The task store: every query Sundial runs against Postgres, one file per
//! aggregate:
//!
//! * [`tasks`]: the task rows (create, read, list, edit, pause, delete) and
//!   the first occurrence of rows inserted with plain SQL;
//! * [`backfills`]: backfill requests, their lease and cursor, and their
//!   progress;
//! * [`claims`]: what the scanner does to due rows (claim, release, advance
//!   `overlap = allow` rows past what is queued) and the backlog figures;
//! * [`outcomes`]: the processor's batched write-back of runs, retries,
//!   releases and chained occurrences (and the failure counts, auto-pauses
//!   and notification events they cause);
//! * [`pauses`]: pauses with who/why/until, and the resume of expired ones;
//! * [`notifications`]: the notification outbox (claim, settle, purge);
//! * [`runs`]: run history (pages, figures, retention);
//! * [`task_stats`]: per-task figures (worst lateness, most failures);
//! * [`lag`]: lateness percentiles over time (the console's charts);
//! * [`flow_config`]: the limits operators set per flow;
//! * [`flow_views`]: the operator's view of flows (limits, state, counts);
//! * [`flows`]: the shared state of flows (pacing, backoff, breaker);
//! * [`idempotency`]: the admin API's idempotency keys;
//! * [`ledger`]: the history behind the occurrence ledger (definitions,
//!   events, runs over a range);
//! * [`heartbeat`]: the scanner's heartbeat and the other facts the
//!   pipeline's health is judged by.
//!
//! Functions take `impl PgExecutor` so callers can compose them in one
//! transaction, and an explicit `now` so tests control the clock. Batch
//! operations are single statements over `UNNEST` arrays; each statement
//! has a prose comment on what it guards.

use sqlx::PgPool;

use crate::task::InvalidField;

/// A run's lateness in milliseconds, as an SQL expression over a
/// `task_runs` row: start of the first attempt − occurrence − the delay
/// flow control gave it (pacing is not lateness), never below 0. NULL for
/// runs that say nothing of lateness: retries, manual triggers,
/// backfills, runs without a call. The same figure as the EMF `FireLagMs`.
/// (`date_part` is float8 arithmetic; `EXTRACT` would be numeric, several
/// times slower over the hundred thousand rows of a status query.)
macro_rules! run_lag_ms {
    () => {
        "CASE WHEN attempts = 1 AND NOT manual AND backfill_id IS NULL AND fired_at IS NOT NULL THEN \
             greatest(date_part('epoch', fired_at - scheduled_for) * 1000 \
                      - coalesce(pacing_ms, 0), 0) END"
    };
}

pub mod backfills;
pub mod claims;
pub mod fire_claims;
pub mod flow_config;
pub mod flow_views;
pub mod flows;
pub mod heartbeat;
pub mod idempotency;
pub mod lag;
pub mod ledger;
pub mod notifications;
pub mod outcomes;
pub mod pauses;
pub mod runs;
pub mod skips;
pub mod task_stats;
pub mod tasks;

pub use backfills::*;
pub use claims::*;
pub use fire_claims::*;
pub use flow_config::*;
pub use flow_views::*;
pub use flows::*;
pub use heartbeat::*;
pub use idempotency::*;
pub use lag::*;
pub use ledger::*;
pub use notifications::*;
pub use outcomes::*;
pub use pauses::*;
pub use runs::*;
pub use skips::*;
pub use task_stats::*;
pub use tasks::*;

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

/// Does the database answer? (`SELECT 1`, for health checks.)
pub async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
