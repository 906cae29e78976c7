//! The console in a real browser: Debian's headless Chromium, driven over
//! the DevTools protocol, logs in with the admin token, opens the overview
//! and a task page, pauses the task with its button, and the DOM and the
//! database must both show the pause. The page must not trip its own
//! Content-Security-Policy, and the session cookie must be what the
//! console promises. Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;

use serde_json::json;
use sqlx::PgPool;
use sundial_e2e::cdp::Browser;
use sundial_e2e::console_kit::*;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn an_operator_logs_in_and_pauses_a_task_with_the_button(pool: PgPool) {
    let console = Console::start(&pool).await;
    let seeded = seed(&console).await;
    let id = seeded.healthy;
    let base = console.base.clone();
    let mut browser = Browser::start().await;

    // GIVEN the login page (the console sends the browser there).
    browser
        .call("Page.navigate", json!({"url": format!("{base}/ui")}))
        .await;
    browser
        .wait_for(
            "location.pathname === '/ui/login' && document.querySelector('#token')",
            "login page",
        )
        .await;
    browser.screenshot(&screenshots().join("login.png")).await;

    // WHEN the operator types the token and presses the button.
    browser.type_into("#token", TOKEN).await;
    browser.click("form.login button[type=submit]").await;
    browser
        .wait_for("location.pathname === '/ui' && document.querySelector('h1').textContent === 'Overview'", "overview")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('.card').length")
            .await,
        json!(8)
    );
    assert_eq!(
        browser
            .eval("!!document.querySelector('figure.chart svg polyline.p99')")
            .await,
        json!(true),
        "the lag chart is drawn"
    );
    browser
        .screenshot(&screenshots().join("overview.png"))
        .await;

    // THEN the session cookie is HttpOnly, Secure, SameSite=Strict, /ui.
    let cookies = browser.cookies(&format!("{base}/ui")).await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "sundial_console")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(session["httpOnly"], json!(true));
    assert_eq!(session["secure"], json!(true));
    assert_eq!(session["sameSite"], json!("Strict"));
    assert_eq!(session["path"], json!("/ui"));
    assert_eq!(
        browser.eval("document.cookie").await,
        json!(""),
        "readable by script"
    );

    // The task list, then the task's page through its link.
    browser.navigate(&format!("{base}/ui/tasks")).await;
    browser.click(&format!("tr[data-task-id='{id}'] a")).await;
    browser
        .wait_for(
            &format!("location.pathname === '/ui/tasks/{id}'"),
            "task page",
        )
        .await;
    let heading = browser
        .eval("document.querySelector('h1').textContent")
        .await;
    assert!(
        heading.as_str().unwrap_or("").contains("healthy-report"),
        "{heading}"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('h1 .badge').textContent")
            .await,
        json!("enabled")
    );
    browser.screenshot(&screenshots().join("task.png")).await;

    // WHEN the operator pauses it with a reason.
    browser
        .type_into("input[name=reason]", "paused from the browser")
        .await;
    browser.click("button[name=pause]").await;
    browser
        .wait_for(
            "location.search === '?done=paused'",
            "back on the task page after the pause",
        )
        .await;
    browser
        .screenshot(&screenshots().join("task-paused.png"))
        .await;

    // THEN the page shows it paused, and so does the database.
    assert_eq!(
        browser
            .eval("document.querySelector('h1 .badge').textContent")
            .await,
        json!("paused")
    );
    let notice = browser
        .eval("document.querySelector('p.notice').textContent")
        .await;
    assert!(
        notice.as_str().unwrap_or("").starts_with("Paused"),
        "{notice}"
    );
    let page_text = browser.eval("document.body.innerText").await;
    assert!(
        page_text
            .as_str()
            .unwrap_or("")
            .contains("by admin API: paused from the browser"),
        "{page_text}"
    );
    assert_eq!(
        browser
            .eval("!!document.querySelector('button[name=resume]')")
            .await,
        json!(true)
    );
    let row = task_row(&pool, id).await.expect("the task");
    assert_eq!(
        row,
        (
            false,
            Some("admin API".to_string()),
            Some("paused from the browser".to_string())
        ),
        "the database does not show the pause"
    );

    // Nothing on the way broke the page's own policy.
    let violations: Vec<String> = browser
        .log_texts()
        .into_iter()
        .filter(|t| t.contains("Content Security Policy") || t.contains("Refused to"))
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
}
