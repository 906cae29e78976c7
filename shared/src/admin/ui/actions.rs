//! The console's controls: pause, resume, trigger and delete. Each is the
//! admin API's own handler, called with what the form sent, so the rules,
//! the ledger's actor (`admin API`) and the errors are the API's; the
//! answer is a redirect back to the page with a notice, or an error page.
//! [`super::auth::gate`] has checked the session, the origin and the CSRF
//! token before any of these runs.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::auth::{FormFields, Session};
use super::layout::{self, Section};
use super::page::{self, UiError, UiTaskId};
use crate::admin::extract::{RawBody, TaskId};
use crate::admin::{pause, tasks, AdminState};
use crate::store;

fn back_to(id: i64, done: &str) -> Response {
    page::see_other(&format!("/ui/tasks/{id}?done={done}"))
}

/// `POST /ui/tasks/{id}/pause` (optional `reason`).
pub async fn pause(
    State(state): State<AdminState>,
    UiTaskId(id): UiTaskId,
    form: FormFields,
) -> Result<Response, UiError> {
    let reason = form.get("reason").map(str::trim).filter(|r| !r.is_empty());
    let body = match reason {
        Some(reason) => serde_json::json!({ "reason": reason }).to_string(),
        None => String::new(),
    };
    let _paused = pause::pause_task(State(state), TaskId(id), RawBody(Bytes::from(body))).await?;
    Ok(back_to(id, "paused"))
}

/// `POST /ui/tasks/{id}/resume`.
pub async fn resume(
    State(state): State<AdminState>,
    UiTaskId(id): UiTaskId,
) -> Result<Response, UiError> {
    let _resumed = pause::resume_task(State(state), TaskId(id)).await?;
    Ok(back_to(id, "resumed"))
}

/// `POST /ui/tasks/{id}/trigger`: fire once now (the overlap policy
/// decides, as for the API; no `force` from the console).
pub async fn trigger(
    State(state): State<AdminState>,
    UiTaskId(id): UiTaskId,
) -> Result<Response, UiError> {
    let _queued = tasks::trigger_task(State(state), TaskId(id), RawBody(Bytes::new())).await?;
    Ok(back_to(id, "triggered"))
}

/// `GET /ui/tasks/{id}/delete`: are you sure? (A page, not a script.)
pub async fn confirm_delete(
    State(state): State<AdminState>,
    session: Session,
    UiTaskId(id): UiTaskId,
) -> Result<Response, UiError> {
    let task = store::get_task(&state.pool, id).await?;
    let body = html! {
        h1 { "Delete " (task.name) "?" }
        p { "The task and its whole run history are removed. This cannot be undone." }
        div.actions {
            form method="post" action={ "/ui/tasks/" (id) "/delete" } {
                (layout::csrf_field(&session))
                button.danger type="submit" name="delete" { "Delete" }
            }
            a href={ "/ui/tasks/" (id) } { "Cancel" }
        }
    };
    Ok(page::html(layout::page(
        "Delete task",
        Section::Tasks,
        &session,
        body,
    )))
}

/// `POST /ui/tasks/{id}/delete`.
pub async fn delete(
    State(state): State<AdminState>,
    UiTaskId(id): UiTaskId,
) -> Result<Response, UiError> {
    tasks::delete_task(State(state), TaskId(id)).await?;
    Ok(page::see_other("/ui/tasks?done=deleted"))
}
