use super::*;
use std::collections::BTreeMap;

use crate::schedule::Schedule;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn def(schedule: &str, zone: &str, from: &str, to: Option<&str>, version: i64) -> Definition {
    Definition {
        version,
        schedule: schedule.into(),
        timezone: zone.into(),
        valid_from: at(from),
        valid_to: to.map(at),
        start_at: None,
        end_at: None,
        exclude: None,
        bounds: Default::default(),
    }
}

fn run(t: &str, status: &str) -> RunFacts {
    RunFacts {
        scheduled_for: at(t),
        status: status.into(),
        attempts: 1,
        fired_at: Some(at(t) + Duration::milliseconds(4)),
        finished_at: at(t) + Duration::milliseconds(87),
        http_status: Some(200),
        latency_ms: Some(83),
        pacing_ms: None,
        error: None,
        manual: false,
        trigger: crate::trigger::Trigger::Schedule,
        backfill_id: None,
    }
}

fn task(next: Option<&str>) -> TaskNow {
    TaskNow {
        enabled: true,
        next_run_at: next.map(at),
        lease_until: None,
        overlap: Overlap::Forbid,
        catch_up: CatchUp::Skip,
        timeout_ms: 30_000,
        jitter_secs: 0,
        flow_held: None,
    }
}

fn event(t: &str, kind: EventKind, actor: &str) -> TaskEvent {
    TaskEvent {
        at: at(t),
        kind,
        actor: actor.into(),
        reason: None,
        version: 2,
    }
}

#[test]
fn enumerates_each_definition_within_its_validity() {
    let defs = [
        def(
            "0 * * * *",
            "UTC",
            "2026-12-01T00:00:00Z",
            Some("2026-12-01T03:30:00Z"),
            1,
        ),
        def("30 * * * *", "UTC", "2026-12-01T03:30:00Z", None, 2),
    ];
    let e = enumerate(
        &defs,
        at("2026-12-01T01:00:00Z"),
        at("2026-12-01T05:30:00Z"),
    );
    let got: Vec<(String, usize)> = e
        .occurrences
        .iter()
        .map(|(t, i)| (t.format("%H:%M").to_string(), *i))
        .collect();
    let want: Vec<(String, usize)> = [
        ("01:00", 0),
        ("02:00", 0),
        ("03:00", 0),
        ("03:30", 1),
        ("04:30", 1),
        ("05:30", 1),
    ]
    .iter()
    .map(|(s, i)| (s.to_string(), *i))
    .collect();
    assert_eq!(got, want);
    assert_eq!(e.more_before, None);
}

#[test]
fn keeps_the_newest_occurrences_when_there_are_too_many() {
    let defs = [def(
        "rate(1 second)",
        "UTC",
        "2026-01-01T00:00:00Z",
        None,
        1,
    )];
    let to = at("2026-12-01T12:00:00Z");
    let e = enumerate(&defs, at("2026-11-01T00:00:00Z"), to);
    assert_eq!(e.occurrences.len(), MAX_OCCURRENCES);
    assert_eq!(e.occurrences.last().unwrap().0, to);
    let first = e.occurrences[0].0;
    assert_eq!(first, to - Duration::seconds(MAX_OCCURRENCES as i64 - 1));
    assert_eq!(e.more_before, Some(first));
}

#[test]
fn unreadable_definitions_are_reported_not_enumerated() {
    let defs = [def("every day", "UTC", "2026-01-01T00:00:00Z", None, 1)];
    let e = enumerate(
        &defs,
        at("2026-11-01T00:00:00Z"),
        at("2026-11-02T00:00:00Z"),
    );
    assert!(e.occurrences.is_empty());
    assert_eq!(e.unreadable.len(), 1);
}

#[test]
fn nothing_before_the_task_existed() {
    let defs = [def("0 * * * *", "UTC", "2026-12-01T02:10:00Z", None, 1)];
    let e = enumerate(
        &defs,
        at("2026-12-01T00:00:00Z"),
        at("2026-12-01T04:00:00Z"),
    );
    assert_eq!(e.occurrences.len(), 2);
    assert_eq!(e.occurrences[0].0, at("2026-12-01T03:00:00Z"));
}

/// One table row: the facts around one occurrence at 09:00 and the state
/// and words expected.
struct Case {
    name: &'static str,
    task: TaskNow,
    runs: Vec<RunFacts>,
    events: Vec<TaskEvent>,
    now: &'static str,
    state: OccurrenceState,
    summary: &'static str,
}

#[test]
fn classification_table() {
    let leased = TaskNow {
        lease_until: Some(at("2026-12-01T09:01:00Z")),
        ..task(Some("2026-12-01T09:00:00Z"))
    };
    let mut failed = run("2026-12-01T09:00:00Z", "failed");
    failed.attempts = 3;
    failed.http_status = Some(500);
    failed.latency_ms = Some(12);
    failed.error = Some("HTTP 500".into());
    let mut skipped = run("2026-12-01T09:00:00Z", "skipped");
    skipped.fired_at = None;
    skipped.error = Some("missed its time; catch-up policy is `none`".into());
    let allow = TaskNow {
        overlap: Overlap::Allow,
        ..task(Some("2026-12-01T09:01:00Z"))
    };
    let cases = vec![
        Case {
            name: "fired",
            task: task(Some("2026-12-01T10:00:00Z")),
            runs: vec![run("2026-12-01T09:00:00Z", "succeeded")],
            events: vec![],
            now: "2026-12-01T09:30:00Z",
            state: OccurrenceState::Fired,
            summary: "09:00 UTC on 2026-12-01 fired at 09:00:00.004, 200 in 83 ms",
        },
        Case {
            name: "failed after retries",
            task: task(Some("2026-12-01T10:00:00Z")),
            runs: vec![failed],
            events: vec![],
            now: "2026-12-01T09:30:00Z",
            state: OccurrenceState::Fired,
            summary: "09:00 UTC on 2026-12-01 fired at 09:00:00.004 and failed after 3 attempts, 500 in 12 ms: HTTP 500",
        },
        Case {
            name: "skipped by catch-up none",
            task: task(Some("2026-12-01T10:00:00Z")),
            runs: vec![skipped],
            events: vec![],
            now: "2026-12-01T09:30:00Z",
            state: OccurrenceState::Skipped,
            summary: "09:00 UTC on 2026-12-01 did not fire: skipped (missed its time; catch-up policy is `none`)",
        },
        Case {
            name: "paused",
            task: TaskNow { enabled: false, ..task(Some("2026-12-01T10:00:00Z")) },
            runs: vec![],
            events: vec![event("2026-12-01T08:12:00Z", EventKind::Paused, "admin API")],
            now: "2026-12-01T09:30:00Z",
            state: OccurrenceState::NotScheduled,
            summary: "09:00 UTC on 2026-12-01 did not fire: the task was paused at 08:12 by admin API",
        },
        Case {
            name: "paused, then resumed before it: as if never paused",
            task: task(Some("2026-12-01T09:00:00Z")),
            runs: vec![],
            events: vec![
                event("2026-12-01T08:12:00Z", EventKind::Paused, "admin API"),
                event("2026-12-01T08:30:00Z", EventKind::Resumed, "sql"),
                event("2026-12-01T08:40:00Z", EventKind::Edited, "sql"),
            ],
            now: "2026-12-01T09:00:30Z",
            state: OccurrenceState::Pending,
            summary: "09:00 UTC on 2026-12-01 is pending: due; waiting for a scanner to claim it",
        },
        Case {
            name: "missed",
            task: task(Some("2026-12-01T09:00:00Z")),
            runs: vec![],
            events: vec![],
            now: "2026-12-01T09:07:00Z",
            state: OccurrenceState::Missed,
            summary: "09:00 UTC on 2026-12-01 missed: due 2026-12-01 09:00, no run and no lease (is a scanner running?)",
        },
        Case {
            name: "missed behind an earlier overdue occurrence",
            task: task(Some("2026-12-01T08:00:00Z")),
            runs: vec![],
            events: vec![],
            now: "2026-12-01T09:07:00Z",
            state: OccurrenceState::Missed,
            summary: "09:00 UTC on 2026-12-01 missed: due 2026-12-01 09:00, no run and no lease; the task still waits on 2026-12-01 08:00:00Z (is a scanner running?)",
        },
        Case {
            name: "leased",
            task: leased,
            runs: vec![],
            events: vec![],
            now: "2026-12-01T09:00:10Z",
            state: OccurrenceState::InFlight,
            summary: "09:00 UTC on 2026-12-01 is in flight: claimed by a scanner; no outcome recorded yet",
        },
        Case {
            name: "future",
            task: task(Some("2026-12-01T09:00:00Z")),
            runs: vec![],
            events: vec![],
            now: "2026-12-01T08:00:00Z",
            state: OccurrenceState::Pending,
            summary: "09:00 UTC on 2026-12-01 is pending: the task's next run",
        },
        Case {
            name: "passed over by catch-up skip",
            task: task(Some("2026-12-01T11:00:00Z")),
            runs: vec![run("2026-12-01T10:00:00Z", "succeeded")],
            events: vec![],
            now: "2026-12-01T10:30:00Z",
            state: OccurrenceState::PassedOver,
            summary: "09:00 UTC on 2026-12-01 did not fire: passed over by catch-up `skip`: the task fired 2026-12-01 10:00:00Z instead",
        },
        Case {
            name: "passed over by an edit",
            task: task(Some("2026-12-01T11:00:00Z")),
            runs: vec![],
            events: vec![event("2026-12-01T09:05:00Z", EventKind::Edited, "admin API")],
            now: "2026-12-01T10:30:00Z",
            state: OccurrenceState::PassedOver,
            summary: "09:00 UTC on 2026-12-01 did not fire: the schedule was edited at 2026-12-01 09:05:00Z by admin API before it ran",
        },
        Case {
            name: "allow: queued ahead, no outcome yet",
            task: allow,
            runs: vec![],
            events: vec![],
            now: "2026-12-01T09:00:05Z",
            state: OccurrenceState::InFlight,
            summary: "09:00 UTC on 2026-12-01 is in flight: queued; no outcome recorded yet",
        },
    ];
    let defs = [def("0 * * * *", "UTC", "2026-12-01T00:00:00Z", None, 1)];
    for case in cases {
        let runs: BTreeMap<_, _> = case
            .runs
            .into_iter()
            .map(|r| (r.scheduled_for, r))
            .collect();
        let facts = Facts {
            definitions: &defs,
            events: &case.events,
            runs: &runs,
            task: &case.task,
            now: at(case.now),
            grace: MISSED_GRACE,
            to: at("2026-12-01T09:30:00Z"),
        };
        let enumerated = enumerate(
            &defs,
            at("2026-12-01T09:00:00Z"),
            at("2026-12-01T09:00:00Z"),
        );
        let entries = account(&facts, &enumerated);
        let nine = entries
            .iter()
            .find(|e| e.scheduled_for == at("2026-12-01T09:00:00Z"))
            .unwrap_or_else(|| panic!("{}: no 09:00 entry", case.name));
        assert_eq!(nine.state, case.state, "{}: {:?}", case.name, nine);
        assert_eq!(nine.summary, case.summary, "{}", case.name);
    }
}

#[test]
fn lag_leaves_pacing_out() {
    let mut r = run("2026-12-01T09:00:00Z", "succeeded");
    r.fired_at = Some(at("2026-12-01T09:00:01.250Z"));
    r.pacing_ms = Some(1000);
    let e = with_run(&r, "UTC".into(), Some(1), None);
    assert_eq!(e.lag_ms, Some(250));
}

#[test]
fn summaries_read_in_the_task_zone() {
    let mut r = run("2026-12-01T08:00:00Z", "succeeded");
    r.fired_at = Some(at("2026-12-01T08:00:00.004Z"));
    let e = with_run(&r, "Europe/Berlin".into(), Some(1), None);
    assert_eq!(
        e.summary,
        "09:00 Europe/Berlin on 2026-12-01 fired at 09:00:00.004, 200 in 83 ms"
    );
}

#[test]
fn manual_runs_are_listed_too() {
    let defs = [def("0 * * * *", "UTC", "2026-12-01T00:00:00Z", None, 1)];
    let mut manual = run("2026-12-01T09:10:00.123Z", "succeeded");
    manual.manual = true;
    let runs: BTreeMap<_, _> = [(manual.scheduled_for, manual)].into_iter().collect();
    let t = task(Some("2026-12-01T10:00:00Z"));
    let facts = Facts {
        definitions: &defs,
        events: &[],
        runs: &runs,
        task: &t,
        now: at("2026-12-01T09:30:00Z"),
        grace: MISSED_GRACE,
        to: at("2026-12-01T09:30:00Z"),
    };
    let enumerated = enumerate(
        &defs,
        at("2026-12-01T09:00:00Z"),
        at("2026-12-01T09:30:00Z"),
    );
    let entries = account(&facts, &enumerated);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].definition_version, None);
    assert_eq!(entries[1].state, OccurrenceState::Fired);
    assert!(
        entries[1].summary.contains("(by hand)"),
        "{}",
        entries[1].summary
    );
}

#[test]
fn extreme_ranges_are_bounded_and_answer() {
    let schedules = [
        ("0 9 * * *", "Europe/Berlin"),
        ("*/15 * * * *", "America/New_York"),
        ("cron(0 12 ? * MON-FRI *)", "UTC"),
        ("rate(5 minutes)", "Asia/Kolkata"),
        ("* * * * * *", "UTC"),
        ("at(2026-03-08T02:30:00)", "America/New_York"),
        ("@yearly", "Pacific/Kiritimati"),
        ("0 0 30 2 *", "UTC"),
    ];
    let ranges = [
        ("0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z"),
        ("0000-01-01T00:00:00Z", "0000-01-03T00:00:00Z"),
        ("9999-12-29T00:00:00Z", "9999-12-31T23:59:59.999999999Z"),
    ];
    for (schedule, zone) in schedules {
        let defs = [def(schedule, zone, "0000-01-01T00:00:00Z", None, 1)];
        for (from, to) in ranges {
            let e = enumerate(&defs, at(from), at(to));
            assert!(
                e.occurrences.len() <= MAX_OCCURRENCES,
                "{schedule} {from}..{to}"
            );
            assert!(
                e.occurrences
                    .iter()
                    .all(|(t, _)| *t >= at(from) && *t <= at(to)),
                "{schedule} {from}..{to}"
            );
            assert!(
                e.occurrences.windows(2).all(|w| w[0].0 < w[1].0),
                "{schedule}"
            );
        }
    }
}

#[test]
fn the_window_and_the_exclusion_explain_occurrences_without_runs() {
    let mut defs = [def("0 * * * *", "UTC", "2026-12-01T00:00:00Z", None, 1)];
    defs[0].bounds = crate::schedule::Bounds {
        start_at: Some(at("2026-12-01T02:00:00Z")),
        end_at: None,
        exclude: Some(Schedule::parse("0 3 * * *").unwrap()),
    };
    let now_state = task(Some("2026-12-01T04:00:00Z"));
    let runs = BTreeMap::from([(
        at("2026-12-01T02:00:00Z"),
        run("2026-12-01T02:00:00Z", "succeeded"),
    )]);
    let facts = Facts {
        definitions: &defs,
        events: &[],
        runs: &runs,
        task: &now_state,
        now: at("2026-12-01T03:30:00Z"),
        grace: MISSED_GRACE,
        to: at("2026-12-01T03:00:00Z"),
    };
    let e = enumerate(&defs, at("2026-12-01T01:00:00Z"), facts.to);
    let got: Vec<(OccurrenceState, String)> = account(&facts, &e)
        .into_iter()
        .map(|entry| (entry.state, entry.summary))
        .collect();
    assert_eq!(got[0].0, OccurrenceState::NotScheduled);
    assert!(
        got[0].1.contains("before the task's active window"),
        "{got:?}"
    );
    assert_eq!(got[1].0, OccurrenceState::Fired);
    assert_eq!(
        got[2],
        (
            OccurrenceState::Skipped,
            "03:00 UTC on 2026-12-01 did not fire: skipped (excluded)".to_string()
        )
    );
}

#[test]
fn an_exclusion_added_later_leaves_earlier_occurrences_as_they_were() {
    // Hourly; `0 3 * * *` excluded from 03:30 on (a second definition of
    // the same timing, as migration 000009 writes it).
    let mut defs = [
        def(
            "0 * * * *",
            "UTC",
            "2026-12-01T00:00:00Z",
            Some("2026-12-01T03:30:00Z"),
            1,
        ),
        def("0 * * * *", "UTC", "2026-12-01T03:30:00Z", None, 2),
    ];
    defs[1].bounds.exclude = Some(Schedule::parse("0 3 * * *").unwrap());
    let runs = BTreeMap::from([(
        at("2026-12-01T03:00:00Z"),
        run("2026-12-01T03:00:00Z", "succeeded"),
    )]);
    let now_state = task(Some("2026-12-02T03:00:00Z"));
    let facts = Facts {
        definitions: &defs,
        events: &[],
        runs: &runs,
        task: &now_state,
        now: at("2026-12-02T04:00:00Z"),
        grace: MISSED_GRACE,
        to: at("2026-12-02T03:00:01Z"),
    };
    let e = enumerate(&defs, at("2026-12-01T03:00:00Z"), facts.to);
    let entries = account(&facts, &e);
    let first = entries
        .iter()
        .find(|x| x.scheduled_for == at("2026-12-01T03:00:00Z"));
    assert_eq!(
        first.map(|x| x.state),
        Some(OccurrenceState::Fired),
        "{entries:?}"
    );
    let next_day = entries
        .iter()
        .find(|x| x.scheduled_for == at("2026-12-02T03:00:00Z"));
    assert_eq!(
        next_day.map(|x| x.state),
        Some(OccurrenceState::Skipped),
        "{entries:?}"
    );
}
