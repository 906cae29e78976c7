//! `sundial tasks backfill` end to end: the built binary against the admin
//! router on a real socket over a fresh Postgres database. The queue
//! captures what is dispatched and a stand-in processor records a run for
//! each message (as `sundial process` would), so the command follows the
//! backfill to `done` and prints one progress line per change (stdout is
//! not a terminal here).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use sundial::queue::Outgoing;
use sundial_testkit::TaskBuilder;

mod common;

use common::{run_sundial, serve_with, AnyTarget, CaptureQueue, Run};

const TOKEN: &str = "backfill-cli-token-0123456789";

/// Records a succeeded run for each captured message, as the processor would.
async fn stand_in_processor(pool: PgPool, queue: Arc<CaptureQueue>) {
    loop {
        let sent: Vec<Outgoing> = queue.take();
        for out in sent {
            let m = out.message;
            let b = m.backfill.unwrap();
            sqlx::query(
                "INSERT INTO task_runs (task_id, scheduled_for, fired_at, status, http_status, \
                     trigger, backfill_id, rerun) \
                 VALUES ($1, $2, now(), 'succeeded', 200, 'backfill', $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(m.task_id)
            .bind(m.occurrence)
            .bind(b.id)
            .bind(m.rerun())
            .execute(&pool)
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sundial(api: &str, args: &[&str]) -> (bool, String, String) {
    let Run { ok, stdout, stderr } = run_sundial(api, TOKEN, args).await;
    (ok, stdout, stderr)
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn backfill_follows_the_backfill_to_done(pool: PgPool) {
    let queue = Arc::new(CaptureQueue::default());
    let (api, server) = serve_with(&pool, TOKEN, queue.clone(), Arc::new(AnyTarget)).await;
    let processor = tokio::spawn(stand_in_processor(pool.clone(), queue.clone()));

    // GIVEN a minutely task with runs for 6 of 10 minutes of a past range.
    let task = TaskBuilder::new()
        .name("cli-backfill")
        .schedule("* * * * *")
        .url("https://example.com/run")
        .next_run_at(Utc::now() + chrono::Duration::days(1))
        .insert(&pool)
        .await
        .id;
    let from: DateTime<Utc> = (Utc::now() - chrono::Duration::hours(3))
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let to = from + chrono::Duration::minutes(10);
    for k in [0, 2, 3, 6, 7, 8] {
        sqlx::query(
            "INSERT INTO task_runs (task_id, scheduled_for, status) VALUES ($1, $2, 'succeeded')",
        )
        .bind(task)
        .bind(from + chrono::Duration::minutes(k))
        .execute(&pool)
        .await
        .unwrap();
    }
    let (from_s, to_s) = (from.to_rfc3339(), to.to_rfc3339());
    let id = task.to_string();

    // WHEN `sundial tasks backfill` runs (mode missing).
    let (ok, out, err) = sundial(
        &api,
        &[
            "tasks",
            "backfill",
            &id,
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--poll-ms",
            "100",
        ],
    )
    .await;

    // THEN it follows the backfill in plain lines and ends with a summary.
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("occurrences in [") && lines[0].contains("mode missing"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": 10/10 settled: 4 dispatched, 6 skipped")),
        "{out}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.ends_with("done: 4 fired, 4 succeeded, 0 failed"),
        "{out}"
    );
    assert!(
        !out.contains('\r'),
        "no progress bar without a terminal: {out:?}"
    );

    // WHEN it runs with --all: every occurrence again (6 of them as re-runs).
    let (ok, out, err) = sundial(
        &api,
        &[
            "tasks",
            "backfill",
            &id,
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--all",
            "--poll-ms",
            "100",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.lines().next().unwrap_or("").contains("mode all"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("done: 10 fired, 10 succeeded, 0 failed"),
        "{out}"
    );
    let reruns: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_runs WHERE task_id = $1 AND rerun <> 0")
            .bind(task)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        reruns, 10,
        "the first backfill's 4 runs and 6 originals are re-run"
    );

    // AND a range over the cap is refused, naming the field.
    let far = (from - chrono::Duration::days(30)).to_rfc3339();
    let (ok, _, err) = sundial(
        &api,
        &["tasks", "backfill", &id, "--from", &far, "--to", &to_s],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("to: the range [") && err.contains("HTTP 400 invalid_field"),
        "{err}"
    );

    // AND --no-wait --json prints the backfill and returns.
    let (ok, out, err) = sundial(
        &api,
        &[
            "tasks",
            "backfill",
            &id,
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--no-wait",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["requested"], 10);
    assert_eq!(json["skipped_existing"], 10);
    processor.abort();
    server.abort();
}
