//! The preview that explains: the next occurrences of a schedule as a task
//! would have them (active window and exclusion applied), each with its
//! local time and DST note, excluded ones flagged, and the schedule in
//! words. One function for `sundial schedule preview` and
//! `POST /v1/schedules/preview`.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;

use super::bounds::{Bounds, MAX_EXCLUDED_IN_A_ROW};
use super::describe::describe;
use super::dst::{self, DstFlag};
use super::{parse_zone, Schedule, ScheduleError};

/// What to preview.
#[derive(Debug, Clone)]
pub struct PreviewInput<'a> {
    pub schedule: &'a str,
    pub timezone: &'a str,
    /// An exclusion, as a task's `exclude`.
    pub exclude: Option<&'a str>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    /// Occurrences strictly after this instant.
    pub from: DateTime<Utc>,
    /// How many firing occurrences (the caller bounds it).
    pub count: usize,
}

/// A field of the input that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PreviewError {
    /// `schedule`, `timezone`, `exclude` or `end_at`.
    pub field: &'static str,
    pub reason: String,
}

impl From<ScheduleError> for PreviewError {
    fn from(err: ScheduleError) -> Self {
        PreviewError {
            field: err.field(),
            reason: err.to_string(),
        }
    }
}

/// One occurrence of the expression in the preview.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PreviewEntry {
    /// The occurrence (UTC).
    pub at: DateTime<Utc>,
    /// The same instant in the schedule's zone, with its offset.
    pub local: String,
    /// False when the exclusion skips it.
    pub fires: bool,
    /// Why it does not fire: `excluded`.
    pub skipped: Option<String>,
    /// How DST touches it, if it does.
    pub dst: Option<DstFlag>,
}

/// The explained preview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    /// The schedule in words.
    pub description: String,
    /// The exclusion in words.
    pub exclude_description: Option<String>,
    /// The instants that fire, in order.
    pub occurrences: Vec<DateTime<Utc>>,
    /// Every listed occurrence, the excluded ones (the first of each
    /// excluded span) included.
    pub entries: Vec<PreviewEntry>,
    /// The active window and the end of the schedule, in words.
    pub notes: Vec<String>,
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses and checks the input, then lists occurrences until `count` of
/// them fire, the schedule or the window ends, or [`MAX_EXCLUDED_IN_A_ROW`]
/// in a row are excluded.
pub fn explain(input: &PreviewInput<'_>) -> Result<Explained, PreviewError> {
    let tz = parse_zone(input.timezone)?;
    let zone = input.timezone.trim();
    let schedule = Schedule::parse(input.schedule)?;
    let bounds = bounds_of(input)?;
    let mut out = Explained {
        description: describe(&schedule, zone),
        exclude_description: bounds.exclude.as_ref().map(|ex| describe(ex, zone)),
        occurrences: Vec::new(),
        entries: Vec::new(),
        notes: Vec::new(),
    };
    let mut cursor = start_of(&bounds, input.from, &mut out.notes);
    let mut previous = input.from;
    let mut excluded_listed = 0usize;
    let mut excluded_in_a_row = 0usize;
    while out.occurrences.len() < input.count {
        let t = match schedule.next_after(cursor, tz) {
            Some(t) if bounds.end_at.is_none_or(|end| t < end) => t,
            next => {
                out.notes.push(end_note(next.and(bounds.end_at)));
                break;
            }
        };
        let entry = PreviewEntry {
            at: t,
            local: t
                .with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            fires: true,
            skipped: None,
            dst: dst::flag(&schedule, tz, zone, previous, t),
        };
        previous = t;
        cursor = t;
        let Some(ex) = bounds.exclude.as_ref().filter(|ex| ex.covers(t, tz)) else {
            excluded_in_a_row = 0;
            out.occurrences.push(t);
            out.entries.push(entry);
            continue;
        };
        if excluded_listed < input.count {
            excluded_listed += 1;
            out.entries.push(PreviewEntry {
                fires: false,
                skipped: Some("excluded".into()),
                ..entry
            });
        }
        excluded_in_a_row += 1;
        if excluded_in_a_row >= MAX_EXCLUDED_IN_A_ROW {
            out.notes.push(format!(
                "the exclusion skips more than {MAX_EXCLUDED_IN_A_ROW} occurrences in a row"
            ));
            break;
        }
        cursor = ex.span_end(t, tz).filter(|end| *end > t).unwrap_or(t);
    }
    Ok(out)
}

/// Why the listing ends: the window's `end`, or the schedule's end.
fn end_note(end: Option<DateTime<Utc>>) -> String {
    match end {
        Some(end) => format!(
            "the active window ends at {}: no occurrence at or after it; the task then disables itself",
            utc(end)
        ),
        None => "the schedule has no further occurrence".to_string(),
    }
}

/// Where the listing starts: `from`, or just before a later window start
/// (noted).
fn start_of(bounds: &Bounds, from: DateTime<Utc>, notes: &mut Vec<String>) -> DateTime<Utc> {
    match bounds.start_at.filter(|s| *s > from) {
        Some(start) => {
            notes.push(format!(
                "the active window starts at {}: no occurrence before it",
                utc(start)
            ));
            start - Duration::nanoseconds(1)
        }
        None => from,
    }
}

/// The window and exclusion of the input, checked.
fn bounds_of(input: &PreviewInput<'_>) -> Result<Bounds, PreviewError> {
    let exclude = match input.exclude {
        Some(text) => Some(Schedule::parse(text).map_err(|e| PreviewError {
            field: "exclude",
            reason: e.to_string(),
        })?),
        None => None,
    };
    if let (Some(start), Some(end)) = (input.start_at, input.end_at) {
        if end <= start {
            return Err(PreviewError {
                field: "end_at",
                reason: "must be after start_at".into(),
            });
        }
    }
    Ok(Bounds {
        start_at: input.start_at,
        end_at: input.end_at,
        exclude,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn input<'a>(schedule: &'a str, timezone: &'a str, from: &str) -> PreviewInput<'a> {
        PreviewInput {
            schedule,
            timezone,
            exclude: None,
            start_at: None,
            end_at: None,
            from: t(from),
            count: 5,
        }
    }

    #[test]
    fn exclusions_are_flagged_and_the_window_noted() {
        let mut i = input("0 9 * * *", "Europe/Berlin", "2026-12-23T12:00:00Z");
        i.exclude = Some("* * 25,26 12 *");
        i.end_at = Some(t("2026-12-29T00:00:00Z"));
        let got = explain(&i).unwrap();
        assert_eq!(got.description, "at 09:00 every day, Europe/Berlin");
        assert_eq!(
            got.exclude_description.as_deref(),
            Some("every minute on days 25 and 26 of the month in December, Europe/Berlin")
        );
        let fires: Vec<bool> = got.entries.iter().map(|e| e.fires).collect();
        // 24th, 25th (excluded), 26th (excluded), 27th, 28th; then the window ends.
        assert_eq!(fires, vec![true, false, false, true, true]);
        assert_eq!(got.entries[1].skipped.as_deref(), Some("excluded"));
        assert_eq!(got.entries[1].local, "2026-12-25T09:00:00+01:00");
        assert_eq!(got.occurrences.len(), 3);
        assert!(got.notes[0].starts_with("the active window ends at 2026-12-29T00:00:00Z"));
    }

    #[test]
    fn the_window_start_and_bad_fields_are_named() {
        let mut i = input("rate(1 hour)", "UTC", "2026-12-01T00:00:00Z");
        i.start_at = Some(t("2026-12-02T00:00:00Z"));
        let got = explain(&i).unwrap();
        assert_eq!(got.occurrences[0], t("2026-12-02T00:00:00Z"));
        assert!(got.notes[0].starts_with("the active window starts at"));
        i.end_at = i.start_at;
        assert_eq!(explain(&i).unwrap_err().field, "end_at");
        i.end_at = None;
        i.exclude = Some("every day");
        assert_eq!(explain(&i).unwrap_err().field, "exclude");
        i.exclude = None;
        i.timezone = "Mars/Base";
        assert_eq!(explain(&i).unwrap_err().field, "timezone");
    }

    #[test]
    fn dst_flags_for_half_past_two_in_new_york_across_the_march_change() {
        let got = explain(&input(
            "30 2 * * *",
            "America/New_York",
            "2026-03-06T12:00:00Z",
        ))
        .unwrap();
        let flagged: Vec<_> = got
            .entries
            .iter()
            .map(|e| (e.local.clone(), e.dst.as_ref().map(|d| d.kind)))
            .collect();
        assert_eq!(
            flagged[1],
            (
                "2026-03-08T03:00:00-04:00".into(),
                Some(dst::DstKind::Moved)
            )
        );
        assert_eq!(flagged[0].1, None);
        assert_eq!(flagged[2].1, None);
    }
}
