//! Scanner → SQS emulator → long-running consumer (`sundial process`) →
//! HTTP targets → Postgres, end to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use sundial::config::Settings;
use sundial::process::Processor;
use sundial::scan::{scan, ScanOptions};
use sundial::worker::{run_worker, SqsInbox, WorkerOptions};
use sundial_e2e::fresh_queue;
use sundial_target::{self as target_server, TargetConfig};
use sundial_testkit::TaskBuilder;
use tokio::sync::watch;

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn scanned_occurrences_are_fired_once_and_deleted_from_the_queue(pool: PgPool) {
    let server = target_server::spawn(TargetConfig {
        secrets: vec!["s3cret".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = fresh_queue("consume").await;
    // 40 tasks: 30 answer, 10 fail with 404 (recorded, not retried), due now
    // and in 3 seconds.
    let now = Utc::now();
    TaskBuilder::new()
        .name("ok-")
        .url(server.url("/delay/20"))
        .each(move |g, task| task.next_run_at(now + chrono::Duration::seconds(3 * (g % 2))))
        .insert_many(&pool, 30)
        .await;
    TaskBuilder::new()
        .name("gone-")
        .url(server.url("/status/404"))
        .next_run_at(now)
        .insert_many(&pool, 10)
        .await;
    let summary = scan(
        &pool,
        &queue,
        &ScanOptions {
            lookahead: Duration::from_secs(60),
            page_size: 100,
            lease: Duration::from_secs(300),
            budget: Duration::from_secs(30),
            owner: "test".into(),
            retention_days: 30,
            notifier: None,
            missed_grace: Duration::from_secs(120),
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.enqueued, 40);

    let mut env = HashMap::new();
    env.insert(
        "SUNDIAL_ALLOW_TARGETS".to_string(),
        "127.0.0.1/32".to_string(),
    );
    env.insert("SUNDIAL_SIGNING_SECRETS".to_string(), "s3cret".to_string());
    let settings = Settings::from_map(&env).unwrap();
    let processor =
        Processor::from_settings(pool.clone(), &settings, Arc::new(queue.clone())).unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let inbox = Arc::new(SqsInbox::new(
                queue,
                Duration::from_secs(1),
                Some(Duration::from_secs(30)),
            ));
            let opts = WorkerOptions {
                max_outstanding: 100,
                deadline: None,
            };
            run_worker(&processor, inbox, &opts, stop_rx).await
        })
    };
    // Wait until every occurrence is recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
            .fetch_one(&pool)
            .await
            .unwrap();
        if runs == 40 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_tx.send(true).unwrap();
    let report = consumer.await.unwrap();
    assert_eq!(report.succeeded, 30, "{report:?}");
    assert_eq!(report.failed, 10);
    assert_eq!(report.retried, 0);
    assert_eq!(server.stats.bad_signatures(), 0);

    let (succeeded, failed, leased): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM task_runs WHERE status = 'succeeded'), \
                (SELECT count(*) FROM task_runs WHERE status = 'failed'), \
                (SELECT count(*) FROM tasks WHERE lease_until IS NOT NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((succeeded, failed, leased), (30, 10, 0));

    // Successes were deleted: nothing comes back after the visibility timeout.
    let attrs = queue.attributes().await.unwrap();
    let visible: i64 = attrs["ApproximateNumberOfMessages"].parse().unwrap();
    let invisible: i64 = attrs["ApproximateNumberOfMessagesNotVisible"]
        .parse()
        .unwrap();
    assert_eq!((visible, invisible), (0, 0), "{attrs:?}");
}

/// `sundial scan --once` and `sundial process` as an operator runs them
/// outside Lambda.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn scan_and_process_commands_work_end_to_end(pool: PgPool) {
    use sundial_e2e::{workspace_bin, Child};
    use sundial_testkit::database_url_for;
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("cli").await;
    // As plain SQL registers them: next_run_at left NULL.
    TaskBuilder::new()
        .name("cli-")
        .url(server.url("/ok"))
        .insert_many(&pool, 5)
        .await;
    // The SQL-inserted rows are due at the schedule's next boundary: bring
    // them forward.
    let env = sundial_e2e::driver_env(&database_url_for(&pool), queue.queue_url());
    let bin = workspace_bin("sundial");
    let mut first = Child::spawn(&bin, &["scan", "--once"], &env);
    assert!(
        first.child.wait().await.unwrap().success(),
        "{:?}",
        first.stderr_lines()
    );
    sqlx::query("UPDATE tasks SET next_run_at = date_trunc('second', now())")
        .execute(&pool)
        .await
        .unwrap();
    let mut scan = Child::spawn(&bin, &["scan", "--once", "--emf"], &env);
    assert!(
        scan.child.wait().await.unwrap().success(),
        "{:?}",
        scan.stderr_lines()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let emf: serde_json::Value = scan
        .stdout_lines()
        .iter()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("an EMF line");
    assert_eq!(emf["Enqueued"], 5.0);

    let mut process = Child::spawn(&bin, &["process", "--wait", "1"], &env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs: i64 =
            sqlx::query_scalar("SELECT count(*) FROM task_runs WHERE status = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if runs == 5 || tokio::time::Instant::now() > deadline {
            assert_eq!(runs, 5, "{:?}", process.stderr_lines());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGTERM: the consumer finishes and exits cleanly.
    let pid = process.child.id().unwrap() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(25), process.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success());
    assert!(process
        .stderr_lines()
        .iter()
        .any(|l| l.contains("fired 5 succeeded 5")));
}

/// A message the processor hands back (here: the database is away) comes
/// back within seconds, not after the queue's visibility timeout, and
/// fires once the database is back.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn handed_back_messages_return_in_seconds_not_after_the_visibility_timeout(pool: PgPool) {
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("handback").await;
    let proxy = sundial_e2e::PgProxy::start(&sundial_testkit::database_url_for(&pool)).await;
    let lazy = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&proxy.database_url())
        .unwrap();
    let task = TaskBuilder::new()
        .name("back")
        .url(server.url("/ok"))
        .next_run_at(Utc::now())
        .lease_until(Utc::now() + chrono::Duration::minutes(5))
        .insert(&pool)
        .await;
    let (id, version, due) = (task.id, task.version, task.next_run_at.unwrap());
    let message = sundial::message::DispatchMessage::new(id, due, version);
    let sent = sundial::queue::DispatchQueue::send(
        &queue,
        &[sundial::queue::Outgoing {
            message,
            delay: Duration::ZERO,
        }],
    )
    .await;
    assert!(sent.failed.is_empty());

    let mut env = HashMap::new();
    env.insert(
        "SUNDIAL_ALLOW_TARGETS".to_string(),
        "127.0.0.1/32".to_string(),
    );
    let settings = Settings::from_map(&env).unwrap();
    let processor = Processor::from_settings(lazy, &settings, Arc::new(queue.clone())).unwrap();
    proxy.cut();
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = {
        let queue = queue.clone();
        tokio::spawn(async move {
            // A 30 s visibility timeout: without the early hand-back, the
            // message would not be seen again within this test's window.
            let inbox = Arc::new(SqsInbox::new(
                queue,
                Duration::from_secs(1),
                Some(Duration::from_secs(30)),
            ));
            run_worker(&processor, inbox, &WorkerOptions::default(), stop_rx).await
        })
    };
    tokio::time::sleep(Duration::from_secs(9)).await;
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.stats.requests() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let report = worker.await.unwrap();
    assert!(
        report.write_failures >= 2,
        "handed back and received again within 9 s: {report:?}"
    );
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(server.stats.requests(), 1);
}
