//! The console's answers: a rendered page, a redirect after a form, an
//! error page (bad input is a 400 or 404 page naming what is wrong, never
//! a 500), and the page IAM mode serves instead of the console.

use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::de::DeserializeOwned;

use super::layout;
use crate::admin::error::AdminError;
use crate::admin::extract::{QueryParams, TaskId};

/// A 200 HTML page.
pub fn html(markup: Markup) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

/// `303 See Other` to a console path (after a form, or to the login).
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/ui"))],
        )
            .into_response(),
    }
}

/// Something the console cannot do for this request, as a page.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        UiError {
            status,
            message: message.into(),
        }
    }

    /// 403: a form without its CSRF token, or from another origin.
    pub fn forbidden(message: impl Into<String>) -> Self {
        UiError::new(StatusCode::FORBIDDEN, message)
    }

    /// The status the page is served with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<AdminError> for UiError {
    fn from(err: AdminError) -> Self {
        let status = err.status();
        let message = match &err {
            AdminError::InvalidField { field, reason } => format!("{field}: {reason}"),
            AdminError::Database(_) | AdminError::Store(_) => {
                tracing::error!(error = %err, cause = ?err, "console request failed");
                "internal error; the cause is in the logs".to_string()
            }
            _ => err.to_string(),
        };
        UiError { status, message }
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(err: crate::store::StoreError) -> Self {
        AdminError::from(err).into()
    }
}

impl From<sqlx::Error> for UiError {
    fn from(err: sqlx::Error) -> Self {
        AdminError::from(err).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let body = html! {
            main.narrow {
                h1 { (self.status.as_u16()) " " (title) }
                p.error role="alert" { (self.message) }
                p { a href="/ui" { "Overview" } " · " a href="/ui/tasks" { "Tasks" } }
            }
        };
        (self.status, html(layout::bare(&title, body))).into_response()
    }
}

/// The `{id}` of a task page: a positive integer, else a 400 page.
#[derive(Debug, Clone, Copy)]
pub struct UiTaskId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for UiTaskId {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let TaskId(id) = TaskId::from_request_parts(parts, state).await?;
        Ok(UiTaskId(id))
    }
}

/// A page's query string as `T` (the API's parser: errors name the
/// parameter), else a 400 page.
#[derive(Debug, Clone)]
pub struct UiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for UiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let QueryParams(query) = QueryParams::<T>::from_request_parts(parts, state).await?;
        Ok(UiQuery(query))
    }
}

/// The notice after a form, by code (`?done=paused`): the text is ours,
/// the query only picks it.
pub fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "paused" => "Paused: nothing fires until it is resumed.",
        "resumed" => "Resumed from the next occurrence after now.",
        "triggered" => "Triggered: one run is queued now, outside the schedule.",
        "deleted" => "Deleted, with its run history.",
        _ => return None,
    })
}

/// `/ui/...` paths that are no page.
pub async fn not_found() -> UiError {
    UiError::new(StatusCode::NOT_FOUND, "There is no such console page.")
}

/// Every console path in IAM mode: how to reach the console instead.
pub fn iam_mode(post: bool) -> Response {
    let body = html! {
        main.narrow {
            h1 { "The console is not served here" }
            p {
                "This admin endpoint authenticates callers with IAM ("
                code { "SUNDIAL_ADMIN_AUTH=iam" } "): every request must be signed with "
                "SigV4, which a browser does not do, and there is no admin token to log in with."
            }
            p { "To use the console, serve the admin API with a token against the same database:" }
            ul {
                li {
                    code { "sundial admin" } " (the admin API and this console alone: no scanner, "
                    "no processor) in a container or on a host you reach privately, with "
                    code { "DATABASE_URL" } ", " code { "SUNDIAL_QUEUE_URL" } " and "
                    code { "SUNDIAL_ADMIN_TOKEN" } " set, then open " code { "/ui" } " there;"
                }
                li {
                    code { "sundial dev" } " with " code { "DATABASE_URL" } " pointing at the "
                    "same database (mind that it runs a scanner and processor too), then open "
                    code { "http://127.0.0.1:8080/ui" } "."
                }
            }
            p { "The JSON API under " code { "/v1" } " works here as before, with signed requests." }
        }
    };
    let status = if post {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    (status, html(layout::bare("Console unavailable", body))).into_response()
}
