//! A task's active window (`start_at`, `end_at`) and exclusion (`exclude`):
//! the stored columns, the checked input, and their OpenAPI schemas. The
//! rules that apply them to occurrences are [`crate::schedule::bounds`];
//! the migration `20261201000007_schedule_window` holds the columns, their
//! CHECKs, and the trigger that makes the ledger say "active window ended".

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::schedule::{Bounds, Schedule};
use crate::task::{is_unsafe_char, InvalidField, TaskSpec, MAX_SCHEDULE_CHARS};

/// The window and exclusion columns of a task (flattened into
/// [`crate::task::Task`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskWindow {
    /// No occurrence before this instant.
    pub start_at: Option<DateTime<Utc>>,
    /// No occurrence at or after this instant; once none is left the task
    /// disables itself.
    pub end_at: Option<DateTime<Utc>>,
    /// Occurrences this schedule expression matches (in the task's zone)
    /// are skipped.
    pub exclude: Option<String>,
}

impl TaskWindow {
    /// The stored columns as [`Bounds`]; an unreadable `exclude` (only
    /// plain SQL can store one) is the field error.
    pub fn bounds(&self) -> Result<Bounds, InvalidField> {
        Ok(Bounds {
            start_at: self.start_at,
            end_at: self.end_at,
            exclude: match &self.exclude {
                Some(text) => Some(parse_exclude(text)?),
                None => None,
            },
        })
    }
}

fn parse_exclude(text: &str) -> Result<Schedule, InvalidField> {
    Schedule::parse(text).map_err(|e| InvalidField::new("exclude", e.to_string()))
}

/// Checks and normalises a spec's `start_at`, `end_at` and `exclude`, and
/// returns them as [`Bounds`].
pub fn validate_window(spec: &mut TaskSpec) -> Result<Bounds, InvalidField> {
    if let (Some(start), Some(end)) = (spec.start_at, spec.end_at) {
        if end <= start {
            return Err(InvalidField::new(
                "end_at",
                format!(
                    "must be after start_at ({})",
                    start.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
        }
    }
    for (field, at) in [("start_at", spec.start_at), ("end_at", spec.end_at)] {
        // What Postgres stores and RFC 3339 shows: years 1 to 9999.
        if at.is_some_and(|t| !(1..=9999).contains(&t.year())) {
            return Err(InvalidField::new(
                field,
                "must be an RFC 3339 timestamp with a year from 0001 to 9999",
            ));
        }
    }
    let trimmed = spec.exclude.as_deref().map(|t| t.trim().to_string());
    let exclude = match trimmed {
        None => None,
        Some(text) => {
            if text.is_empty() || text.chars().count() > MAX_SCHEDULE_CHARS {
                return Err(InvalidField::new(
                    "exclude",
                    format!("must be 1 to {MAX_SCHEDULE_CHARS} characters (null: no exclusion)"),
                ));
            }
            if text.chars().any(is_unsafe_char) {
                return Err(InvalidField::new(
                    "exclude",
                    "must not contain control characters",
                ));
            }
            let parsed = parse_exclude(&text)?;
            spec.exclude = Some(text);
            Some(parsed)
        }
    };
    Ok(Bounds {
        start_at: spec.start_at,
        end_at: spec.end_at,
        exclude,
    })
}

/// Documents `start_at`, `end_at` and `exclude` in the OpenAPI `schemas`
/// of TaskSpec and TaskPatch.
pub(crate) fn document_fields(schemas: &mut serde_json::Value) {
    for (name, value) in openapi_fields() {
        schemas["TaskSpec"]["properties"][name] = value.clone();
        schemas["TaskPatch"]["properties"][name] = value;
    }
}

/// A window start every client can rely on: RFC 3339 UTC, year 1970 to
/// 2099. Together with [`END_PATTERN`] it keeps `end_at` after `start_at`
/// and in the future, which JSON Schema cannot state; the server accepts
/// any instants of years 0001 to 9999 with `end_at` after `start_at`.
const START_PATTERN: &str = concat!(
    r"^(19[7-9][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z(?!\n)$"
);
/// A window end every client can rely on: RFC 3339 UTC, year 2200 to 9999.
const END_PATTERN: &str = concat!(
    r"^(2[2-9][0-9]{2}|[3-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z(?!\n)$"
);
/// Exclusions every client can rely on: one day (or an hour or minute of
/// it) of one year, so no exclusion of this form skips every occurrence of
/// a schedule. The server accepts any schedule expression.
const EXCLUDE_PATTERN: &str = concat!(
    r"^cron\((\*|[1-5]?[0-9]) (\*|1?[0-9]|2[0-3]) ([1-9]|1[0-9]|2[0-8]) ([1-9]|1[0-2]) \? (20[0-9]{2}|21[0-9]{2})\)",
    r"(?!\n)$"
);

/// The schemas of the three fields (all nullable: null = none).
pub(crate) fn openapi_fields() -> [(&'static str, serde_json::Value); 3] {
    let instant = |pattern: &str, description: &str| {
        serde_json::json!({"type": ["string", "null"], "format": "date-time",
            "pattern": pattern, "description": description})
    };
    [
        (
            "start_at",
            instant(START_PATTERN, "No occurrence before this instant (RFC 3339, years 0001 to 9999). Null: none. The pattern is the portable core (with `end_at`'s, it keeps the window in order and in the future); the server accepts any instant."),
        ),
        (
            "end_at",
            instant(END_PATTERN, "No occurrence at or after this instant (RFC 3339, years 0001 to 9999), which must be after `start_at` (400 naming `end_at`) and leave an occurrence in the future; once no occurrence is left the task disables itself and its ledger says why. Null: none. The pattern is the portable core; the server accepts any instant meeting these rules."),
        ),
        (
            "exclude",
            serde_json::json!({
                "type": ["string", "null"], "minLength": 1, "maxLength": MAX_SCHEDULE_CHARS,
                "pattern": EXCLUDE_PATTERN,
                "description": "Occurrences this schedule expression matches are skipped (recorded in the ledger as `skipped (excluded)`): the grammar of `schedule`, read in the task's zone. A cron exclusion matches whole minutes (seconds when it names seconds other than 0), so `cron(* * ? * SAT,SUN *)` skips weekends. One that skips 20000 occurrences in a row is refused (400 naming `exclude`). Null: none. The pattern is the portable core (one day of one year); the server accepts any schedule expression."
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn window_fields_are_checked_and_named() {
        let mut spec = TaskSpec::new("t", "rate(1 minute)", "https://example.com/");
        spec.start_at = Some(t("2026-12-02T00:00:00Z"));
        spec.end_at = Some(t("2026-12-01T00:00:00Z"));
        assert_eq!(validate_window(&mut spec).unwrap_err().field, "end_at");
        spec.end_at = spec.start_at;
        assert_eq!(validate_window(&mut spec).unwrap_err().field, "end_at");
        spec.end_at = None;
        for bad in ["", "every weekend", "0 0 30 2 * * *", "a\u{0}"] {
            spec.exclude = Some(bad.into());
            assert_eq!(
                validate_window(&mut spec).unwrap_err().field,
                "exclude",
                "{bad:?}"
            );
        }
        spec.exclude = Some("  cron(* * ? * SAT,SUN *) ".into());
        let bounds = validate_window(&mut spec).unwrap();
        assert!(bounds.exclude.is_some());
        assert_eq!(spec.exclude.as_deref(), Some("cron(* * ? * SAT,SUN *)"));
    }
}
