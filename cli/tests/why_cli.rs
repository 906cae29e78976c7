//! `sundial why` end to end: the built binary against the admin router on
//! a real socket, over a fresh Postgres database (`#[sqlx::test]`), for a
//! task whose history holds a fired, a failed-after-retries, a skipped, a
//! passed-over, a paused and a missed occurrence.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sundial_testkit::{backdate_event, ledger_scenario};

mod common;
use common::{run_sundial, Run};

const TOKEN: &str = "why-cli-token-0123456789";

/// Runs the built binary against `api` with this file's token.
async fn sundial(api: &str, args: Vec<String>) -> Run {
    run_sundial(api, TOKEN, args).await
}

/// The admin router on 127.0.0.1; its base URL and server task.
async fn serve(pool: &PgPool) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    common::serve(pool, TOKEN).await
}

/// `09:00 UTC on 2026-12-01`.
fn head(t: DateTime<Utc>) -> String {
    t.format("%H:%M UTC on %Y-%m-%d").to_string()
}

/// The first line `sundial why TASK --at AT` prints.
async fn why_at(api: &str, task: &str, at: DateTime<Utc>) -> String {
    let out = sundial(
        api,
        vec!["why".into(), task.into(), "--at".into(), at.to_rfc3339()],
    )
    .await;
    assert!(out.ok, "why {task} --at {at}: {}", out.stderr);
    out.stdout.lines().next().unwrap_or("").to_string()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn why_explains_each_occurrence(pool: PgPool) {
    let (api, server) = serve(&pool).await;
    // GIVEN the kit's history, paused with the CLI 12 minutes before
    // hours[5] and resumed with SQL half an hour after it
    let s = ledger_scenario(&pool).await;
    let h = s.hours.clone();
    let out = sundial(&api, vec!["tasks".into(), "pause".into(), s.id.to_string()]).await;
    assert!(out.ok, "{}", out.stderr);
    let paused_at = h[5] - Duration::minutes(12);
    backdate_event(&pool, s.id, "paused", paused_at).await;
    sqlx::query("UPDATE tasks SET enabled = true, next_run_at = $2 WHERE id = $1")
        .bind(s.id)
        .bind(h[6])
        .execute(&pool)
        .await
        .unwrap();
    backdate_event(&pool, s.id, "resumed", h[5] + Duration::minutes(30)).await;
    let name = s.name.as_str();

    // THEN each occurrence gets its sentence, by name or by id
    assert_eq!(
        why_at(&api, name, h[0]).await,
        format!(
            "{} fired at {}, 200 in 83 ms",
            head(h[0]),
            (h[0] + Duration::milliseconds(4)).format("%H:%M:%S%.3f")
        )
    );
    assert_eq!(
        why_at(&api, &s.id.to_string(), h[1]).await,
        format!(
            "{} fired at {}.000 and failed after 3 attempts, 500 in 12 ms: HTTP 500",
            head(h[1]),
            (h[1] + Duration::seconds(2)).format("%H:%M:%S")
        )
    );
    assert_eq!(
        why_at(&api, name, h[2]).await,
        format!(
            "{} did not fire: skipped (missed its time; catch-up policy is `none`)",
            head(h[2])
        )
    );
    // An instant between occurrences answers for the one before it.
    assert_eq!(
        why_at(&api, name, h[3] + Duration::minutes(20)).await,
        format!(
            "{} did not fire: passed over by catch-up `skip`: the task fired {} instead",
            head(h[3]),
            h[4].format("%Y-%m-%d %H:%M:%SZ")
        )
    );
    let clock = if paused_at.date_naive() == h[5].date_naive() {
        paused_at.format("%H:%M").to_string()
    } else {
        paused_at.format("%H:%M on %Y-%m-%d").to_string()
    };
    assert_eq!(
        why_at(&api, name, h[5]).await,
        format!(
            "{} did not fire: the task was paused at {clock} by admin API",
            head(h[5])
        )
    );
    assert_eq!(
        why_at(&api, name, h[6]).await,
        format!(
            "{} missed: due {}, no run and no lease (is a scanner running?)",
            head(h[6]),
            h[6].format("%Y-%m-%d %H:%M")
        )
    );

    // WHEN no time is given: the latest due occurrence (the current hour's)
    let out = sundial(&api, vec!["why".into(), name.into()]).await;
    assert!(out.ok, "{}", out.stderr);
    // (or the next hour's, should the hour turn during the test)
    assert!(
        out.stdout.starts_with(&head(h[8]))
            || out.stdout.starts_with(&head(h[8] + Duration::hours(1))),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("task {} ({name})", s.id)),
        "{}",
        out.stdout
    );

    // --json prints the ledger entry
    let out = sundial(
        &api,
        vec![
            "why".into(),
            name.into(),
            "--at".into(),
            h[1].to_rfc3339(),
            "--json".into(),
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let entry: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(entry["state"], "fired");
    assert_eq!(entry["run"]["status"], "failed");
    assert_eq!(entry["run"]["attempts"], 3);

    // An unknown name is an error naming it
    let out = sundial(&api, vec!["why".into(), "no-such-task".into()]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("no task is named `no-such-task`"),
        "{}",
        out.stderr
    );
    server.abort();
}
