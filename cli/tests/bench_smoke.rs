//! `sundial bench` end to end, in tiny configurations: the built binary
//! runs a scenario against `DATABASE_URL` (each test in its own scratch
//! database) and a target on 127.0.0.1, and must write a sane JSON file.
//! No timing assertions: performance targets live in the reports.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use sundial_testkit::database_url;

/// Runs `sundial bench <args>` writing into a fresh directory; returns the
/// parsed `<scenario>.json`.
fn bench(scenario: &str, args: &[&str]) -> Value {
    let out: PathBuf = std::env::temp_dir().join(format!(
        "sundial-bench-smoke-{}-{scenario}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let db = format!("sundial_bench_smoke_{}", scenario.replace('-', "_"));
    let output = Command::new(env!("CARGO_BIN_EXE_sundial"))
        .args(["bench", scenario])
        .args(args)
        .args(["--bench-db", &db])
        .arg("--out")
        .arg(&out)
        .env("DATABASE_URL", database_url())
        .output()
        .expect("run the sundial binary");
    assert!(
        output.status.success(),
        "sundial bench {scenario} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let path = out.join(format!("{scenario}.json"));
    let text = std::fs::read_to_string(&path).expect("the JSON result file");
    let _ = std::fs::remove_dir_all(&out);
    serde_json::from_str(&text).expect("valid JSON")
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a count in {v:#}"))
}

fn f64_at(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a number in {v:#}"))
}

#[test]
fn a_small_burst_fires_every_task_once_and_reports_it() {
    let v = bench("burst", &["--sizes", "10", "--concurrency", "10"]);
    assert_eq!(v["scenario"], "burst");
    assert_eq!(v["target"], "child process");
    assert!(v["machine"]["cpus"].as_u64().unwrap_or(0) >= 1);
    let run = &v["results"]["runs"][0];
    assert_eq!(u64_at(run, "/tasks"), 10);
    assert_eq!(u64_at(run, "/enqueued"), 10);
    assert_eq!(u64_at(run, "/recorded"), 10);
    assert_eq!(u64_at(run, "/succeeded"), 10);
    assert_eq!(u64_at(run, "/target_requests"), 10, "each task fired once");
    assert_eq!(u64_at(run, "/lag_ms/count"), 10);
    assert!(f64_at(run, "/throughput_per_s") > 0.0);
    assert!(f64_at(run, "/limit_per_s") > 0.0);
    // The target waits 50 ms, so no request can be faster.
    assert!(f64_at(run, "/latency_ms/p50") >= 50.0);
    assert!(f64_at(&v, "/resources/cpu_s") > 0.0);
    assert!(f64_at(&v, "/resources/peak_rss_mib") > 0.0);
}

#[test]
fn a_small_scan_claims_exactly_the_due_rows() {
    let v = bench("scan", &["--rows", "2000", "--due", "200"]);
    let r = &v["results"];
    assert_eq!(u64_at(r, "/rows"), 2000);
    assert_eq!(u64_at(r, "/claimed"), 200);
    assert_eq!(u64_at(r, "/enqueued"), 200);
    assert_eq!(u64_at(r, "/pages"), 1, "200 rows fit one page of 500");
    assert_eq!(u64_at(r, "/sqs_send_batch_calls"), 20);
    assert_eq!(u64_at(r, "/backlog_after"), 0);
    assert!(f64_at(r, "/per_second") > 0.0);
    assert!(u64_at(r, "/claim_ms/count") >= 1);
}

#[test]
fn a_short_lambda_path_run_fires_every_whole_second_task_and_none_early() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_SQS").is_ok(),
        "AWS_ENDPOINT_URL_SQS is not set: run `eval \"$(make -s services)\"` or `make test`"
    );
    let v = bench("lambda-path", &["--tasks", "10", "--seconds", "20"]);
    assert_eq!(u64_at(&v, "/results/tasks"), 10);
    assert_eq!(u64_at(&v, "/results/fired"), 10, "{v:#}");
    assert_eq!(u64_at(&v, "/results/early"), 0, "{v:#}");
    assert!(u64_at(&v, "/results/ticks") >= 1);
    assert_eq!(
        u64_at(&v, "/results/sub_minute_fired"),
        u64_at(&v, "/results/sub_minute_expected"),
        "{v:#}"
    );
    assert!(f64_at(&v, "/results/lag_ms/max") >= 0.0);
}

#[test]
fn a_small_throttled_run_reports_both_variants_and_accounts_for_every_task() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_SQS").is_ok(),
        "AWS_ENDPOINT_URL_SQS is not set: run `eval \"$(make -s services)\"` or `make test`"
    );
    let v = bench(
        "throttled",
        &["--rate", "10", "--tasks", "20", "--deadline-secs", "30"],
    );
    assert_eq!(u64_at(&v, "/results/tasks"), 20);
    let runs = v["results"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{v:#}");
    for run in runs {
        let requests = u64_at(run, "/requests");
        assert!(requests >= u64_at(run, "/admitted") + u64_at(run, "/throttled"));
        // Every task is counted once: succeeded, or lost (failed or unfinished).
        assert_eq!(
            u64_at(run, "/succeeded") + u64_at(run, "/lost"),
            20,
            "{run:#}"
        );
        assert!(
            u64_at(run, "/admitted") >= u64_at(run, "/succeeded"),
            "{run:#}"
        );
        let checks = run["checks"].as_array().expect("checks");
        // The informational variant has no 429 or drain targets.
        let wanted = if run["variant"] == "no-slow-start" {
            2
        } else {
            4
        };
        assert_eq!(checks.len(), wanted, "{run:#}");
        assert!(checks.iter().all(|c| c["pass"].is_boolean()));
    }
    assert_eq!(runs[0]["variant"], "limited");
    assert_eq!(runs[1]["variant"], "unlimited");
    assert_eq!(runs[2]["variant"], "no-slow-start");
    assert_eq!(u64_at(&v, "/results/slow_start_window"), 4);
}

#[test]
fn a_short_outage_counts_the_attempts_at_the_down_host() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_SQS").is_ok(),
        "AWS_ENDPOINT_URL_SQS is not set: run `eval \"$(make -s services)\"` or `make test`"
    );
    let v = bench(
        "outage",
        &[
            "--healthy",
            "2",
            "--tasks-per-host",
            "1",
            "--warmup-secs",
            "2",
            "--outage-secs",
            "3",
            "--recovery-secs",
            "3",
            "--breaker-failures",
            "2",
            "--breaker-cooldown-secs",
            "1",
        ],
    );
    assert_eq!(u64_at(&v, "/results/bound"), 3 + 2);
    // With nothing down, every call reaches a host: the way refused
    // attempts are counted (calls − requests) is exact.
    assert_eq!(u64_at(&v, "/results/baseline/unanswered"), 0, "{v:#}");
    assert!(u64_at(&v, "/results/outage/unanswered") >= 1, "{v:#}");
    assert!(u64_at(&v, "/results/baseline/healthy_expected") > 0);
    let checks = v["results"]["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 5);
}
