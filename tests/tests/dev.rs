//! `sundial dev` end to end: the built binary as a process against a fresh
//! database and real HTTP targets on loopback, plus the in-process memory
//! consumer's redelivery and shutdown hand-back.
//!
//! The process tests need the `sundial` binary next to this test
//! executable: `cargo test --workspace` (or `make test`) builds it; with
//! `cargo test -p sundial-e2e` alone, run `cargo build -p sundial-cli`
//! first. `SUNDIAL_BIN` overrides the path.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use sundial::config::Settings;
use sundial::dev::{consume_memory, MemoryConsumeOptions};
use sundial::message::DispatchMessage;
use sundial::process::Processor;
use sundial::queue::memory::MemoryQueue;
use sundial::queue::{DispatchQueue, Outgoing, SendReport};
use sundial::scan::{scan, ScanOptions};
use sundial_target::{self as target_server, TargetConfig, TargetServer};
use sundial_testkit::{database_url_for, TaskBuilder};
use tokio::sync::watch;

const TOKEN: &str = "dev-e2e-token-0123456789";

// ---------------------------------------------------------------- helpers

/// The `sundial` binary: `SUNDIAL_BIN`, or next to this test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/sundial`).
fn sundial_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SUNDIAL_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("sundial"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sundial-cli` \
         (`cargo test --workspace` and `make test` do), or set SUNDIAL_BIN",
        bin.display()
    );
    bin
}

/// A running `sundial dev` whose output lines (stdout and stderr) are kept.
struct DevProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    admin_url: String,
}

impl DevProcess {
    /// Starts `sundial dev --port 0` with `args` and waits for the admin
    /// API's address.
    fn start(database_url: &str, env: &[(&str, &str)], args: &[&str]) -> DevProcess {
        let mut cmd = Command::new(sundial_bin());
        cmd.arg("dev").args(["--port", "0"]).args(args);
        // Only the settings the test chooses (no SQS queue from the shell).
        for (name, _) in std::env::vars() {
            if name.starts_with("SUNDIAL_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("DATABASE_URL", database_url)
            .env("SUNDIAL_ADMIN_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,sqlx=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sundial dev");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for reader in readers {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut dev = DevProcess {
            child,
            lines,
            admin_url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while dev.admin_url.is_empty() {
            if let Some(url) = dev
                .lines()
                .iter()
                .find_map(|l| l.strip_prefix("admin API listening on "))
            {
                dev.admin_url = url.trim().to_string();
            } else if let Ok(Some(status)) = dev.child.try_wait() {
                panic!("sundial dev exited with {status}:\n{}", dev.log());
            } else if Instant::now() > deadline {
                panic!("sundial dev did not start in 20 s:\n{}", dev.log());
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        dev
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        self.lines().join("\n")
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit; `None` if it is still running after
    /// `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then a clean exit within `limit`.
    async fn stop(&mut self, limit: Duration) -> Duration {
        let asked = Instant::now();
        self.sigterm();
        let status = self.wait_exit(limit).await;
        let took = asked.elapsed();
        eprintln!("sundial dev stopped {took:?} after SIGTERM");
        match status {
            Some(s) if s.success() => took,
            Some(s) => panic!("sundial dev exited with {s}:\n{}", self.log()),
            None => panic!(
                "sundial dev still running {limit:?} after SIGTERM:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn target() -> TargetServer {
    target_server::spawn(TargetConfig::default()).await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn leased(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE lease_until IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it returns true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ------------------------------------------------------- the process tests

/// GIVEN `sundial dev` and a task registered through its API with a
/// 6-field cron firing every 2 seconds, WHEN it runs, THEN each occurrence
/// fires on its second (lag under 1.5 s, from the recorded runs), and
/// SIGTERM stops it cleanly with nothing left leased.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_sub_minute_schedule_fires_on_its_second(pool: PgPool) {
    let server = target().await;
    let mut dev = DevProcess::start(
        &database_url_for(&pool),
        &[("SUNDIAL_ALLOW_TARGETS", "127.0.0.1/32")],
        &["--grace", "2", "--status-every", "1"],
    );
    let created = http()
        .post(format!("{}/v1/tasks", dev.admin_url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "name": "every-two-seconds",
            "schedule": "*/2 * * * * *",
            "url": server.url("/ok"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    let three_runs = eventually(Duration::from_secs(15), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM task_runs WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap()
            >= 3
    })
    .await;
    assert!(three_runs, "fewer than 3 succeeded runs:\n{}", dev.log());
    let runs: Vec<(DateTime<Utc>, Option<DateTime<Utc>>, String)> = sqlx::query_as(
        "SELECT scheduled_for, fired_at, status FROM task_runs ORDER BY scheduled_for",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (i, (scheduled_for, fired_at, status)) in runs.iter().enumerate() {
        assert_eq!(status, "succeeded");
        assert_eq!(scheduled_for.timestamp() % 2, 0, "not on an even second");
        if i > 0 {
            // Consecutive occurrences: none skipped.
            assert_eq!((*scheduled_for - runs[i - 1].0).num_seconds(), 2);
        }
        let lag = *fired_at.as_ref().expect("fired_at") - *scheduled_for;
        assert!(
            lag >= chrono::Duration::zero() && lag < chrono::Duration::milliseconds(1500),
            "occurrence {scheduled_for} fired {lag} late"
        );
    }

    let took = dev.stop(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(4), "stopping took {took:?}");
    assert_eq!(leased(&pool).await, 0, "leases left behind");
    let log = dev.log();
    assert!(
        log.contains("fired") && log.contains("lag_ms="),
        "no fired line with lag:\n{log}"
    );
    assert!(log.contains(" status "), "no status line:\n{log}");
}

/// GIVEN 500 tasks due at once (400 of them answering after 5 s, 100 after
/// 0.5 s), WHEN SIGTERM arrives with all 500 in flight and a 2 s grace,
/// THEN the process exits within the grace period, the fast ones are
/// recorded, nothing is left leased, and a restart fires every aborted
/// occurrence: none lost.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn sigterm_during_a_burst_of_500_loses_nothing(pool: PgPool) {
    let server = target().await;
    let due = (Utc::now() + chrono::Duration::seconds(2))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let base = format!("http://{}", server.addr);
    TaskBuilder::new()
        .name("burst-")
        .next_run_at(due)
        .timeout_ms(30000)
        .each(move |g, task| {
            let path = if g <= 400 {
                "/delay/5000"
            } else {
                "/delay/500"
            };
            task.url(format!("{base}{path}"))
        })
        .insert_many(&pool, 500)
        .await;
    let env = [
        ("SUNDIAL_ALLOW_TARGETS", "127.0.0.1/32"),
        ("SUNDIAL_CONCURRENCY", "500"),
        ("SUNDIAL_PER_HOST_CONCURRENCY", "500"),
    ];
    let url = database_url_for(&pool);
    let mut dev = DevProcess::start(&url, &env, &["--grace", "2"]);

    let all_in_flight = eventually(Duration::from_secs(20), || async {
        server.stats.requests() >= 500 && server.stats.in_flight() >= 400
    })
    .await;
    assert!(
        all_in_flight,
        "requests {} in flight {}:\n{}",
        server.stats.requests(),
        server.stats.in_flight(),
        dev.log()
    );
    // The fast hundred finish well inside the grace period.
    let took = dev.stop(Duration::from_secs(6)).await;
    assert!(
        took < Duration::from_millis(3500),
        "exit took {took:?} with a 2 s grace:\n{}",
        dev.log()
    );
    assert_eq!(leased(&pool).await, 0, "leases left behind");
    let (succeeded, waiting): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM task_runs WHERE status = 'succeeded' AND scheduled_for = $1), \
                (SELECT count(*) FROM tasks WHERE next_run_at = $1)",
    )
    .bind(due)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(succeeded, 100, "the fast requests were not all recorded");
    assert_eq!(waiting, 400, "aborted occurrences must still be due");

    // Restart: every aborted occurrence fires now (catch-up `skip` fires
    // the missed occurrence once).
    let mut dev = DevProcess::start(&url, &env, &["--grace", "2"]);
    let all_fired = eventually(Duration::from_secs(25), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM task_runs WHERE status = 'succeeded' AND scheduled_for = $1",
        )
        .bind(due)
        .fetch_one(&pool)
        .await
        .unwrap()
            == 500
    })
    .await;
    assert!(all_fired, "not every occurrence fired:\n{}", dev.log());
    dev.stop(Duration::from_secs(5)).await;
    let (runs, moved_on): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM task_runs), \
                (SELECT count(*) FROM tasks \
                  WHERE next_run_at > $1 \
                    AND next_run_at <= to_timestamp((floor(extract(epoch FROM $1) / 604800) + 1) * 604800))",
    )
    .bind(due)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(runs, 500, "exactly one run per occurrence");
    // The default `rate(7 days)` is aligned to the epoch: one step is the
    // next boundary.
    assert_eq!(moved_on, 500, "every schedule moved on exactly once");
    assert_eq!(leased(&pool).await, 0, "leases left behind");
    assert!(server.stats.requests() >= 900);
}

/// `scripts/dev-smoke.sh`, the CI check behind the README's `make dev`,
/// passes against a fresh database.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_smoke_script_passes(pool: PgPool) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-smoke.sh");
    let output = tokio::task::spawn_blocking({
        let url = database_url_for(&pool);
        move || {
            let mut cmd = Command::new("bash");
            cmd.arg(script).arg(sundial_bin());
            for (name, _) in std::env::vars() {
                if name.starts_with("SUNDIAL_") {
                    cmd.env_remove(name);
                }
            }
            cmd.env("DATABASE_URL", url).output().expect("run bash")
        }
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "dev-smoke.sh failed:\n{text}");
    let demo: (String, i64) = sqlx::query_as(
        "SELECT t.schedule, count(r.*) FROM tasks t JOIN task_runs r ON r.task_id = t.id \
         WHERE t.name = 'sundial-demo' AND r.status = 'succeeded' GROUP BY t.schedule",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(demo.0, "rate(10 seconds)");
    assert!(demo.1 >= 2, "{text}");
    assert_eq!(leased(&pool).await, 0);
}

// ------------------------------------------- the in-process memory consumer

fn processor(pool: &PgPool, retries: Arc<dyn DispatchQueue>) -> Processor {
    let env: HashMap<String, String> = [("SUNDIAL_ALLOW_TARGETS", "127.0.0.1/32")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Processor::from_settings(pool.clone(), &Settings::from_map(&env).unwrap(), retries).unwrap()
}

/// A queue that accepts nothing: retries cannot be queued, so the
/// processor hands their messages back (`Redeliver`).
struct RefusingQueue;

#[async_trait]
impl DispatchQueue for RefusingQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        SendReport {
            failed: (0..messages.len()).collect(),
            first_error: Some("refused".into()),
            calls: 1,
        }
    }
}

/// Inserts tasks and claims them with a real scan into `queue`.
async fn scanned(pool: &PgPool, queue: &MemoryQueue, tasks: &[(&str, String, DateTime<Utc>)]) {
    for (name, url, next) in tasks {
        TaskBuilder::new()
            .name(*name)
            .url(url.as_str())
            .next_run_at(*next)
            .max_attempts(3)
            .retry_backoff_ms(100)
            .insert(pool)
            .await;
    }
    let opts = ScanOptions {
        lookahead: Duration::from_secs(120),
        page_size: 500,
        lease: Duration::from_secs(300),
        budget: Duration::from_secs(10),
        owner: "dev-test".into(),
        retention_days: 30,
        notifier: None,
        missed_grace: Duration::from_secs(120),
    };
    let summary = scan(pool, queue, &opts).await.unwrap();
    assert_eq!(summary.enqueued, tasks.len() as u64);
}

/// GIVEN a message the processor hands back (its retry cannot be queued),
/// WHEN the memory consumer runs, THEN it comes back after the redelivery
/// delay (the target sees the same occurrence again), and at shutdown its
/// lease is released with nothing recorded.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn redeliver_resends_after_a_delay_and_shutdown_releases(pool: PgPool) {
    let server = target().await;
    let queue = Arc::new(MemoryQueue::default());
    let processor = processor(&pool, Arc::new(RefusingQueue));
    let due = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    scanned(&pool, &queue, &[("flaky", server.url("/status/503"), due)]).await;
    assert_eq!(leased(&pool).await, 1);

    let (stop, shutdown) = watch::channel(false);
    let opts = MemoryConsumeOptions {
        max_outstanding: 10,
        grace: Duration::from_secs(2),
        redeliver_delay: Duration::from_millis(700),
    };
    let consuming = consume_memory(&processor, &pool, queue.clone(), &opts, shutdown);
    let driving = async {
        let twice = eventually(Duration::from_secs(5), || async {
            server.stats.requests() >= 2
        })
        .await;
        let _ = stop.send(true);
        twice
    };
    let (consumed, twice) = tokio::join!(consuming, driving);
    let (_, handed_back) = consumed.unwrap();
    assert!(twice, "the handed-back message never came back");

    let records = server.stats.records();
    assert!(records.len() >= 2);
    assert_eq!(records[0].idempotency_key, records[1].idempotency_key);
    let gap = records[1].received_at - records[0].received_at;
    assert!(
        gap >= chrono::Duration::milliseconds(650),
        "redelivered after {gap}"
    );
    assert!(handed_back.redelivered >= 2);
    assert!(!handed_back.aborted);
    assert_eq!((handed_back.handed_back, handed_back.released), (1, 1));
    assert_eq!(leased(&pool).await, 0);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0);
    assert!(queue.is_empty());
}

/// GIVEN requests in flight (some hanging, some quick) and occurrences
/// waiting in the queue for a later second, WHEN shutdown comes, THEN the
/// quick ones finish and are recorded within the grace period, the hanging
/// ones are aborted after it, and every unsettled occurrence (aborted or
/// queued) gets its lease released, still due at its original time.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn shutdown_aborts_after_the_grace_period_and_releases_every_lease(pool: PgPool) {
    let server = target().await;
    let queue = Arc::new(MemoryQueue::default());
    let processor = processor(&pool, queue.clone());
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let later = now + chrono::Duration::seconds(60);
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push((format!("hang-{i}"), server.url("/hang"), now));
    }
    for i in 0..5 {
        tasks.push((format!("quick-{i}"), server.url("/delay/300"), now));
    }
    for i in 0..5 {
        tasks.push((format!("later-{i}"), server.url("/ok"), later));
    }
    let refs: Vec<(&str, String, DateTime<Utc>)> = tasks
        .iter()
        .map(|(n, u, t)| (n.as_str(), u.clone(), *t))
        .collect();
    scanned(&pool, &queue, &refs).await;
    assert_eq!(leased(&pool).await, 30);

    let (stop, shutdown) = watch::channel(false);
    let opts = MemoryConsumeOptions {
        max_outstanding: 100,
        grace: Duration::from_millis(800),
        redeliver_delay: Duration::from_secs(1),
    };
    let consuming = consume_memory(&processor, &pool, queue.clone(), &opts, shutdown);
    let driving = async {
        let started = eventually(Duration::from_secs(5), || async {
            server.stats.in_flight() >= 25
        })
        .await;
        let _ = stop.send(true);
        (started, Instant::now())
    };
    let (consumed, (started, asked)) = tokio::join!(consuming, driving);
    let took = asked.elapsed();
    assert!(started, "requests did not start");
    let (_, handed_back) = consumed.unwrap();
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    assert!(handed_back.aborted);
    assert_eq!(handed_back.unsettled, 20);
    assert_eq!(handed_back.drained, 5);
    assert_eq!((handed_back.handed_back, handed_back.released), (25, 25));

    assert_eq!(leased(&pool).await, 0, "leases left behind");
    let (quick_done, hang_due, later_due): (i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             WHERE t.name LIKE 'quick-%' AND r.status = 'succeeded'), \
           (SELECT count(*) FROM tasks WHERE name LIKE 'hang-%' AND next_run_at = $1), \
           (SELECT count(*) FROM tasks WHERE name LIKE 'later-%' AND next_run_at = $2)",
    )
    .bind(now)
    .bind(later)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((quick_done, hang_due, later_due), (5, 20, 5));
    // The queue is closed: a late send (a scan finishing) is refused, and
    // the scanner releases that lease itself.
    let late = queue
        .send(&[Outgoing {
            message: DispatchMessage::new(1, now, 1),
            delay: Duration::ZERO,
        }])
        .await;
    assert_eq!(late.failed, vec![0]);
}
