use super::*;
use crate::store::{OnOpen, Outcome, OutcomeKind};
use crate::task::CatchUp;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

const OCC: &str = "2026-12-01T09:00:00Z";

fn task() -> Task {
    Task {
        id: 7,
        name: "t".into(),
        schedule: "rate(1 minute)".into(),
        timezone: "UTC".into(),
        method: "POST".into(),
        url: "https://example.com/".into(),
        headers: sqlx::types::Json(serde_json::json!({})),
        body: None,
        timeout_ms: 1000,
        max_attempts: 3,
        retry_backoff_ms: 100,
        catch_up: CatchUp::Skip,
        catch_up_max_age_secs: 3600,
        overlap: Overlap::Forbid,
        jitter_secs: 0,
        enabled: true,
        next_run_at: Some(t(OCC)),
        lease_until: None,
        version: 3,
        schedule_error: None,
        last_run_at: None,
        last_status: None,
        last_error: None,
        consecutive_failures: 0,
        created_at: t(OCC),
        updated_at: t(OCC),
        flow_key: None,
        flow: "example.com:443".into(),
        tags: Vec::new(),
        alerting: Default::default(),
        window: Default::default(),
    }
}

fn message() -> DispatchMessage {
    DispatchMessage::new(7, t(OCC), 3)
}

fn timing(task: &Task) -> Timing {
    Timing::of(task).unwrap()
}

#[test]
fn the_rules_before_a_call_in_their_order() {
    let ms = Duration::from_millis;
    type Case = (
        &'static str,
        Box<dyn Fn(&mut DispatchMessage, &mut Task, &mut bool, &mut bool)>,
        &'static str,
        Before,
    );
    let cases: Vec<Case> = vec![
        (
            "on time",
            Box::new(|_, _, _, _| {}),
            "2026-12-01T09:00:00Z",
            Before::Fire {
                fire_at: t(OCC),
                hold: Duration::ZERO,
            },
        ),
        (
            "late fires at once",
            Box::new(|_, _, _, _| {}),
            "2026-12-01T09:00:05Z",
            Before::Fire {
                fire_at: t(OCC),
                hold: Duration::ZERO,
            },
        ),
        (
            "early is held",
            Box::new(|_, _, _, _| {}),
            "2026-12-01T08:59:59.250Z",
            Before::Fire {
                fire_at: t(OCC),
                hold: ms(750),
            },
        ),
        (
            "far too early is put back",
            Box::new(|_, _, _, _| {}),
            "2026-12-01T08:59:50Z",
            Before::PutBack {
                fire_at: t(OCC),
                early: ms(10_000),
            },
        ),
        (
            "a retry fires at its backoff's end",
            Box::new(|m, _, _, _| {
                m.attempt = 2;
                m.fire_at = Some(t("2026-12-01T09:00:00.100Z"));
            }),
            "2026-12-01T09:00:00.040Z",
            Before::Fire {
                fire_at: t("2026-12-01T09:00:00.100Z"),
                hold: ms(60),
            },
        ),
        (
            // (17.675 s of jitter for task 7: far beyond the hold)
            "jitter from the task when the message has none",
            Box::new(|_, t, _, _| t.jitter_secs = 30),
            "2026-12-01T09:00:00Z",
            Before::PutBack {
                fire_at: firetime::fire_at(7, t(OCC), 30),
                early: firetime::jitter_offset(7, t(OCC), 30),
            },
        ),
        (
            "deleted",
            Box::new(|_, _, _, gone| *gone = true),
            OCC,
            Before::Drop(Stale::Deleted),
        ),
        (
            "disabled",
            Box::new(|_, t, _, _| t.enabled = false),
            OCC,
            Before::Drop(Stale::Disabled),
        ),
        (
            "already recorded",
            Box::new(|_, _, r, _| *r = true),
            OCC,
            Before::Drop(Stale::AlreadyRecorded),
        ),
        (
            "edited",
            Box::new(|m, _, _, _| m.task_version = 2),
            OCC,
            Before::Drop(Stale::Edited),
        ),
        (
            "recorded beats edited",
            Box::new(|m, _, r, _| {
                m.task_version = 2;
                *r = true;
            }),
            OCC,
            Before::Drop(Stale::AlreadyRecorded),
        ),
        (
            "catch-up none skips a late one",
            Box::new(|_, t, _, _| t.catch_up = CatchUp::None),
            "2026-12-01T09:05:00Z",
            Before::Skip,
        ),
        (
            "catch-up none fires within the grace",
            Box::new(|_, t, _, _| t.catch_up = CatchUp::None),
            "2026-12-01T09:00:30Z",
            Before::Fire {
                fire_at: t(OCC),
                hold: Duration::ZERO,
            },
        ),
        (
            "a manual firing is never skipped",
            Box::new(|m, t, _, _| {
                t.catch_up = CatchUp::None;
                m.manual = true;
            }),
            "2026-12-01T09:05:00Z",
            Before::Fire {
                fire_at: t(OCC),
                hold: Duration::ZERO,
            },
        ),
    ];
    for (name, mutate, now, expected) in cases {
        let (mut m, mut task, mut recorded, mut gone) = (message(), task(), false, false);
        mutate(&mut m, &mut task, &mut recorded, &mut gone);
        let timing = timing(&task);
        let got = before_firing(
            &m,
            (!gone).then_some(&task),
            Some(&timing),
            recorded,
            t(now),
        );
        assert_eq!(got, expected, "{name}");
    }
    // An unreadable stored schedule.
    let task = task();
    assert_eq!(
        before_firing(&message(), Some(&task), None, false, t(OCC)),
        Before::Drop(Stale::ScheduleUnreadable)
    );
}

#[test]
fn the_rules_after_a_call() {
    let retryable = |timed_out| Verdict::Retryable {
        retry_after: None,
        timed_out,
    };
    let cases = [
        (
            "2xx",
            Verdict::Succeeded,
            1,
            AfterCall::Finish(RunStatus::Succeeded),
        ),
        (
            "5xx with attempts left",
            retryable(false),
            1,
            AfterCall::Retry,
        ),
        (
            "5xx on the last attempt",
            retryable(false),
            3,
            AfterCall::Finish(RunStatus::Failed),
        ),
        (
            "timeout with attempts left",
            retryable(true),
            2,
            AfterCall::Retry,
        ),
        (
            "timeout on the last attempt",
            retryable(true),
            3,
            AfterCall::Finish(RunStatus::TimedOut),
        ),
        (
            "beyond the last attempt",
            retryable(false),
            9,
            AfterCall::Finish(RunStatus::Failed),
        ),
    ];
    for (name, verdict, attempt, expected) in cases {
        assert_eq!(after_call(&verdict, attempt, 3), expected, "{name}");
    }
}

#[test]
fn other_verdicts_fail_at_once() {
    for verdict in [Verdict::Failed, Verdict::Refused] {
        assert_eq!(
            after_call(&verdict, 1, 3),
            AfterCall::Finish(RunStatus::Failed),
            "{verdict:?}"
        );
    }
}

#[test]
fn chaining_is_for_forbid_tasks_due_within_the_horizon() {
    let now = t(OCC);
    let horizon = Duration::from_secs(75);
    let soon = Some(t("2026-12-01T09:00:10Z"));
    let later = Some(t("2026-12-01T09:02:00Z"));
    let cases = [
        ("forbid, due soon", soon, Overlap::Forbid, false, true),
        (
            "forbid, at the horizon",
            Some(t("2026-12-01T09:01:15Z")),
            Overlap::Forbid,
            false,
            true,
        ),
        (
            "forbid, beyond the horizon",
            later,
            Overlap::Forbid,
            false,
            false,
        ),
        (
            "allow: the scanner's job",
            soon,
            Overlap::Allow,
            false,
            false,
        ),
        ("manual", soon, Overlap::Forbid, true, false),
        ("schedule ended", None, Overlap::Forbid, false, false),
    ];
    for (name, next, overlap, manual, expected) in cases {
        assert_eq!(
            chains(next, overlap, manual, now, horizon),
            expected,
            "{name}"
        );
    }
}

#[test]
fn the_schedule_moves_on_except_for_manual_firings() {
    let task = task();
    let timing = timing(&task);
    let now = t("2026-12-01T09:00:00.200Z");
    assert_eq!(
        next_run(&message(), &timing, now),
        Some(t("2026-12-01T09:01:00Z"))
    );
    let mut manual = message();
    manual.manual = true;
    assert_eq!(next_run(&manual, &timing, now), None);
    assert!(heals(&message(), &task));
    assert!(!heals(&manual, &task));
    let mut moved = task.clone();
    moved.next_run_at = Some(t("2026-12-01T09:01:00Z"));
    assert!(!heals(&message(), &moved));
}

#[test]
fn a_stale_message_releases_or_heals() {
    let now = t("2026-12-01T09:00:30Z");
    let backfill = |m: &mut DispatchMessage| {
        m.backfill = Some(crate::message::BackfillRef {
            id: 4,
            rerun: false,
        })
    };
    type Case = (
        &'static str,
        Stale,
        Box<dyn Fn(&mut DispatchMessage, &mut Task)>,
        Option<(i64, OutcomeKind)>,
    );
    let cases: Vec<Case> = vec![
        (
            "a duplicate of the occurrence the task waits on moves it on",
            Stale::AlreadyRecorded,
            Box::new(|_, _| {}),
            Some((
                3,
                OutcomeKind::AlreadyRecorded {
                    next_run_at: Some(t("2026-12-01T09:01:00Z")),
                },
            )),
        ),
        (
            "a duplicate of an occurrence the task has moved past writes nothing",
            Stale::AlreadyRecorded,
            Box::new(|_, t| {
                t.next_run_at = Some(t.next_run_at.unwrap() + chrono::Duration::minutes(1))
            }),
            None,
        ),
        (
            "a manual duplicate never moves the schedule",
            Stale::AlreadyRecorded,
            Box::new(|m, _| m.manual = true),
            None,
        ),
        (
            "a message of an older version releases the lease it was sent under",
            Stale::Edited,
            Box::new(|m, _| m.task_version = 2),
            Some((2, OutcomeKind::Released)),
        ),
        (
            "a manual message of an older version holds no lease",
            Stale::Edited,
            Box::new(|m, _| {
                m.task_version = 2;
                m.manual = true;
            }),
            None,
        ),
        (
            "a backfill message of an older version holds no lease",
            Stale::Edited,
            Box::new(move |m, _| {
                m.task_version = 2;
                backfill(m);
            }),
            None,
        ),
        ("deleted", Stale::Deleted, Box::new(|_, _| {}), None),
        ("disabled", Stale::Disabled, Box::new(|_, _| {}), None),
        (
            "unreadable",
            Stale::ScheduleUnreadable,
            Box::new(|_, _| {}),
            None,
        ),
    ];
    for (name, why, mutate, expected) in cases {
        let (mut m, mut task) = (message(), task());
        mutate(&mut m, &mut task);
        let timing = timing(&task);
        let expected = expected.map(|(version, kind)| Outcome {
            task_id: 7,
            version,
            occurrence: t(OCC),
            kind,
        });
        assert_eq!(
            stale_outcome(why, &m, &task, &timing, now),
            expected,
            "{name}"
        );
    }
}

#[test]
fn an_open_flow_with_policy_skip_skips_scheduled_occurrences_only() {
    let backfill = crate::message::BackfillRef {
        id: 4,
        rerun: false,
    };
    let cases = [
        ("scheduled, skip", false, false, Some(OnOpen::Skip), true),
        (
            "scheduled, fire_latest",
            false,
            false,
            Some(OnOpen::FireLatest),
            false,
        ),
        ("scheduled, not open", false, false, None, false),
        ("manual, skip", true, false, Some(OnOpen::Skip), false),
        ("backfill, skip", false, true, Some(OnOpen::Skip), false),
    ];
    for (name, manual, by_backfill, on_open, expected) in cases {
        let mut m = message();
        m.manual = manual;
        m.backfill = by_backfill.then_some(backfill);
        let asked = std::cell::Cell::new(false);
        let got = open_flow_skips(&m, || {
            asked.set(true);
            on_open
        });
        assert_eq!(got, expected, "{name}");
        // The flow is asked only about scheduled occurrences.
        assert_eq!(asked.get(), !m.off_schedule(), "{name}: asked");
    }
}

#[test]
fn a_late_message_of_a_rate_limited_flow_takes_a_new_slot() {
    let cases = [
        ("on time", "2026-12-01T09:00:00Z", false, true, false),
        (
            "within 50 ms",
            "2026-12-01T09:00:00.050Z",
            false,
            true,
            false,
        ),
        ("51 ms late", "2026-12-01T09:00:00.051Z", false, true, true),
        (
            "late, flow not rate-limited",
            "2026-12-01T09:00:05Z",
            false,
            false,
            false,
        ),
        ("late, manual", "2026-12-01T09:00:05Z", true, true, false),
    ];
    let task = task();
    for (name, ready_at, manual, rate_limited, expected) in cases {
        let mut m = message();
        m.manual = manual;
        assert_eq!(
            repaces(&m, &task, t(ready_at), || rate_limited),
            expected,
            "{name}"
        );
    }
    // Sent without a slot: it takes one even on time, if the flow paces.
    let cases = [
        ("on time, rate-limited", true, true),
        ("on time, flow not rate-limited", false, false),
    ];
    for (name, rate_limited, expected) in cases {
        let m = message().slot_on_arrival();
        // Once given a slot (held until it), it keeps that one.
        assert!(!m.held_until(t(OCC)).slot_on_arrival);
        assert_eq!(
            repaces(&m, &task, t(OCC), || rate_limited),
            expected,
            "{name}"
        );
    }
}

#[test]
fn a_lease_lasts_the_timeout_and_the_lease_past_the_fire_time() {
    let lease = Duration::from_secs(300);
    let cases = [
        ("timeout 1 s", 1000, chrono::Duration::seconds(301)),
        ("timeout 15 min", 900_000, chrono::Duration::seconds(1200)),
        // The CHECK keeps it out of the table; the rule stays total.
        ("negative timeout", -5, chrono::Duration::seconds(300)),
    ];
    for (name, timeout_ms, expected) in cases {
        let mut task = task();
        task.timeout_ms = timeout_ms;
        assert_eq!(lease_after(&task, lease), expected, "{name}");
    }
}
