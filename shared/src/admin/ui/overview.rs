//! `/ui`: is Sundial keeping up? The figures of `GET /v1/status` (computed
//! by the same function, `status::current_status`, at most every 10 s:
//! [`super::snapshot`]), the lag of the last six hours as a chart, and the
//! tasks that were latest and failed most in the last hour.

use axum::extract::State;
use axum::response::Response;
use chrono::{Duration, Utc};
use maud::{html, Markup};

use super::auth::Session;
use super::chart;
use super::layout::{self, duration_words, ms, Section};
use super::page::{self, UiError};
use super::snapshot;
use crate::admin::status::Status;
use crate::admin::AdminState;

/// What the overview's chart covers.
pub const CHART_SPAN: Duration = Duration::hours(6);
/// Its buckets.
pub const CHART_BUCKET: Duration = Duration::minutes(15);

/// `GET /ui`.
pub async fn page(State(state): State<AdminState>, session: Session) -> Result<Response, UiError> {
    let snapshot = snapshot::current(&state).await?;
    let status = &snapshot.status;
    let (lag, window) = (&snapshot.lag, snapshot.window);
    let body = html! {
        h1 { "Overview" }
        p.muted { "Figures as of " (layout::utc(snapshot.taken_at)) " (taken at most every "
                  (snapshot::FRESH_FOR.as_secs()) " s)." }
        (health(status))
        (cards(status))
        h2 { "Fire lag, last 6 hours" }
        (chart::lag_chart(lag, window, "all runs, per 15 minutes, by finish time"))
        div.two {
            section { h2 { "Latest tasks, last hour" } (worst_lateness(status)) }
            section { h2 { "Most failures, last hour" } (most_failures(status)) }
        }
        (open_flows(status))
    };
    Ok(page::html(layout::page(
        "Overview",
        Section::Overview,
        &session,
        body,
    )))
}

fn health(status: &Status) -> Markup {
    let scanner = match (status.scanner.last_tick_at, status.scanner.seconds_ago) {
        (Some(at), Some(ago)) => format!(
            "scanner last ticked {} ago ({})",
            duration_words(ago.max(0.0) as u64),
            layout::utc(at)
        ),
        _ => "no scanner has ever ticked against this database".to_string(),
    };
    html! {
        @if status.health.healthy {
            div.health.ok { strong { "Healthy" } " · " (scanner) }
        } @else {
            div.health.bad {
                strong { "Unhealthy" } " · " (scanner)
                ul { @for reason in &status.health.reasons { li { (reason.message) } } }
            }
        }
    }
}

fn card(label: &str, value: String, sub: String) -> Markup {
    html! {
        div.card {
            div.label { (label) }
            div.value { (value) }
            div.sub { (sub) }
        }
    }
}

fn cards(status: &Status) -> Markup {
    let hour = &status.last_hour;
    let dead = match status.dead_letters {
        Some(n) => n.to_string(),
        None => "–".to_string(),
    };
    html! {
        div.cards {
            (card("Backlog", status.backlog.to_string(), format!("{} missed", status.missed)))
            (card("Oldest due", duration_words(status.oldest_due_age_secs.max(0.0) as u64),
                  format!("{} leases lapsed", status.leases_overdue)))
            (card("Fired, last hour", (hour.runs - hour.skipped).to_string(),
                  format!("{} succeeded, {} skipped", hour.succeeded, hour.skipped)))
            (card("Failed, last hour", hour.failed.to_string(),
                  format!("{} timed out", hour.timed_out)))
            (card("Lag p50 / p99", format!("{} / {}", ms(hour.lag_p50_ms), ms(hour.lag_p99_ms)),
                  "last hour".to_string()))
            (card("Tasks", status.tasks.total.to_string(),
                  format!("{} enabled, {} failing, {} invalid", status.tasks.enabled,
                          status.tasks.failing, status.tasks.invalid)))
            (card("Open flows", status.flows.open.to_string(),
                  format!("{} backing off", status.flows.backing_off)))
            (card("Dead letters", dead, "in the dead-letter queue".to_string()))
        }
    }
}

fn task_link(id: i64, name: &str) -> Markup {
    html! { a href={ "/ui/tasks/" (id) } { (name) } }
}

fn worst_lateness(status: &Status) -> Markup {
    let rows = &status.last_hour_tasks.worst_lateness;
    html! {
        @if rows.is_empty() { p.muted { "No scheduled runs in the last hour." } } @else {
            table {
                thead { tr { th { "Task" } th.num { "Runs" } th.num { "p99" } th.num { "Worst" } } }
                tbody {
                    @for t in rows {
                        tr {
                            td { (task_link(t.task_id, &t.name)) }
                            td.num { (t.runs) }
                            td.num { (ms(Some(t.lag_p99_ms))) }
                            td.num { (ms(Some(t.lag_max_ms))) }
                        }
                    }
                }
            }
        }
    }
}

fn most_failures(status: &Status) -> Markup {
    let rows = &status.last_hour_tasks.most_failures;
    html! {
        @if rows.is_empty() { p.muted { "No failed runs in the last hour." } } @else {
            table {
                thead { tr { th { "Task" } th.num { "Failed" } th { "Last error" } } }
                tbody {
                    @for t in rows {
                        tr {
                            td { (task_link(t.task_id, &t.name)) }
                            td.num { (t.failed) " / " (t.runs) }
                            td { small { (t.last_error.as_deref().unwrap_or("–")) } }
                        }
                    }
                }
            }
        }
    }
}

fn open_flows(status: &Status) -> Markup {
    let now = Utc::now();
    html! {
        @if !status.flows.open_flows.0.is_empty() {
            h2 { "Open flows" }
            table {
                thead { tr { th { "Flow" } th { "Opened" } th { "Next probe" } } }
                tbody {
                    @for f in status.flows.open_flows.0.iter() {
                        tr {
                            td { code { (f.key) } }
                            td { (f.opened_at.map(|t| layout::relative(t, now)).unwrap_or_default()) }
                            td { (f.probe_at.map(|t| layout::relative(t, now)).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}
