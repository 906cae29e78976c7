//! Failure notifications and auto-pause in the deployed shape: `sundial
//! scan --loop` (the scanner Lambda's tick), the real `aws-sdk-sqs`
//! against the SQS emulator, `sundial process` firing at a local target,
//! and a local notification receiver on 127.0.0.1 that records what it
//! gets. Signatures are checked with the README's verification algorithm.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde_json::Value;
use sqlx::PgPool;
use sundial_e2e::{driver_env, fresh_queue, workspace_bin, Child};
use sundial_testkit::{database_url_for, TaskBuilder};

const SECRET: &str = "notify-secret";
const ADMIN_TOKEN: &str = "notify-test-admin-token";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: DateTime<Utc>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// The target and the notification receiver, on one local server.
#[derive(Default)]
struct Receiver {
    /// `/target` answers 500 while this is positive (counting down)...
    target_failures_left: AtomicI64,
    /// ... or always, while this is set.
    target_down: AtomicBool,
    targets: Mutex<Vec<Received>>,
    /// `/notify` answers 500 while this is positive (counting down).
    notify_failures_left: AtomicI64,
    notifications: Mutex<Vec<Received>>,
}

impl Receiver {
    fn target_hits(&self) -> usize {
        self.targets.lock().unwrap().len()
    }
    fn notifications(&self) -> Vec<Received> {
        self.notifications.lock().unwrap().clone()
    }
    fn of_kind(&self, kind: &str) -> Vec<Received> {
        self.notifications()
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }
}

fn record(headers: &HeaderMap, body: &[u8]) -> Received {
    Received {
        at: Utc::now(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

async fn target(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    r.targets.lock().unwrap().push(record(&headers, &body));
    let counting = r.target_failures_left.fetch_sub(1, Ordering::SeqCst) > 0;
    if r.target_down.load(Ordering::SeqCst) || counting {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn notify(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    r.notifications.lock().unwrap().push(record(&headers, &body));
    if r.notify_failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// A receiver that is down for good: accepts, never answers.
async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK
}

async fn spawn_receiver() -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/target", post(target))
        .route("/notify", post(notify))
        .route("/hang", post(hang))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, base)
}

/// The admin API, served locally (the same router the admin Lambda serves).
async fn spawn_admin(pool: &PgPool, queue: sundial::queue::sqs::SqsQueue) -> String {
    let guard = sundial::fire::TargetGuard::new(&["127.0.0.1/32".to_string()]).unwrap();
    let state = sundial::admin::AdminState::new(pool.clone(), Arc::new(queue), Arc::new(guard), ADMIN_TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = sundial::admin::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn admin_post(base: &str, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// The README's verification snippet, line for line in Rust: split the
/// header into `t` and `v1`, check the timestamp is digits within the
/// tolerance, and compare HMAC-SHA256(secret, "<t>.<body>") in hex.
fn verify_like_the_readme(header: &str, body: &[u8], secrets: &[&str], tolerance: i64) -> bool {
    let parts: HashMap<&str, &str> = header.split(',').filter_map(|p| p.split_once('=')).collect();
    let (t, sig) = (parts.get("t").copied().unwrap_or(""), parts.get("v1").copied().unwrap_or(""));
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(t_secs) = t.parse::<i64>() else { return false };
    if (Utc::now().timestamp() - t_secs).abs() > tolerance {
        return false;
    }
    let mut signed = t.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    secrets.iter().any(|s| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(s.as_bytes()).unwrap();
        mac.update(&signed);
        // Constant time like hmac.compare_digest: verify_slice.
        hex::decode(sig).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
    })
}

/// The drivers of the deployed shape, with notifications to `notify_url`.
struct Drivers {
    scanner: Child,
    process: Child,
}

fn start_drivers(pool: &PgPool, queue_url: &str, extra: &[(&str, &str)]) -> Drivers {
    let mut env = driver_env(&database_url_for(pool), queue_url);
    env.push(("RUST_LOG".into(), "info".into()));
    env.push(("SUNDIAL_SIGNING_SECRETS".into(), SECRET.into()));
    env.push(("SUNDIAL_LOOKAHEAD_SECS".into(), "5".into()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    let sundial = workspace_bin("sundial");
    Drivers {
        process: Child::spawn(&sundial, &["process", "--wait", "20", "--emf"], &env),
        scanner: Child::spawn(&sundial, &["scan", "--loop", "--every", "2", "--emf"], &env),
    }
}

impl Drivers {
    /// SIGTERM both (a graceful stop) and wait for them to exit.
    async fn stop(mut self) -> (Vec<String>, Vec<String>) {
        for child in [&self.scanner, &self.process] {
            if let Some(pid) = child.child.id() {
                let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            }
        }
        for child in [&mut self.scanner, &mut self.process] {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.child.wait()).await;
        }
        // Let the output readers drain.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lines = |c: &Child| [c.stdout_lines(), c.stderr_lines()].concat();
        (lines(&self.scanner), lines(&self.process))
    }
}

/// Waits until `done` holds, polling; panics with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn task_row(pool: &PgPool, id: i64) -> sundial::task::Task {
    sundial::store::get_task(pool, id).await.unwrap()
}

/// Sum of an EMF metric over every record in `lines`.
fn emf_sum(lines: &[String], name: &str) -> f64 {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .filter_map(|v| v.get(name).and_then(Value::as_f64))
        .sum()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_task_failing_five_times_then_succeeding_notifies_once_failing_once_recovered(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    receiver.target_failures_left.store(5, Ordering::SeqCst);
    let queue = fresh_queue("notify-once").await;
    let notify_url = format!("{base}/notify");
    let drivers = start_drivers(&pool, queue.queue_url(), &[("SUNDIAL_NOTIFY_URL", &notify_url)]);

    // GIVEN a task firing every second, one attempt per occurrence, whose
    // target fails its first 5 requests.
    let task = TaskBuilder::new()
        .name("flapping")
        .schedule("rate(1 second)")
        .url(format!("{base}/target"))
        .max_attempts(1)
        .timeout_ms(2000)
        .insert(&pool)
        .await;

    // WHEN it has run well past the first success.
    wait_until("8 target requests", Duration::from_secs(60), async || receiver.target_hits() >= 8).await;
    wait_until("a recovered event", Duration::from_secs(30), async || {
        !receiver.of_kind("task.recovered").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, process_lines) = drivers.stop().await;

    // THEN exactly one failing and one recovered event, each signed.
    let got = receiver.notifications();
    let kinds: Vec<String> = got.iter().map(Received::kind).collect();
    assert_eq!(kinds, ["task.failing", "task.recovered"], "{got:#?}");
    for event in &got {
        let header = event.headers.get("sundial-signature").expect("signed");
        assert!(verify_like_the_readme(header, &event.body, &[SECRET], 300), "{event:?}");
        assert!(!verify_like_the_readme(header, &event.body, &["other"], 300));
        assert_eq!(event.headers.get("content-type").map(String::as_str), Some("application/json"));
        let json = event.json();
        let id = json["id"].as_str().unwrap();
        assert_eq!(
            event.headers.get("idempotency-key").unwrap(),
            &format!("notification:{}", id.trim_start_matches("evt_"))
        );
        assert_eq!(event.headers.get("sundial-event").unwrap(), &event.kind());
        assert_eq!(json["task"]["id"], task.id);
        assert_eq!(json["task"]["name"], "flapping");
    }
    let failing = got[0].json();
    assert_eq!(failing["run"]["status"], "failed");
    assert_eq!(failing["run"]["http_status"], 500);
    assert_eq!(failing["consecutive_failures"], 1);
    assert_eq!(got[1].json()["run"]["status"], "succeeded");
    // The recovered event is raised by the first success, the 6th request.
    let targets = receiver.targets.lock().unwrap().clone();
    assert!(got[1].at >= targets[5].at, "recovered before the first success");
    let row = task_row(&pool, task.id).await;
    assert_eq!(row.consecutive_failures, 0);
    assert!(row.alerting.failing_since.is_none());
    assert!(row.alerting.recovered_at.is_some());
    assert!(emf_sum(&process_lines, "NotificationsSent") >= 1.0, "{process_lines:#?}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn an_auto_paused_task_stops_firing_and_fires_again_after_resume(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    receiver.target_down.store(true, Ordering::SeqCst);
    let queue = fresh_queue("notify-pause").await;
    let admin = spawn_admin(&pool, queue.clone()).await;
    let drivers = start_drivers(&pool, queue.queue_url(), &[]);

    // GIVEN a task that pauses after 3 failures, whose own notify_url is
    // the receiver (no global URL), created through the admin API.
    let created = admin_post(
        &admin,
        "/v1/tasks",
        Some(serde_json::json!({
            "name": "doomed", "schedule": "rate(1 second)", "url": format!("{base}/target"),
            "max_attempts": 1, "timeout_ms": 2000, "pause_after_failures": 3,
            "notify_url": format!("{base}/notify"),
        })),
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["pause_after_failures"], 3);

    // WHEN its target keeps failing.
    wait_until("the auto-pause", Duration::from_secs(60), async || !task_row(&pool, id).await.enabled).await;
    let row = task_row(&pool, id).await;
    assert_eq!(row.alerting.paused_by.as_deref(), Some("sundial"));
    assert_eq!(row.alerting.paused_reason.as_deref(), Some("3 consecutive failures; last: HTTP 500"));
    assert!(row.alerting.paused_at.is_some());
    assert_eq!(row.consecutive_failures, 3);

    // THEN it stops firing: nothing more across several scanner ticks.
    let hits = receiver.target_hits();
    assert_eq!(hits, 3, "fired after the pause");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(receiver.target_hits(), hits, "a paused task fired");
    // One failing event (first failure) and one paused event, to the task's URL.
    wait_until("the paused event", Duration::from_secs(20), async || {
        !receiver.of_kind("task.paused").is_empty()
    })
    .await;
    let kinds: Vec<String> = receiver.notifications().iter().map(Received::kind).collect();
    assert_eq!(kinds, ["task.failing", "task.paused"]);
    let paused = receiver.of_kind("task.paused")[0].json();
    assert_eq!(paused["pause"]["by"], "sundial");
    assert_eq!(paused["pause"]["reason"], "3 consecutive failures; last: HTTP 500");
    // The ledger names who paused it and why.
    let (actor, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT actor, reason FROM task_events WHERE task_id = $1 AND kind = 'paused'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((actor.as_str(), reason.as_deref()), ("sundial", Some("3 consecutive failures; last: HTTP 500")));

    // WHEN it is resumed (the target works again).
    receiver.target_down.store(false, Ordering::SeqCst);
    let resumed = admin_post(&admin, &format!("/v1/tasks/{id}/resume"), None).await;
    assert_eq!(resumed["enabled"], true);
    assert_eq!(resumed["consecutive_failures"], 0);
    assert!(resumed["paused_by"].is_null() && resumed["paused_reason"].is_null());

    // THEN it fires again, and its incident ends with one recovered event.
    wait_until("firing after resume", Duration::from_secs(30), async || receiver.target_hits() >= hits + 2).await;
    wait_until("the recovered event", Duration::from_secs(20), async || {
        !receiver.of_kind("task.recovered").is_empty()
    })
    .await;
    drivers.stop().await;
    let kinds: Vec<String> = receiver.notifications().iter().map(Received::kind).collect();
    assert_eq!(kinds, ["task.failing", "task.paused", "task.recovered"]);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_pause_whose_until_has_passed_resumes_by_itself(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    let queue = fresh_queue("notify-until").await;
    let admin = spawn_admin(&pool, queue.clone()).await;
    let task = TaskBuilder::new()
        .name("frozen")
        .schedule("rate(1 second)")
        .url(format!("{base}/target"))
        .insert(&pool)
        .await;

    // GIVEN a pause with a reason (control characters and all) whose
    // `until` is already past, before any driver runs.
    let until = Utc::now() - chrono::Duration::seconds(1);
    let paused = admin_post(
        &admin,
        &format!("/v1/tasks/{}/pause", task.id),
        Some(serde_json::json!({ "reason": "deploy\nfreeze\u{7}", "until": until })),
    )
    .await;
    assert_eq!(paused["enabled"], false);
    assert_eq!(paused["paused_by"], "admin API");
    assert_eq!(paused["paused_reason"], "deploy freeze\u{fffd}");
    assert!(paused["paused_until"].is_string());

    // WHEN the scanner ticks.
    let drivers = start_drivers(&pool, queue.queue_url(), &[]);

    // THEN the task resumes by itself and fires again.
    wait_until("firing after the pause ended", Duration::from_secs(30), async || receiver.target_hits() >= 2).await;
    drivers.stop().await;
    let row = task_row(&pool, task.id).await;
    assert!(row.enabled);
    assert!(row.alerting.paused_until.is_none() && row.alerting.paused_by.is_none());
    let events: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT kind, actor, reason FROM task_events WHERE task_id = $1 ORDER BY id",
    )
    .bind(task.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        [
            ("paused".into(), "admin API".into(), Some("deploy freeze\u{fffd}".into())),
            ("resumed".into(), "sundial".into(), None),
        ]
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_receiver_that_fails_once_gets_the_event_once_on_retry(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    receiver.target_down.store(true, Ordering::SeqCst);
    receiver.notify_failures_left.store(1, Ordering::SeqCst);
    let queue = fresh_queue("notify-retry").await;
    let notify_url = format!("{base}/notify");
    let drivers = start_drivers(
        &pool,
        queue.queue_url(),
        &[("SUNDIAL_NOTIFY_URL", &notify_url), ("SUNDIAL_NOTIFY_BACKOFF_MS", "500")],
    );
    TaskBuilder::new()
        .name("broken")
        .schedule("rate(1 second)")
        .url(format!("{base}/target"))
        .max_attempts(1)
        .insert(&pool)
        .await;

    // The first POST gets a 500; a scanner tick retries it.
    wait_until("the retried delivery", Duration::from_secs(40), async || receiver.notifications().len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drivers.stop().await;
    let got = receiver.notifications();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].body, got[1].body, "a retry sends the same event");
    assert_eq!(got[0].headers["idempotency-key"], got[1].headers["idempotency-key"]);
    let rows = sundial::notify::outbox(&pool).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_, kind, attempts, delivered, failed) = rows[0].clone();
    assert_eq!((kind.as_str(), attempts, delivered, failed), ("task.failing", 2, true, false));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_receiver_that_is_down_is_logged_and_counted_and_firing_is_not_delayed(pool: PgPool) {
    let (receiver, base) = spawn_receiver().await;
    let queue = fresh_queue("notify-down").await;
    // The receiver accepts and never answers: each attempt costs its timeout.
    let notify_url = format!("{base}/hang");
    let drivers = start_drivers(
        &pool,
        queue.queue_url(),
        &[
            ("SUNDIAL_NOTIFY_URL", &notify_url),
            ("SUNDIAL_NOTIFY_TIMEOUT_MS", "1500"),
            ("SUNDIAL_NOTIFY_MAX_ATTEMPTS", "2"),
            ("SUNDIAL_NOTIFY_BACKOFF_MS", "100"),
        ],
    );
    // A task that alternates failure and success raises an event per run.
    TaskBuilder::new()
        .name("alternating")
        .schedule("rate(1 second)")
        .url(format!("{base}/target"))
        .max_attempts(1)
        .insert(&pool)
        .await;
    let flip = {
        let receiver = receiver.clone();
        tokio::spawn(async move {
            loop {
                receiver.target_failures_left.store(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2000)).await;
            }
        })
    };
    wait_until("12 target requests", Duration::from_secs(60), async || receiver.target_hits() >= 12).await;
    flip.abort();
    wait_until("given-up events", Duration::from_secs(30), async || {
        sundial::notify::outbox(&pool).await.unwrap().iter().filter(|r| r.4).count() >= 2
    })
    .await;
    let (scanner_lines, process_lines) = drivers.stop().await;

    // THEN firing kept its pace: every request went out within a second
    // of its occurrence (the Idempotency-Key names it).
    for hit in receiver.targets.lock().unwrap().iter() {
        let key = &hit.headers["idempotency-key"];
        let (_, at) = key.split_once(':').unwrap();
        let occurrence = DateTime::parse_from_rfc3339(at).unwrap().to_utc();
        let lag = hit.at - occurrence;
        assert!(lag < chrono::Duration::milliseconds(1000), "fired {lag} late while notifications hung");
    }
    // AND every given-up event was logged and counted.
    let rows = sundial::notify::outbox(&pool).await.unwrap();
    let failed = rows.iter().filter(|r| r.4).count() as f64;
    assert!(failed >= 2.0, "{rows:?}");
    let all: Vec<String> = [scanner_lines.clone(), process_lines.clone()].concat();
    let logged = all.iter().filter(|l| l.contains("notification failed; giving up")).count() as f64;
    let counted = emf_sum(&scanner_lines, "NotificationsFailed") + emf_sum(&process_lines, "NotificationsFailed");
    assert_eq!(logged, failed, "{all:#?}");
    assert_eq!(counted, failed);
}
