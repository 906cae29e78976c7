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
    // 8 March 2026 is spring-forward day: 02:30 does not exist and fires at
    // the jump (03:00 EDT = 07:00Z).
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z"
        ]
    );
}

#[test]
fn json_output_is_an_array() {
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
    let v: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(v, vec!["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"]);
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
