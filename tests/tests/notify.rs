//! Failure notifications and auto-pause in the deployed shape: `sundial
//! scan --loop` (the scanner Lambda's tick), the real `aws-sdk-sqs`
//! against the SQS emulator, `sundial process` firing at a local target,
//! and a local notification receiver on 127.0.0.1 that records what it
//! gets. Signatures are checked with the README's verification algorithm.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sundial_e2e::fresh_queue;
use sundial_e2e::notify_kit::*;
use sundial_testkit::TaskBuilder;

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_task_failing_five_times_then_succeeding_notifies_once_failing_once_recovered(
    pool: PgPool,
) {
    let (receiver, base) = spawn_receiver().await;
    receiver.target_failures_left.store(5, Ordering::SeqCst);
    let queue = fresh_queue("notify-once").await;
    let notify_url = format!("{base}/notify");
    let drivers = start_drivers(
        &pool,
        queue.queue_url(),
        &[("SUNDIAL_NOTIFY_URL", &notify_url)],
    );

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
    wait_until("8 target requests", Duration::from_secs(60), async || {
        receiver.target_hits() >= 8
    })
    .await;
    wait_until("a recovered event", Duration::from_secs(30), async || {
        !receiver.of_kind("task.recovered").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, process_lines) = drivers.stop().await;

    // THEN exactly one failing and one recovered event, each signed.
    // (Five 500s in a row also open the flow's circuit breaker: its
    // `flow.opened` event comes at most once, as all events are signed.)
    let all = receiver.notifications();
    let opened = all.iter().filter(|e| e.kind() == "flow.opened").count();
    assert!(opened <= 1, "{all:#?}");
    all.iter().for_each(assert_signed_like_fired_requests);
    let got: Vec<Received> = all
        .into_iter()
        .filter(|e| e.kind().starts_with("task."))
        .collect();
    let kinds: Vec<String> = got.iter().map(Received::kind).collect();
    assert_eq!(kinds, ["task.failing", "task.recovered"], "{got:#?}");
    for event in &got {
        assert_eq!(event.json()["task"]["id"], task.id);
        assert_eq!(event.json()["task"]["name"], "flapping");
    }
    let failing = got[0].json();
    assert_eq!(failing["run"]["status"], "failed");
    assert_eq!(failing["run"]["http_status"], 500);
    assert_eq!(failing["consecutive_failures"], 1);
    assert_eq!(got[1].json()["run"]["status"], "succeeded");
    // The recovered event is raised by the first success, the 6th request.
    let targets = receiver.targets.lock().unwrap().clone();
    assert!(
        got[1].at >= targets[5].at,
        "recovered before the first success"
    );
    let row = task_row(&pool, task.id).await;
    assert_eq!(row.consecutive_failures, 0);
    assert!(row.alerting.failing_since.is_none());
    assert!(row.alerting.recovered_at.is_some());
    assert!(
        emf_sum(&process_lines, "NotificationsSent") >= 1.0,
        "{process_lines:#?}"
    );
}

/// The task paused itself: by `sundial`, with `reason`, on the row and in
/// the ledger.
async fn assert_auto_paused(pool: &PgPool, id: i64, reason: &str) {
    let row = task_row(pool, id).await;
    assert!(!row.enabled);
    assert_eq!(row.alerting.paused_by.as_deref(), Some("sundial"));
    assert_eq!(row.alerting.paused_reason.as_deref(), Some(reason));
    assert!(row.alerting.paused_at.is_some());
    assert_eq!(row.consecutive_failures, 3);
    let (actor, logged): (String, Option<String>) = sqlx::query_as(
        "SELECT actor, reason FROM task_events WHERE task_id = $1 AND kind = 'paused'",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), logged.as_deref()),
        ("sundial", Some(reason))
    );
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
    wait_until("the auto-pause", Duration::from_secs(60), async || {
        !task_row(&pool, id).await.enabled
    })
    .await;
    assert_auto_paused(&pool, id, "3 consecutive failures; last: HTTP 500").await;

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
    let kinds: Vec<String> = receiver
        .notifications()
        .iter()
        .map(Received::kind)
        .collect();
    assert_eq!(kinds, ["task.failing", "task.paused"]);
    let paused = receiver.of_kind("task.paused")[0].json();
    assert_eq!(paused["pause"]["by"], "sundial");
    assert_eq!(
        paused["pause"]["reason"],
        "3 consecutive failures; last: HTTP 500"
    );
    // WHEN it is resumed (the target works again).
    receiver.target_down.store(false, Ordering::SeqCst);
    let resumed = admin_post(&admin, &format!("/v1/tasks/{id}/resume"), None).await;
    assert_eq!(resumed["enabled"], true);
    assert_eq!(resumed["consecutive_failures"], 0);
    assert!(resumed["paused_by"].is_null() && resumed["paused_reason"].is_null());

    // THEN it fires again, and its incident ends with one recovered event.
    wait_until("firing after resume", Duration::from_secs(30), async || {
        receiver.target_hits() >= hits + 2
    })
    .await;
    wait_until("the recovered event", Duration::from_secs(20), async || {
        !receiver.of_kind("task.recovered").is_empty()
    })
    .await;
    drivers.stop().await;
    let kinds: Vec<String> = receiver
        .notifications()
        .iter()
        .map(Received::kind)
        .collect();
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
    wait_until(
        "firing after the pause ended",
        Duration::from_secs(30),
        async || receiver.target_hits() >= 2,
    )
    .await;
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
            (
                "paused".into(),
                "admin API".into(),
                Some("deploy freeze\u{fffd}".into())
            ),
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
        &[
            ("SUNDIAL_NOTIFY_URL", &notify_url),
            ("SUNDIAL_NOTIFY_BACKOFF_MS", "500"),
        ],
    );
    TaskBuilder::new()
        .name("broken")
        .schedule("rate(1 second)")
        .url(format!("{base}/target"))
        .max_attempts(1)
        .insert(&pool)
        .await;

    // The first POST gets a 500; a scanner tick retries it.
    wait_until(
        "the retried delivery",
        Duration::from_secs(40),
        async || receiver.of_kind("task.failing").len() >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drivers.stop().await;
    // (The flow's breaker may open meanwhile: its event is not this test's.)
    let got = receiver.of_kind("task.failing");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].body, got[1].body, "a retry sends the same event");
    assert_eq!(
        got[0].headers["idempotency-key"],
        got[1].headers["idempotency-key"]
    );
    let rows: Vec<_> = sundial::notify::outbox(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.1 == "task.failing")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_, kind, attempts, delivered, failed) = rows[0].clone();
    assert_eq!(
        (kind.as_str(), attempts, delivered, failed),
        ("task.failing", 2, true, false)
    );
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
    wait_until("12 target requests", Duration::from_secs(60), async || {
        receiver.target_hits() >= 12
    })
    .await;
    flip.abort();
    wait_until("given-up events", Duration::from_secs(30), async || {
        sundial::notify::outbox(&pool)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.4)
            .count()
            >= 2
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
        assert!(
            lag < chrono::Duration::milliseconds(1000),
            "fired {lag} late while notifications hung"
        );
    }
    // AND every given-up event was logged and counted.
    let rows = sundial::notify::outbox(&pool).await.unwrap();
    let failed = rows.iter().filter(|r| r.4).count() as f64;
    assert!(failed >= 2.0, "{rows:?}");
    let all: Vec<String> = [scanner_lines.clone(), process_lines.clone()].concat();
    let logged = all
        .iter()
        .filter(|l| l.contains("notification failed; giving up"))
        .count() as f64;
    let counted = emf_sum(&scanner_lines, "NotificationsFailed")
        + emf_sum(&process_lines, "NotificationsFailed");
    assert_eq!(logged, failed, "{all:#?}");
    assert_eq!(counted, failed);
}

/// An SNS client for the emulator (moto serves SNS on the SQS endpoint).
async fn sns_client() -> aws_sdk_sns::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sundial_e2e::sqs_endpoint())
        .load()
        .await;
    aws_sdk_sns::Client::new(&config)
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn events_are_published_to_the_sns_topic(pool: PgPool) {
    // GIVEN a topic with an SQS queue subscribed to it, on the emulator.
    let sns = sns_client().await;
    let topic = sns
        .create_topic()
        .name(format!("sundial-notify-{}", std::process::id()))
        .send()
        .await
        .unwrap();
    let topic_arn = topic.topic_arn().unwrap().to_string();
    let inbox = fresh_queue("notify-sns").await;
    let sqs = sundial_e2e::sqs_client().await;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(inbox.queue_url())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn =
        attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .unwrap();

    // WHEN a task fails, with only the topic configured.
    let (receiver, base) = spawn_receiver().await;
    receiver.target_down.store(true, Ordering::SeqCst);
    let queue = fresh_queue("notify-sns-dispatch").await;
    let endpoint = sundial_e2e::sqs_endpoint();
    let drivers = start_drivers(
        &pool,
        queue.queue_url(),
        &[
            ("SUNDIAL_NOTIFY_TOPIC_ARN", &topic_arn),
            ("AWS_ENDPOINT_URL_SNS", &endpoint),
        ],
    );
    TaskBuilder::new()
        .name("published")
        .schedule("rate(1 second)")
        .url(format!("{base}/target"))
        .max_attempts(1)
        .insert(&pool)
        .await;

    // THEN the subscribed queue gets the event, with its type as attribute.
    let got = sundial_e2e::drain_queue(&inbox, 1, Duration::from_secs(40)).await;
    drivers.stop().await;
    // The first event published is the failing one (the flow's breaker
    // may open later and publish its own).
    assert!(!got.is_empty(), "nothing published");
    let envelope: serde_json::Value = serde_json::from_str(&got[0].0.body).unwrap();
    assert_eq!(envelope["TopicArn"], topic_arn.as_str());
    assert_eq!(
        envelope["MessageAttributes"]["type"]["Value"],
        "task.failing"
    );
    let event: serde_json::Value =
        serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "task.failing");
    assert_eq!(event["task"]["name"], "published");
    let delivered: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(delivered) FROM notifications WHERE kind = 'task.failing'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(delivered, ["sns"]);
}
