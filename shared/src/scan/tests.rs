use super::*;
use chrono::{DateTime, Utc};

use crate::store::Claimed;
use crate::task::Overlap;

fn claimed(schedule: &str, overlap: Overlap, occurrence: DateTime<Utc>) -> Claimed {
    Claimed {
        task_id: 9,
        version: 1,
        occurrence,
        schedule: schedule.into(),
        timezone: "UTC".into(),
        overlap,
        jitter_secs: 0,
        flow: "example.com:443".into(),
        timeout_ms: 1000,
        start_at: None,
        end_at: None,
        exclude: None,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

#[test]
fn forbid_sends_only_the_claimed_occurrence() {
    let now = t("2026-12-01T09:00:00.550Z");
    let c = claimed(
        "rate(10 seconds)",
        Overlap::Forbid,
        t("2026-12-01T09:00:10Z"),
    );
    let w = window(&c, now, now + chrono::Duration::seconds(75));
    assert_eq!(w.occurrences, vec![t("2026-12-01T09:00:10Z")]);
    assert_eq!(w.next, None);
}

#[test]
fn allow_sends_every_occurrence_within_the_lookahead() {
    let now = t("2026-12-01T09:00:00.550Z");
    let c = claimed(
        "rate(10 seconds)",
        Overlap::Allow,
        t("2026-12-01T09:00:10Z"),
    );
    let w = window(&c, now, now + chrono::Duration::seconds(75));
    let expected: Vec<_> = (1..=7)
        .map(|k| t("2026-12-01T09:00:00Z") + chrono::Duration::seconds(10 * k))
        .collect();
    assert_eq!(w.occurrences, expected);
    assert_eq!(w.next, Some(Some(t("2026-12-01T09:01:20Z"))));
}

#[test]
fn allow_fires_an_overdue_occurrence_once_then_continues_from_now() {
    let now = t("2026-12-01T09:00:00.550Z");
    let c = claimed("rate(1 minute)", Overlap::Allow, t("2026-12-01T07:00:00Z"));
    let w = window(&c, now, now + chrono::Duration::seconds(75));
    assert_eq!(
        w.occurrences,
        vec![t("2026-12-01T07:00:00Z"), t("2026-12-01T09:01:00Z")]
    );
    assert_eq!(w.next, Some(Some(t("2026-12-01T09:02:00Z"))));
}

#[test]
fn a_window_is_bounded() {
    let now = t("2026-12-01T09:00:00Z");
    let c = claimed("rate(1 second)", Overlap::Allow, now);
    let w = window(&c, now, now + chrono::Duration::hours(1));
    assert_eq!(w.occurrences.len(), MAX_OCCURRENCES_PER_TASK);
}
