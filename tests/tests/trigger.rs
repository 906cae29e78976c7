//! Trigger sources on the wire, in the deployed shape: `sundial scan
//! --loop` (the scanner Lambda's tick), the real `aws-sdk-sqs` against the
//! SQS emulator, and `sundial process` firing at a local target on
//! 127.0.0.1. Every request must carry `Sundial-Trigger`,
//! `Sundial-Attempt` and `Sundial-Scheduled-For`, signed with the rest,
//! and verify with the README's own Python snippet; every run records the
//! trigger its last attempt was sent with.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sundial_e2e::notify_kit::*;
use sundial_e2e::{fresh_queue, readme};
use sundial_testkit::TaskBuilder;

/// The task id and occurrence a request names in its `Idempotency-Key`.
fn key_of(r: &Received) -> (i64, String) {
    let key = r
        .headers
        .get("idempotency-key")
        .cloned()
        .unwrap_or_default();
    let (id, at) = key.split_once(':').unwrap_or(("0", ""));
    (id.parse().unwrap_or(0), at.to_string())
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).map_or("", String::as_str)
}

/// What every fired request must satisfy: the three headers, consistent
/// with the idempotency key, signed, and accepted by the README's snippet
/// (and refused once any covered header is changed).
fn assert_well_formed(r: &Received) {
    let (_, occurrence) = key_of(r);
    assert_eq!(header(r, "sundial-scheduled-for"), occurrence, "{r:?}");
    assert!(DateTime::parse_from_rfc3339(&occurrence).is_ok(), "{r:?}");
    assert!(header(r, "sundial-attempt").parse::<u32>().unwrap_or(0) >= 1);
    assert!(
        ["schedule", "retry", "catch-up", "backfill", "manual"]
            .contains(&header(r, "sundial-trigger")),
        "{r:?}"
    );
    assert!(verify_like_the_readme(&r.headers, &r.body, &[SECRET], 300));
    assert!(
        readme::python_verify(&r.headers, &r.body, &[SECRET]),
        "the README's snippet refused {r:?}"
    );
    assert!(!readme::python_verify(&r.headers, &r.body, &["other"]));
    for name in [
        "sundial-trigger",
        "sundial-attempt",
        "sundial-scheduled-for",
        "idempotency-key",
    ] {
        let mut tampered: HashMap<String, String> = r.headers.clone();
        let forged = match name {
            "sundial-trigger" if header(r, name) == "manual" => "schedule".to_string(),
            "sundial-trigger" => "manual".to_string(),
            _ => format!("{}0", header(r, name)),
        };
        tampered.insert(name.to_string(), forged);
        assert!(
            !readme::python_verify(&tampered, &r.body, &[SECRET]),
            "a forged {name} still verified"
        );
    }
}

async fn runs_of(pool: &PgPool, id: i64) -> Vec<(DateTime<Utc>, String, i32, bool)> {
    sqlx::query_as(
        "SELECT scheduled_for, trigger, attempts, manual FROM task_runs \
         WHERE task_id = $1 ORDER BY scheduled_for",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn admin_get(base: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}");
    response.json().await.unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn every_trigger_is_sent_signed_and_recorded(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    // The first request of all fails: the first occurrence is retried.
    receiver.target_failures_left.store(1, Ordering::SeqCst);
    let queue = fresh_queue("trigger").await;
    let admin = spawn_admin(&pool, queue.clone()).await;
    let drivers = start_drivers(&pool, queue.queue_url(), &[]);

    // GIVEN a task every 4 seconds with a body, two attempts per occurrence.
    let on_time = TaskBuilder::new()
        .name("on-time")
        .schedule("rate(4 seconds)")
        .url(format!("{base}/target"))
        .body(r#"{"report":"daily"}"#)
        .max_attempts(2)
        .retry_backoff_ms(100)
        .timeout_ms(2000)
        .insert(&pool)
        .await;
    // WHEN it fired, failed once and retried, then fired on time again.
    wait_until(
        "a retry and an on-time firing",
        Duration::from_secs(60),
        async || receiver.target_hits() >= 3,
    )
    .await;

    // AND a task found 5 minutes overdue (its scanner was down), and a
    // manual firing of the first.
    let overdue_at = (Utc::now() - chrono::Duration::minutes(5))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let late = TaskBuilder::new()
        .name("overdue")
        .schedule(sundial_testkit::DEFAULT_SCHEDULE)
        .url(format!("{base}/target"))
        .next_run_at(overdue_at)
        .max_attempts(1)
        .insert(&pool)
        .await;
    let manual = admin_post(&admin, &format!("/v1/tasks/{}/trigger", on_time.id), None).await;
    let manual_at = manual["idempotency_key"]
        .as_str()
        .and_then(|k| k.split_once(':'))
        .map(|(_, at)| at.to_string())
        .unwrap();
    wait_until(
        "the catch-up and the manual firing",
        Duration::from_secs(60),
        async || {
            let got = receiver.targets.lock().unwrap().clone();
            got.iter().any(|r| key_of(r).0 == late.id)
                && got.iter().any(|r| header(r, "sundial-trigger") == "manual")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = drivers.stop().await;

    // THEN every request is well formed and verifies with the README.
    let got = receiver.targets.lock().unwrap().clone();
    got.iter().for_each(assert_well_formed);
    let of = |id: i64| -> Vec<&Received> { got.iter().filter(|r| key_of(r).0 == id).collect() };
    let on_time_requests = of(on_time.id);
    let wire = |r: &Received| {
        (
            header(r, "sundial-trigger").to_string(),
            header(r, "sundial-attempt").to_string(),
        )
    };
    // The first occurrence: schedule (failed), then retry, same key.
    assert_eq!(wire(on_time_requests[0]), ("schedule".into(), "1".into()));
    assert_eq!(wire(on_time_requests[1]), ("retry".into(), "2".into()));
    assert_eq!(key_of(on_time_requests[0]), key_of(on_time_requests[1]));
    assert_eq!(on_time_requests[0].body, br#"{"report":"daily"}"#);
    let scheduled: Vec<_> = on_time_requests[2..]
        .iter()
        .filter(|r| header(r, "sundial-trigger") != "manual")
        .collect();
    assert!(!scheduled.is_empty());
    for r in &scheduled {
        assert_eq!(wire(r), ("schedule".into(), "1".into()), "{r:?}");
    }
    let manual_requests: Vec<_> = on_time_requests
        .iter()
        .filter(|r| header(r, "sundial-trigger") == "manual")
        .collect();
    assert_eq!(manual_requests.len(), 1);
    assert_eq!(
        header(manual_requests[0], "sundial-scheduled-for"),
        manual_at
    );
    let late_requests = of(late.id);
    assert_eq!(late_requests.len(), 1, "{late_requests:?}");
    assert_eq!(wire(late_requests[0]), ("catch-up".into(), "1".into()));
    assert_eq!(
        header(late_requests[0], "sundial-scheduled-for"),
        sundial::trigger::scheduled_for_value(overdue_at)
    );

    // AND each run records the trigger of its last attempt.
    let runs = runs_of(&pool, on_time.id).await;
    assert_eq!(
        (runs[0].1.as_str(), runs[0].2, runs[0].3),
        ("retry", 2, false)
    );
    let manual_run = runs.iter().find(|r| r.3).expect("the manual run");
    assert_eq!(manual_run.1, "manual");
    assert!(runs[1..]
        .iter()
        .filter(|r| !r.3)
        .all(|r| r.1 == "schedule" && r.2 == 1));
    let late_runs = runs_of(&pool, late.id).await;
    assert_eq!(late_runs.len(), 1);
    assert_eq!(
        (late_runs[0].0, late_runs[0].1.as_str()),
        (overdue_at, "catch-up")
    );

    // AND the API shows it: the runs and the ledger.
    let page = admin_get(&admin, &format!("/v1/tasks/{}/runs", late.id)).await;
    assert_eq!(page["runs"][0]["trigger"], "catch-up", "{page}");
    let page = admin_get(&admin, &format!("/v1/tasks/{}/runs", on_time.id)).await;
    let triggers: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["trigger"].as_str())
        .collect();
    assert!(
        triggers.contains(&"retry") && triggers.contains(&"manual"),
        "{page}"
    );
    let ledger = admin_get(&admin, &format!("/v1/tasks/{}/occurrences", late.id)).await;
    let entry = ledger["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["run"].is_object())
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["run"]["trigger"], "catch-up", "{ledger}");
}
