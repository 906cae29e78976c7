//! The occurrence ledger: for a task and a time range, every occurrence its
//! schedule defined (as of the definition in force then) and what became
//! of it. This module holds the rules, without a database: the store
//! ([`crate::store::ledger`]) loads the facts (definitions, events, runs,
//! the task row) and [`account`] turns them into [`Entry`]s.
//!
//! An occurrence with a recorded run is `fired` or `skipped` (the run
//! says why). Without a run, it is:
//!
//! * `not_scheduled` while the task was paused or disabled (the event says
//!   when and by whom);
//! * `in_flight` when the task waits on it and a lease is held;
//! * `pending` when it is in the future, or due within the grace;
//! * `missed` when it is due more than the grace ago ([`MISSED_GRACE`]
//!   unless `SUNDIAL_MISSED_GRACE_SECS` says otherwise), nothing holds
//!   it, and the task still waits on it (or on an earlier one);
//! * `passed_over` when the task moved past it without a run: catch-up
//!   fired a later occurrence instead, or the schedule was edited.
//!
//! The rules live one file per question: `enumerate` (which occurrences a
//! range holds), `states` (what became of each), `window` (what the active
//! window and the exclusion say of one), `summary` (the sentence for
//! people).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::task::{CatchUp, Overlap};

mod enumerate;
mod states;
mod summary;
mod window;

pub use enumerate::{enumerate, Enumerated};
#[cfg(test)]
use states::with_run;
pub use states::{account, Facts};
pub use summary::summary;

/// Most occurrences one answer lists.
pub const MAX_OCCURRENCES: usize = 1000;
/// How long past its time an occurrence nobody holds counts as `missed`,
/// by default (`SUNDIAL_MISSED_GRACE_SECS` sets it per process).
pub const MISSED_GRACE: Duration =
    Duration::seconds(crate::config::defaults::MISSED_GRACE_SECS as i64);
/// Schedule evaluations one answer may spend (DST overlaps aside, a window
/// of [`MAX_OCCURRENCES`] minimum intervals holds that many occurrences).
const MAX_EVALUATIONS: usize = 4 * MAX_OCCURRENCES + 16;

/// A timing a task had, in force from `valid_from` until `valid_to`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Definition {
    /// The task's version when this timing came into force.
    pub version: i64,
    pub schedule: String,
    pub timezone: String,
    pub valid_from: DateTime<Utc>,
    /// Absent: still in force.
    pub valid_to: Option<DateTime<Utc>>,
    /// The active window and the exclusion in force with it.
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub exclude: Option<String>,
    /// The same, parsed once (an unreadable exclusion, which only plain SQL
    /// can store, excludes nothing).
    #[sqlx(skip)]
    #[serde(skip)]
    pub bounds: crate::schedule::Bounds,
}

impl Definition {
    /// Parses `start_at`, `end_at` and `exclude` into [`Definition::bounds`].
    pub fn with_bounds(mut self) -> Self {
        let window = crate::window::TaskWindow {
            start_at: self.start_at,
            end_at: self.end_at,
            exclude: self.exclude.clone(),
        };
        self.bounds = window.bounds().unwrap_or_default();
        self
    }
}

/// What happened to a task (a row of `task_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EventKind {
    /// Someone set `enabled = false`.
    Paused,
    /// Someone set `enabled = true`.
    Resumed,
    /// Sundial turned the task off (invalid schedule, one-shot done).
    Disabled,
    /// The schedule or time zone changed.
    Edited,
}

/// One change of a task: when, what, by whom.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskEvent {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    /// `admin API`, `sql`, `scanner`, or what the writer set in `sundial.actor`.
    pub actor: String,
    pub reason: Option<String>,
    /// The task's version after the change.
    pub version: i64,
}

/// The recorded run of an occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunFacts {
    pub scheduled_for: DateTime<Utc>,
    /// `succeeded`, `failed`, `timed_out` or `skipped`.
    pub status: String,
    pub attempts: i32,
    pub fired_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i32>,
    /// The delay flow-control pacing added (not lateness).
    pub pacing_ms: Option<i32>,
    pub error: Option<String>,
    /// Fired by hand (`POST /trigger`), not by the schedule.
    pub manual: bool,
    /// The `Sundial-Trigger` of the attempt recorded (`schedule`, `retry`,
    /// `catch-up`, `backfill`, `manual`).
    pub trigger: crate::trigger::Trigger,
    /// The backfill that fired it, if one did.
    pub backfill_id: Option<i64>,
}

/// The task as it is now: what it waits on and who holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskNow {
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub timeout_ms: i32,
    pub jitter_secs: i32,
    /// Why the task's flow holds its work now (open breaker, backoff): its
    /// due occurrences wait on purpose and are not missed.
    pub flow_held: Option<String>,
}

/// What became of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OccurrenceState {
    /// A request went out; `run.status` says how it ended.
    Fired,
    /// Recorded without a request (catch-up `none`, flow open, ...).
    Skipped,
    /// Not due yet, or due within the grace and waiting to be claimed.
    Pending,
    /// Claimed (leased) or queued; no outcome yet.
    InFlight,
    /// The task was paused or disabled at its time.
    NotScheduled,
    /// The task moved past it without a run.
    PassedOver,
    /// Due longer than the grace ago, no run, no lease.
    Missed,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub scheduled_for: DateTime<Utc>,
    /// The zone the occurrence was defined in.
    pub timezone: String,
    /// Version of the definition that defined it; absent for a run that
    /// no definition defines (fired by hand).
    pub definition_version: Option<i64>,
    pub state: OccurrenceState,
    /// The recorded run, for `fired` and `skipped`.
    pub run: Option<RunFacts>,
    /// Lateness: fired_at − scheduled_for − pacing, in milliseconds.
    pub lag_ms: Option<i64>,
    /// Why, in words (the skip reason, what the task waits on, ...).
    pub reason: Option<String>,
    /// The pause, disable or edit that explains a `not_scheduled` or
    /// `passed_over` occurrence.
    pub event: Option<TaskEvent>,
    /// The answer for people: "09:00 UTC on 2026-12-01 fired at ...".
    pub summary: String,
}

#[cfg(test)]
mod tests;
