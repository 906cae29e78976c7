//! Pause writes: a pause with who, why and until when, and the scanner's
//! resume of pauses whose `until` has passed (see [`crate::pause`]).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, Transaction};

use super::tasks::{get_task, set_enabled};
use super::Result;
use crate::pause::{Pause, SUNDIAL_ACTOR};
use crate::task::Task;

/// Pauses a task (or, if it is paused already, replaces the reason and
/// `until` of its pause) on behalf of `pause.by`. The caller has named
/// itself with [`super::set_actor`] for the ledger.
pub async fn pause_task(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    pause: &Pause,
    now: DateTime<Utc>,
) -> Result<Task> {
    // The pause trigger and the ledger take the reason from here.
    sqlx::query("SELECT set_config('sundial.reason', coalesce($1, ''), true)")
        .bind(&pause.reason)
        .execute(&mut **tx)
        .await?;
    let task = set_enabled(tx, id, false, now).await?;
    if task.enabled {
        // A task Sundial disabled (no schedule) cannot be paused: unchanged.
        return Ok(task);
    }
    sqlx::query(
        "UPDATE tasks SET paused_by = $2, paused_until = $3, \
             paused_reason = coalesce($4, CASE WHEN paused_by = $2 THEN paused_reason END), \
             paused_at = coalesce(paused_at, now()) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(&pause.by)
    .bind(pause.until)
    .bind(&pause.reason)
    .execute(&mut **tx)
    .await?;
    get_task(&mut **tx, id).await
}

/// Resumes the tasks whose pause ended (`paused_until <= now`), as a
/// resume by hand would: from their next occurrence after now (the scanner
/// computes it, `next_run_at` is cleared). Returns how many resumed.
pub async fn resume_expired(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query(
        // The ledger names the resumer from the transaction's setting:
        // one statement, so the setting is local to it.
        "WITH actor AS (SELECT set_config('sundial.actor', $2, true)) \
         UPDATE tasks SET enabled = true, next_run_at = NULL \
         FROM actor \
         WHERE NOT enabled AND paused_until IS NOT NULL AND paused_until <= $1 \
           AND schedule_error IS NULL",
    )
    .bind(now)
    .bind(SUNDIAL_ACTOR)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
