//! DST: fixed-time jobs are never lost and never doubled; real-time jobs
//! follow real time. Transition instants (checked against Python zoneinfo):
//! New York 2026-03-08T07:00Z (EST→EDT) and 2026-11-01T06:00Z (EDT→EST);
//! Berlin 2026-03-29T01:00Z and 2026-10-25T01:00Z; Lord Howe (30-minute
//! shift) 2026-04-04T15:00Z (+11→+10:30) and 2026-10-03T15:30Z (+10:30→+11).

use super::{assert_upcoming, schedule, utc, zone};

#[test]
fn new_york_fixed_time_in_the_spring_gap_fires_at_the_jump() {
    // 02:30 does not exist on 03-08: fires at 03:00 EDT = 07:00Z.
    assert_upcoming(
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T00:00:00Z",
        &[
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
        ],
    );
    // Two wall times in one gap are one instant, fired once.
    assert_upcoming(
        "0,30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &[
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:00:00Z",
            "2026-03-09T06:30:00Z",
        ],
    );
    assert_upcoming(
        "0 30 2 8 3 *",
        "America/New_York",
        "2026-03-08T06:59:59Z",
        &["2026-03-08T07:00:00Z", "2027-03-08T07:30:00Z"],
    );
}

#[test]
fn new_york_fixed_time_in_the_fall_overlap_fires_once() {
    // 01:30 happens twice on 11-01: only the first (EDT) instance fires.
    assert_upcoming(
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T00:00:00Z",
        &[
            "2026-10-31T05:30:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z",
        ],
    );
    // Asking from inside the second pass does not bring it back.
    assert_upcoming(
        "30 1 * * *",
        "America/New_York",
        "2026-11-01T06:10:00Z",
        &["2026-11-02T06:30:00Z"],
    );
    assert_upcoming(
        "0 1,2 * * *",
        "America/New_York",
        "2026-11-01T04:00:00Z",
        &[
            "2026-11-01T05:00:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-02T06:00:00Z",
        ],
    );
}

#[test]
fn new_york_wildcard_follows_real_time() {
    // Fall back: eight firings in the two real hours labelled 01:xx.
    assert_upcoming(
        "*/15 * * * *",
        "America/New_York",
        "2026-11-01T04:59:59Z",
        &[
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:15:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T05:45:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:15:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T06:45:00Z",
            "2026-11-01T07:00:00Z",
        ],
    );
    // Spring forward: 02:xx does not exist, nothing is invented.
    assert_upcoming(
        "*/15 * * * *",
        "America/New_York",
        "2026-03-08T06:30:00Z",
        &[
            "2026-03-08T06:45:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:15:00Z",
        ],
    );
    assert_upcoming(
        "@hourly",
        "America/New_York",
        "2026-11-01T04:30:00Z",
        &[
            "2026-11-01T05:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T07:00:00Z",
        ],
    );
    // A wildcard minute with a fixed hour is still real time: the 02:xx
    // minutes are skipped on spring-forward day.
    assert_upcoming(
        "*/30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &["2026-03-09T06:00:00Z", "2026-03-09T06:30:00Z"],
    );
    // And both passes of 01:xx fire in the fall.
    assert_upcoming(
        "0-59/30 1 * * *",
        "America/New_York",
        "2026-11-01T04:00:00Z",
        &[
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
        ],
    );
}

#[test]
fn berlin_fixed_time_job_is_never_lost_or_doubled() {
    assert_upcoming(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T00:00:00Z",
        &[
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ],
    );
    assert_upcoming(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T00:00:00Z",
        &[
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ],
    );
}

#[test]
fn berlin_wildcard_follows_real_time() {
    assert_upcoming(
        "0,30 * * * *",
        "Europe/Berlin",
        "2026-10-25T00:00:00Z",
        &[
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:00Z",
        ],
    );
    assert_upcoming(
        "0,30 * * * *",
        "Europe/Berlin",
        "2026-03-29T00:00:00Z",
        &[
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ],
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    // Spring (+10:30 → +11 at 02:00 local): 02:15 does not exist on 10-04.
    assert_upcoming(
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2026-10-02T00:00:00Z",
        &[
            "2026-10-02T15:45:00Z",
            "2026-10-03T15:30:00Z",
            "2026-10-04T15:15:00Z",
        ],
    );
    // Autumn (+11 → +10:30 at 02:00 local): 01:45 happens twice on 04-05.
    assert_upcoming(
        "45 1 * * *",
        "Australia/Lord_Howe",
        "2026-04-03T00:00:00Z",
        &[
            "2026-04-03T14:45:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-05T15:15:00Z",
        ],
    );
    assert_upcoming(
        "*/15 * * * *",
        "Australia/Lord_Howe",
        "2026-04-04T14:29:59Z",
        &[
            "2026-04-04T14:30:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-04T15:15:00Z",
            "2026-04-04T15:30:00Z",
        ],
    );
    assert_upcoming(
        "*/15 * * * *",
        "Australia/Lord_Howe",
        "2026-10-03T15:15:00Z",
        &["2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z"],
    );
}

#[test]
fn at_follows_the_fixed_time_rule() {
    assert_upcoming(
        "at(2026-03-08T02:30:00)",
        "America/New_York",
        "2026-01-01T00:00:00Z",
        &["2026-03-08T07:00:00Z"],
    );
    assert_upcoming(
        "at(2026-11-01T01:30:00)",
        "America/New_York",
        "2026-01-01T00:00:00Z",
        &["2026-11-01T05:30:00Z"],
    );
    let second_pass = schedule("at(2026-11-01T01:30:00)")
        .next_after(utc("2026-11-01T05:30:00Z"), zone("America/New_York"));
    assert_eq!(second_pass, None);
}

#[test]
fn zone_without_dst_is_unaffected() {
    // Tokyo is +09:00 all year; the US and EU transition days are ordinary.
    for after in [
        "2026-03-07T00:00:00Z",
        "2026-03-28T00:00:00Z",
        "2026-10-24T00:00:00Z",
        "2026-10-31T00:00:00Z",
    ] {
        let got = schedule("30 2 * * *").upcoming(utc(after), zone("Asia/Tokyo"), 4);
        let gaps: Vec<i64> = got.windows(2).map(|w| (w[1] - w[0]).num_hours()).collect();
        assert_eq!(gaps, [24, 24, 24], "after {after}");
    }
    assert_upcoming(
        "*/30 * * * *",
        "Asia/Tokyo",
        "2026-03-08T06:30:00Z",
        &["2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"],
    );
}

#[test]
fn daily_job_fires_exactly_once_per_local_day_for_years() {
    // Never lost, never doubled: one firing per local date across several
    // years of transitions, in zones with 1 h and 30 min shifts.
    for zone_name in [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
    ] {
        let tz = zone(zone_name);
        for expr in ["30 2 * * *", "0 0 * * *", "45 1 * * *"] {
            let fired = schedule(expr).upcoming(utc("2015-01-01T00:00:00Z"), tz, 366 * 4);
            let mut dates: Vec<_> = fired
                .iter()
                .map(|t| t.with_timezone(&tz).date_naive())
                .collect();
            let total = dates.len();
            dates.dedup();
            assert_eq!(dates.len(), total, "`{expr}` doubled a day in {zone_name}");
            let spans = dates.windows(2).all(|w| (w[1] - w[0]).num_days() == 1);
            assert!(spans, "`{expr}` lost a day in {zone_name}");
        }
    }
}
