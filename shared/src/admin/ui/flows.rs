//! `/ui/flows`: the flows with limits or engine state (`GET /v1/flows`):
//! limits, breaker, backoff, learned rate and number of tasks, 100 a
//! page by key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Session;
use super::layout::{self, Section};
use super::page::{self, UiError, UiQuery};
use crate::admin::AdminState;
use crate::store::{self, FlowBreaker, FlowView};
use crate::task::validate_flow_key;

/// Flows a page shows.
pub const PAGE_SIZE: i64 = 100;

/// The page's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlowsQuery {
    /// The last key of the previous page.
    pub after: Option<String>,
}

/// `GET /ui/flows`.
pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    UiQuery(query): UiQuery<FlowsQuery>,
) -> Result<Response, UiError> {
    let after = query
        .after
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|a| validate_flow_key("after", a))
        .transpose()
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let page = store::list_flows(&state.pool, after.as_deref(), PAGE_SIZE).await?;
    let next = page.next_after.as_deref().map(|key| {
        let key: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
        format!("/ui/flows?after={key}")
    });
    let body = html! {
        h1 { "Flows" }
        p.muted {
            "A flow is a task's target (its URL's host:port, or its flow_key). "
            "Flows with limits or with state the engine keeps are listed; set limits with "
            code { "sundial flows set" } " or " code { "PUT /v1/flows/{key}" } "."
        }
        (table(&page.flows))
        div.pager {
            @if after.is_some() { a href="/ui/flows" { "« First page" } }
            @if let Some(next) = next { a rel="next" href=(next) { "Next page »" } }
        }
    };
    Ok(page::html(layout::page(
        "Flows",
        Section::Flows,
        &session,
        body,
    )))
}

fn or_default<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| "default".to_string())
}

fn limits(flow: &FlowView) -> Markup {
    html! {
        @match &flow.config {
            Some(c) => {
                (or_default(c.rate_per_sec)) "/s, burst " (c.burst) br;
                small { "in flight " (or_default(c.max_in_flight))
                        ", breaker " (or_default(c.breaker_failures))
                        ", on open " (format!("{:?}", c.on_open).to_lowercase()) }
            }
            None => span.muted { "defaults" },
        }
    }
}

fn engine(flow: &FlowView) -> Markup {
    let now = Utc::now();
    html! {
        @match &flow.state {
            Some(s) => {
                @if s.breaker == FlowBreaker::Open {
                    span.badge.bad { "open" }
                    @if let Some(probe) = s.probe_at { " probe " (layout::relative(probe, now)) }
                } @else {
                    span.badge.ok { "closed" }
                }
                @if let Some(nb) = s.not_before.filter(|nb| *nb > now) {
                    br; small { "backing off until " (layout::utc(nb)) }
                }
                @if let Some(rate) = s.learned_rate { br; small { "learned " (format!("{rate:.1}")) "/s" } }
            }
            None => span.muted { "not seen yet" },
        }
    }
}

fn table(flows: &[FlowView]) -> Markup {
    html! {
        @if flows.is_empty() { p.muted { "No flow has limits or state yet." } } @else {
            table.flows {
                thead { tr {
                    th { "Flow" } th { "Limits" } th { "Breaker / backoff" }
                    th.num { "Throttled" } th.num { "Opened" } th.num { "Tasks" }
                } }
                tbody {
                    @for flow in flows {
                        tr {
                            td { code { (flow.key) } }
                            td { (limits(flow)) }
                            td { (engine(flow)) }
                            td.num { (flow.state.as_ref().map_or(0, |s| s.throttled_total)) }
                            td.num { (flow.state.as_ref().map_or(0, |s| s.opened_total)) }
                            td.num { (flow.tasks) }
                        }
                    }
                }
            }
        }
    }
}
