//! The deployed shape, end to end: `sundial scan --loop --every 60` (the
//! scanner Lambda's tick at EventBridge's one-minute cadence), the real
//! `aws-sdk-sqs` against the SQS emulator, and `sundial process` (the
//! long-polling consumer with a 20 s wait) firing at a local target.
//!
//! These are the promises of the README that only hold if they hold here:
//! never early, on the second, sub-minute schedules at full rate, and
//! drivers that outlive a database outage.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use sundial_e2e::deployment::{occurrence_of, sigterm as stop};
use sundial_e2e::{driver_env, fresh_queue, workspace_bin, Child, PgProxy};
use sundial_target::{self as target_server, TargetConfig};
use sundial_testkit::{database_url_for, TaskBuilder};

fn env_for(database_url: &str, queue_url: &str) -> Vec<(String, String)> {
    let mut env = driver_env(database_url, queue_url);
    env.push(("RUST_LOG".into(), "info".into()));
    env
}

/// Sleeps until the next instant whose fractional second is `frac`.
async fn until_fraction(frac: f64) {
    let now = Utc::now();
    let into = now.timestamp_subsec_millis() as f64 / 1000.0;
    let wait = if into < frac {
        frac - into
    } else {
        1.0 - into + frac
    };
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

async fn task_id(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM tasks WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn runs_of(pool: &PgPool, id: i64) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT scheduled_for FROM task_runs WHERE task_id = $1 AND status = 'succeeded' \
         ORDER BY scheduled_for",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until `n` runs succeeded (or `timeout` passed).
async fn wait_for_runs(pool: &PgPool, n: i64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let runs: i64 =
            sqlx::query_scalar("SELECT count(*) FROM task_runs WHERE status = 'succeeded'")
                .fetch_one(pool)
                .await
                .unwrap();
        if runs >= n || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The driver is still running (it did not exit during an outage).
fn assert_running(child: &mut Child, what: &str) {
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "{what} exited during the outage:\n{}",
        child.stderr_lines().join("\n")
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_lambda_path_fires_on_the_second_never_early_and_sub_minute_at_full_rate(pool: PgPool) {
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("deployed").await;
    let env = env_for(&database_url_for(&pool), queue.queue_url());

    // GIVEN 120 one-shot tasks due on whole seconds over the next
    // 50 s, and two `rate(10 seconds)` tasks, `forbid` and `allow`.
    let base = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap()
        + chrono::Duration::seconds(4);
    TaskBuilder::new()
        .name("second-")
        .url(server.url("/ok"))
        .timeout_ms(5000)
        .each(move |g, task| {
            // One-shots: an occurrence of a recurring schedule could come
            // due again inside the window and be counted.
            let at = base + chrono::Duration::seconds(g % 50);
            task.schedule(format!("at({})", at.format("%Y-%m-%dT%H:%M:%S")))
                .next_run_at(at)
        })
        .insert_many(&pool, 120)
        .await;
    for overlap in ["forbid", "allow"] {
        TaskBuilder::new()
            .name(format!("ten-{overlap}"))
            .schedule("rate(10 seconds)")
            .url(server.url("/ok"))
            .overlap(overlap)
            .timeout_ms(5000)
            .insert(&pool)
            .await;
    }

    // WHEN the consumer runs and the scanner ticks once a minute, first at
    // a fractional second (x.55).
    let sundial = workspace_bin("sundial");
    let process = Child::spawn(&sundial, &["process", "--wait", "20"], &env);
    until_fraction(0.55).await;
    let started = Utc::now();
    let scanner = Child::spawn(&sundial, &["scan", "--loop", "--every", "60"], &env);
    tokio::time::sleep(Duration::from_secs(135)).await;
    let ended = Utc::now();
    stop(&scanner);
    stop(&process);

    // THEN no request came before its occurrence, and every one came.
    let records = server.stats.records();
    let mut early = Vec::new();
    let mut per_occurrence: HashMap<(i64, DateTime<Utc>), usize> = HashMap::new();
    for r in &records {
        let Some((id, at)) = occurrence_of(r) else {
            panic!("request without an idempotency key: {r:?}");
        };
        if r.received_at < at {
            early.push((id, at, (at - r.received_at).num_milliseconds()));
        }
        *per_occurrence.entry((id, at)).or_default() += 1;
    }
    assert!(
        early.is_empty(),
        "fired early (task, occurrence, ms): {early:?}"
    );

    let seconds: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, $1 + ((substring(name from 8)::int) % 50) * interval '1 second' \
         FROM tasks WHERE name LIKE 'second-%'",
    )
    .bind(base)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(seconds.len(), 120);
    let mut lags = Vec::new();
    for occ in &seconds {
        assert_eq!(per_occurrence.get(occ), Some(&1), "{occ:?} fired once");
        let at = records
            .iter()
            .find(|r| occurrence_of(r).as_ref() == Some(occ))
            .map(|r| r.received_at);
        if let Some(at) = at {
            lags.push((at - occ.1).num_milliseconds());
        }
    }
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE t.name LIKE 'second-%' AND r.status = 'succeeded'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 120);
    lags.sort_unstable();
    eprintln!(
        "lag of 120 whole-second occurrences: p50 {} ms, max {} ms",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );

    // AND both sub-minute tasks fired every occurrence of the window
    // (from the first after the first tick to the last that had time to
    // finish), each recorded once.
    for name in ["ten-forbid", "ten-allow"] {
        let id = task_id(&pool, name).await;
        let runs = runs_of(&pool, id).await;
        let distinct: HashSet<_> = runs.iter().collect();
        assert_eq!(distinct.len(), runs.len(), "{name}: recorded twice");
        let first = started
            .duration_trunc(chrono::Duration::seconds(10))
            .unwrap()
            + chrono::Duration::seconds(10);
        let last_due = ended - chrono::Duration::seconds(3);
        let expected: Vec<DateTime<Utc>> = (0..)
            .map(|k| first + chrono::Duration::seconds(10 * k))
            .take_while(|t| *t <= last_due)
            .collect();
        assert!(expected.len() >= 12, "{name}: window too short");
        let missing: Vec<_> = expected.iter().filter(|t| !distinct.contains(t)).collect();
        assert!(
            missing.is_empty(),
            "{name}: {} of {} occurrences missing: {missing:?}\nrecorded: {runs:?}",
            missing.len(),
            expected.len()
        );
        for occ in &expected {
            let fired = per_occurrence.get(&(id, *occ)).copied().unwrap_or(0);
            // A copy of a message the queue delivers twice (SQS is
            // at-least-once; the emulator hands one message to two
            // receivers now and then) waits while its twin is fired and is
            // dropped once the twin is recorded, `allow` or not.
            assert_eq!(fired, 1, "{name} {occ} fired once");
        }
    }

    // AND the 20 s long poll never timed out on the client side.
    let stderr = process.stderr_lines().join("\n");
    assert!(
        !stderr.contains("receive failed"),
        "the consumer's receives failed:\n{stderr}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn scan_loop_and_process_outlive_a_database_outage(pool: PgPool) {
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("outage").await;
    // The drivers reach Postgres through a proxy the test can cut: every
    // connection is dropped and new ones are refused, as when Postgres stops.
    let proxy = PgProxy::start(&database_url_for(&pool)).await;
    let mut env = env_for(&proxy.database_url(), queue.queue_url());
    env.push(("SUNDIAL_LOOKAHEAD_SECS".into(), "5".into()));
    let sundial = workspace_bin("sundial");
    let process = Child::spawn(&sundial, &["process", "--wait", "20"], &env);
    let scanner = Child::spawn(&sundial, &["scan", "--loop", "--every", "2"], &env);

    let now = Utc::now();
    // Due before, during and after the outage; plus a sub-minute task.
    TaskBuilder::new()
        .name("steady-")
        .url(server.url("/ok"))
        .next_run_at(now)
        .spread(chrono::Duration::seconds(1))
        .timeout_ms(3000)
        .insert_many(&pool, 25)
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    proxy.cut();
    let outage_from = Utc::now();
    // Inserted while the drivers cannot see the database.
    TaskBuilder::new()
        .name("during-")
        .url(server.url("/ok"))
        .next_run_at(outage_from)
        .spread(chrono::Duration::seconds(1))
        .timeout_ms(3000)
        .insert_many(&pool, 10)
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut process = process;
    let mut scanner = scanner;
    assert_running(&mut process, "process");
    assert_running(&mut scanner, "scan --loop");
    proxy.restore();
    let outage_to = Utc::now();

    // THEN every occurrence fires once after the database returns.
    wait_for_runs(&pool, 35, Duration::from_secs(60)).await;
    stop(&scanner);
    stop(&process);
    let runs: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT t.name, r.fired_at FROM task_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.status = 'succeeded'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: HashSet<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(runs.len(), 35, "every occurrence recorded once: {runs:?}");
    assert_eq!(names.len(), 35);
    // At least once at the target: a request in flight when the database
    // went away could not be recorded, so it was fired again afterwards
    // (with the same Idempotency-Key).
    let keys: HashSet<String> = server
        .stats
        .records()
        .into_iter()
        .filter_map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 35);
    eprintln!(
        "requests {} for 35 occurrences (repeats carry the same key)",
        server.stats.requests()
    );
    let after = runs.iter().filter(|(_, at)| *at >= outage_to).count();
    assert!(
        after >= 10,
        "occurrences due in the outage fired after it: {after}"
    );
    let during_outage = runs
        .iter()
        .filter(|(_, at)| *at > outage_from && *at < outage_to)
        .count();
    eprintln!("fired while the database was away: {during_outage} (nothing to record them in)");
    // Both said what happened and went on.
    let scan_err = scanner.stderr_lines().join("\n");
    assert!(scan_err.contains("scan failed; retrying"), "{scan_err}");
}

/// A 100 ms backoff through SQS (whose delays are whole seconds): the
/// retry arrives at once and is held until its time; never fired early.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_sub_second_retry_backoff_is_honoured_on_sqs(pool: PgPool) {
    use std::sync::Arc;
    use sundial::message::DispatchMessage;
    use sundial::process::Processor;
    use sundial_e2e::drain_queue;

    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("backoff").await;
    let mut settings_env = HashMap::new();
    settings_env.insert(
        "SUNDIAL_ALLOW_TARGETS".to_string(),
        "127.0.0.1/32".to_string(),
    );
    let settings = sundial::config::Settings::from_map(&settings_env).unwrap();
    let processor =
        Processor::from_settings(pool.clone(), &settings, Arc::new(queue.clone())).unwrap();
    let due = Utc::now()
        .duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap();
    let mut held = 0;
    for round in 0..5 {
        let task = TaskBuilder::new()
            .name(format!("flaky-{round}"))
            .url(server.url("/flaky/1"))
            .next_run_at(due)
            .retry_backoff_ms(100)
            .max_attempts(3)
            .lease_until(Utc::now() + chrono::Duration::minutes(5))
            .insert(&pool)
            .await;
        let (id, version) = (task.id, task.version);
        let first = DispatchMessage::new(id, due, version);
        let (_, report) = processor
            .process_batch(vec![(0, first.to_json())], None)
            .await;
        assert_eq!(report.retried, 1, "{report:?}");
        let got = drain_queue(&queue, 1, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1);
        let retry = DispatchMessage::parse(&got[0].0.body).unwrap();
        let fire_at = retry.fire_at.expect("a retry carries its fire time");
        let (_, report) = processor
            .process_batch(vec![(1, retry.to_json())], None)
            .await;
        assert_eq!(report.succeeded, 1, "{report:?}");
        held += report.held;
        let second = server
            .stats
            .records()
            .into_iter()
            .filter(|r| r.idempotency_key.as_deref() == Some(first.idempotency_key().as_str()))
            .nth(1)
            .expect("second attempt");
        assert!(
            second.received_at >= fire_at,
            "attempt 2 fired {} ms before its backoff ended",
            (fire_at - second.received_at).num_milliseconds()
        );
        assert!(
            second.received_at - fire_at < chrono::Duration::milliseconds(500),
            "attempt 2 came {} ms after its backoff",
            (second.received_at - fire_at).num_milliseconds()
        );
    }
    // SQS could only deliver at once (DelaySeconds 0): most retries were
    // held by the processor until their instant.
    assert!(held >= 1, "no retry was held");
}

/// The same promise with Postgres itself stopped (`pg_ctl stop -m fast`:
/// every connection terminated by the server) for 12 s, on a private
/// cluster so the shared test server is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_loop_and_process_outlive_a_postgres_stop() {
    use sundial_e2e::pg_cluster::PgCluster;
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE sundial")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = cluster.url("sundial");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    sundial::store::migrate(&pool).await.unwrap();

    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("pg-stop").await;
    let mut env = env_for(&url, queue.queue_url());
    // Claim late, so occurrences due during the outage are still in the
    // database when it stops.
    env.push(("SUNDIAL_LOOKAHEAD_SECS".into(), "1".into()));
    let sundial = workspace_bin("sundial");
    let mut process = Child::spawn(&sundial, &["process", "--wait", "20"], &env);
    let mut scanner = Child::spawn(&sundial, &["scan", "--loop", "--every", "2"], &env);

    // GIVEN occurrences due before the stop and during it.
    let now = Utc::now();
    TaskBuilder::new()
        .name("before-")
        .url(server.url("/ok"))
        .next_run_at(now)
        .spread(chrono::Duration::milliseconds(200))
        .timeout_ms(3000)
        .insert_many(&pool, 10)
        .await;
    TaskBuilder::new()
        .name("during-")
        .url(server.url("/ok"))
        .next_run_at(now + chrono::Duration::seconds(8))
        .spread(chrono::Duration::seconds(1))
        .timeout_ms(3000)
        .insert_many(&pool, 8)
        .await;
    pool.close().await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // WHEN Postgres stops for 12 s
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    // A scan up to the moment the server shut down (which `pg_ctl stop`
    // may take a while to reach on a loaded machine) claimed what was due
    // within its lookahead; those fire on time from SQS, Postgres or not.
    // What was due later cannot have been claimed before the stop.
    let stopped_at = Utc::now() + chrono::Duration::seconds(1);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_running(&mut process, "process");
    assert_running(&mut scanner, "scan --loop");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again();
        cluster
    })
    .await
    .unwrap();
    let restarted_at = Utc::now();

    // THEN both stayed up, and every occurrence is recorded once, those due
    // in the outage after it.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wait_for_runs(&pool, 18, Duration::from_secs(60)).await;
    stop(&scanner);
    stop(&process);
    let runs: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT t.name, r.scheduled_for, r.fired_at FROM task_runs r \
         JOIN tasks t ON t.id = r.task_id WHERE r.status = 'succeeded'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: HashSet<&str> = runs.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(runs.len(), 18, "every occurrence recorded once: {runs:?}");
    assert_eq!(names.len(), 18);
    for (name, due, fired) in &runs {
        assert!(fired >= due, "{name} fired early");
        if *due > stopped_at && *due < restarted_at {
            assert!(
                *fired >= restarted_at,
                "{name} fired while Postgres was down"
            );
        }
    }
    let due_in_outage = runs
        .iter()
        .filter(|(_, due, _)| *due > stopped_at && *due < restarted_at)
        .count();
    assert!(
        due_in_outage >= 5,
        "{due_in_outage} occurrences were due in the outage"
    );
    let scan_err = scanner.stderr_lines().join("\n");
    assert!(scan_err.contains("scan failed; retrying"), "{scan_err}");
    pool.close().await;
    drop(cluster);
}
