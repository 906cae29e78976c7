//! Which occurrences a DST transition touches, for the preview: a fixed
//! wall-clock time the spring-forward gap removes (Sundial fires it at the
//! first instant after the jump: *moved*), one the fall-back overlap
//! repeats (fired once, at the first instance: *ambiguous*), a repeating
//! schedule firing in both passes of the overlap (*repeated*), and
//! wall-clock times a repeating schedule loses in a gap (*skipped*, told
//! on the first occurrence after them). Rates follow real time: never.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use serde::Serialize;

use super::zone::{local_at, next_offset_change};
use super::{Kind, Schedule, Tz};

/// How DST touches an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DstKind {
    /// Its wall-clock time does not exist that day; it fires at the end of
    /// the gap instead.
    Moved,
    /// Its wall-clock time exists twice; it fires once, at the first.
    Ambiguous,
    /// A repeating schedule fires in both passes of a repeated hour; this
    /// is one of them.
    Repeated,
    /// Wall-clock times of a repeating schedule that did not exist were
    /// skipped just before this occurrence.
    SkippedBefore,
}

/// A DST note on one occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DstFlag {
    pub kind: DstKind,
    /// The note in words, e.g. "02:30 does not exist on 2026-03-08 in
    /// America/New_York (clocks go forward from 02:00 to 03:00): fires at
    /// 03:00 EDT, the first instant after the jump".
    pub note: String,
}

/// The DST note for occurrence `t`, the one after `previous` (or after the
/// start of the preview), if DST touches it.
pub fn flag(
    schedule: &Schedule,
    tz: Tz,
    zone: &str,
    previous: DateTime<Utc>,
    t: DateTime<Utc>,
) -> Option<DstFlag> {
    let local = t.with_timezone(&tz);
    let wall = local.naive_local();
    let abbrev = local.format("%Z").to_string();
    let day = wall.format("%Y-%m-%d");
    let fixed = match &schedule.kind {
        Kind::Rate(_) => return None,
        Kind::At(_) => true,
        Kind::Cron(cron) => cron.is_fixed_time(),
    };
    let (repeated, first_pass) = match tz.from_local_datetime(&wall) {
        LocalResult::Ambiguous(a, b) => (true, t.timestamp() == a.timestamp().min(b.timestamp())),
        _ => (false, true),
    };
    if fixed {
        return fixed_flag(schedule, tz, zone, t, repeated);
    }
    if repeated {
        let pass = if first_pass {
            "the first"
        } else {
            "the second"
        };
        return Some(DstFlag {
            kind: DstKind::Repeated,
            note: format!(
                "{} occurs twice on {day} in {zone} (clocks go back): this schedule fires in both; this is {pass} ({abbrev})",
                hm(wall)
            ),
        });
    }
    let (before, after) = skipped_gap(schedule, tz, previous, t)?;
    Some(DstFlag {
        kind: DstKind::SkippedBefore,
        note: format!(
            "wall-clock times from {} to {} did not exist on {} in {zone} (clocks went forward): occurrences there were skipped",
            hm(before),
            hm(after - TimeDelta::seconds(1)),
            before.format("%Y-%m-%d")
        ),
    })
}

/// A fixed-time occurrence: moved out of a gap, or the first of two.
fn fixed_flag(
    schedule: &Schedule,
    tz: Tz,
    zone: &str,
    t: DateTime<Utc>,
    repeated: bool,
) -> Option<DstFlag> {
    let local = t.with_timezone(&tz);
    let wall = local.naive_local();
    let abbrev = local.format("%Z");
    let day = wall.format("%Y-%m-%d");
    if let Some(intended) = moved_from(schedule, tz, t, wall) {
        let (before, after) = gap_edges(tz, t)?;
        return Some(DstFlag {
            kind: DstKind::Moved,
            note: format!(
                "{} does not exist on {day} in {zone} (clocks go forward from {} to {}): fires at {} {abbrev}, the first instant after the jump",
                hm(intended), hm(before), hm(after), hm(wall)
            ),
        });
    }
    repeated.then(|| DstFlag {
        kind: DstKind::Ambiguous,
        note: format!(
            "{} occurs twice on {day} in {zone} (clocks go back): fires once, at the first instance ({abbrev})",
            hm(wall)
        ),
    })
}

fn hm(t: NaiveDateTime) -> String {
    let text = t.format("%H:%M:%S").to_string();
    text.strip_suffix(":00")
        .map_or(text.clone(), str::to_string)
}

/// For a fixed-time occurrence whose wall-clock time is not what the
/// expression names: the time it names (in the gap before `t`).
fn moved_from(
    schedule: &Schedule,
    tz: Tz,
    t: DateTime<Utc>,
    wall: NaiveDateTime,
) -> Option<NaiveDateTime> {
    match &schedule.kind {
        Kind::At(at) => (*at != wall).then_some(*at),
        Kind::Cron(cron) => {
            use chrono::Datelike;
            if cron.next_match(wall, wall.year()) == Some(wall) {
                return None;
            }
            let (gap_start, _) = gap_edges(tz, t)?;
            cron.next_match(gap_start, gap_start.year())
                .filter(|m| *m < wall)
        }
        Kind::Rate(_) => None,
    }
}

/// The wall-clock edges of the gap that ends at `t`: the first reading
/// that does not exist, and the reading at `t`.
fn gap_edges(tz: Tz, t: DateTime<Utc>) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let second = t.timestamp();
    let (before, _) = local_at(second - 1, tz)?;
    let (at, _) = local_at(second, tz)?;
    let start = before.checked_add_signed(TimeDelta::seconds(1))?;
    (at > start).then_some((start, at))
}

/// For a repeating schedule: a forward gap in `(previous, t]` holding
/// wall-clock times the expression names, as its wall-clock edges.
fn skipped_gap(
    schedule: &Schedule,
    tz: Tz,
    previous: DateTime<Utc>,
    t: DateTime<Utc>,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    use chrono::Datelike;
    let Kind::Cron(cron) = &schedule.kind else {
        return None;
    };
    let (_, offset) = local_at(previous.timestamp(), tz)?;
    let change = next_offset_change(previous.timestamp(), t.timestamp(), offset, tz)?;
    let (start, end) = gap_edges(tz, DateTime::from_timestamp(change, 0)?)?;
    let first = cron.next_match(start, start.year())?;
    (first < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn flags(expr: &str, zone: &str, from: &str, count: usize) -> Vec<(String, Option<DstKind>)> {
        let tz: Tz = zone.parse().unwrap();
        let schedule = Schedule::parse(expr).unwrap();
        let mut previous = t(from);
        let mut out = Vec::new();
        for at in schedule.upcoming(previous, tz, count) {
            let f = flag(&schedule, tz, zone, previous, at);
            out.push((at.to_rfc3339(), f.map(|f| f.kind)));
            previous = at;
        }
        out
    }

    #[test]
    fn half_past_two_in_new_york_across_the_march_change_is_moved() {
        let got = flags("30 2 * * *", "America/New_York", "2026-03-06T12:00:00Z", 3);
        assert_eq!(
            got,
            vec![
                ("2026-03-07T07:30:00+00:00".into(), None),
                // 02:30 does not exist on 2026-03-08: 03:00 EDT instead.
                ("2026-03-08T07:00:00+00:00".into(), Some(DstKind::Moved)),
                ("2026-03-09T06:30:00+00:00".into(), None),
            ]
        );
        let tz: Tz = "America/New_York".parse().unwrap();
        let s = Schedule::parse("30 2 * * *").unwrap();
        let note = flag(
            &s,
            tz,
            "America/New_York",
            t("2026-03-07T07:30:00Z"),
            t("2026-03-08T07:00:00Z"),
        )
        .unwrap()
        .note;
        assert_eq!(note, "02:30 does not exist on 2026-03-08 in America/New_York (clocks go forward from 02:00 to 03:00): fires at 03:00 EDT, the first instant after the jump");
    }

    #[test]
    fn an_at_in_the_gap_is_moved_and_in_the_overlap_ambiguous() {
        let got = flags(
            "at(2026-03-08T02:30:00)",
            "America/New_York",
            "2026-03-01T00:00:00Z",
            1,
        );
        assert_eq!(got[0].1, Some(DstKind::Moved));
        let got = flags(
            "at(2026-11-01T01:30:00)",
            "America/New_York",
            "2026-10-01T00:00:00Z",
            1,
        );
        assert_eq!(
            got,
            vec![("2026-11-01T05:30:00+00:00".into(), Some(DstKind::Ambiguous))]
        );
    }

    #[test]
    fn a_fixed_time_in_the_november_overlap_fires_once_at_the_first() {
        let got = flags("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2);
        assert_eq!(
            got,
            vec![
                ("2026-11-01T05:30:00+00:00".into(), Some(DstKind::Ambiguous)),
                ("2026-11-02T06:30:00+00:00".into(), None),
            ]
        );
    }

    #[test]
    fn repeating_schedules_are_repeated_in_the_overlap_and_skip_the_gap() {
        let got = flags("30 * * * *", "America/New_York", "2026-11-01T04:00:00Z", 3);
        assert_eq!(
            got,
            vec![
                ("2026-11-01T04:30:00+00:00".into(), None),
                ("2026-11-01T05:30:00+00:00".into(), Some(DstKind::Repeated)),
                ("2026-11-01T06:30:00+00:00".into(), Some(DstKind::Repeated)),
            ]
        );
        let got = flags("30 * * * *", "America/New_York", "2026-03-08T06:00:00Z", 2);
        assert_eq!(
            got,
            vec![
                ("2026-03-08T06:30:00+00:00".into(), None),
                // 02:30 EST does not exist: the next is 03:30 EDT.
                (
                    "2026-03-08T07:30:00+00:00".into(),
                    Some(DstKind::SkippedBefore)
                ),
            ]
        );
        assert!(flags(
            "rate(30 minutes)",
            "America/New_York",
            "2026-03-08T06:00:00Z",
            4
        )
        .iter()
        .all(|(_, f)| f.is_none()));
    }
}
