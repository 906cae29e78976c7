//! The occurrence ledger against a real Postgres: the history triggers,
//! `GET /v1/tasks/{id}/occurrences`, and the scanner's count of missed
//! occurrences (`MissedOccurrences` in its EMF record).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration, Timelike, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use sundial::admin::{self, AdminState, TargetCheck};
use sundial::ledger::OccurrenceState;
use sundial::queue::memory::MemoryQueue;
use sundial::queue::{DispatchQueue, Outgoing, SendReport};
use sundial::scan::{self, ScanOptions};
use sundial::{metrics, store};
use sundial_testkit::{backdate_event, ledger_scenario, LedgerScenario, TaskBuilder};
use tower::ServiceExt;

const TOKEN: &str = "ledger-token-0123456789abcdef";

/// Accepts nothing: a queue that is down.
struct DownQueue;

#[async_trait]
impl DispatchQueue for DownQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        SendReport {
            failed: (0..messages.len()).collect(),
            first_error: Some("queue is down".into()),
            calls: 1,
        }
    }
}

struct AnyTarget;

#[async_trait]
impl TargetCheck for AnyTarget {
    async fn check(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

fn api(pool: &PgPool) -> Router {
    let state = AdminState::new(
        pool.clone(),
        Arc::new(DownQueue),
        Arc::new(AnyTarget),
        TOKEN,
    );
    admin::router(state)
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `09:00 UTC on 2026-12-01`.
fn head(t: DateTime<Utc>) -> String {
    t.format("%H:%M UTC on %Y-%m-%d").to_string()
}

/// The scenario of the kit, paused through the API 12 minutes before
/// `hours[5]` and resumed with SQL half an hour after it.
async fn paused_scenario(pool: &PgPool, router: &Router) -> LedgerScenario {
    let s = ledger_scenario(pool).await;
    let (status, body) = call(router, "POST", &format!("/v1/tasks/{}/pause", s.id), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    backdate_event(pool, s.id, "paused", s.hours[5] - Duration::minutes(12)).await;
    sqlx::query("UPDATE tasks SET enabled = true WHERE id = $1")
        .bind(s.id)
        .execute(pool)
        .await
        .unwrap();
    backdate_event(pool, s.id, "resumed", s.hours[5] + Duration::minutes(30)).await;
    // The task still waits on hours[6], nobody holds it.
    sqlx::query("UPDATE tasks SET next_run_at = $2, lease_until = NULL WHERE id = $1")
        .bind(s.id)
        .bind(s.hours[6])
        .execute(pool)
        .await
        .unwrap();
    s
}

/// `HH:MM`, or `HH:MM on date` when the day differs from `of`'s.
fn clock(t: DateTime<Utc>, of: DateTime<Utc>) -> String {
    if t.date_naive() == of.date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%H:%M on %Y-%m-%d").to_string()
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn ledger_accounts_for_each_occurrence(pool: PgPool) {
    // GIVEN a task with a fired, a failed-after-retries, a skipped, a
    // passed-over, a paused and a missed occurrence
    let router = api(&pool);
    let s = paused_scenario(&pool, &router).await;
    let h = &s.hours;

    // WHEN its ledger is asked for hours[0] .. hours[6] + 30 min
    let (status, ledger) = call(
        &router,
        "GET",
        &format!(
            "/v1/tasks/{}/occurrences?from={}&to={}",
            s.id,
            rfc(h[0]),
            rfc(h[6] + Duration::minutes(30))
        ),
        None,
    )
    .await;

    // THEN each occurrence is there with its state, reason and sentence
    assert_eq!(status, StatusCode::OK, "{ledger}");
    let entries = ledger["occurrences"].as_array().unwrap();
    let at = |t: DateTime<Utc>| -> &Value {
        entries
            .iter()
            .find(|e| {
                e["scheduled_for"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    == Some(t.into())
            })
            .unwrap_or_else(|| panic!("no entry for {t}: {ledger}"))
    };
    assert_eq!(entries.len(), 7, "{ledger}");
    assert_eq!(ledger["more_before"], Value::Null);
    assert_eq!(ledger["grace_secs"], 120);

    let fired = at(h[0]);
    assert_eq!(fired["state"], "fired");
    assert_eq!(fired["run"]["status"], "succeeded");
    assert_eq!(fired["lag_ms"], 4);
    assert_eq!(fired["definition_version"], 1);
    assert_eq!(
        fired["summary"],
        format!(
            "{} fired at {}, 200 in 83 ms",
            head(h[0]),
            (h[0] + Duration::milliseconds(4)).format("%H:%M:%S%.3f")
        )
    );

    let failed = at(h[1]);
    assert_eq!(failed["state"], "fired");
    assert_eq!(failed["run"]["status"], "failed");
    assert_eq!(failed["run"]["attempts"], 3);
    assert_eq!(
        failed["summary"],
        format!(
            "{} fired at {}.000 and failed after 3 attempts, 500 in 12 ms: HTTP 500",
            head(h[1]),
            (h[1] + Duration::seconds(2)).format("%H:%M:%S")
        )
    );

    let skipped = at(h[2]);
    assert_eq!(skipped["state"], "skipped");
    assert_eq!(
        skipped["reason"],
        "missed its time; catch-up policy is `none`"
    );

    let passed = at(h[3]);
    assert_eq!(passed["state"], "passed_over");
    assert_eq!(
        passed["summary"],
        format!(
            "{} did not fire: passed over by catch-up `skip`: the task fired {} instead",
            head(h[3]),
            h[4].format("%Y-%m-%d %H:%M:%SZ")
        )
    );
    assert_eq!(at(h[4])["lag_ms"], 600_000);

    let paused = at(h[5]);
    assert_eq!(paused["state"], "not_scheduled");
    assert_eq!(paused["event"]["kind"], "paused");
    assert_eq!(paused["event"]["actor"], "admin API");
    assert_eq!(
        paused["summary"],
        format!(
            "{} did not fire: the task was paused at {} by admin API",
            head(h[5]),
            clock(h[5] - Duration::minutes(12), h[5])
        )
    );

    let missed = at(h[6]);
    assert_eq!(missed["state"], "missed");
    assert_eq!(
        missed["summary"],
        format!(
            "{} missed: due {}, no run and no lease (is a scanner running?)",
            head(h[6]),
            h[6].format("%Y-%m-%d %H:%M")
        )
    );
}

/// Dates a task's two definitions as if it was created 3 hours before
/// `edited` and edited then.
async fn backdate_definitions(pool: &PgPool, task_id: i64, edited: DateTime<Utc>) {
    sqlx::query(
        "UPDATE task_definitions SET \
             valid_from = CASE WHEN valid_to IS NULL THEN $2 ELSE $2 - interval '3 hours' END, \
             valid_to = CASE WHEN valid_to IS NULL THEN NULL ELSE $2 END \
         WHERE task_id = $1",
    )
    .bind(task_id)
    .bind(edited)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn occurrences_follow_the_definition_in_force(pool: PgPool) {
    // GIVEN an hourly task at :00 whose schedule the API moved to :30
    let router = api(&pool);
    let now = Utc::now();
    let task = TaskBuilder::new()
        .schedule("0 * * * *")
        .next_run_at(now + Duration::hours(1))
        .insert(&pool)
        .await;
    let (status, body) = call(
        &router,
        "PATCH",
        &format!("/v1/tasks/{}", task.id),
        Some(json!({"schedule": "30 * * * *"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ... as if created 5 hours ago and edited 2 hours ago.
    let edited = now - Duration::hours(2);
    backdate_definitions(&pool, task.id, edited).await;
    backdate_event(&pool, task.id, "edited", edited).await;

    // WHEN the ledger of the last 5 hours is read
    let ledger = store::task_ledger(
        &pool,
        task.id,
        now - Duration::hours(5),
        now,
        now,
        sundial::ledger::MISSED_GRACE,
    )
    .await
    .unwrap();

    // THEN occurrences before the edit are at :00 (version 1), after at :30
    assert_eq!(ledger.definitions.len(), 2, "{:?}", ledger.definitions);
    assert!(!ledger.occurrences.is_empty());
    for entry in &ledger.occurrences {
        let minute = entry.scheduled_for.format("%M").to_string();
        if entry.scheduled_for < edited {
            assert_eq!(
                (minute.as_str(), entry.definition_version),
                ("00", Some(1)),
                "{entry:?}"
            );
        } else {
            assert_eq!(
                (minute.as_str(), entry.definition_version),
                ("30", Some(2)),
                "{entry:?}"
            );
        }
    }
    // ... and the edit is recorded with who made it
    let (actor, reason): (String, String) = sqlx::query_as(
        "SELECT actor, reason FROM task_events WHERE task_id = $1 AND kind = 'edited'",
    )
    .bind(task.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(actor, "admin API");
    assert!(
        reason.contains("0 * * * *") && reason.contains("30 * * * *"),
        "{reason}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn an_exclusion_added_later_does_not_rewrite_earlier_occurrences(pool: PgPool) {
    // GIVEN an hourly task that got an exclusion of the odd hours two hours ago
    let router = api(&pool);
    let now = Utc::now();
    let task = TaskBuilder::new()
        .schedule("0 * * * *")
        .next_run_at(now + Duration::hours(1))
        .insert(&pool)
        .await;
    let (status, body) = call(
        &router,
        "PATCH",
        &format!("/v1/tasks/{}", task.id),
        Some(json!({"exclude": "0 1-23/2 * * *"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let edited = now - Duration::hours(2);
    backdate_definitions(&pool, task.id, edited).await;

    // WHEN the ledger of the last 5 hours is read
    let ledger = store::task_ledger(
        &pool,
        task.id,
        now - Duration::hours(5),
        now,
        now,
        sundial::ledger::MISSED_GRACE,
    )
    .await
    .unwrap();

    // THEN the definitions keep the exclusion with the one it came with
    let excludes: Vec<Option<&str>> = ledger
        .definitions
        .iter()
        .map(|d| d.exclude.as_deref())
        .collect();
    assert_eq!(
        excludes,
        vec![None, Some("0 1-23/2 * * *")],
        "{:?}",
        ledger.definitions
    );
    // ... occurrences after the edit are excluded, those before are not
    let mut before = 0;
    for entry in &ledger.occurrences {
        let excluded = entry.state == OccurrenceState::Skipped
            && entry.summary.ends_with("skipped (excluded)");
        let odd = entry.scheduled_for.hour() % 2 == 1;
        if entry.scheduled_for < edited {
            before += 1;
            assert!(!excluded, "{entry:?}");
        } else {
            assert_eq!(excluded, odd, "{entry:?}");
        }
    }
    assert!(before >= 2, "{:?}", ledger.occurrences);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn sql_changes_are_recorded_as_sql(pool: PgPool) {
    let task = TaskBuilder::new().enabled(false).insert(&pool).await;
    sqlx::query("UPDATE tasks SET enabled = true WHERE id = $1")
        .bind(task.id)
        .execute(&pool)
        .await
        .unwrap();
    // Claims and write-backs touch the row without writing history.
    sqlx::query("UPDATE tasks SET lease_until = now(), last_status = 'succeeded' WHERE id = $1")
        .bind(task.id)
        .execute(&pool)
        .await
        .unwrap();
    let events: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT kind, actor, reason FROM task_events WHERE task_id = $1 ORDER BY id",
    )
    .bind(task.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            ("paused".into(), "sql".into(), Some("created paused".into())),
            ("resumed".into(), "sql".into(), None),
        ]
    );
    let definitions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_definitions WHERE task_id = $1")
            .bind(task.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(definitions, 1);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn api_changes_are_recorded_as_the_admin_api(pool: PgPool) {
    let router = api(&pool);
    let (status, task) = call(
        &router,
        "POST",
        "/v1/tasks",
        Some(json!({"name": "created-paused", "schedule": "rate(1 hour)",
                    "url": "https://example.com/hook", "enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    let (status, body) = call(&router, "POST", &format!("/v1/tasks/{id}/resume"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, actor FROM task_events WHERE task_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        events,
        vec![
            ("paused".into(), "admin API".into()),
            ("resumed".into(), "admin API".into()),
        ]
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn occurrences_route_checks_its_input(pool: PgPool) {
    let router = api(&pool);
    let task = TaskBuilder::new()
        .schedule("rate(1 hour)")
        .next_run_at(Utc::now() + Duration::hours(1))
        .insert(&pool)
        .await;
    let path = format!("/v1/tasks/{}/occurrences", task.id);

    // Defaults: the last 24 hours (the task is younger: nothing yet).
    let (status, body) = call(&router, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let from = DateTime::parse_from_rfc3339(body["from"].as_str().unwrap()).unwrap();
    let to = DateTime::parse_from_rfc3339(body["to"].as_str().unwrap()).unwrap();
    assert_eq!(to - from, Duration::hours(24));
    assert_eq!(body["occurrences"], json!([]));

    // A future `from` alone looks 24 hours ahead: the pending occurrences.
    let ahead = Utc::now() + Duration::hours(2);
    let (status, body) = call(&router, "GET", &format!("{path}?from={}", rfc(ahead)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let to = DateTime::parse_from_rfc3339(body["to"].as_str().unwrap()).unwrap();
    assert_eq!(
        to.to_utc() - ahead.with_nanosecond(0).unwrap(),
        Duration::hours(24)
    );
    let states: Vec<&Value> = body["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["state"])
        .collect();
    // (25 when `from` falls on the hour: both ends are included)
    let on_the_hour = usize::from(ahead.timestamp() % 3600 == 0);
    assert_eq!(states.len(), 24 + on_the_hour, "{body}");
    assert!(states.iter().all(|s| *s == "pending"), "{body}");

    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = call(&router, "GET", &format!("{path}?{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, _) = call(&router, "GET", "/v1/tasks/999999/occurrences", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Extreme ranges answer, bounded, without error.
    for (from, to) in [
        ("0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("0000-01-01T00:00:00+23:59", "0000-01-01T00:00:00+23:59"),
        (
            "9999-12-31T23:59:59.999999999-23:59",
            "9999-12-31T23:59:59.999999999-23:59",
        ),
    ] {
        let query = format!(
            "from={}&to={}",
            url::form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        );
        let (status, body) = call(&router, "GET", &format!("{path}?{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert!(body["occurrences"].as_array().unwrap().len() <= 1000);
    }
}

fn scan_options() -> ScanOptions {
    ScanOptions {
        lookahead: StdDuration::from_secs(5),
        page_size: 100,
        lease: StdDuration::from_secs(60),
        budget: StdDuration::from_secs(10),
        owner: "ledger-test".into(),
        retention_days: 30,
        notifier: None,
        missed_grace: StdDuration::from_secs(120),
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn scanner_counts_missed_occurrences(pool: PgPool) {
    let now = Utc::now();
    // GIVEN one task overdue for 10 minutes, and others that are not missed:
    let minute =
        DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(60), 0).unwrap();
    let overdue = TaskBuilder::new()
        .schedule("* * * * *")
        .next_run_at(minute - Duration::minutes(10))
        .insert(&pool)
        .await;
    // ... (existing since just before that occurrence)
    sqlx::query("UPDATE task_definitions SET valid_from = $2 WHERE task_id = $1")
        .bind(overdue.id)
        .bind(minute - Duration::minutes(10))
        .execute(&pool)
        .await
        .unwrap();
    // due within the grace,
    TaskBuilder::new()
        .next_run_at(now - Duration::seconds(30))
        .insert(&pool)
        .await;
    // held by a lease,
    TaskBuilder::new()
        .next_run_at(now - Duration::minutes(10))
        .lease_until(now + Duration::minutes(5))
        .insert(&pool)
        .await;
    // held by its flow's open circuit breaker.
    TaskBuilder::new()
        .url("http://127.0.0.1:10/")
        .next_run_at(now - Duration::minutes(10))
        .insert(&pool)
        .await;
    sqlx::query(
        "INSERT INTO flow_state (key, breaker, opened_at, probe_at) \
         VALUES ('127.0.0.1:10', 'open', now(), now() + interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .unwrap();

    // WHEN a scanner ticks but the queue is down (a stuck pipeline)
    let summary = scan::tick(&pool, &DownQueue, &scan_options())
        .await
        .unwrap();

    // THEN the overdue one is counted as missed, in the EMF record too
    assert_eq!(summary.missed, 1, "{summary:?}");
    let record = metrics::for_scan(&summary).to_emf("sundial-scanner", now.timestamp_millis());
    assert_eq!(record["MissedOccurrences"], 1.0);
    let declared: Vec<&str> = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["Name"].as_str())
        .collect();
    assert!(declared.contains(&"MissedOccurrences"));
    // ... and in /v1/status
    let (status, body) = call(&api(&pool), "GET", "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["missed"], 1, "{body}");
    // ... and the ledger says `missed`, from the task's first minute on
    let ledger = store::task_ledger(
        &pool,
        overdue.id,
        now - Duration::hours(2),
        Utc::now(),
        Utc::now(),
        sundial::ledger::MISSED_GRACE,
    )
    .await
    .unwrap();
    let first = ledger
        .occurrences
        .first()
        .unwrap_or_else(|| panic!("no occurrences: {ledger:?}"));
    assert_eq!(first.scheduled_for, overdue.next_run_at.unwrap());
    assert_eq!(first.state, OccurrenceState::Missed, "{first:?}");
    assert!(first.summary.contains("missed: due"), "{}", first.summary);

    // WHEN the pipeline works again, the scanner claims it: that tick
    // still reports it (claimed past the grace), the next one nothing
    let queue = MemoryQueue::new(100);
    let summary = scan::tick(&pool, &queue, &scan_options()).await.unwrap();
    assert_eq!(
        (summary.missed, summary.late_claimed),
        (1, 1),
        "{summary:?}"
    );
    assert!(summary.enqueued >= 1, "{summary:?}");
    let summary = scan::tick(&pool, &queue, &scan_options()).await.unwrap();
    assert_eq!(
        (summary.missed, summary.late_claimed),
        (0, 0),
        "{summary:?}"
    );
}
