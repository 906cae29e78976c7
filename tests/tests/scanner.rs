//! The scan use case against real Postgres, the SQS emulator (through the
//! real aws-sdk-sqs) and, for scale, the in-process queue.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use sundial::message::DispatchMessage;
use sundial::queue::memory::MemoryQueue;
use sundial::queue::sqs::SqsQueue;
use sundial::queue::{DispatchQueue, Outgoing, SendReport};
use sundial::scan::{scan, ScanOptions};
use sundial_e2e::{drain_queue, fresh_queue};
use sundial_testkit::TaskBuilder;

fn opts() -> ScanOptions {
    ScanOptions {
        lookahead: Duration::from_secs(60),
        page_size: 500,
        lease: Duration::from_secs(300),
        budget: Duration::from_secs(50),
        owner: "test-scanner".into(),
        retention_days: 30,
        notifier: None,
        missed_grace: Duration::from_secs(120),
    }
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::seconds(1)).unwrap()
}

/// Inserts `n` tasks the way a user would with plain SQL, with a given
/// next run (or NULL to let the scanner compute it).
async fn insert_tasks(pool: &PgPool, prefix: &str, n: i64, next: Option<DateTime<Utc>>) {
    TaskBuilder::new()
        .name(prefix)
        .next_run_at(next)
        .each(|g, task| task.url(format!("https://example.com/{g}")))
        .insert_many(pool, n)
        .await;
}

async fn leased_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE lease_until IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A queue that records what it is asked to send.
#[derive(Default)]
struct RecordingQueue {
    sent: Mutex<Vec<Outgoing>>,
}

#[async_trait]
impl DispatchQueue for RecordingQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        self.sent.lock().unwrap().extend_from_slice(messages);
        SendReport {
            calls: messages.len().div_ceil(10),
            ..Default::default()
        }
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn three_hundred_due_tasks_become_three_hundred_sqs_messages(pool: PgPool) {
    let queue = fresh_queue("scan300").await;
    let now = whole_seconds(Utc::now());
    // 200 due now, 100 due in 40 seconds (the emulator needs a few seconds
    // to hand out the first 200, more than 20 on a loaded machine).
    let later_by = chrono::Duration::seconds(40);
    insert_tasks(&pool, "now-", 200, Some(now)).await;
    insert_tasks(&pool, "soon-", 100, Some(now + later_by)).await;

    let summary = scan(&pool, &queue, &opts()).await.unwrap();
    assert_eq!(summary.claimed, 300, "{summary:?}");
    assert_eq!(summary.enqueued, 300);
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.send_calls, 30, "10 entries per SendMessageBatch");

    // The 200 due now are visible at once, the delayed 100 are not.
    let early = drain_queue(&queue, 200, Duration::from_secs(35)).await;
    let early_messages: Vec<DispatchMessage> = early
        .iter()
        .map(|(d, _)| DispatchMessage::parse(&d.body).unwrap())
        .collect();
    assert_eq!(early_messages.len(), 200);
    assert!(early_messages.iter().all(|m| m.occurrence == now));
    let delayed_from = tokio::time::Instant::now();
    let delayed_from_utc = Utc::now();
    let later = drain_queue(&queue, 100, Duration::from_secs(65)).await;
    assert_eq!(later.len(), 100);
    // They became visible about when they were due, not earlier than the
    // delivery lead (1 s) and the rounding to whole seconds allow.
    let first_later = later.iter().map(|(_, at)| *at).min().unwrap();
    let due_in = (now + later_by - delayed_from_utc)
        .to_std()
        .unwrap_or_default();
    assert!(
        first_later + Duration::from_secs(2) >= delayed_from.into_std() + due_in,
        "delayed messages arrived early"
    );

    // Each task exactly once, bodies parse.
    let mut ids = HashSet::new();
    for (d, _) in early.iter().chain(later.iter()) {
        let m = DispatchMessage::parse(&d.body).unwrap();
        assert!(ids.insert(m.task_id), "task {} enqueued twice", m.task_id);
        assert_eq!(m.attempt, 1);
    }
    assert_eq!(ids.len(), 300);
    // Nothing more on the queue.
    let extra = queue
        .receive(10, Duration::from_secs(1), None)
        .await
        .unwrap();
    assert!(extra.is_empty());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn ten_thousand_due_tasks_in_one_scan_through_the_memory_queue(pool: PgPool) {
    insert_tasks(
        &pool,
        "t-",
        10_000,
        Some(Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    let queue = MemoryQueue::new(20_000);
    let summary = scan(&pool, &queue, &opts()).await.unwrap();
    assert_eq!(summary.enqueued, 10_000, "{summary:?}");
    assert_eq!(summary.backlog, 0);
    let got = queue.receive(20_000, Duration::from_secs(1)).await;
    let ids: HashSet<i64> = got.iter().map(|m| m.task_id).collect();
    assert_eq!((got.len(), ids.len()), (10_000, 10_000));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn two_concurrent_scanners_never_enqueue_a_task_twice(pool: PgPool) {
    insert_tasks(
        &pool,
        "t-",
        5_000,
        Some(Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    let queue = std::sync::Arc::new(MemoryQueue::new(20_000));
    let mut small_pages = opts();
    small_pages.page_size = 100;
    let a = {
        let (pool, queue, o) = (pool.clone(), queue.clone(), small_pages.clone());
        tokio::spawn(async move { scan(&pool, queue.as_ref(), &o).await.unwrap() })
    };
    let b = {
        let (pool, queue, o) = (pool.clone(), queue.clone(), small_pages.clone());
        tokio::spawn(async move { scan(&pool, queue.as_ref(), &o).await.unwrap() })
    };
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.enqueued + b.enqueued, 5_000, "{a:?} {b:?}");
    let got = queue.receive(20_000, Duration::from_secs(1)).await;
    let ids: HashSet<i64> = got.iter().map(|m| m.task_id).collect();
    assert_eq!(got.len(), 5_000);
    assert_eq!(ids.len(), 5_000, "a task was enqueued twice");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn unreachable_sqs_loses_nothing(pool: PgPool) {
    insert_tasks(
        &pool,
        "t-",
        25,
        Some(Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    // Nothing listens on port 9 of loopback.
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let dead = SqsQueue::new(
        aws_sdk_sqs::Client::new(&config),
        "http://127.0.0.1:9/000000000000/nowhere",
        4,
    );
    let summary = scan(&pool, &dead, &opts()).await.unwrap();
    assert_eq!(summary.enqueued, 0, "{summary:?}");
    assert_eq!(summary.failed, 25);
    assert!(summary.first_error.is_some());
    assert_eq!(
        leased_count(&pool).await,
        0,
        "failed sends must release leases"
    );
    assert_eq!(summary.backlog, 25);

    // SQS is back: the next scan enqueues them all.
    let queue = fresh_queue("scanback").await;
    let summary = scan(&pool, &queue, &opts()).await.unwrap();
    assert_eq!(summary.enqueued, 25, "{summary:?}");
    let got = drain_queue(&queue, 25, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 25);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn invalid_sql_inserted_schedule_is_disabled_and_the_scan_goes_on(pool: PgPool) {
    // As plain SQL registers them: next_run_at left NULL.
    TaskBuilder::new()
        .name("broken")
        .schedule("every other tuesday")
        .url("https://example.com/a")
        .insert(&pool)
        .await;
    TaskBuilder::new()
        .name("fine")
        .schedule("rate(10 seconds)")
        .url("https://example.com/b")
        .insert(&pool)
        .await;
    insert_tasks(&pool, "due-", 3, Some(Utc::now())).await;
    let queue = RecordingQueue::default();
    let summary = scan(&pool, &queue, &opts()).await.unwrap();
    assert_eq!(summary.invalid, 1, "{summary:?}");
    assert_eq!(summary.scheduled, 1);
    // The 3 due ones and the new 10-second one (due within the lookahead).
    assert_eq!(summary.enqueued, 4);
    let (enabled, error): (bool, Option<String>) =
        sqlx::query_as("SELECT enabled, schedule_error FROM tasks WHERE name = 'broken'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!enabled);
    assert!(error.unwrap().contains("every other tuesday"));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn lookahead_sends_near_occurrences_with_a_delay_and_leaves_far_ones(pool: PgPool) {
    let now = Utc::now();
    insert_tasks(&pool, "in45-", 3, Some(now + chrono::Duration::seconds(45))).await;
    insert_tasks(
        &pool,
        "in20m-",
        3,
        Some(now + chrono::Duration::minutes(20)),
    )
    .await;
    let queue = RecordingQueue::default();
    let summary = scan(&pool, &queue, &opts()).await.unwrap();
    assert_eq!(summary.enqueued, 3, "{summary:?}");
    let sent = queue.sent.lock().unwrap().clone();
    for out in &sent {
        let expected = (out.message.occurrence - now).to_std().unwrap();
        let diff = expected.abs_diff(out.delay);
        assert!(diff <= Duration::from_secs(1), "delay {:?}", out.delay);
        assert!(out.delay >= Duration::from_secs(43));
    }
    let far_leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE name LIKE 'in20m-%' AND lease_until IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(far_leased, 0);
}
