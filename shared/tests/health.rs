//! The dead-man's switch against a real Postgres: each scanner tick's
//! heartbeat, the lapsed-lease count, the verdict of `GET /v1/status`
//! (scanner never seen, stale, missed occurrences, lapsed leases, dead
//! letters), and `SUNDIAL_MISSED_GRACE_SECS` reaching the status, the
//! scanner and the ledger.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::{Duration, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sundial::admin::{self, AdminState, TargetCheck};
use sundial::health::{HealthSettings, PipelineCheck, QueueDepth};
use sundial::queue::memory::MemoryQueue;
use sundial::scan::{self, ScanOptions};
use sundial::store;
use sundial_testkit::TaskBuilder;
use tower::ServiceExt;

const TOKEN: &str = "health-token-0123456789abcdef";

struct AnyTarget;

#[async_trait]
impl TargetCheck for AnyTarget {
    async fn check(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A dead-letter queue holding `Ok(n)` messages, or failing with `Err`.
struct FixedDepth(Result<i64, String>);

#[async_trait]
impl QueueDepth for FixedDepth {
    async fn visible_messages(&self) -> Result<i64, String> {
        self.0.clone()
    }
}

fn api(pool: &PgPool, pipeline: PipelineCheck) -> Router {
    let queue = Arc::new(MemoryQueue::new(100));
    let state = AdminState::new(pool.clone(), queue, Arc::new(AnyTarget), TOKEN);
    admin::router(state.with_pipeline(pipeline))
}

async fn get(router: &Router, path: &str) -> Value {
    let req = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn codes(status: &Value) -> Vec<&str> {
    status["health"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect()
}

fn scan_options(owner: &str, grace_secs: u64) -> ScanOptions {
    ScanOptions {
        lookahead: StdDuration::from_secs(5),
        page_size: 100,
        lease: StdDuration::from_secs(60),
        budget: StdDuration::from_secs(10),
        owner: owner.into(),
        retention_days: 30,
        missed_grace: StdDuration::from_secs(grace_secs),
        notifier: None,
    }
}

fn grace(secs: i64) -> HealthSettings {
    HealthSettings {
        missed_grace: Duration::seconds(secs),
        ..Default::default()
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn every_tick_leaves_a_heartbeat_and_status_reports_it(pool: PgPool) {
    let api = api(&pool, PipelineCheck::default());
    // GIVEN no scanner ever ticked
    let status = get(&api, "/v1/status").await;
    assert_eq!(codes(&status), vec!["scanner_never_seen"], "{status:#}");
    assert_eq!(status["health"]["healthy"], false);
    assert!(status["scanner"]["last_tick_at"].is_null(), "{status:#}");
    assert_eq!(status["dead_letters"], Value::Null);

    // WHEN a scanner ticks twice (claiming one task the first time)
    TaskBuilder::new()
        .next_run_at(Utc::now())
        .insert(&pool)
        .await;
    let queue = MemoryQueue::new(100);
    let before = Utc::now();
    let first = scan::tick(&pool, &queue, &scan_options("scanner-a", 120))
        .await
        .unwrap();
    assert_eq!(first.claimed, 1);
    scan::tick(&pool, &queue, &scan_options("scanner-a", 120))
        .await
        .unwrap();

    // THEN one row counts both ticks, and status says the pipeline is healthy
    let facts = store::pipeline_facts(&pool, Utc::now()).await.unwrap();
    let seen = facts.last_tick.unwrap();
    assert_eq!((seen.scanner.as_str(), seen.ticks), ("scanner-a", 2));
    assert_eq!(seen.last_claimed, 0, "the second tick claimed nothing");
    assert!(seen.last_started_at >= before && seen.last_finished_at >= seen.last_started_at);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM scanner_heartbeats")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let status = get(&api, "/v1/status").await;
    assert_eq!(status["health"]["healthy"], true, "{status:#}");
    assert_eq!(status["scanner"]["last_tick"]["ticks"], 2);
    assert_eq!(status["scanner"]["stale_after_secs"], 180);
    assert!(status["scanner"]["seconds_ago"].as_f64().unwrap() < 5.0);

    // WHEN the scanner has not been seen for longer than the stale limit
    sqlx::query(
        "UPDATE scanner_heartbeats SET last_started_at = now() - interval '200 seconds', \
         last_finished_at = now() - interval '199 seconds'",
    )
    .execute(&pool)
    .await
    .unwrap();
    // THEN it is stale
    let status = get(&api, "/v1/status").await;
    assert_eq!(codes(&status), vec!["scanner_stale"], "{status:#}");
    let message = status["health"]["reasons"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("scanner-a") && message.contains("199 s ago"),
        "{message}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn lapsed_leases_and_dead_letters_make_the_pipeline_unhealthy(pool: PgPool) {
    let now = Utc::now();
    let queue = MemoryQueue::new(100);
    scan::tick(&pool, &queue, &scan_options("scanner-b", 120))
        .await
        .unwrap();
    // GIVEN a lapsed lease (counted), a held one and a lapsed one of a
    // disabled task (not counted)
    let future = now + Duration::hours(1);
    for (lease, enabled) in [
        (now - Duration::minutes(1), true),
        (now + Duration::minutes(5), true),
        (now - Duration::minutes(1), false),
    ] {
        TaskBuilder::new()
            .next_run_at(future)
            .lease_until(lease)
            .enabled(enabled)
            .insert(&pool)
            .await;
    }
    let facts = store::pipeline_facts(&pool, now).await.unwrap();
    assert_eq!(facts.leases_overdue, 1);

    // WHEN the dead-letter queue holds 2 messages
    let dlq = |depth: Result<i64, String>| PipelineCheck {
        settings: HealthSettings::default(),
        dlq: Some(Arc::new(FixedDepth(depth))),
    };
    let status = get(&api(&pool, dlq(Ok(2))), "/v1/status").await;
    // THEN both are reasons, and the figures are there
    assert_eq!(
        codes(&status),
        vec!["leases_overdue", "dead_letters"],
        "{status:#}"
    );
    assert_eq!(status["leases_overdue"], 1);
    assert_eq!(status["dead_letters"], 2);
    // An empty DLQ is fine; one that cannot be read is named.
    let status = get(&api(&pool, dlq(Ok(0))), "/v1/status").await;
    assert_eq!(codes(&status), vec!["leases_overdue"], "{status:#}");
    assert_eq!(status["dead_letters"], 0);
    let status = get(&api(&pool, dlq(Err("AccessDenied".into()))), "/v1/status").await;
    assert_eq!(
        codes(&status),
        vec!["leases_overdue", "dead_letters_unknown"],
        "{status:#}"
    );
    assert_eq!(status["dead_letters"], Value::Null);
    let message = status["health"]["reasons"][1]["message"].as_str().unwrap();
    assert!(message.contains("AccessDenied"), "{message}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_missed_grace_setting_reaches_status_scanner_and_ledger(pool: PgPool) {
    // GIVEN a task 20 s overdue that nothing holds (its flow is the URL's host)
    let now = Utc::now();
    let due = chrono::DurationRound::duration_trunc(now, Duration::seconds(1)).unwrap()
        - Duration::seconds(20);
    let task = TaskBuilder::new()
        .schedule("rate(1 second)")
        .next_run_at(due)
        .insert(&pool)
        .await;
    sqlx::query("UPDATE task_definitions SET valid_from = $2 WHERE task_id = $1")
        .bind(task.id)
        .bind(due - Duration::seconds(1))
        .execute(&pool)
        .await
        .unwrap();
    // The ledger of just that occurrence.
    let at = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let occurrences = format!("/v1/tasks/{}/occurrences?from={at}&to={at}", task.id);
    let state_of = |ledger: &Value| {
        ledger["occurrences"][0]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // THEN with the default grace (120 s) it is not missed yet
    let default = api(&pool, PipelineCheck::default());
    assert_eq!(get(&default, "/v1/status").await["missed"], 0);
    assert_eq!(state_of(&get(&default, &occurrences).await), "pending");
    // ... and with a 10 s grace it is, in status, the ledger ...
    let short = api(
        &pool,
        PipelineCheck {
            settings: grace(10),
            dlq: None,
        },
    );
    let status = get(&short, "/v1/status").await;
    assert_eq!(status["missed"], 1, "{status:#}");
    assert!(codes(&status).contains(&"missed_occurrences"), "{status:#}");
    assert_eq!(state_of(&get(&short, &occurrences).await), "missed");
    // ... and the scanner that claims it counts it once
    let queue = MemoryQueue::new(100);
    let summary = scan::tick(&pool, &queue, &scan_options("scanner-c", 10))
        .await
        .unwrap();
    assert_eq!(
        (summary.claimed, summary.late_claimed, summary.missed),
        (1, 1, 1),
        "{summary:?}"
    );
    let seen = store::pipeline_facts(&pool, Utc::now())
        .await
        .unwrap()
        .last_tick
        .unwrap();
    assert_eq!(seen.last_missed, 1);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_late_probe_of_an_open_breaker_is_not_missed(pool: PgPool) {
    // GIVEN two tasks 10 minutes overdue: one in a flow whose breaker is
    // open with its probe due now (it waited on purpose), one not
    let overdue = Utc::now() - Duration::minutes(10);
    for url in ["http://127.0.0.1:10/", "http://127.0.0.1:11/"] {
        TaskBuilder::new()
            .url(url)
            .next_run_at(overdue)
            .insert(&pool)
            .await;
    }
    sqlx::query(
        "INSERT INTO flow_state (key, breaker, opened_at, probe_at) \
         VALUES ('127.0.0.1:10', 'open', now() - interval '10 minutes', now() - interval '1 second')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // WHEN a scanner claims both
    let queue = MemoryQueue::new(100);
    let summary = scan::tick(&pool, &queue, &scan_options("scanner-d", 120))
        .await
        .unwrap();
    // THEN only the one nothing held counts as missed
    assert_eq!(summary.claimed, 2, "{summary:?}");
    assert_eq!(
        (summary.late_claimed, summary.missed),
        (1, 1),
        "{summary:?}"
    );
}

#[test]
fn the_openapi_document_describes_the_health_fields() {
    let doc = admin::openapi();
    let schemas = &doc["components"]["schemas"];
    let status = &schemas["Status"]["properties"];
    for field in ["scanner", "health", "leases_overdue", "dead_letters"] {
        assert!(status.get(field).is_some(), "Status.{field} in {status:#}");
    }
    for schema in [
        "ScannerStatus",
        "ScannerSeen",
        "PipelineHealth",
        "Reason",
        "Problem",
    ] {
        assert!(schemas.get(schema).is_some(), "{schema} is not described");
    }
    let codes = serde_json::to_string(&schemas["Problem"]).unwrap();
    for code in [
        "scanner_never_seen",
        "scanner_stale",
        "missed_occurrences",
        "leases_overdue",
        "dead_letters",
        "dead_letters_unknown",
    ] {
        assert!(codes.contains(code), "{code} in {codes}");
    }
}
