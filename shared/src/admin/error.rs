//! The admin API's errors and how each becomes an HTTP answer.
//!
//! Every error is JSON: `{"error": {"code", "field"?, "message"}}`. Input
//! problems are 4xx and name the field; only failures of Sundial itself
//! (database, bugs) are 500, with a generic message and the cause logged.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;
use crate::task::InvalidField;

/// What can go wrong while serving an admin request.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A request field (body, path or query) holds an unusable value.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field as named in the API (`schedule`, `url`, `id`, `limit`, ...).
        field: Cow<'static, str>,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not JSON, or not the JSON object the route expects.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    /// The body was sent with a Content-Type other than JSON.
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is larger than the API accepts.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body could not be read from the connection.
    #[error("request body could not be read")]
    BodyUnreadable,
    /// The body did not arrive within the server's limit.
    #[error("request body did not arrive within {} s", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    /// No bearer token, or not the right one.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No task has this id.
    #[error("task {0} not found")]
    TaskNotFound(i64),
    /// No backfill has this id.
    #[error("backfill {0} not found")]
    BackfillNotFound(i64),
    /// No flow has this key (for a delete: no limits are set for it).
    #[error("flow `{0}` not found")]
    FlowNotFound(String),
    /// No route has this path.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// Another task already has this name.
    #[error("a task named `{0}` already exists")]
    DuplicateName(String),
    /// An `Idempotency-Key` was reused with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The task created under an `Idempotency-Key` has been deleted since.
    #[error("the task created with this Idempotency-Key has been deleted since")]
    IdempotentTaskGone,
    /// A paused task cannot be fired by hand (the processor would drop it).
    #[error("task {0} is paused; resume it before triggering")]
    TaskPaused(i64),
    /// A manual trigger of a `forbid` or `skip` task while its run is in
    /// flight, without `force`.
    #[error("task {task_id} has a run in flight (the occurrence {occurrence}); overlap = {overlap} refuses a manual trigger now{recorded}; send {{\"force\": true}} to fire anyway")]
    RunInFlight {
        /// The task.
        task_id: i64,
        /// The occurrence in flight (RFC 3339).
        occurrence: String,
        /// `forbid` or `skip`.
        overlap: &'static str,
        /// `: recorded as skipped` for `skip`.
        recorded: &'static str,
    },
    /// The dispatch queue did not accept the message.
    #[error("the dispatch queue refused the message: {reason}")]
    QueueRefused {
        /// What the queue said.
        reason: String,
    },
    /// The database does not answer (health check).
    #[error("database is unavailable")]
    Unavailable,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The store failed in a way no request can cause.
    #[error(transparent)]
    Store(StoreError),
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

impl AdminError {
    /// A field error with its reason.
    pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        AdminError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use AdminError::*;
        match self {
            InvalidField { .. } | MalformedJson(_) | BodyUnreadable => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Unauthorized => StatusCode::UNAUTHORIZED,
            TaskNotFound(_) | BackfillNotFound(_) | FlowNotFound(_) | RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            DuplicateName(_) | IdempotentTaskGone | TaskPaused(_) | RunInFlight { .. } => {
                StatusCode::CONFLICT
            }
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            QueueRefused { .. } | Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Database(_) | Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code` of the error body.
    pub fn code(&self) -> &'static str {
        use AdminError::*;
        match self {
            InvalidField { .. } => "invalid_field",
            MalformedJson(_) => "malformed_json",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge(_) => "payload_too_large",
            BodyUnreadable => "body_unreadable",
            BodyTimeout(_) => "body_timeout",
            Unauthorized => "unauthorized",
            TaskNotFound(_) => "task_not_found",
            FlowNotFound(_) => "flow_not_found",
            BackfillNotFound(_) => "backfill_not_found",
            RouteNotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            DuplicateName(_) => "duplicate_name",
            IdempotencyKeyReused => "idempotency_key_reused",
            IdempotentTaskGone => "idempotent_task_gone",
            TaskPaused(_) => "task_paused",
            RunInFlight { .. } => "run_in_flight",
            QueueRefused { .. } => "queue_unavailable",
            Unavailable => "unavailable",
            Database(_) | Store(_) => "internal",
        }
    }
}

impl From<InvalidField> for AdminError {
    fn from(err: InvalidField) -> Self {
        AdminError::InvalidField {
            field: Cow::Borrowed(err.field),
            reason: err.reason,
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => AdminError::TaskNotFound(id),
            StoreError::DuplicateName(name) => AdminError::DuplicateName(name),
            StoreError::Invalid(field) => field.into(),
            StoreError::Database(db) => AdminError::Database(db),
            other => AdminError::Store(other),
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`, `task_not_found`.
    pub code: String,
    /// The offending request field, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (field, message) = match &self {
            AdminError::InvalidField { field, reason } => (Some(field.to_string()), reason.clone()),
            AdminError::Database(_) | AdminError::Store(_) => {
                tracing::error!(error = %self, cause = ?self, "admin request failed");
                (None, "internal error; the cause is in the logs".to_string())
            }
            _ => (None, self.to_string()),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                field,
                message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sundial\""),
            );
        }
        response
    }
}
