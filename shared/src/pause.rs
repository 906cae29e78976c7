//! Pauses that say who and why, auto-pause after repeated failures, and
//! pauses that end by themselves.
//!
//! A pause is `enabled = false` plus who paused, why, when and until when
//! (`paused_*` columns). Whoever pauses (the admin API, the CLI through
//! it, plain SQL, or the processor's write-back when a task reaches its
//! `pause_after_failures`), the row and the ledger say so; the migration's
//! trigger fills in the actor of a plain SQL pause. A resume (by hand, or
//! the scanner once `paused_until` has passed) clears the pause and the
//! failure count. This module holds the checked input and the columns;
//! the writes are in [`crate::store::pauses`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::{validate_url, InvalidField, TaskSpec};

/// Bounds of `pause_after_failures` (mirrors `tasks_pause_after_range`).
pub const PAUSE_AFTER_RANGE: (i32, i32) = (1, 1000);
/// Longest pause reason stored, in bytes (inside `tasks_paused_reason_length`).
pub const MAX_REASON_BYTES: usize = 480;
/// Who Sundial's own pauses and resumes are recorded as.
pub const SUNDIAL_ACTOR: &str = "sundial";

/// A task's auto-pause setting, the pause in force, its failure incident
/// and its notification URL (columns of `tasks`, flattened into [`crate::task::Task`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskAlerting {
    /// Pause after this many consecutive failed occurrences; `None`: never.
    pub pause_after_failures: Option<i32>,
    /// Where this task's events are POSTed, besides `SUNDIAL_NOTIFY_URL`.
    pub notify_url: Option<String>,
    /// When the pause in force began (`None` while the task runs).
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it: `sundial` (auto-pause), `admin API`, `sql`, ...
    pub paused_by: Option<String>,
    /// Why, e.g. "5 consecutive failures; last: HTTP 500".
    pub paused_reason: Option<String>,
    /// The pause ends by itself at this instant (the next scanner tick
    /// resumes the task).
    pub paused_until: Option<DateTime<Utc>>,
    /// The open failure incident began with the run that finished then.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the last incident ended.
    pub recovered_at: Option<DateTime<Utc>>,
}

/// Checks and normalises a spec's `pause_after_failures` and `notify_url`.
pub fn validate_alerting(spec: &mut TaskSpec) -> Result<(), InvalidField> {
    if let Some(n) = spec.pause_after_failures {
        let (min, max) = PAUSE_AFTER_RANGE;
        if !(min..=max).contains(&n) {
            return Err(InvalidField::new(
                "pause_after_failures",
                format!("{n} is out of range {min}..={max} (null: never pause)"),
            ));
        }
    }
    if let Some(url) = &spec.notify_url {
        let url = validate_url(url).map_err(|e| InvalidField::new("notify_url", e.reason))?;
        spec.notify_url = Some(url.into());
    }
    Ok(())
}

/// The body of `POST /v1/tasks/{id}/pause` (all optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why (kept on the task and in its ledger; control characters are
    /// replaced, long text is cut to 480 bytes).
    pub reason: Option<String>,
    /// Resume by itself at this instant (RFC 3339). One in the past
    /// resumes on the next scanner tick.
    pub until: Option<DateTime<Utc>>,
}

/// A pause as stored: who, a clean bounded reason, until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    /// Who pauses.
    pub by: String,
    /// Why, sanitised and bounded.
    pub reason: Option<String>,
    /// When it ends by itself.
    pub until: Option<DateTime<Utc>>,
}

impl Pause {
    /// A pause by `by`, its reason cleaned ([`clean_reason`]).
    pub fn new(by: &str, reason: Option<&str>, until: Option<DateTime<Utc>>) -> Self {
        Pause {
            by: crate::sanitise::clean_text(by, 200),
            reason: reason.and_then(clean_reason),
            until,
        }
    }
}

/// A reason as stored: one line of text without control characters
/// (newlines and tabs become spaces), trimmed, at most
/// [`MAX_REASON_BYTES`]; `None` when nothing is left.
pub fn clean_reason(reason: &str) -> Option<String> {
    let one_line: String = reason
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect();
    let cleaned = crate::sanitise::clean_text(one_line.trim(), MAX_REASON_BYTES);
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_string())
}

/// Documents `pause_after_failures` and `notify_url` (both nullable: off /
/// none) in the OpenAPI `schemas` of TaskSpec and TaskPatch; `url` is the
/// schema of a task's `url`.
pub(crate) fn document_fields(schemas: &mut serde_json::Value, url: &serde_json::Value) {
    for (name, value) in openapi_fields(url) {
        schemas["TaskSpec"]["properties"][name] = value.clone();
        schemas["TaskPatch"]["properties"][name] = value;
    }
}

fn openapi_fields(url: &serde_json::Value) -> [(&'static str, serde_json::Value); 2] {
    let (min, max) = PAUSE_AFTER_RANGE;
    let mut notify_url = url.clone();
    notify_url["type"] = serde_json::json!(["string", "null"]);
    notify_url["description"] = serde_json::json!("Where this task's notification events are POSTed (besides SUNDIAL_NOTIFY_URL): the rules of `url`, address guard included. Null: none.");
    [
        (
            "pause_after_failures",
            serde_json::json!({"type": ["integer", "null"], "format": "int32",
                "minimum": min, "maximum": max,
                "description": "Pause the task after this many consecutive failed occurrences. Null (default): never."}),
        ),
        ("notify_url", notify_url),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_clean_bounded_line() {
        assert_eq!(
            clean_reason("  deploy\nfreeze\t "),
            Some("deploy freeze".into())
        );
        assert_eq!(
            clean_reason("\u{202e}evil\u{0}"),
            Some("evil\u{fffd}".into())
        );
        assert_eq!(clean_reason(" \n "), None);
        let long = "é".repeat(1000);
        let cut = clean_reason(&long).unwrap();
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
    }

    #[test]
    fn alerting_fields_are_checked_and_named() {
        let mut spec = TaskSpec::new("t", "rate(1 minute)", "https://example.com/");
        spec.pause_after_failures = Some(0);
        assert_eq!(
            validate_alerting(&mut spec).unwrap_err().field,
            "pause_after_failures"
        );
        spec.pause_after_failures = Some(5);
        spec.notify_url = Some("ftp://x".into());
        assert_eq!(
            validate_alerting(&mut spec).unwrap_err().field,
            "notify_url"
        );
        spec.notify_url = Some(" https://hooks.example.com/a ".into());
        validate_alerting(&mut spec).unwrap();
        assert_eq!(
            spec.notify_url.as_deref(),
            Some("https://hooks.example.com/a")
        );
    }
}
