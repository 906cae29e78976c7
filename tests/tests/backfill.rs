//! Backfill in the deployed shape: the admin API (the router the admin
//! Lambda serves) stores and dispatches, `sundial scan --loop` continues,
//! the real `aws-sdk-sqs` carries the messages through the SQS emulator,
//! and `sundial process` fires them at a local target on 127.0.0.1.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use sundial::message::{BackfillRef, DispatchMessage};
use sundial::queue::{DispatchQueue, Outgoing};
use sundial_e2e::notify_kit::*;
use sundial_e2e::{fresh_queue, readme};
use sundial_testkit::TaskBuilder;

/// Ten whole minutes that ended an hour ago.
fn past_range() -> (DateTime<Utc>, DateTime<Utc>) {
    let from = (Utc::now() - chrono::Duration::hours(2))
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    (from, from + chrono::Duration::minutes(10))
}

fn minute(from: DateTime<Utc>, k: i64) -> DateTime<Utc> {
    from + chrono::Duration::minutes(k)
}

/// A per-minute task whose own schedule stays out of the way (its next
/// run is a day off), so every request the target gets is the backfill's.
async fn per_minute_task(pool: &PgPool, base: &str, name: &str) -> i64 {
    TaskBuilder::new()
        .name(name)
        .schedule("* * * * *")
        .url(format!("{base}/target"))
        .body(r#"{"backfill":true}"#)
        .next_run_at(Utc::now() + chrono::Duration::days(1))
        .max_attempts(1)
        .insert(pool)
        .await
        .id
}

/// Records a succeeded run of the occurrence, as the schedule would have.
async fn record_run(pool: &PgPool, task_id: i64, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO task_runs (task_id, scheduled_for, fired_at, status, http_status) \
         VALUES ($1, $2, $2, 'succeeded', 200)",
    )
    .bind(task_id)
    .bind(at)
    .execute(pool)
    .await
    .unwrap();
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

/// Polls the backfill until every dispatched occurrence is recorded.
async fn wait_done(admin: &str, id: i64) -> Value {
    let mut last = Value::Null;
    wait_until(
        "the backfill to be done",
        Duration::from_secs(90),
        async || {
            last = admin_get(admin, &format!("/v1/backfills/{id}")).await;
            last["state"] == "done"
        },
    )
    .await;
    last
}

fn scheduled_for(r: &Received) -> DateTime<Utc> {
    let at = r
        .headers
        .get("sundial-scheduled-for")
        .cloned()
        .unwrap_or_default();
    DateTime::parse_from_rfc3339(&at).unwrap().to_utc()
}

async fn runs_of(pool: &PgPool, id: i64) -> Vec<(DateTime<Utc>, String, Option<i64>, i64)> {
    sqlx::query_as(
        "SELECT scheduled_for, trigger, backfill_id, rerun FROM task_runs \
         WHERE task_id = $1 ORDER BY scheduled_for, rerun",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn missing_fires_exactly_the_holes_and_repeating_it_fires_nothing(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    let queue = fresh_queue("backfill-missing").await;
    let admin = spawn_admin(&pool, queue.clone()).await;
    let drivers = start_drivers(&pool, queue.queue_url(), &[]);

    // GIVEN ten minutely occurrences of which four have no run.
    let task = per_minute_task(&pool, &base, "holes").await;
    let (from, to) = past_range();
    let holes: BTreeSet<DateTime<Utc>> = [1, 4, 5, 9].map(|k| minute(from, k)).into();
    for k in 0..10 {
        if !holes.contains(&minute(from, k)) {
            record_run(&pool, task, minute(from, k)).await;
        }
    }

    // WHEN the range is backfilled in mode `missing`.
    let body = json!({"from": from, "to": to, "mode": "missing"});
    let started = admin_post(
        &admin,
        &format!("/v1/tasks/{task}/backfill"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(started["requested"], 10, "{started}");
    let id = started["id"].as_i64().unwrap();
    let done = wait_done(&admin, id).await;

    // THEN exactly the holes fired, once each, as backfills.
    assert_eq!(done["dispatched"], 4, "{done}");
    assert_eq!(done["skipped_existing"], 6, "{done}");
    assert_eq!(
        (done["recorded"].clone(), done["succeeded"].clone()),
        (json!(4), json!(4))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.targets.lock().unwrap().clone();
    let fired: BTreeSet<DateTime<Utc>> = got.iter().map(scheduled_for).collect();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(fired, holes);
    for r in &got {
        assert_eq!(
            r.headers.get("sundial-trigger").map(String::as_str),
            Some("backfill")
        );
        assert_eq!(
            r.headers.get("sundial-attempt").map(String::as_str),
            Some("1")
        );
        assert!(
            readme::python_verify(&r.headers, &r.body, &[SECRET]),
            "{r:?}"
        );
    }
    let runs = runs_of(&pool, task).await;
    assert_eq!(runs.len(), 10);
    for (at, trigger, backfill, rerun) in &runs {
        let expected = if holes.contains(at) {
            ("backfill", Some(id))
        } else {
            ("schedule", None)
        };
        assert_eq!(
            (trigger.as_str(), *backfill, *rerun),
            (expected.0, expected.1, 0)
        );
    }

    // WHEN the same backfill is asked for again.
    let again = admin_post(&admin, &format!("/v1/tasks/{task}/backfill"), Some(body)).await;
    let again = wait_done(&admin, again["id"].as_i64().unwrap()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = drivers.stop().await;

    // THEN nothing more fires and nothing more is recorded.
    assert_eq!(
        (
            again["dispatched"].clone(),
            again["skipped_existing"].clone()
        ),
        (json!(0), json!(10))
    );
    assert_eq!(receiver.target_hits(), 4);
    assert_eq!(runs_of(&pool, task).await.len(), 10);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn all_fires_every_occurrence_once_more_and_marks_the_reruns(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    let queue = fresh_queue("backfill-all").await;
    let admin = spawn_admin(&pool, queue.clone()).await;
    let drivers = start_drivers(&pool, queue.queue_url(), &[]);

    // GIVEN six minutely occurrences, five with a run and one hole.
    let task = per_minute_task(&pool, &base, "rerun").await;
    let (from, _) = past_range();
    let to = minute(from, 6);
    for k in 0..5 {
        record_run(&pool, task, minute(from, k)).await;
    }

    // WHEN the range is backfilled in mode `all`.
    let body = json!({"from": from, "to": to, "mode": "all"});
    let started = admin_post(&admin, &format!("/v1/tasks/{task}/backfill"), Some(body)).await;
    let id = started["id"].as_i64().unwrap();
    let done = wait_done(&admin, id).await;

    // THEN every occurrence fired once more: the hole as its own run, the
    // others as re-runs beside the originals, all marked as the backfill's.
    assert_eq!(
        (done["requested"].clone(), done["dispatched"].clone()),
        (json!(6), json!(6))
    );
    assert_eq!(done["skipped_existing"], 0);
    let got = receiver.targets.lock().unwrap().clone();
    let fired: Vec<DateTime<Utc>> = {
        let mut v: Vec<_> = got.iter().map(scheduled_for).collect();
        v.sort();
        v
    };
    assert_eq!(fired, (0..6).map(|k| minute(from, k)).collect::<Vec<_>>());
    assert!(got
        .iter()
        .all(|r| r.headers.get("sundial-trigger").map(String::as_str) == Some("backfill")));
    let runs = runs_of(&pool, task).await;
    assert_eq!(runs.len(), 11, "{runs:#?}");
    for k in 0..5 {
        let at = minute(from, k);
        let of_k: Vec<_> = runs.iter().filter(|r| r.0 == at).collect();
        assert_eq!(of_k.len(), 2);
        assert_eq!(
            (of_k[0].1.as_str(), of_k[0].2, of_k[0].3),
            ("schedule", None, 0)
        );
        assert_eq!(
            (of_k[1].1.as_str(), of_k[1].2, of_k[1].3),
            ("backfill", Some(id), id)
        );
    }
    let hole: Vec<_> = runs.iter().filter(|r| r.0 == minute(from, 5)).collect();
    assert_eq!((hole.len(), hole[0].3, hole[0].2), (1, 0, Some(id)));

    // AND a duplicate delivery of a re-run records and fires nothing.
    let duplicate = DispatchMessage {
        backfill: Some(BackfillRef { id, rerun: true }),
        ..DispatchMessage::new(task, minute(from, 2), 1)
    };
    let report = queue
        .send(&[Outgoing {
            message: duplicate,
            delay: Duration::ZERO,
        }])
        .await;
    assert!(report.failed.is_empty());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = drivers.stop().await;
    assert_eq!(receiver.target_hits(), 6);
    assert_eq!(runs_of(&pool, task).await.len(), 11);

    // AND the runs list shows them; the ledger still shows each
    // occurrence's own run.
    let page = admin_get(&admin, &format!("/v1/tasks/{task}/runs")).await;
    let reruns = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rerun"] == id && r["backfill_id"] == id && r["trigger"] == "backfill")
        .count();
    assert_eq!(reruns, 5, "{page}");
    let ledger = admin_get(
        &admin,
        &format!(
            "/v1/tasks/{task}/occurrences?from={}&to={}",
            from.to_rfc3339(),
            minute(from, 5).to_rfc3339()
        )
        .replace('+', "%2B"),
    )
    .await;
    let triggers: Vec<&str> = ledger["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["run"]["trigger"].as_str())
        .collect();
    let mut expected = vec!["schedule"; 5];
    expected.push("backfill");
    assert_eq!(triggers, expected, "{ledger}");
}
