//! `sundial tasks ...` and `sundial status` end to end: the built binary
//! against the admin router on a real socket, over a fresh Postgres
//! database (`#[sqlx::test]`, DATABASE_URL points at the server).
//!
//! This lives in the cli crate rather than `sundial-e2e` because only the
//! crate that owns a binary gets `CARGO_BIN_EXE_<name>`, which guarantees
//! the binary is built and current when the test runs.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use sundial::admin::TargetCheck;
use sundial_testkit::TaskBuilder;

mod common;

use common::{run_sundial_as, serve_with, CaptureQueue, Run};

const TOKEN: &str = "cli-test-token-0123456789";

/// Refuses the metadata address, like the real guard.
struct NoMetadata;

#[async_trait]
impl TargetCheck for NoMetadata {
    async fn check(&self, url: &str) -> Result<(), String> {
        if url.contains("169.254.169.254") {
            return Err("target is a link-local address".into());
        }
        Ok(())
    }
}

async fn sundial(api: &str, token: Option<&str>, args: &[&str]) -> Run {
    run_sundial_as(api, token, args).await
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn tasks_and_status_commands(pool: PgPool) {
    let queue = Arc::new(CaptureQueue::default());
    let (api, server) = serve_with(&pool, TOKEN, queue.clone(), Arc::new(NoMetadata)).await;
    macro_rules! cli {
        ($($arg:expr),* $(,)?) => {
            sundial(&api, Some(TOKEN), &[$($arg),*]).await
        };
    }

    // add, human and JSON
    let out = cli!(
        "tasks",
        "add",
        "nightly",
        "--schedule",
        "rate(5 minutes)",
        "--url",
        "https://example.com/nightly",
        "-H",
        "X-Env: prod",
        "--timeout-ms",
        "5000",
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with("created task "), "{}", out.stdout);
    let out = cli!(
        "tasks",
        "add",
        "hourly",
        "--schedule",
        "rate(60 minutes)",
        "--url",
        "https://example.com/hourly",
        "--json",
        "--idempotency-key",
        "k1",
    );
    assert!(out.ok, "{}", out.stderr);
    let hourly = out.json();
    let id = hourly["id"].as_i64().unwrap();
    assert_eq!(hourly["name"], "hourly");
    // The same key again returns the same task.
    let again = cli!(
        "tasks",
        "add",
        "hourly",
        "--schedule",
        "rate(60 minutes)",
        "--url",
        "https://example.com/hourly",
        "--json",
        "--idempotency-key",
        "k1",
    );
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.json()["id"], id);

    // list
    let out = cli!("tasks", "list");
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NEXT RUN"),
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[1].contains("nightly") && lines[1].contains("enabled"));
    let out = cli!("tasks", "list", "--json", "--limit", "1", "--all");
    assert_eq!(out.json()["tasks"].as_array().unwrap().len(), 2);

    // show
    let id_s = id.to_string();
    let id_s = id_s.as_str();
    let out = cli!("tasks", "show", id_s);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("name            hourly"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("next:"), "{}", out.stdout);
    let out = cli!("tasks", "show", id_s, "--json");
    assert_eq!(out.json()["next_occurrences"].as_array().unwrap().len(), 5);

    // pause, resume
    let out = cli!("tasks", "pause", id_s);
    assert!(
        out.ok && out.stdout.contains("paused task"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = cli!("tasks", "list", "--paused", "--json");
    assert_eq!(out.json()["tasks"][0]["id"], id);
    let out = cli!("tasks", "resume", id_s, "--json");
    assert_eq!(out.json()["enabled"], true);
    // A pause with why and until when; `show` says it.
    let out = cli!(
        "tasks",
        "pause",
        id_s,
        "--reason",
        "deploy freeze",
        "--until",
        "2099-01-01T00:00:00Z",
    );
    assert!(
        out.ok && out.stdout.contains("until 2099-01-01"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = cli!("tasks", "show", id_s);
    assert!(
        out.stdout.contains("by admin API at ")
            && out
                .stdout
                .contains(": deploy freeze (until 2099-01-01 00:00:00Z)"),
        "{}",
        out.stdout
    );
    let out = cli!("tasks", "resume", id_s, "--json");
    assert!(out.json()["paused_reason"].is_null());

    // trigger
    let out = cli!("tasks", "trigger", id_s);
    assert!(
        out.ok && out.stdout.contains("queued"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = cli!("tasks", "trigger", id_s, "--json");
    assert_eq!(out.json()["task_id"], id);
    assert_eq!(queue.len(), 2);
    // A run in flight: the policy (forbid) refuses, --force fires.
    sqlx::query(
        "UPDATE tasks SET next_run_at = now() - interval '1 second', \
         lease_until = now() + interval '5 minutes' WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let out = cli!("tasks", "trigger", id_s);
    assert!(
        !out.ok && out.stderr.contains("run_in_flight"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = cli!("tasks", "trigger", id_s, "--force");
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert_eq!(queue.len(), 3);

    // runs
    let out = cli!("tasks", "runs", id_s);
    assert_eq!(out.stdout, "no runs\n");
    sqlx::query(
        "INSERT INTO task_runs (task_id, scheduled_for, fired_at, status, http_status, latency_ms, error) \
         VALUES ($1, now() - interval '1 minute', now() - interval '1 minute', 'failed', 503, 40, 'upstream down')",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let out = cli!("tasks", "runs", id_s);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("failed")
            && out.stdout.contains("503")
            && out.stdout.contains("upstream down"),
        "{}",
        out.stdout
    );
    let out = cli!("tasks", "runs", id_s, "--json");
    assert_eq!(out.json()["runs"][0]["http_status"], 503);

    // status
    let out = cli!("status");
    assert!(out.ok, "{}", out.stderr);
    // No scanner ever ticked here: the verdict comes first and says so.
    assert!(
        out.stdout
            .starts_with("pipeline:       UNHEALTHY\n  scanner_never_seen "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("scanner:        last tick never\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("2 total"), "{}", out.stdout);
    assert!(out.stdout.contains("1 failed"), "{}", out.stdout);
    let out = cli!("status", "--json");
    assert_eq!(out.json()["last_hour"]["runs"], 1);

    // delete
    let out = cli!("tasks", "delete", id_s);
    assert!(
        out.ok && out.stdout == format!("deleted task {id}\n"),
        "{}",
        out.stdout
    );
    let out = cli!("tasks", "delete", id_s, "--json");
    assert!(!out.ok);

    // Errors: shown plainly, non-zero exit.
    let out = cli!("tasks", "show", id_s);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("task {id} not found")),
        "{}",
        out.stderr
    );
    let out = cli!(
        "tasks",
        "add",
        "meta",
        "--schedule",
        "rate(1 minute)",
        "--url",
        "http://169.254.169.254/latest",
        "--json",
    );
    assert!(!out.ok);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("url: target is a link-local address"),
        "{}",
        out.stderr
    );
    let out = cli!(
        "tasks",
        "add",
        "bad",
        "--schedule",
        "whenever",
        "--url",
        "https://x.io"
    );
    assert!(
        !out.ok && out.stderr.contains("schedule:"),
        "{}",
        out.stderr
    );
    let out = cli!(
        "tasks",
        "add",
        "dup",
        "--schedule",
        "rate(1 minute)",
        "--url",
        "https://x.io",
        "-H",
        "nocolon"
    );
    assert!(!out.ok && out.stderr.contains("--header"), "{}", out.stderr);
    let out = sundial(&api, Some("wrong-token-wrong-token"), &["status"]).await;
    assert!(!out.ok && out.stderr.contains("401"), "{}", out.stderr);
    let out = sundial(&api, None, &["tasks", "list"]).await;
    assert!(
        !out.ok && out.stderr.contains("SUNDIAL_ADMIN_TOKEN"),
        "{}",
        out.stderr
    );
    let out = sundial("http://127.0.0.1:9", Some(TOKEN), &["status"]).await;
    assert!(
        !out.ok && out.stderr.contains("cannot reach"),
        "{}",
        out.stderr
    );

    server.abort();
}

/// Rows written with plain SQL skip the API's checks: `tasks list` and
/// `tasks show` must still not write their control characters to the
/// terminal.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn stored_control_characters_are_escaped(pool: PgPool) {
    let queue = Arc::new(CaptureQueue::default());
    let (api, server) = serve_with(&pool, TOKEN, queue, Arc::new(NoMetadata)).await;
    let id = TaskBuilder::new()
        .name("evil\x1b]0;owned\x07")
        .schedule("rate(1 minute)")
        .url("https://x.io/\x1b[2J")
        .body("a\x1bb")
        .insert(&pool)
        .await
        .id;
    let id_s = id.to_string();
    for args in [
        vec!["tasks", "list"],
        vec!["tasks", "show", &id_s],
        vec!["tasks", "list", "--json"],
    ] {
        let out = sundial(&api, Some(TOKEN), &args).await;
        assert!(out.ok, "{args:?}: {}", out.stderr);
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stdout.contains('\u{7}'),
            "{args:?}: {:?}",
            out.stdout
        );
        assert!(out.stdout.contains("evil"), "{args:?}: {}", out.stdout);
    }
    let out = sundial(&api, Some(TOKEN), &["tasks", "show", &id_s]).await;
    assert!(
        out.stdout.contains("https://x.io/\\u{1b}[2J"),
        "{}",
        out.stdout
    );
    server.abort();
}
