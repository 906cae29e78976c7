//! `/ui/tasks/{id}`: one task — its controls (pause, resume, trigger,
//! delete), its definition, its next occurrences with DST notes, its lag
//! chart, the occurrence ledger of the last day and its run history
//! (the last two in [`super::history`]).

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Session;
use super::chart::{self, Window};
use super::history;
use super::layout::{self, in_zone, utc, Section};
use super::page::{self, UiError, UiQuery, UiTaskId};
use crate::admin::extract::instant_in_range;
use crate::admin::AdminState;
use crate::store;
use crate::task::Task;

/// What the task's chart covers, and its buckets.
pub const CHART_SPAN: Duration = Duration::hours(24);
pub const CHART_BUCKET: Duration = Duration::hours(1);

/// The page's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskQuery {
    /// Runs of occurrences before this instant (the run history's pages).
    pub before: Option<DateTime<Utc>>,
    pub done: Option<String>,
}

/// `GET /ui/tasks/{id}`.
pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    UiTaskId(id): UiTaskId,
    UiQuery(query): UiQuery<TaskQuery>,
) -> Result<Response, UiError> {
    let before = query
        .before
        .map(|t| instant_in_range("before", t))
        .transpose()?;
    let task = store::get_task(&state.pool, id).await?;
    let now = Utc::now();
    let window = Window {
        from: now - CHART_SPAN,
        to: now,
        bucket: CHART_BUCKET,
    };
    let lag = store::task_lag_series(&state.pool, id, window.from, window.bucket).await?;
    let grace = state.pipeline.settings.missed_grace;
    let ledger = store::task_ledger(&state.pool, id, now - CHART_SPAN, now, now, grace).await?;
    let runs = history::RunsPage::load(&state.pool, id, before).await?;
    let body = html! {
        (heading(&task))
        (layout::notice(page::notice(query.done.as_deref())))
        (controls(&task, &session))
        (alerts(&task, now))
        div.two {
            section { h2 { "Definition" } (definition(&task)) }
            section { h2 { "Next occurrences" } (history::upcoming(&task, now)) }
        }
        h2 { "Fire lag, last 24 hours" }
        (chart::lag_chart(&lag, window, "this task's runs, per hour of occurrence"))
        (history::ledger(&task, &ledger))
        (history::runs(&task, &runs))
    };
    Ok(page::html(layout::page(
        &task.name,
        Section::Tasks,
        &session,
        body,
    )))
}

fn heading(task: &Task) -> Markup {
    html! {
        p { a href="/ui/tasks" { "« Tasks" } }
        h1 {
            (task.name) " " (layout::state_badge(task))
            @for tag in &task.tags { " " span.badge { (tag) } }
        }
    }
}

/// The buttons: plain forms, each with the session's CSRF token.
fn controls(task: &Task, session: &Session) -> Markup {
    let action = |verb: &str| format!("/ui/tasks/{}/{verb}", task.id);
    html! {
        div.actions {
            @if task.enabled {
                form method="post" action=(action("pause")) {
                    (layout::csrf_field(session))
                    input type="text" name="reason" placeholder="reason (optional)" maxlength="480";
                    button type="submit" name="pause" { "Pause" }
                }
                form method="post" action=(action("trigger")) {
                    (layout::csrf_field(session))
                    button type="submit" name="trigger" { "Trigger now" }
                }
            } @else {
                form method="post" action=(action("resume")) {
                    (layout::csrf_field(session))
                    button.primary type="submit" name="resume" { "Resume" }
                }
            }
            a href=(action("delete")) { "Delete…" }
        }
    }
}

/// Why the task is paused, invalid or failing, when it is.
fn alerts(task: &Task, now: DateTime<Utc>) -> Markup {
    let a = &task.alerting;
    html! {
        @if let (false, Some(at)) = (task.enabled, a.paused_at) {
            p.notice {
                "Paused " (layout::relative(at, now)) " by " (a.paused_by.as_deref().unwrap_or("someone"))
                @if let Some(reason) = &a.paused_reason { ": " (reason) }
                @if let Some(until) = a.paused_until { " · resumes by itself at " (utc(until)) }
            }
        }
        @if let Some(err) = &task.schedule_error {
            p.error { "Schedule cannot be evaluated: " (err) }
        }
        @if task.consecutive_failures > 0 {
            p.error {
                (task.consecutive_failures) " consecutive failure(s)"
                @if let Some(since) = a.failing_since { " since " (utc(since)) }
                @if let Some(err) = &task.last_error { "; last: " (err) }
            }
        }
    }
}

/// Header values that are likely credentials are not shown.
fn shown_header_value(name: &str, value: &serde_json::Value) -> String {
    let lower = name.to_ascii_lowercase();
    let secret = [
        "authorization",
        "cookie",
        "token",
        "key",
        "secret",
        "password",
        "signature",
    ]
    .iter()
    .any(|s| lower.contains(s));
    match value {
        _ if secret => "(hidden)".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn definition(task: &Task) -> Markup {
    let w = &task.window;
    let headers = task.headers.0.as_object().cloned().unwrap_or_default();
    html! {
        dl.def {
            dt { "Id · version" } dd { (task.id) " · v" (task.version) }
            dt { "Schedule" } dd { code { (task.schedule) } " " small { (history::described(task)) } }
            dt { "Time zone" } dd { (task.timezone) }
            dt { "Request" } dd { code { (task.method) " " (task.url) } }
            @if !headers.is_empty() {
                dt { "Headers" }
                dd { @for (name, value) in &headers {
                    code { (name) ": " (shown_header_value(name, value)) } br;
                } }
            }
            @if let Some(body) = &task.body {
                dt { "Body" } dd { pre.excerpt { (body.chars().take(1024).collect::<String>()) } }
            }
            dt { "Timeout · attempts" }
            dd { (task.timeout_ms) " ms · " (task.max_attempts) " (backoff " (task.retry_backoff_ms) " ms)" }
            dt { "Catch-up · overlap" }
            dd { (format!("{:?}", task.catch_up).to_lowercase()) " (max age " (task.catch_up_max_age_secs)
                 " s) · " (format!("{:?}", task.overlap).to_lowercase()) }
            dt { "Jitter" } dd { (task.jitter_secs) " s" }
            dt { "Flow" } dd { code { (task.flow) } }
            @if w.start_at.is_some() || w.end_at.is_some() {
                dt { "Active window" }
                dd { (w.start_at.map(utc).unwrap_or_else(|| "…".into())) " to "
                     (w.end_at.map(utc).unwrap_or_else(|| "…".into())) }
            }
            @if let Some(exclude) = &w.exclude { dt { "Excludes" } dd { code { (exclude) } } }
            @if let Some(n) = task.alerting.pause_after_failures {
                dt { "Auto-pause" } dd { "after " (n) " consecutive failures" }
            }
            @if let Some(url) = &task.alerting.notify_url { dt { "Notify" } dd { code { (url) } } }
            dt { "Next run" } dd { (layout::next_run(task, Utc::now())) }
            dt { "Created · updated" } dd { (utc(task.created_at)) " · " (in_zone(task.updated_at, "UTC")) }
        }
    }
}
