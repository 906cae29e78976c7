//! The processor's write-back: every outcome of a flush in one guarded
//! statement (runs, schedule advances, retry leases, releases, chained
//! occurrences), with isolation of rows Postgres refuses.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::{Result, StoreError};

/// Of the given runs (task, occurrence, `rerun`: 0 for the occurrence's
/// own run, a backfill's id for its re-run), those already recorded.
pub async fn recorded_occurrences(
    db: impl PgExecutor<'_>,
    occurrences: &[(i64, DateTime<Utc>, i64)],
) -> Result<Vec<(i64, DateTime<Utc>, i64)>> {
    if occurrences.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = occurrences.iter().map(|o| o.0).collect();
    let occs: Vec<DateTime<Utc>> = occurrences.iter().map(|o| o.1).collect();
    let reruns: Vec<i64> = occurrences.iter().map(|o| o.2).collect();
    Ok(sqlx::query_as(
        "SELECT r.task_id, r.scheduled_for, r.rerun FROM task_runs r \
         JOIN UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[]) \
             AS q(task_id, scheduled_for, rerun) \
           ON r.task_id = q.task_id AND r.scheduled_for = q.scheduled_for AND r.rerun = q.rerun",
    )
    .bind(&ids)
    .bind(&occs)
    .bind(&reruns)
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
    /// Delay flow control added before the first attempt, in ms.
    pub pacing_ms: Option<i32>,
    /// The `Sundial-Trigger` of the attempt recorded.
    pub trigger: crate::trigger::Trigger,
    /// The backfill that sent it, if one did.
    pub backfill_id: Option<i64>,
    /// 0, or the backfill's id for its re-run of a recorded occurrence.
    pub rerun: i64,
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
    /// Notification events the write raised into the outbox (ids), for
    /// the caller to deliver ([`crate::notify`]).
    pub notifications: Vec<i64>,
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
    let c = Columns::of(outcomes);
    let recorded = sqlx::query_as::<_, Recorded>(RECORD_OUTCOMES_SQL)
        .bind(&c.task_ids)
        .bind(&c.versions)
        .bind(&c.occurrences)
        .bind(&c.kinds)
        .bind(&c.statuses)
        .bind(&c.attempts)
        .bind(&c.fired)
        .bind(&c.finished)
        .bind(&c.http)
        .bind(&c.latency)
        .bind(&c.errors)
        .bind(&c.nexts)
        .bind(&c.leases)
        .bind(&c.excerpts)
        .bind(&c.chains)
        .bind(&c.pacing)
        .bind(&c.triggers)
        .bind(&c.backfills)
        .bind(&c.reruns)
        .fetch_one(db)
        .await?;
    Ok(recorded)
}

/// The outcomes of a flush as the statement's `UNNEST` columns, one entry
/// per outcome in each.
#[derive(Default)]
struct Columns<'a> {
    task_ids: Vec<i64>,
    versions: Vec<i64>,
    occurrences: Vec<DateTime<Utc>>,
    kinds: Vec<&'static str>,
    statuses: Vec<Option<&'a str>>,
    attempts: Vec<Option<i32>>,
    fired: Vec<Option<DateTime<Utc>>>,
    finished: Vec<Option<DateTime<Utc>>>,
    http: Vec<Option<i32>>,
    latency: Vec<Option<i32>>,
    errors: Vec<Option<String>>,
    excerpts: Vec<Option<String>>,
    nexts: Vec<Option<DateTime<Utc>>>,
    leases: Vec<Option<DateTime<Utc>>>,
    chains: Vec<Option<DateTime<Utc>>>,
    pacing: Vec<Option<i32>>,
    triggers: Vec<Option<&'a str>>,
    backfills: Vec<Option<i64>>,
    reruns: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(outcomes: &'a [Outcome]) -> Self {
        let mut c = Columns::default();
        for o in outcomes {
            c.push(o);
        }
        c
    }

    fn push(&mut self, o: &'a Outcome) {
        self.task_ids.push(o.task_id);
        self.versions.push(o.version);
        self.occurrences.push(o.occurrence);
        let KindColumns {
            kind,
            run,
            next,
            lease,
            chain,
        } = KindColumns::of(&o.kind);
        self.kinds.push(kind);
        self.statuses.push(run.map(|r| r.status.as_str()));
        self.attempts.push(run.map(|r| r.attempts));
        self.fired.push(run.and_then(|r| r.fired_at));
        self.finished.push(run.map(|r| r.finished_at));
        self.http.push(run.and_then(|r| r.http_status));
        self.latency.push(run.and_then(|r| r.latency_ms));
        self.errors
            .push(run.and_then(|r| r.error.as_deref().map(truncate_error)));
        self.excerpts
            .push(run.and_then(|r| r.response_excerpt.as_deref().map(truncate_error)));
        self.pacing
            .push(run.and_then(|r| r.pacing_ms).map(|ms| ms.max(0)));
        self.triggers.push(run.map(|r| r.trigger.as_str()));
        self.backfills.push(run.and_then(|r| r.backfill_id));
        self.reruns.push(run.map_or(0, |r| r.rerun));
        self.nexts.push(next);
        self.leases.push(lease);
        self.chains.push(chain);
    }
}

/// What one outcome kind writes: its `kind` word, its run, the next run,
/// a retry lease, a chained occurrence's lease.
struct KindColumns<'a> {
    kind: &'static str,
    run: Option<&'a RunRecord>,
    next: Option<DateTime<Utc>>,
    lease: Option<DateTime<Utc>>,
    chain: Option<DateTime<Utc>>,
}

impl<'a> KindColumns<'a> {
    fn of(kind: &'a OutcomeKind) -> Self {
        let only = |kind| KindColumns {
            kind,
            run: None,
            next: None,
            lease: None,
            chain: None,
        };
        match kind {
            OutcomeKind::Finished {
                run,
                next_run_at,
                manual,
                chain_lease,
            } => KindColumns {
                kind: if *manual { "manual" } else { "finished" },
                run: Some(run),
                next: *next_run_at,
                // A manual firing, or a schedule that ended, chains nothing.
                chain: chain_lease.filter(|_| !*manual && next_run_at.is_some()),
                ..only("finished")
            },
            OutcomeKind::AlreadyRecorded { next_run_at } => KindColumns {
                next: *next_run_at,
                ..only("recorded")
            },
            OutcomeKind::Retrying { lease_until } => KindColumns {
                lease: Some(*lease_until),
                ..only("retrying")
            },
            OutcomeKind::Released => only("released"),
        }
    }
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
        self.notifications.extend(other.notifications);
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
                pacing_ms: run.pacing_ms,
                ..run.clone()
            },
            next_run_at: *next_run_at,
            manual: *manual,
            chain_lease: *chain_lease,
        },
        ..outcome.clone()
    })
}

/// The write-back statement; its comments explain each step.
const RECORD_OUTCOMES_SQL: &str = include_str!("record_outcomes.sql");

/// Error texts and excerpts as stored: sanitised again (no NUL, no control
/// characters but `\n` and `\t`, see [`crate::sanitise`]) whoever produced
/// them, as the last line of defence for the batch statement, and bounded
/// well inside the columns' CHECK constraints.
fn truncate_error(error: &str) -> String {
    const MAX: usize = 2000;
    crate::sanitise::clean_text(error, MAX)
}
