//! `/ui/tasks`: the task list, filtered by state and tag, searched by
//! name, 50 a page by id (the API's cursor), each with its next run in its
//! own zone and in UTC.

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
use crate::store::{self, TaskFilter};
use crate::task::{self, Task};

/// Tasks a page shows.
pub const PAGE_SIZE: i64 = 50;

/// The list's query: every field optional, empty means unset (as a form
/// sends it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// `enabled`, `paused` (not enabled: paused, disabled or invalid),
    /// `failing`, or empty for all.
    pub state: Option<String>,
    pub tag: Option<String>,
    /// Part of the name.
    pub q: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    pub done: Option<String>,
}

/// The checked query.
#[derive(Debug, Clone, Default, PartialEq)]
struct Checked {
    state: Option<&'static str>,
    tag: Option<String>,
    q: Option<String>,
    after_id: Option<i64>,
}

fn bad(message: impl Into<String>) -> UiError {
    UiError::new(StatusCode::BAD_REQUEST, message)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn check(query: &ListQuery) -> Result<Checked, UiError> {
    let state = match non_empty(&query.state) {
        None | Some("all") => None,
        Some("enabled") => Some("enabled"),
        Some("paused") => Some("paused"),
        Some("failing") => Some("failing"),
        Some(_) => return Err(bad("state: must be enabled, paused or failing")),
    };
    let tag = non_empty(&query.tag)
        .map(|t| task::validate_tag("tag", t))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let q = match non_empty(&query.q) {
        Some(q) if q.chars().count() > task::MAX_NAME_CHARS || q.chars().any(char::is_control) => {
            return Err(bad(format!(
                "q: a name search is 1 to {} characters without control characters",
                task::MAX_NAME_CHARS
            )))
        }
        q => q.map(str::to_string),
    };
    let after_id = match non_empty(&query.cursor) {
        None => None,
        Some(c) if (1..=18).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()) => {
            c.parse::<i64>().ok()
        }
        Some(_) => return Err(bad("cursor: is not a cursor from a previous page")),
    };
    Ok(Checked {
        state,
        tag,
        q,
        after_id,
    })
}

/// The query string of another page of the same list.
fn link(checked: &Checked, cursor: Option<i64>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(state) = checked.state {
        query.append_pair("state", state);
    }
    if let Some(tag) = &checked.tag {
        query.append_pair("tag", tag);
    }
    if let Some(q) = &checked.q {
        query.append_pair("q", q);
    }
    if let Some(cursor) = cursor {
        query.append_pair("cursor", &cursor.to_string());
    }
    format!("/ui/tasks?{}", query.finish())
}

/// `GET /ui/tasks`.
pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    UiQuery(query): UiQuery<ListQuery>,
) -> Result<Response, UiError> {
    let checked = check(&query)?;
    let filter = TaskFilter {
        enabled: match checked.state {
            Some("enabled") => Some(true),
            Some("paused") => Some(false),
            _ => None,
        },
        failing: (checked.state == Some("failing")).then_some(true),
        after_id: checked.after_id,
        name: None,
        tag: checked.tag.clone(),
        // One more than shown tells whether another page follows.
        limit: PAGE_SIZE + 1,
    };
    let mut tasks = store::search_tasks(&state.pool, &filter, checked.q.as_deref()).await?;
    let next = if tasks.len() as i64 > PAGE_SIZE {
        tasks.truncate(PAGE_SIZE as usize);
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    let body = html! {
        h1 { "Tasks" }
        (layout::notice(page::notice(query.done.as_deref())))
        (filters(&checked))
        (table(&tasks))
        div.pager {
            @if checked.after_id.is_some() { a href=(link(&checked, None)) { "« First page" } }
            @if let Some(next) = next { a rel="next" href=(link(&checked, Some(next))) { "Next page »" } }
        }
    };
    Ok(page::html(layout::page(
        "Tasks",
        Section::Tasks,
        &session,
        body,
    )))
}

fn filters(checked: &Checked) -> Markup {
    let option = |value: &str, label: &str| {
        let selected = checked.state.unwrap_or("") == value;
        html! { option value=(value) selected[selected] { (label) } }
    };
    html! {
        form.filters method="get" action="/ui/tasks" {
            label { "Name contains" input type="search" name="q" value=[checked.q.as_deref()]; }
            label { "State"
                select name="state" {
                    (option("", "all"))
                    (option("enabled", "enabled"))
                    (option("paused", "paused or disabled"))
                    (option("failing", "failing"))
                }
            }
            label { "Tag" input type="text" name="tag" value=[checked.tag.as_deref()]; }
            button type="submit" { "Filter" }
            a href="/ui/tasks" { "Clear" }
        }
    }
}

fn table(tasks: &[Task]) -> Markup {
    let now = Utc::now();
    html! {
        @if tasks.is_empty() { p.muted { "No task matches." } } @else {
            table.tasks {
                thead { tr {
                    th { "Name" } th { "State" } th { "Schedule" }
                    th { "Next run (task's zone · UTC)" } th { "Last run" } th.num { "Failures" }
                } }
                tbody { @for task in tasks { (row(task, now)) } }
            }
        }
    }
}

fn row(task: &Task, now: chrono::DateTime<Utc>) -> Markup {
    html! {
        tr data-task-id=(task.id) {
            td {
                a href={ "/ui/tasks/" (task.id) } { (task.name) }
                @for tag in &task.tags { " " span.badge { (tag) } }
            }
            td { (layout::state_badge(task)) }
            td { code { (task.schedule) } br; small { (task.timezone) } }
            td { (layout::next_run(task, now)) }
            td {
                @match (&task.last_status, task.last_run_at) {
                    (Some(status), Some(at)) => {
                        (layout::status_badge(status)) br;
                        small { (layout::relative(at, now)) }
                    }
                    _ => span.muted { "never" },
                }
            }
            td.num { (task.consecutive_failures) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(state: &str, tag: &str, q: &str, cursor: &str) -> ListQuery {
        let some = |v: &str| Some(v.to_string());
        ListQuery {
            state: some(state),
            tag: some(tag),
            q: some(q),
            cursor: some(cursor),
            done: None,
        }
    }

    #[test]
    fn an_empty_form_lists_everything() {
        assert_eq!(check(&query("", "", " ", "")).unwrap(), Checked::default());
    }

    #[test]
    fn bad_parameters_are_a_400() {
        for q in [
            query("sleeping", "", "", ""),
            query("", "", "", "12x"),
            query("", "", "", "1234567890123456789"),
            query("", "", "a\u{7}b", ""),
            query("", &"t".repeat(200), "", ""),
        ] {
            let err = check(&q).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{q:?}");
        }
    }

    #[test]
    fn page_links_keep_the_filters() {
        let checked = check(&query("failing", "team-a", "nightly & co", "40")).unwrap();
        assert_eq!(
            link(&checked, Some(90)),
            "/ui/tasks?state=failing&tag=team-a&q=nightly+%26+co&cursor=90"
        );
    }
}
