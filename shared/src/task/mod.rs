//! What a task is: its stored row, the input that creates or edits one, the
//! validation of that input, and the rule that picks its next occurrence.
//!
//! One file per concern: `spec` (the input and its checked form,
//! [`ValidTask`]), `validate` (the rules of each field), `url` (the
//! target URL's spelling), `tags`, and `timing` (the parsed schedule and
//! the catch-up rules).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleError;

mod spec;
mod tags;
mod timing;
mod url;
mod validate;

pub use self::url::validate_url;
pub use spec::{TaskSpec, ValidTask};
pub use tags::{validate_tag, validate_tags, MAX_TAGS, MAX_TAG_CHARS};
pub use timing::{Timing, MISFIRE_GRACE};
pub use validate::{header_map, is_unsafe_char, validate_flow_key, MAX_FLOW_KEY_CHARS};

/// HTTP methods a task may use (mirrors the `tasks_method_known` CHECK).
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Bounds of `timeout_ms` (mirrors the `tasks_timeout_range` CHECK).
pub const TIMEOUT_MS_RANGE: (i32, i32) = (100, 900_000);
/// Bounds of `max_attempts`.
pub const ATTEMPTS_RANGE: (i32, i32) = (1, 20);
/// Bounds of `retry_backoff_ms`.
pub const BACKOFF_MS_RANGE: (i32, i32) = (100, 3_600_000);
/// Bounds of `jitter_secs`.
pub const JITTER_SECS_RANGE: (i32, i32) = (0, 900);
/// Bounds of `catch_up_max_age_secs`.
pub const CATCH_UP_AGE_RANGE: (i32, i32) = (0, 604_800);
/// Largest request body a task may carry (mirrors `tasks_body_size`).
pub const MAX_BODY_BYTES: usize = 65_536;
/// Longest task name, in characters (mirrors `tasks_name_length`).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest schedule text, in characters (mirrors `tasks_schedule_length`).
pub const MAX_SCHEDULE_CHARS: usize = 200;
/// Longest target URL, as given and as normalised (mirrors `tasks_url_http`).
pub const MAX_URL_CHARS: usize = 2048;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value, in characters.
pub const MAX_HEADER_VALUE_CHARS: usize = 8192;
/// Headers Sundial sets itself; a task cannot override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "idempotency-key",
    "sundial-signature",
    "sundial-trigger",
    "sundial-attempt",
    "sundial-scheduled-for",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// What to do with occurrences missed while nothing was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum CatchUp {
    /// Fire the most overdue occurrence once, then continue from now.
    #[default]
    Skip,
    /// Fire every missed occurrence no older than `catch_up_max_age_secs`.
    All,
    /// Fire none of them: an occurrence later than the misfire grace is
    /// recorded as skipped.
    None,
}

/// Whether an occurrence may start while the previous one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Overlap {
    /// Dispatch every occurrence on time; runs may overlap.
    Allow,
    /// Hold the next occurrence until the previous run is recorded.
    #[default]
    Forbid,
    /// Like `forbid`, but an occurrence that comes due while the previous
    /// run is in flight is recorded as skipped (reason overlap) instead of
    /// waiting; manual triggers are refused while a run is in flight
    /// unless forced.
    Skip,
}

impl Overlap {
    /// One occurrence at a time (`forbid` and `skip`): the lease holds the
    /// row while its run is in flight.
    pub fn one_at_a_time(self) -> bool {
        self != Overlap::Allow
    }
}

/// A stored task (one row of `tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Task {
    pub id: i64,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub method: String,
    pub url: String,
    #[schema(value_type = Object)]
    pub headers: sqlx::types::Json<serde_json::Value>,
    pub body: Option<String>,
    pub timeout_ms: i32,
    pub max_attempts: i32,
    pub retry_backoff_ms: i32,
    #[schema(value_type = String)]
    pub catch_up: CatchUp,
    pub catch_up_max_age_secs: i32,
    #[schema(value_type = String)]
    pub overlap: Overlap,
    pub jitter_secs: i32,
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub version: i64,
    pub schedule_error: Option<String>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The flow key as set on the task (`None`: the URL's host and port).
    pub flow_key: Option<String>,
    /// The flow in force: `flow_key`, else the URL's `host:port`.
    pub flow: String,
    /// Labels to group tasks by; each one is a `Tag` metric dimension.
    pub tags: Vec<String>,
    /// Auto-pause, the pause in force, the failure incident, notify URL.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub alerting: crate::pause::TaskAlerting,
    /// The active window and the exclusion.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub window: crate::window::TaskWindow,
}

/// An input field that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The request field, as named in the API (`schedule`, `url`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ScheduleError> for InvalidField {
    fn from(err: ScheduleError) -> Self {
        InvalidField::new(err.field(), err.to_string())
    }
}

#[cfg(test)]
mod tests;
