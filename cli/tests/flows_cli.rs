//! `sundial flows ...` and the flows part of `sundial status` end to end:
//! the built binary against the admin router on a real socket, over a
//! fresh Postgres database (`#[sqlx::test]`).

use sqlx::PgPool;
use sundial_testkit::TaskBuilder;

mod common;
use common::{run_sundial, Run};

const TOKEN: &str = "flows-cli-token-0123456789";

/// Runs the built binary against `api` with this file's token.
async fn sundial(api: &str, args: &[&str]) -> Run {
    run_sundial(api, TOKEN, args).await
}

/// The admin router on 127.0.0.1; its base URL and server task.
async fn serve(pool: &PgPool) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    common::serve(pool, TOKEN).await
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn flows_commands(pool: PgPool) {
    let (api, server) = serve(&pool).await;
    macro_rules! cli {
        ($($arg:expr),* $(,)?) => {
            sundial(&api, &[$($arg),*]).await
        };
    }
    TaskBuilder::new()
        .url("http://127.0.0.1:8080/hook")
        .insert_many(&pool, 2)
        .await;

    // GIVEN no limits: nothing listed
    let out = cli!("flows", "list");
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "no flows\n");

    // WHEN limits are set (the key needs encoding in the path)
    let out = cli!(
        "flows",
        "set",
        "127.0.0.1:8080",
        "--rate",
        "50",
        "--burst",
        "5",
        "--max-in-flight",
        "8",
        "--retry-budget",
        "0.25",
        "--breaker-failures",
        "5",
        "--breaker-window",
        "60",
        "--breaker-cooldown",
        "30",
        "--on-open",
        "skip",
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("set the limits of flow 127.0.0.1:8080\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("rate              50/s"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("tasks             2"), "{}", out.stdout);

    // THEN they are in the table, the JSON and the database
    let out = cli!("flows", "list");
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("KEY") && lines[0].contains("RATE") && lines[0].contains("TASKS"),
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[1].starts_with("127.0.0.1:8080") && lines[1].contains("50/s"),
        "{}",
        out.stdout
    );
    let out = cli!("flows", "show", "127.0.0.1:8080", "--json");
    assert!(out.ok, "{}", out.stderr);
    let flow = out.json();
    let config = &flow["config"];
    assert_eq!(config["rate_per_sec"], 50.0);
    assert_eq!(config["burst"], 5);
    assert_eq!(config["max_in_flight"], 8);
    assert_eq!(config["retry_budget"], 0.25);
    assert_eq!(config["breaker_failures"], 5);
    assert_eq!(config["breaker_window_secs"], 60);
    assert_eq!(config["breaker_cooldown_secs"], 30);
    assert_eq!(config["on_open"], "skip");
    assert_eq!(flow["tasks"], 2);
    let (rate, burst): (Option<f64>, i32) =
        sqlx::query_as("SELECT rate_per_sec, burst FROM flows WHERE key = '127.0.0.1:8080'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rate, burst), (Some(50.0), 5));

    // AND a second set replaces them whole
    let out = cli!("flows", "set", "127.0.0.1:8080", "--burst", "3", "--json");
    assert!(out.ok, "{}", out.stderr);
    let config = &out.json()["config"];
    assert_eq!(config["burst"], 3);
    assert!(config["rate_per_sec"].is_null(), "{config}");
    assert_eq!(config["on_open"], "fire_latest");

    // IPv6 keys, and flows with engine state only
    let out = cli!("flows", "set", "[::1]:9", "--rate", "0.5");
    assert!(out.ok, "{}", out.stderr);
    sqlx::query(
        "INSERT INTO flow_state (key, breaker, failures, opened_at, probe_at, opened_total) \
         VALUES ('down.example:443', 'open', 5, now() - interval '1 minute', \
                 now() + interval '30 seconds', 1), \
                ('busy.example:443', 'closed', 0, NULL, NULL, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE flow_state SET not_before = now() + interval '1 minute' WHERE key = 'busy.example:443'")
        .execute(&pool)
        .await
        .unwrap();
    let out = cli!("flows", "list", "--json");
    let keys: Vec<String> = out.json()["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "127.0.0.1:8080",
            "[::1]:9",
            "busy.example:443",
            "down.example:443"
        ]
    );
    let out = cli!("flows", "list", "--limit", "1");
    assert!(
        out.stdout
            .contains("(more: --after 127.0.0.1:8080, or --all)"),
        "{}",
        out.stdout
    );
    let out = cli!("flows", "list", "--limit", "1", "--all", "--json");
    assert_eq!(out.json()["flows"].as_array().unwrap().len(), 4);
    let out = cli!("flows", "list", "--after", "[::1]:9", "--json");
    assert_eq!(out.json()["flows"].as_array().unwrap().len(), 2);
    let out = cli!("flows", "show", "down.example:443");
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("breaker           open"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("limits            none set"),
        "{}",
        out.stdout
    );
    let out = cli!("flows", "show", "[::1]:9");
    assert!(
        out.stdout.contains("rate              0.5/s"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("state             not seen by the engine yet"),
        "{}",
        out.stdout
    );

    // status: the open flow and the one backing off
    let out = cli!("status");
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("flows:          1 open, 1 backing off"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  open          down.example:443 since "),
        "{}",
        out.stdout
    );
    let out = cli!("status", "--json");
    assert_eq!(
        out.json()["flows"]["open_flows"][0]["key"],
        "down.example:443"
    );

    // delete
    let out = cli!("flows", "delete", "[::1]:9");
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "removed the limits of flow [::1]:9\n");
    let out = cli!("flows", "delete", "[::1]:9", "--json");
    assert!(!out.ok);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("flow `[::1]:9` not found (HTTP 404 flow_not_found)"),
        "{}",
        out.stderr
    );

    // Errors name the field (the API's or the flag), non-zero exit.
    for (args, wanted) in [
        (vec!["flows", "set", "k", "--rate", "0"], "rate_per_sec:"),
        (vec!["flows", "set", "k", "--burst", "0"], "burst:"),
        (
            vec!["flows", "set", "k", "--breaker-window", "86401"],
            "breaker_window_secs:",
        ),
        (vec!["flows", "set", "k", "--rate", "inf"], "--rate"),
        (
            vec!["flows", "set", "k", "--retry-budget", "NaN"],
            "--retry-budget",
        ),
        (vec!["flows", "set", "k", "--on-open", "later"], "--on-open"),
        (vec!["flows", "show", " "], "KEY:"),
        (vec!["flows", "show", ".."], "must not consist of dots only"),
        (vec!["flows", "show", "nobody.example:80"], "not found"),
    ] {
        let out = sundial(&api, &args).await;
        assert!(!out.ok, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(wanted), "{args:?}: {}", out.stderr);
    }
    assert!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM flows WHERE key = 'k'")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 0
    );
    server.abort();
}

/// Keys written with plain SQL skip the API's checks: the table and the
/// detail must not write their control characters to the terminal.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn stored_control_characters_in_keys_are_escaped(pool: PgPool) {
    let (api, server) = serve(&pool).await;
    sqlx::query("INSERT INTO flow_state (key, breaker) VALUES ($1, 'open')")
        .bind("evil\x1b]0;owned\x07")
        .execute(&pool)
        .await
        .unwrap();
    for args in [
        vec!["flows", "list"],
        vec!["flows", "list", "--json"],
        vec!["status"],
    ] {
        let out = sundial(&api, &args).await;
        assert!(out.ok, "{args:?}: {}", out.stderr);
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stdout.contains('\u{7}'),
            "{args:?}: {:?}",
            out.stdout
        );
        assert!(out.stdout.contains("evil"), "{args:?}: {}", out.stdout);
    }
    server.abort();
}
