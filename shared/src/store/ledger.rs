//! The occurrence ledger's queries: a task's definitions, events and runs
//! over a range, each in one query, handed to [`crate::ledger`] for the
//! rules; and the actor that the history triggers record.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::{get_task, Result};
use crate::ledger::{self, Definition, Entry, Facts, RunFacts, TaskEvent, TaskNow};

/// Most definitions and events read for one answer (a task toggled with
/// SQL in a loop must not make the answer unbounded).
const MAX_HISTORY_ROWS: i64 = 10_000;

/// What became of every occurrence of a task in a range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Ledger {
    pub task_id: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// How long past its time an occurrence nobody holds counts as missed.
    pub grace_secs: i64,
    /// Occurrences (and runs fired by hand) in order.
    pub occurrences: Vec<Entry>,
    /// The definitions in force during the range.
    pub definitions: Vec<Definition>,
    /// Present when the range holds more than 1000 occurrences: the
    /// earliest listed; ask again with `to` before it for the earlier ones.
    pub more_before: Option<DateTime<Utc>>,
    /// Definitions whose schedule or zone cannot be evaluated (their
    /// occurrences cannot be listed), as `version: reason`.
    pub unreadable: Vec<String>,
}

/// Names the writer of this transaction for the history triggers
/// (`task_events.actor`), e.g. `admin API`.
pub async fn set_actor(tx: &mut Transaction<'_, Postgres>, actor: &str) -> Result<()> {
    sqlx::query("SELECT set_config('sundial.actor', $1, true)")
        .bind(actor)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The ledger of task `task_id` over `[from, to]` at `now`; a missing
/// task is [`super::StoreError::NotFound`].
pub async fn task_ledger(
    pool: &PgPool,
    task_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Ledger> {
    // One snapshot: the task row, its history and its runs agree.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let task = get_task(&mut *tx, task_id).await?;
    let definitions = definitions(&mut *tx, task_id, from, to).await?;
    let enumerated = ledger::enumerate(&definitions, from, to);
    let listed_from = enumerated.more_before.unwrap_or(from);
    let events = events(&mut *tx, task_id, from).await?;
    let runs = runs(&mut *tx, task_id, listed_from, to).await?;
    let flow_held = flow_held(&mut *tx, &task.flow, now).await?;
    tx.commit().await?;

    let now_state = TaskNow {
        enabled: task.enabled,
        next_run_at: task.next_run_at,
        lease_until: task.lease_until,
        overlap: task.overlap,
        catch_up: task.catch_up,
        timeout_ms: task.timeout_ms,
        jitter_secs: task.jitter_secs,
        flow_held,
    };
    let facts = Facts {
        definitions: &definitions,
        events: &events,
        runs: &runs,
        task: &now_state,
        now,
        grace,
        to,
    };
    let occurrences = ledger::account(&facts, &enumerated);
    let unreadable = enumerated
        .unreadable
        .iter()
        .map(|(i, why)| format!("version {}: {why}", definitions[*i].version))
        .collect();
    Ok(Ledger {
        task_id,
        from,
        to,
        grace_secs: grace.num_seconds(),
        occurrences,
        definitions,
        more_before: enumerated.more_before,
        unreadable,
    })
}

/// The definitions in force at some point of `[from, to]`, oldest first.
async fn definitions(
    db: impl PgExecutor<'_>,
    task_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Definition>> {
    // The newest ones when there are too many: they hold the listed occurrences.
    Ok(sqlx::query_as::<_, Definition>(
        "SELECT * FROM ( \
             SELECT version, schedule, timezone, valid_from, valid_to, start_at, end_at, exclude \
             FROM task_definitions \
             WHERE task_id = $1 AND valid_from <= $3 AND (valid_to IS NULL OR valid_to > $2) \
             ORDER BY valid_from DESC, id DESC LIMIT $4 \
         ) d ORDER BY valid_from, version",
    )
    .bind(task_id)
    .bind(from)
    .bind(to)
    .bind(MAX_HISTORY_ROWS)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Definition::with_bounds)
    .collect())
}

/// The events from `from` on, and the last pause, resume or disable
/// before it (whether the task was on when the range began), in order.
async fn events(
    db: impl PgExecutor<'_>,
    task_id: i64,
    from: DateTime<Utc>,
) -> Result<Vec<TaskEvent>> {
    Ok(sqlx::query_as::<_, TaskEvent>(
        "SELECT at, kind, actor, reason, version FROM task_events \
         WHERE task_id = $1 AND ( \
             at >= $2 \
             OR id = (SELECT id FROM task_events \
                      WHERE task_id = $1 AND at < $2 AND kind <> 'edited' \
                      ORDER BY at DESC, id DESC LIMIT 1)) \
         ORDER BY at, id LIMIT $3",
    )
    .bind(task_id)
    .bind(from)
    .bind(MAX_HISTORY_ROWS)
    .fetch_all(db)
    .await?)
}

/// The runs of `[from, to]`, and the first scheduled run after `to` (the
/// one catch-up may have fired instead of the last listed occurrences).
async fn runs(
    db: impl PgExecutor<'_>,
    task_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<DateTime<Utc>, RunFacts>> {
    let rows = sqlx::query_as::<_, RunFacts>(
        // An occurrence's own run only (rerun = 0): a backfill's re-runs
        // are listed with the runs and the backfill.
        "(SELECT scheduled_for, status, attempts, fired_at, finished_at, http_status, latency_ms, \
                 pacing_ms, error, manual, trigger, backfill_id \
          FROM task_runs WHERE task_id = $1 AND scheduled_for BETWEEN $2 AND $3 AND rerun = 0 \
          ORDER BY scheduled_for DESC LIMIT $4) \
         UNION ALL \
         (SELECT scheduled_for, status, attempts, fired_at, finished_at, http_status, latency_ms, \
                 pacing_ms, error, manual, trigger, backfill_id \
          FROM task_runs WHERE task_id = $1 AND scheduled_for > $3 AND NOT manual AND rerun = 0 \
          ORDER BY scheduled_for LIMIT 1)",
    )
    .bind(task_id)
    .bind(from)
    .bind(to)
    // Manual runs may sit between occurrences: room for as many again.
    .bind(2 * ledger::MAX_OCCURRENCES as i64)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.scheduled_for, r)).collect())
}

/// Why the task's flow holds its work now (open breaker, backoff), if it
/// does: the claim leaves such rows due and unleased on purpose.
async fn flow_held(
    db: impl PgExecutor<'_>,
    flow: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    /// breaker, probe_at, not_before
    type HeldRow = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let row: Option<HeldRow> = sqlx::query_as(
        "SELECT breaker, probe_at, not_before FROM flow_state \
         WHERE key = $1 AND ((breaker = 'open' AND probe_at > $2) OR not_before > $2)",
    )
    .bind(flow)
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(row.map(
        |(breaker, probe_at, not_before)| match (breaker.as_str(), probe_at) {
            ("open", Some(probe)) => format!(
                "held: flow {flow} is open (circuit breaker), next probe at {}",
                probe.format("%Y-%m-%d %H:%M:%SZ")
            ),
            _ => format!(
                "held: flow {flow} is backing off until {}",
                not_before.map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            ),
        },
    ))
}
