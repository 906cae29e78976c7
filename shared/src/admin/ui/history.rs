//! The time-bound parts of a task's page: what comes next (the explained
//! preview of `POST /v1/schedules/preview`, DST notes included), what
//! became of the last day's occurrences (the ledger of
//! `GET /v1/tasks/{id}/occurrences`), and the run history page by page.

use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use sqlx::PgPool;

use super::layout::{self, in_zone, ms, utc};
use crate::ledger::{Entry, OccurrenceState};
use crate::schedule::preview::{explain, PreviewInput};
use crate::schedule::{describe::describe, Schedule};
use crate::store::{self, Ledger, Run, StoreError};
use crate::task::Task;

/// Occurrences the page lists ahead.
pub const UPCOMING: usize = 10;
/// Ledger entries shown (the newest).
pub const LEDGER_SHOWN: usize = 50;
/// Runs a page of the history shows.
pub const RUNS_PAGE: i64 = 25;

/// The schedule in words ("at 02:00 every day, Europe/Paris").
pub fn described(task: &Task) -> String {
    Schedule::parse(&task.schedule)
        .map(|s| describe(&s, &task.timezone))
        .unwrap_or_default()
}

/// The next occurrences, each in the task's zone and UTC, with DST notes.
pub fn upcoming(task: &Task, now: DateTime<Utc>) -> Markup {
    // From the occurrence the task waits on (it may be overdue); a paused
    // task lists what it would fire once resumed.
    let from = match task.next_run_at {
        Some(next) if task.enabled => next - Duration::milliseconds(1),
        _ => now,
    };
    let input = PreviewInput {
        schedule: &task.schedule,
        timezone: &task.timezone,
        exclude: task.window.exclude.as_deref(),
        start_at: task.window.start_at,
        end_at: task.window.end_at,
        from,
        count: UPCOMING,
    };
    let explained = match explain(&input) {
        Ok(explained) => explained,
        Err(err) => return html! { p.error { "Cannot list occurrences: " (err) } },
    };
    html! {
        @if !task.enabled { p.muted { "Paused or disabled: these fire only once it is enabled again." } }
        table {
            thead { tr { th { "Task's zone" } th { "UTC" } th { "Note" } } }
            tbody {
                @for entry in &explained.entries {
                    tr {
                        td { (in_zone(entry.at, &task.timezone)) }
                        td { small { (utc(entry.at)) } }
                        td {
                            @if let Some(skipped) = &entry.skipped { span.badge { (skipped) } " " }
                            @if let Some(dst) = &entry.dst { span.dst { (dst.note) } }
                        }
                    }
                }
            }
        }
        @for note in &explained.notes { p.muted { (note) } }
    }
}

fn state_label(state: OccurrenceState) -> &'static str {
    match state {
        OccurrenceState::Fired => "fired",
        OccurrenceState::Skipped => "skipped",
        OccurrenceState::Pending => "pending",
        OccurrenceState::InFlight => "in flight",
        OccurrenceState::NotScheduled => "not scheduled",
        OccurrenceState::PassedOver => "passed over",
        OccurrenceState::Missed => "missed",
    }
}

fn entry_badge(entry: &Entry) -> Markup {
    let class = match (entry.state, entry.run.as_ref().map(|r| r.status.as_str())) {
        (OccurrenceState::Fired, Some("succeeded")) => "ok",
        (OccurrenceState::Fired, _) | (OccurrenceState::Missed, _) => "bad",
        (OccurrenceState::NotScheduled | OccurrenceState::PassedOver, _) => "paused",
        _ => "muted",
    };
    html! { span class={ "badge " (class) } { (state_label(entry.state)) } }
}

/// The occurrence ledger of the last day, newest first.
pub fn ledger(task: &Task, ledger: &Ledger) -> Markup {
    let shown: Vec<&Entry> = ledger.occurrences.iter().rev().take(LEDGER_SHOWN).collect();
    html! {
        h2 { "Occurrences, last 24 hours" }
        @if shown.is_empty() { p.muted { "No occurrence in the last 24 hours." } } @else {
            table.ledger {
                thead { tr { th { "Occurrence (task's zone)" } th { "State" } th { "What happened" } } }
                tbody {
                    @for entry in &shown {
                        tr {
                            td { (in_zone(entry.scheduled_for, &task.timezone)) }
                            td { (entry_badge(entry)) }
                            td { (entry.summary) }
                        }
                    }
                }
            }
            @if ledger.occurrences.len() > LEDGER_SHOWN || ledger.more_before.is_some() {
                p.muted { "The newest " (LEDGER_SHOWN) " are shown; "
                    code { "sundial why" } " and " code { "GET /v1/tasks/" (task.id) "/occurrences" }
                    " go further back." }
            }
        }
        @for unreadable in &ledger.unreadable { p.error { "Definition " (unreadable) } }
    }
}

/// A page of the run history.
#[derive(Debug, Clone)]
pub struct RunsPage {
    pub runs: Vec<Run>,
    /// `before` of the next page.
    pub next_before: Option<DateTime<Utc>>,
    /// Whether this is a later page.
    pub paged: bool,
}

impl RunsPage {
    /// The runs of occurrences before `before` (newest first).
    pub async fn load(
        pool: &PgPool,
        task_id: i64,
        before: Option<DateTime<Utc>>,
    ) -> Result<RunsPage, StoreError> {
        let mut runs = store::list_runs(pool, task_id, before, RUNS_PAGE + 1).await?;
        let next_before = if runs.len() as i64 > RUNS_PAGE {
            runs.truncate(RUNS_PAGE as usize);
            runs.last().map(|r| r.scheduled_for)
        } else {
            None
        };
        Ok(RunsPage {
            runs,
            next_before,
            paged: before.is_some(),
        })
    }
}

fn run_row(task: &Task, run: &Run) -> Markup {
    let lag = run
        .fired_at
        .filter(|_| run.attempts == 1 && !run.manual)
        .map(|at| (at - run.scheduled_for).num_milliseconds().max(0) as f64);
    html! {
        tr {
            td { (in_zone(run.scheduled_for, &task.timezone)) br; small { (utc(run.scheduled_for)) } }
            td { (layout::status_badge(&run.status)) br; small { (run.trigger.as_str()) } }
            td.num { (run.attempts) }
            td.num { (run.http_status.map(|s| s.to_string()).unwrap_or_else(|| "–".into())) }
            td.num { (ms(run.latency_ms.map(f64::from))) }
            td.num { (ms(lag)) }
            td {
                @if let Some(error) = &run.error { span.error { (error) } }
                @if let Some(excerpt) = &run.response_excerpt { pre.excerpt { (excerpt) } }
            }
        }
    }
}

/// The run history table and its pager.
pub fn runs(task: &Task, page: &RunsPage) -> Markup {
    let before = |t: DateTime<Utc>| {
        let at = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let at: String = url::form_urlencoded::byte_serialize(at.as_bytes()).collect();
        format!("/ui/tasks/{}?before={at}#runs", task.id)
    };
    html! {
        h2 #runs { "Run history" }
        @if page.runs.is_empty() { p.muted { "No runs recorded." } } @else {
            table.runs {
                thead { tr {
                    th { "Occurrence" } th { "Status" } th.num { "Attempts" } th.num { "HTTP" }
                    th.num { "Latency" } th.num { "Lag" } th { "Error / answer" }
                } }
                tbody { @for run in &page.runs { (run_row(task, run)) } }
            }
        }
        div.pager {
            @if page.paged { a href={ "/ui/tasks/" (task.id) "#runs" } { "« Newest" } }
            @if let Some(next) = page.next_before { a rel="next" href=(before(next)) { "Older »" } }
        }
    }
}
