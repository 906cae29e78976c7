//! `sundial schedule preview` as a user runs it.

use std::process::Command;

fn sundial(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sundial"))
        .args(args)
        .output()
        .expect("run sundial");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_next_occurrences_in_utc() {
    let (ok, out, err) = sundial(&[
        "schedule",
        "preview",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-07T12:00:00Z",
        "--count",
        "3",
    ]);
    assert!(ok, "{err}");
    // The schedule in words first; then one line per occurrence, UTC first.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "# at 02:30 every day, America/New_York");
    let utc: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // 8 March 2026 is spring-forward day: 02:30 does not exist and fires at
    // the jump (03:00 EDT = 07:00Z), flagged as moved.
    assert_eq!(
        utc,
        vec![
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z"
        ]
    );
    assert_eq!(
        lines[1],
        "2026-03-08T07:00:00Z  2026-03-08T03:00:00-04:00  DST: 02:30 does not exist on 2026-03-08 in America/New_York (clocks go forward from 02:00 to 03:00): fires at 03:00 EDT, the first instant after the jump"
    );
    assert_eq!(lines[2], "2026-03-09T06:30:00Z  2026-03-09T02:30:00-04:00");
}

#[test]
fn flags_the_november_overlap_exclusions_and_the_window() {
    let (ok, out, err) = sundial(&[
        "schedule",
        "preview",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-10-30T12:00:00Z",
        "--count",
        "3",
        "--exclude",
        "0-59 1 31 10 *",
        "--end-at",
        "2026-11-03T00:00:00Z",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "# at 01:30 every day, America/New_York");
    assert!(lines[1].starts_with("# except: "), "{out}");
    assert!(
        lines[2].starts_with("2026-10-31T05:30:00Z  2026-10-31T01:30:00-04:00  skipped (excluded)"),
        "{out}"
    );
    assert!(
        lines[3].contains("DST: 01:30 occurs twice on 2026-11-01 in America/New_York (clocks go back): fires once, at the first instance (EDT)"),
        "{out}"
    );
    assert!(lines[4].starts_with("2026-11-02T06:30:00Z"), "{out}");
    assert!(
        lines[5].starts_with("# the active window ends at 2026-11-03T00:00:00Z"),
        "{out}"
    );
    let (ok, _, err) = sundial(&["schedule", "preview", "@daily", "--exclude", "sometimes"]);
    assert!(!ok && err.contains("--exclude"), "{err}");
}

#[test]
fn json_output_is_the_explained_preview() {
    let (ok, out, _) = sundial(&[
        "schedule",
        "preview",
        "rate(15 minutes)",
        "--from",
        "2026-01-01T00:07:00Z",
        "--count",
        "2",
        "--json",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["occurrences"],
        serde_json::json!(["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"])
    );
    assert_eq!(v["description"], "every 15 minutes");
    assert_eq!(v["entries"][0]["fires"], true);
}

#[test]
fn invalid_expression_or_zone_fails_clearly() {
    let (ok, out, err) = sundial(&["schedule", "preview", "61 * * * *"]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("minute") && err.contains("61"), "{err}");
    let (ok, _, err) = sundial(&["schedule", "preview", "@daily", "--tz", "Mars/Base"]);
    assert!(!ok);
    assert!(err.contains("Mars/Base"), "{err}");
    let (ok, _, err) = sundial(&["schedule", "preview", "@daily", "--from", "yesterday"]);
    assert!(!ok);
    assert!(err.contains("--from"), "{err}");
}

#[test]
fn shows_the_stable_jitter_offset_of_a_task() {
    let args = [
        "schedule",
        "preview",
        "0 9 * * *",
        "--from",
        "2026-11-30T12:00:00Z",
        "--count",
        "1",
        "--jitter",
        "30",
        "--task-id",
        "42",
    ];
    let (ok, out, err) = sundial(&args);
    assert!(ok, "{err}");
    // The same offset as `firetime::jitter_offsets_are_pinned` pins for
    // task 42 at this occurrence.
    assert_eq!(
        out.trim(),
        "2026-12-01T09:00:00Z  fires 2026-12-01T09:00:14.561Z (+14561 ms jitter)"
    );
    // Asked twice, the same answer.
    assert_eq!(sundial(&args).1, out);
    let (ok, _, err) = sundial(&["schedule", "preview", "0 9 * * *", "--jitter", "30"]);
    assert!(!ok && err.contains("--task-id"), "{err}");
}
