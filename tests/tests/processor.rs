//! The processor against real Postgres, real HTTP targets on loopback and
//! the SQS emulator (for retries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use sundial::config::Settings;
use sundial::message::DispatchMessage;
use sundial::process::{Disposition, Processor};
use sundial::queue::memory::MemoryQueue;
use sundial::queue::DispatchQueue;
use sundial::store::{self, ClaimOptions};
use sundial_e2e::{drain_queue, fresh_queue};
use sundial_target::{self as target_server, TargetConfig, TargetServer};
use sundial_testkit::TaskBuilder;

const SECRET: &str = "whsec_test_secret_1";

fn settings(allow: &str, concurrency: usize) -> Settings {
    let mut env = HashMap::new();
    env.insert("SUNDIAL_ALLOW_TARGETS".to_string(), allow.to_string());
    env.insert("SUNDIAL_SIGNING_SECRETS".to_string(), SECRET.to_string());
    env.insert("SUNDIAL_CONCURRENCY".to_string(), concurrency.to_string());
    env.insert("SUNDIAL_DEADLINE_MARGIN_MS".to_string(), "200".to_string());
    Settings::from_map(&env).unwrap()
}

fn processor(pool: &PgPool, allow: &str, retries: Arc<dyn DispatchQueue>) -> Processor {
    Processor::from_settings(pool.clone(), &settings(allow, 50), retries).unwrap()
}

async fn target() -> TargetServer {
    target_server::spawn(TargetConfig {
        secrets: vec![SECRET.into()],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::seconds(1)).unwrap()
}

/// Inserts a task due at `due` with the given URL and claims it, as the
/// scanner would; returns the message the scanner would send.
async fn due_task(
    pool: &PgPool,
    name: &str,
    url: &str,
    due: DateTime<Utc>,
    extra: &str,
) -> DispatchMessage {
    let mut task = TaskBuilder::new()
        .name(name)
        .schedule("rate(1 minute)")
        .url(url)
        .next_run_at(due)
        .timeout_ms(2000)
        .max_attempts(2)
        .retry_backoff_ms(100)
        .lease_until(Utc::now() + chrono::Duration::minutes(10));
    if !extra.is_empty() {
        task = task.catch_up(extra);
    }
    let task = task.insert(pool).await;
    DispatchMessage::new(task.id, due, task.version)
}

/// Was the task moved past `due` to its next minute boundary (once)?
fn assert_advanced(next: Option<DateTime<Utc>>, due: DateTime<Utc>, what: &str) {
    let next = next.unwrap_or_else(|| panic!("{what}: no next run"));
    assert!(next > due, "{what}: not advanced ({next})");
    assert_eq!(
        next.timestamp() % 60,
        0,
        "{what}: not on a minute boundary ({next})"
    );
    assert!(
        next <= Utc::now() + chrono::Duration::seconds(60),
        "{what}: advanced too far ({next})"
    );
}

async fn task_by_name(pool: &PgPool, name: &str) -> sundial::task::Task {
    store::get_task_by_name(pool, name).await.unwrap().unwrap()
}

async fn run_of(pool: &PgPool, name: &str) -> Option<(String, Option<i32>, i32)> {
    sqlx::query_as(
        "SELECT r.status, r.http_status, r.attempts FROM task_runs r JOIN tasks t ON t.id = r.task_id WHERE t.name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_mixed_batch_settles_each_message_correctly(pool: PgPool) {
    let server = target().await;
    let retry_queue = Arc::new(fresh_queue("mixed-retries").await);
    let processor = processor(&pool, "127.0.0.1/32", retry_queue.clone());
    let due = second(Utc::now());
    // A port where nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        ("ok", server.url("/ok")),
        ("err500", server.url("/status/500")),
        ("throttled", server.url("/retry-after/2")),
        ("hangs", server.url("/hang")),
        ("refused", format!("http://127.0.0.1:{closed}/")),
        ("missing", server.url("/status/404")),
    ];
    let mut batch = Vec::new();
    for (name, url) in &cases {
        let m = due_task(&pool, name, url, due, "").await;
        batch.push((name.to_string(), m.to_json()));
    }
    batch.push(("garbage".to_string(), "{not json".to_string()));

    let (dispositions, report) = processor.process_batch(batch, None).await;
    let by_id: HashMap<String, Disposition> = dispositions.into_iter().collect();
    // Only the unparseable message is handed back (so it reaches the DLQ).
    assert_eq!(by_id["garbage"], Disposition::Poison);
    for (name, _) in &cases {
        assert_eq!(by_id[*name], Disposition::Done, "{name}");
    }
    assert_eq!(report.invalid, 1);
    assert_eq!(report.fired, 6);
    assert_eq!(report.succeeded, 1);
    assert_eq!(report.failed, 1, "the 404");
    assert_eq!(
        report.retried, 4,
        "500, 429, timeout and connection refused"
    );

    // Final outcomes are recorded and move the schedule on.
    assert_eq!(
        run_of(&pool, "ok").await,
        Some(("succeeded".into(), Some(200), 1))
    );
    assert_eq!(
        run_of(&pool, "missing").await,
        Some(("failed".into(), Some(404), 1))
    );
    // Their next occurrence (a minute on, within the lookahead) is chained:
    // leased in the same write and queued by the processor.
    assert_eq!(report.chained, 2, "{report:?}");
    for name in ["ok", "missing"] {
        let t = task_by_name(&pool, name).await;
        assert_advanced(t.next_run_at, due, name);
        assert!(
            t.lease_until > t.next_run_at,
            "{name}: next occurrence leased"
        );
    }
    // Retryable ones: no run yet, the schedule waits, the lease is extended.
    for name in ["err500", "throttled", "hangs", "refused"] {
        assert_eq!(run_of(&pool, name).await, None, "{name}");
        let t = task_by_name(&pool, name).await;
        assert_eq!(t.next_run_at, Some(due), "{name}");
        assert!(
            t.lease_until.unwrap() > Utc::now() + chrono::Duration::minutes(4),
            "{name}"
        );
    }

    // The retries are on the SQS queue as attempt 2; Retry-After is honoured.
    let throttled_at = server
        .stats
        .records()
        .into_iter()
        .find(|r| r.path == "/retry-after/2")
        .unwrap()
        .received_at;
    // (The chained next occurrences of `ok` and `missing` share the queue:
    // they are attempt 1 and left out.)
    let mut retries = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while retries.len() < 4 && std::time::Instant::now() < deadline {
        for (d, at) in drain_queue(&retry_queue, 1, Duration::from_secs(2)).await {
            if DispatchMessage::parse(&d.body).unwrap().attempt > 1 {
                retries.push((d, at));
            }
        }
    }
    assert_eq!(retries.len(), 4);
    let mut redelivery = Vec::new();
    for (d, at) in &retries {
        let m = DispatchMessage::parse(&d.body).unwrap();
        assert_eq!(m.attempt, 2);
        let t = store::get_task(&pool, m.task_id).await.unwrap();
        if t.name == "throttled" {
            // The queue may deliver it early (delays are rounded down and
            // aimed a little early); its fire instant is what the processor
            // waits for.
            let _ = at;
            let fire_at = m.fire_at.expect("a retry carries its fire instant");
            assert!(
                fire_at - throttled_at >= chrono::Duration::milliseconds(1900),
                "Retry-After: 2 not honoured ({throttled_at} → {fire_at})"
            );
        }
        redelivery.push((t.name.clone(), d.body.clone()));
    }
    // Second and last attempt: exhausted retries record the failure and
    // the schedule still moves on. (All these targets are one host, so one
    // flow: the 429 holds the whole flow for its Retry-After first.)
    let backoff_over = throttled_at + chrono::Duration::milliseconds(2_300);
    if let Ok(wait) = (backoff_over - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let (dispositions, report) = processor.process_batch(redelivery, None).await;
    assert!(dispositions.iter().all(|(_, d)| *d == Disposition::Done));
    assert_eq!(report.retried, 0);
    assert_eq!(report.timed_out, 1);
    assert_eq!(report.failed, 3);
    assert_eq!(
        run_of(&pool, "err500").await,
        Some(("failed".into(), Some(500), 2))
    );
    assert_eq!(
        run_of(&pool, "throttled").await,
        Some(("failed".into(), Some(429), 2))
    );
    assert_eq!(
        run_of(&pool, "hangs").await,
        Some(("timed_out".into(), None, 2))
    );
    assert_eq!(
        run_of(&pool, "refused").await.map(|r| r.0),
        Some("failed".into())
    );
    for name in ["err500", "throttled", "hangs", "refused"] {
        let t = task_by_name(&pool, name).await;
        assert_advanced(t.next_run_at, due, name);
        // The next occurrence (within the lookahead) is chained: leased.
        assert!(t.lease_until > t.next_run_at, "{name}");
        assert_eq!(t.consecutive_failures, 1);
    }
    assert_eq!(server.stats.bad_signatures(), 0);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn hanging_targets_do_not_hold_back_fast_ones(pool: PgPool) {
    let server = target().await;
    let processor = processor(&pool, "127.0.0.1/32", Arc::new(MemoryQueue::default()));
    let due = second(Utc::now());
    let mut batch = Vec::new();
    for i in 0..200 {
        let path = if i % 20 == 0 {
            "/hang".to_string()
        } else {
            "/delay/20".to_string()
        };
        let m = due_task(&pool, &format!("t{i}"), &server.url(&path), due, "").await;
        batch.push((i, m.to_json()));
    }
    // One attempt only, so hanging ones end as timed out at once.
    sqlx::query("UPDATE tasks SET max_attempts = 1")
        .execute(&pool)
        .await
        .unwrap();
    let batch: Vec<(i32, String)> = batch
        .into_iter()
        .map(|(i, body)| {
            let mut m = DispatchMessage::parse(&body).unwrap();
            m.task_version += 1; // the UPDATE above bumped every version
            (i, m.to_json())
        })
        .collect();

    let started = std::time::Instant::now();
    let (_, report) = processor.process_batch(batch, None).await;
    let elapsed = started.elapsed();
    assert_eq!(report.succeeded, 190, "{report:?}");
    assert_eq!(report.timed_out, 10);
    assert!(
        elapsed < Duration::from_secs(4),
        "took {elapsed:?}, timeout is 2 s"
    );

    // Every fast call finished before the first timeout did.
    let (last_fast, first_timeout): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT max(finished_at) FILTER (WHERE status = 'succeeded'), \
                min(finished_at) FILTER (WHERE status = 'timed_out') FROM task_runs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(last_fast < first_timeout, "{last_fast} vs {first_timeout}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_duplicate_delivery_records_one_run_and_advances_once(pool: PgPool) {
    let server = target().await;
    let processor = Arc::new(processor(
        &pool,
        "127.0.0.1/32",
        Arc::new(MemoryQueue::default()),
    ));
    let due = second(Utc::now());
    let m = due_task(&pool, "dup", &server.url("/delay/300"), due, "").await;
    let m2 = due_task(&pool, "dup-seq", &server.url("/ok"), due, "").await;
    let m3 = due_task(&pool, "dup-two", &server.url("/delay/100"), due, "").await;

    // Two copies at once in one processor (two invocations of one Lambda
    // container, or two receives of one consumer): one fires, the other is
    // handed back for as long as the first may take.
    let a = {
        let (p, body) = (processor.clone(), m.to_json());
        tokio::spawn(async move { p.process_batch(vec![(1, body)], None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = {
        let (p, body) = (processor.clone(), m.to_json());
        tokio::spawn(async move { p.process_batch(vec![(2, body)], None).await })
    };
    let ((da, ra), (db, rb)) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((ra.fired, ra.duplicates), (1, 0), "{ra:?}");
    assert_eq!((rb.fired, rb.duplicates), (0, 1), "{rb:?}");
    assert!(matches!(da[..], [(1, Disposition::Done)]), "{da:?}");
    let [(2, Disposition::Retry { after })] = db[..] else {
        panic!("the copy is handed back: {db:?}");
    };
    assert!(after >= Duration::from_secs(5), "{after:?}");
    // When it comes again its twin is recorded: dropped.
    let (_, again) = processor.process_batch(vec![(5, m.to_json())], None).await;
    assert_eq!((again.fired, again.stale_dropped), (0, 1), "{again:?}");

    // Sequentially: the second sees the recorded run and drops.
    let (_, first) = processor.process_batch(vec![(3, m2.to_json())], None).await;
    let (_, second_delivery) = processor.process_batch(vec![(4, m2.to_json())], None).await;
    assert_eq!(first.succeeded, 1);
    assert_eq!(
        (second_delivery.fired, second_delivery.stale_dropped),
        (0, 1)
    );

    // Two copies at once in two processes: the first to claim the message
    // in `fire_claims` fires it, the other is handed back until that claim
    // expires; one run is recorded.
    let other = Arc::new(self::processor(
        &pool,
        "127.0.0.1/32",
        Arc::new(MemoryQueue::default()),
    ));
    let a = {
        let (p, body) = (processor.clone(), m3.to_json());
        tokio::spawn(async move { p.process_batch(vec![(6, body)], None).await })
    };
    let b = {
        let (p, body) = (other.clone(), m3.to_json());
        tokio::spawn(async move { p.process_batch(vec![(7, body)], None).await })
    };
    let ((da, ra), (db, rb)) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(ra.fired + rb.fired, 1, "one process fired: {ra:?} {rb:?}");
    assert_eq!(ra.duplicates + rb.duplicates, 1, "{ra:?} {rb:?}");
    let handed_back: Vec<Duration> = da
        .iter()
        .chain(db.iter())
        .filter_map(|(_, d)| match d {
            Disposition::Retry { after } => Some(*after),
            _ => None,
        })
        .collect();
    // For the claim's length: the timeout and the margin to record it.
    assert!(
        matches!(handed_back[..], [after] if after >= Duration::from_secs(5)),
        "{handed_back:?}"
    );
    // When the copy comes again the run is recorded: dropped.
    let (_, again) = other.process_batch(vec![(8, m3.to_json())], None).await;
    assert_eq!((again.fired, again.stale_dropped), (0, 1), "{again:?}");

    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 3, "one run per occurrence");
    for name in ["dup", "dup-seq", "dup-two"] {
        let t = task_by_name(&pool, name).await;
        assert_advanced(t.next_run_at, due, name);
    }
    let keys = |path: &str| -> Vec<Option<String>> {
        server
            .stats
            .records()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.idempotency_key)
            .collect()
    };
    assert_eq!(keys("/delay/300"), vec![Some(m.idempotency_key())]);
    assert_eq!(keys("/delay/100"), vec![Some(m3.idempotency_key())]);
    assert_eq!(server.stats.bad_signatures(), 0);
}

/// A copy flow control moved (held by its flow or re-paced, sent again
/// with a later `fire_at`) is the same attempt as the message it came
/// from: while a twin SQS handed to another processor is firing, it is
/// handed back, not fired a second time.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_moved_copy_of_a_message_firing_elsewhere_is_handed_back(pool: PgPool) {
    let server = target().await;
    let queue = || Arc::new(MemoryQueue::default());
    let one = Arc::new(processor(&pool, "127.0.0.1/32", queue()));
    let two = processor(&pool, "127.0.0.1/32", queue());
    let due = second(Utc::now());
    let m = due_task(&pool, "moved", &server.url("/delay/300"), due, "").await;
    let firing = {
        let (p, body) = (one.clone(), m.to_json());
        tokio::spawn(async move { p.process_batch(vec![(1, body)], None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let moved = m.held_until(Utc::now()).slot_on_arrival();
    let (d, report) = two.process_batch(vec![(2, moved.to_json())], None).await;
    assert_eq!((report.fired, report.duplicates), (0, 1), "{report:?}");
    let [(2, Disposition::Retry { after })] = d[..] else {
        panic!("the moved copy is handed back: {d:?}");
    };
    assert!(after >= Duration::from_secs(1), "{after:?}");
    let (_, first) = firing.await.unwrap();
    assert_eq!(first.succeeded, 1, "{first:?}");
    // When it comes again its twin is recorded: dropped.
    let (_, again) = two.process_batch(vec![(3, moved.to_json())], None).await;
    assert_eq!((again.fired, again.stale_dropped), (0, 1), "{again:?}");
    assert_eq!(server.stats.requests(), 1);
    let run = run_of(&pool, "moved")
        .await
        .map(|(status, _, attempts)| (status, attempts));
    assert_eq!(run, Some(("succeeded".to_string(), 1)));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_message_for_an_edited_task_is_dropped(pool: PgPool) {
    let server = target().await;
    let processor = processor(&pool, "127.0.0.1/32", Arc::new(MemoryQueue::default()));
    let due = second(Utc::now());
    let m = due_task(&pool, "edited", &server.url("/ok"), due, "").await;
    sqlx::query("UPDATE tasks SET timeout_ms = 5000 WHERE name = 'edited'")
        .execute(&pool)
        .await
        .unwrap();
    let (d, report) = processor.process_batch(vec![(1, m.to_json())], None).await;
    assert_eq!(d[0].1, Disposition::Done);
    assert_eq!((report.stale_dropped, report.fired), (1, 0));
    assert_eq!(server.stats.requests(), 0);
    assert_eq!(run_of(&pool, "edited").await, None);
    // Its lease is released so the current version is dispatched at once.
    let claimed = store::claim_due(
        &pool,
        Utc::now(),
        &ClaimOptions {
            lookahead: chrono::Duration::seconds(60),
            limit: 10,
            lease: chrono::Duration::seconds(60),
            owner: "t".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].version, m.task_version + 1);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn private_targets_are_refused_unless_allowed(pool: PgPool) {
    let server = target().await;
    let due = second(Utc::now());
    let local = due_task(&pool, "local", &server.url("/ok"), due, "").await;
    let metadata = due_task(
        &pool,
        "metadata",
        "http://169.254.169.254/latest/meta-data/",
        due,
        "",
    )
    .await;

    // No allow-list: loopback is refused, nothing reaches the server.
    let strict = processor(&pool, "", Arc::new(MemoryQueue::default()));
    let (_, report) = strict.process_batch(vec![(1, local.to_json())], None).await;
    assert_eq!(report.failed, 1);
    assert_eq!(server.stats.requests(), 0);
    let (status, _, _) = run_of(&pool, "local").await.unwrap();
    assert_eq!(status, "failed");

    // Loopback allowed: the metadata address is still refused.
    let open = processor(&pool, "127.0.0.1/32", Arc::new(MemoryQueue::default()));
    let (_, report) = open
        .process_batch(vec![(2, metadata.to_json())], None)
        .await;
    assert_eq!(report.failed, 1);
    let error: Option<String> = sqlx::query_scalar(
        "SELECT r.error FROM task_runs r JOIN tasks t ON t.id = r.task_id WHERE t.name = 'metadata'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(error.unwrap_or_default().contains("169.254.169.254"));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_deadline_guard_hands_back_unstarted_messages(pool: PgPool) {
    let server = target().await;
    let mut s = settings("127.0.0.1/32", 2);
    s.per_host_concurrency = 2;
    let processor =
        Processor::from_settings(pool.clone(), &s, Arc::new(MemoryQueue::default())).unwrap();
    let due = second(Utc::now());
    let mut batch = Vec::new();
    for i in 0..10 {
        let m = due_task(
            &pool,
            &format!("slow{i}"),
            &server.url("/delay/500"),
            due,
            "",
        )
        .await;
        batch.push((i, m.to_json()));
    }
    // Two at a time, 0.5 s each: 10 need 2.5 s; the invocation has ~2.2 s
    // (200 ms margin, and nothing starts with less than 1 s left).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2200);
    let (dispositions, report) = processor.process_batch(batch.clone(), Some(deadline)).await;
    let handed_back: Vec<i32> = dispositions
        .iter()
        .filter(|(_, d)| *d == Disposition::HAND_BACK)
        .map(|(i, _)| *i)
        .collect();
    assert!(report.not_started > 0, "{report:?}");
    assert_eq!(handed_back.len() as u64, report.not_started);
    assert_eq!(report.succeeded + report.not_started, 10);
    assert!(tokio::time::Instant::now() <= deadline);

    // Redelivered, they are processed.
    let again: Vec<(i32, String)> = batch
        .into_iter()
        .filter(|(i, _)| handed_back.contains(i))
        .collect();
    let (_, report) = processor.process_batch(again, None).await;
    assert_eq!(report.succeeded as usize, handed_back.len());
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs WHERE status = 'succeeded'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 10);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn catch_up_none_skips_a_late_occurrence(pool: PgPool) {
    let server = target().await;
    let processor = processor(&pool, "127.0.0.1/32", Arc::new(MemoryQueue::default()));
    let late = second(Utc::now()) - chrono::Duration::minutes(10);
    let m = due_task(&pool, "late", &server.url("/ok"), late, "none").await;
    let (_, report) = processor.process_batch(vec![(1, m.to_json())], None).await;
    assert_eq!((report.skipped, report.fired), (1, 0));
    assert_eq!(
        run_of(&pool, "late").await.map(|r| r.0),
        Some("skipped".into())
    );
    let t = task_by_name(&pool, "late").await;
    assert!(t.next_run_at.unwrap() > Utc::now());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn https_targets_are_trusted_through_the_extra_ca_and_bad_certificates_fail_once(
    pool: PgPool,
) {
    use sundial_target::tls::{Alpn, TestCa};
    // GIVEN two HTTPS targets: one with a certificate from the CA named in
    // SUNDIAL_EXTRA_CA_FILE, one from a CA nobody trusts.
    let trusted_ca = TestCa::generate().unwrap();
    let rogue_ca = TestCa::generate().unwrap();
    let https = |ca: &TestCa| TargetConfig {
        secrets: vec![SECRET.into()],
        tls: Some(ca.server_config(Alpn::Http2).unwrap()),
        ..Default::default()
    };
    let good = target_server::spawn(https(&trusted_ca)).await.unwrap();
    let rogue = target_server::spawn(https(&rogue_ca)).await.unwrap();
    let ca_file = std::env::temp_dir().join(format!("sundial-e2e-ca-{}.pem", std::process::id()));
    trusted_ca.write_pem(&ca_file).unwrap();
    let mut env = HashMap::new();
    env.insert(
        "SUNDIAL_ALLOW_TARGETS".to_string(),
        "127.0.0.1/32".to_string(),
    );
    env.insert("SUNDIAL_SIGNING_SECRETS".to_string(), SECRET.to_string());
    env.insert(
        "SUNDIAL_EXTRA_CA_FILE".to_string(),
        ca_file.display().to_string(),
    );
    let settings = Settings::from_map(&env).unwrap();
    let retries = Arc::new(MemoryQueue::default());
    let processor = Processor::from_settings(pool.clone(), &settings, retries).unwrap();
    let due = second(Utc::now());
    let ok = due_task(&pool, "tls-ok", &good.url("/ok"), due, "").await;
    let bad = due_task(&pool, "tls-bad", &rogue.url("/ok"), due, "").await;

    // WHEN both are fired
    let batch = vec![("ok", ok.to_json()), ("bad", bad.to_json())];
    let (_, report) = processor.process_batch(batch, None).await;

    // THEN the trusted one succeeded over HTTP/2 with a valid signature
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(
        run_of(&pool, "tls-ok").await,
        Some(("succeeded".into(), Some(200), 1))
    );
    let record = &good.stats.records()[0];
    assert_eq!(record.version, axum::http::Version::HTTP_2);
    assert_eq!(record.signature_valid, Some(true));
    // and the other failed at once, not retried, with the reason recorded.
    assert_eq!(report.retried, 0, "{report:?}");
    assert_eq!(
        run_of(&pool, "tls-bad").await,
        Some(("failed".into(), None, 1))
    );
    let (error,): (Option<String>,) = sqlx::query_as(
        "SELECT r.error FROM task_runs r JOIN tasks t ON t.id = r.task_id WHERE t.name = 'tls-bad'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let error = error.unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
    assert_advanced(
        task_by_name(&pool, "tls-bad").await.next_run_at,
        due,
        "tls-bad",
    );
    assert_eq!(rogue.stats.requests(), 0);
}
