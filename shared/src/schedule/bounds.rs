//! What bounds a schedule's occurrences besides the expression itself: the
//! task's active window (`start_at`, `end_at`) and its exclusion (a second
//! expression whose matches are skipped).
//!
//! An occurrence is in the window when `start_at <= t < end_at`. It is
//! excluded when its wall-clock time in the task's zone falls in a match of
//! the exclusion: a cron exclusion matches a whole minute (or second, when
//! it names seconds other than 0; or hour or day, when every minute or
//! every hour matches), so `cron(* * ? * SAT,SUN *)` excludes every
//! occurrence on a weekend, sub-minute ones included, and `0 0 25 12 *`
//! excludes what falls in the first minute of Christmas Day. A `rate` or
//! `at` exclusion matches its own instants only.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{Kind, Schedule, Tz};

/// Consecutive excluded occurrences a search skips before it gives up
/// (an exclusion that covers the whole schedule). Whole excluded spans are
/// skipped at once, so this takes a per-second schedule across a long
/// weekend.
pub const MAX_EXCLUDED_IN_A_ROW: usize = 20_000;

/// The window and exclusion of a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    /// No occurrence before this instant.
    pub start_at: Option<DateTime<Utc>>,
    /// No occurrence at or after this instant.
    pub end_at: Option<DateTime<Utc>>,
    /// Occurrences this matches are skipped.
    pub exclude: Option<Schedule>,
}

/// The next occurrence within the bounds, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The next occurrence.
    At(DateTime<Utc>),
    /// The expression has no further occurrence.
    ScheduleEnded,
    /// The next one would be at or after `end_at`.
    WindowEnded,
    /// More than [`MAX_EXCLUDED_IN_A_ROW`] in a row are excluded.
    AllExcluded,
}

impl Next {
    /// The occurrence, if there is one.
    pub fn at(self) -> Option<DateTime<Utc>> {
        match self {
            Next::At(t) => Some(t),
            _ => None,
        }
    }
}

impl Bounds {
    /// True when there is nothing to apply.
    pub fn is_unbounded(&self) -> bool {
        self.start_at.is_none() && self.end_at.is_none() && self.exclude.is_none()
    }

    /// Is `t` within the active window?
    pub fn in_window(&self, t: DateTime<Utc>) -> bool {
        self.start_at.is_none_or(|s| t >= s) && self.end_at.is_none_or(|e| t < e)
    }

    /// Does the exclusion skip the occurrence `t` (read in `tz`)?
    pub fn excludes(&self, t: DateTime<Utc>, tz: Tz) -> bool {
        self.exclude.as_ref().is_some_and(|ex| ex.covers(t, tz))
    }

    /// The first occurrence of `schedule` strictly after `after` that is in
    /// the window and not excluded.
    pub fn next_after(&self, schedule: &Schedule, after: DateTime<Utc>, tz: Tz) -> Next {
        let mut cursor = match self.start_at {
            // Occurrences are whole seconds: just before the start finds
            // one at the start itself.
            Some(start) if after < start => start - Duration::nanoseconds(1),
            _ => after,
        };
        for _ in 0..MAX_EXCLUDED_IN_A_ROW {
            let Some(t) = schedule.next_after(cursor, tz) else {
                return Next::ScheduleEnded;
            };
            if self.end_at.is_some_and(|end| t >= end) {
                return Next::WindowEnded;
            }
            let Some(exclude) = self.exclude.as_ref().filter(|ex| ex.covers(t, tz)) else {
                return Next::At(t);
            };
            // Skip the rest of the excluded span in one step.
            cursor = exclude.span_end(t, tz).filter(|end| *end > t).unwrap_or(t);
        }
        Next::AllExcluded
    }

    /// Up to `count` occurrences after `after` that fire, in order.
    pub fn upcoming(
        &self,
        schedule: &Schedule,
        after: DateTime<Utc>,
        tz: Tz,
        count: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < count {
            let Next::At(t) = self.next_after(schedule, cursor, tz) else {
                break;
            };
            out.push(t);
            cursor = t;
        }
        out
    }
}

impl Schedule {
    /// Does `t`, read in `tz`, fall in a match of this expression used as
    /// an exclusion (see the module doc)?
    pub fn covers(&self, t: DateTime<Utc>, tz: Tz) -> bool {
        match &self.kind {
            Kind::Cron(cron) => cron.covers(t.with_timezone(&tz).naive_local()),
            Kind::Rate(_) | Kind::At(_) => {
                let second = t.timestamp();
                DateTime::from_timestamp(second - 1, 0)
                    .and_then(|before| self.next_after(before, tz))
                    .is_some_and(|next| next.timestamp() == second)
            }
        }
    }

    /// Just before the end of the excluded span holding `t` (an instant a
    /// search may continue from without passing an occurrence outside it);
    /// `None` when it is not worth computing.
    pub(super) fn span_end(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let Kind::Cron(cron) = &self.kind else {
            return None;
        };
        let local = t.with_timezone(&tz).naive_local();
        let end = cron.span().end_of(local)?;
        // The earlier instant of a repeated wall-clock time keeps the search
        // from passing the second pass; a time in a gap is not jumped to.
        let instant = tz.from_local_datetime(&end).earliest()?;
        Some(instant.to_utc() - Duration::seconds(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn bounds(exclude: Option<&str>) -> Bounds {
        Bounds {
            exclude: exclude.map(|e| Schedule::parse(e).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn the_window_bounds_occurrences() {
        let s = Schedule::parse("rate(1 hour)").unwrap();
        let b = Bounds {
            start_at: Some(t("2026-12-01T10:00:00Z")),
            end_at: Some(t("2026-12-01T12:00:00Z")),
            exclude: None,
        };
        let from = t("2026-12-01T00:00:00Z");
        assert_eq!(
            b.upcoming(&s, from, Tz::UTC, 10),
            vec![t("2026-12-01T10:00:00Z"), t("2026-12-01T11:00:00Z")]
        );
        assert_eq!(
            b.next_after(&s, t("2026-12-01T11:00:00Z"), Tz::UTC),
            Next::WindowEnded
        );
        let once = Schedule::parse("at(2026-12-01T09:00:00)").unwrap();
        assert_eq!(b.next_after(&once, from, Tz::UTC), Next::ScheduleEnded);
    }

    #[test]
    fn a_weekend_exclusion_skips_sub_minute_occurrences_too() {
        let s = Schedule::parse("rate(10 seconds)").unwrap();
        let b = bounds(Some("cron(* * ? * SAT,SUN *)"));
        // 2026-12-04 is a Friday.
        let next = b.next_after(&s, t("2026-12-04T23:59:55Z"), Tz::UTC);
        assert_eq!(next, Next::At(t("2026-12-07T00:00:00Z")));
        assert!(b.excludes(t("2026-12-05T12:00:10Z"), Tz::UTC));
        assert!(!b.excludes(t("2026-12-04T12:00:10Z"), Tz::UTC));
    }

    #[test]
    fn an_exclusion_is_read_in_the_task_zone() {
        let s = Schedule::parse("0 0 * * *").unwrap();
        let b = bounds(Some("0 0 25 12 *"));
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let got = b.upcoming(&s, t("2026-12-23T12:00:00Z"), berlin, 3);
        assert_eq!(
            got,
            vec![
                t("2026-12-23T23:00:00Z"),
                t("2026-12-25T23:00:00Z"),
                t("2026-12-26T23:00:00Z")
            ]
        );
    }

    #[test]
    fn exclusions_of_instants_and_of_everything() {
        let s = Schedule::parse("rate(1 minute)").unwrap();
        let b = bounds(Some("rate(2 minutes)"));
        let got = b.upcoming(&s, t("2026-12-01T00:00:30Z"), Tz::UTC, 3);
        assert_eq!(
            got,
            vec![
                t("2026-12-01T00:01:00Z"),
                t("2026-12-01T00:03:00Z"),
                t("2026-12-01T00:05:00Z")
            ]
        );
        let all = bounds(Some("* * * * *"));
        assert_eq!(
            all.next_after(&s, t("2026-12-01T00:00:00Z"), Tz::UTC),
            Next::AllExcluded
        );
    }
}
