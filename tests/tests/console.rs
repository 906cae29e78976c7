//! The operator console (`/ui`) against a real database, served by the
//! admin router on loopback as `sundial dev`, a container or the admin
//! Lambda would: every page with tasks in each state, user text escaped,
//! login and session cookie, CSRF and origin checks on every control, the
//! security headers, bad input as 400/404 pages, and IAM mode.

use chrono::{Duration, Utc};
use sqlx::PgPool;
use sundial_e2e::console_kit::*;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn logged_in(pool: &PgPool) -> (Console, Seeded) {
    let mut console = Console::start(pool).await;
    let seeded = seed(&console).await;
    console.login().await;
    (console, seeded)
}

fn assert_page(page: &Page, what: &str) {
    assert_eq!(page.status, 200, "{what}: {}", page.body);
    assert_eq!(
        page.header("content-type"),
        "text/html; charset=utf-8",
        "{what}"
    );
    assert_eq!(page.header("content-security-policy"), CSP, "{what}");
    assert!(
        !page.body.contains("<script"),
        "{what}: a script on the page"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_overview_shows_health_figures_chart_and_worst_tasks(pool: PgPool) {
    let (console, seeded) = logged_in(&pool).await;
    let page = console.get("/ui").await;
    assert_page(&page, "overview");
    let body = &page.body;
    // No scanner ticked against this fresh database: the verdict says so.
    assert!(body.contains("Unhealthy"), "{body}");
    assert!(body.contains("no scanner has ever ticked"), "{body}");
    // The last hour: 2 succeeded runs of healthy-report fall in it, 4 failed.
    assert!(body.contains("Failed, last hour"), "{body}");
    assert!(
        body.contains("<polyline class=\"p99\""),
        "no lag chart: {body}"
    );
    assert!(
        body.contains(&format!(
            "href=\"/ui/tasks/{}\">flaky-webhook",
            seeded.failing
        )),
        "{body}"
    );
    assert!(body.contains("HTTP 500"), "{body}");
    assert!(
        body.contains(&format!(
            "href=\"/ui/tasks/{}\">healthy-report",
            seeded.healthy
        )),
        "{body}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_task_list_filters_searches_and_pages(pool: PgPool) {
    let (console, seeded) = logged_in(&pool).await;
    let all = console.get("/ui/tasks").await;
    assert_page(&all, "task list");
    for (id, state) in [
        (seeded.healthy, "enabled"),
        (seeded.paused, "paused"),
        (seeded.failing, "failing"),
        (seeded.invalid, "invalid"),
    ] {
        let row = all
            .body
            .split(&format!("data-task-id=\"{id}\""))
            .nth(1)
            .expect("the task's row");
        let row = &row[..row.find("</tr>").unwrap_or(row.len())];
        assert!(
            row.contains(&format!("class=\"badge {state}\"")),
            "task {id} is not {state}: {row}"
        );
    }
    // Next run in the task's zone and in UTC.
    let row = all
        .body
        .split(&format!("data-task-id=\"{}\"", seeded.dst))
        .nth(1)
        .unwrap();
    assert!(row.contains("2027-03-13 02:30:00 EST"), "{row}");
    assert!(row.contains("2027-03-13 07:30:00 UTC"), "{row}");
    // 66 tasks: 50 on the first page, and a cursor to the rest.
    assert_eq!(all.body.matches("data-task-id=").count(), 50);
    let next = all
        .body
        .split("rel=\"next\" href=\"")
        .nth(1)
        .expect("a next page");
    let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
    let second = console.get(&next).await;
    assert_page(&second, "second page");
    assert_eq!(second.body.matches("data-task-id=").count(), 16, "{next}");
    assert!(!second.body.contains("rel=\"next\""));

    let only = |page: &Page, id: i64| {
        assert_eq!(
            page.body.matches("data-task-id=").count(),
            1,
            "{}",
            page.body
        );
        assert!(
            page.body.contains(&format!("data-task-id=\"{id}\"")),
            "{}",
            page.body
        );
    };
    only(
        &console.get("/ui/tasks?state=failing&tag=team-b").await,
        seeded.failing,
    );
    only(&console.get("/ui/tasks?tag=team-a").await, seeded.healthy);
    only(&console.get("/ui/tasks?q=FLAKY").await, seeded.failing);
    only(&console.get("/ui/tasks?q=%3Cscript").await, seeded.xss);
    // LIKE's wildcards are literal in a search.
    let none = console.get("/ui/tasks?q=%25").await;
    assert!(none.body.contains("No task matches."), "{}", none.body);
    let paused = console.get("/ui/tasks?state=paused").await;
    assert_eq!(
        paused.body.matches("data-task-id=").count(),
        2,
        "paused and invalid"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn every_task_page_renders_in_each_state(pool: PgPool) {
    let (console, seeded) = logged_in(&pool).await;
    let healthy = console.get(&format!("/ui/tasks/{}", seeded.healthy)).await;
    assert_page(&healthy, "healthy task");
    assert!(healthy.body.contains("Europe/Paris"));
    assert!(
        healthy.body.contains("name=\"pause\""),
        "an enabled task can be paused"
    );
    assert!(healthy.body.contains("Run history"));
    assert_eq!(
        healthy.body.matches("class=\"badge ok\">succeeded").count(),
        6,
        "{}",
        healthy.body
    );
    assert!(
        healthy.body.contains("<polyline class=\"p50\""),
        "no lag chart"
    );
    assert!(healthy.body.contains("Occurrences, last 24 hours"));

    let paused = console.get(&format!("/ui/tasks/{}", seeded.paused)).await;
    assert_page(&paused, "paused task");
    assert!(
        paused.body.contains("by admin API: deploy freeze"),
        "{}",
        paused.body
    );
    assert!(paused.body.contains("name=\"resume\""));
    assert!(!paused.body.contains("name=\"pause\""));

    let failing = console.get(&format!("/ui/tasks/{}", seeded.failing)).await;
    assert_page(&failing, "failing task");
    assert!(
        failing.body.contains("3 consecutive failure(s)"),
        "{}",
        failing.body
    );

    let invalid = console.get(&format!("/ui/tasks/{}", seeded.invalid)).await;
    assert_page(&invalid, "invalid task");
    assert!(
        invalid.body.contains("Schedule cannot be evaluated"),
        "{}",
        invalid.body
    );

    // The next occurrences, with the DST note of the spring-forward.
    let dst = console.get(&format!("/ui/tasks/{}", seeded.dst)).await;
    assert_page(&dst, "DST task");
    assert!(dst.body.contains("2027-03-13 02:30:00 EST"), "{}", dst.body);
    assert!(dst.body.contains("2027-03-14 03:00:00 EDT"), "{}", dst.body);
    assert!(
        dst.body.contains("does not exist"),
        "no DST note: {}",
        dst.body
    );

    let confirm = console
        .get(&format!("/ui/tasks/{}/delete", seeded.healthy))
        .await;
    assert_page(&confirm, "delete confirmation");
    assert!(confirm.body.contains("Delete healthy-report?"));

    let flows = console.get("/ui/flows").await;
    assert_page(&flows, "flows");
    assert!(
        flows.body.contains("<code>127.0.0.1:9</code>"),
        "{}",
        flows.body
    );
    assert!(flows.body.contains("5/s, burst 2"), "{}", flows.body);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn user_supplied_text_renders_as_text(pool: PgPool) {
    let (console, seeded) = logged_in(&pool).await;
    for path in [
        "/ui".to_string(),
        "/ui/tasks".to_string(),
        format!("/ui/tasks/{}", seeded.xss),
        format!("/ui/tasks/{}/delete", seeded.xss),
    ] {
        let page = console.get(&path).await;
        assert_page(&page, &path);
        assert!(
            page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: the name is not shown escaped"
        );
        for raw in [XSS_NAME, "<img", "<b onmouseover", "</pre><script"] {
            assert!(
                !page.body.contains(raw),
                "{path}: `{raw}` is raw in the page"
            );
        }
    }
    let detail = console.get(&format!("/ui/tasks/{}", seeded.xss)).await.body;
    for escaped in [
        "&lt;img src=x onerror=alert(2)&gt;",
        "&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;",
        "&lt;script&gt;alert(4)&lt;/script&gt;",
        "&quot;&gt;&lt;img src=x onerror=alert(5)&gt;",
        "&lt;b onmouseover=alert(6)&gt;bold&lt;/b&gt;",
    ] {
        assert!(
            detail.contains(escaped),
            "`{escaped}` missing from {detail}"
        );
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn controls_need_the_csrf_token_and_the_same_origin(pool: PgPool) {
    let (console, seeded) = logged_in(&pool).await;
    let id = seeded.healthy;
    let page = console.get(&format!("/ui/tasks/{id}")).await;
    let csrf = page.csrf();
    let origin = console.base.clone();
    let pause = format!("/ui/tasks/{id}/pause");
    let refused = [
        (vec![("reason", "x")], Some(origin.as_str())),
        (
            vec![("csrf", "0000"), ("reason", "x")],
            Some(origin.as_str()),
        ),
        (vec![("csrf", csrf.as_str())], Some("http://evil.example")),
        (vec![("csrf", csrf.as_str())], Some("null")),
    ];
    for (form, from) in refused {
        let answer = console.post(&pause, &form, from).await;
        assert_eq!(
            answer.status, 403,
            "{form:?} from {from:?}: {}",
            answer.body
        );
        assert_eq!(answer.header("content-security-policy"), CSP);
        assert!(
            task_row(&pool, id).await.unwrap().0,
            "paused anyway by {form:?}"
        );
    }
    // A token of another session does not do either.
    let mut other = Console::start(&pool).await;
    other.login().await;
    let foreign = other.get("/ui").await.csrf();
    let answer = console
        .post(&pause, &[("csrf", &foreign)], Some(&origin))
        .await;
    assert_eq!(answer.status, 403);
    assert!(task_row(&pool, id).await.unwrap().0);

    // With the token: paused, through the admin API's handler.
    let answer = console
        .post(
            &pause,
            &[("csrf", &csrf), ("reason", "from the console")],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(
        answer.header("location"),
        format!("/ui/tasks/{id}?done=paused")
    );
    let row = task_row(&pool, id).await.unwrap();
    assert_eq!(
        row,
        (
            false,
            Some("admin API".into()),
            Some("from the console".into())
        )
    );
    let after = console.get(answer.header("location")).await;
    assert!(
        after.body.contains("Paused: nothing fires"),
        "{}",
        after.body
    );

    let answer = console
        .post(
            &format!("/ui/tasks/{id}/resume"),
            &[("csrf", &csrf)],
            Some(&origin),
        )
        .await;
    assert_eq!(answer.status, 303);
    assert!(task_row(&pool, id).await.unwrap().0, "resumed");

    let before = console.queue.len();
    let answer = console
        .post(&format!("/ui/tasks/{id}/trigger"), &[("csrf", &csrf)], None)
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let queued = console.queue.drain();
    assert_eq!(queued.len(), before + 1, "one manual message queued");
    assert!(queued.iter().any(|m| m.task_id == id && m.manual));

    // A paused task cannot be triggered: the API's 409, as a page.
    let answer = console
        .post(
            &format!("/ui/tasks/{}/trigger", seeded.paused),
            &[("csrf", &csrf)],
            None,
        )
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(answer.body.contains("is paused"));

    let delete = format!("/ui/tasks/{id}/delete");
    assert_eq!(console.post(&delete, &[], Some(&origin)).await.status, 403);
    assert!(task_row(&pool, id).await.is_some());
    let answer = console
        .post(&delete, &[("csrf", &csrf)], Some(&origin))
        .await;
    assert_eq!(answer.status, 303);
    assert!(task_row(&pool, id).await.is_none(), "deleted");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn login_sets_a_strict_session_cookie_that_expires(pool: PgPool) {
    let mut console = Console::start(&pool).await;
    let first = console.get("/ui/tasks?state=failing").await;
    assert_eq!(first.status, 303);
    assert_eq!(
        first.header("location"),
        "/ui/login?next=%2Fui%2Ftasks%3Fstate%3Dfailing"
    );
    let login = console.get(first.header("location")).await;
    assert_page(&login, "login page");
    assert!(
        login.body.contains("value=\"/ui/tasks?state=failing\""),
        "{}",
        login.body
    );

    for wrong in ["", "console-test-token-012345678", "not the token at all"] {
        let answer = console.login_with(wrong).await;
        assert_eq!(answer.status, 401, "{wrong:?}");
        assert!(
            answer.header("set-cookie").is_empty(),
            "{wrong:?} got a cookie"
        );
        assert!(answer.body.contains("That is not the admin token."));
        assert!(console.cookie.is_none());
    }
    // A login from another site is refused before the token is looked at.
    let answer = console
        .post(
            "/ui/login",
            &[("token", TOKEN)],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(answer.status, 403);
    assert!(answer.header("set-cookie").is_empty());

    let answer = console.login_with(TOKEN).await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.header("location"), "/ui");
    let cookie = answer.header("set-cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/ui",
        "Max-Age=43200",
    ] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute} missing: {cookie}"
        );
    }
    assert_eq!(console.get("/ui").await.status, 200);

    // Altered, expired, or signed for another token: back to the login.
    let value = session_value(cookie).unwrap().to_string();
    let mut altered = value.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    let expired = sundial::admin::ui::issue_session(TOKEN, Utc::now() - Duration::minutes(1));
    let later = sundial::admin::ui::issue_session(TOKEN, Utc::now() + Duration::hours(1));
    let foreign = sundial::admin::ui::issue_session(
        "another-token-0123456789",
        Utc::now() + Duration::hours(1),
    );
    for (what, forged) in [
        ("altered", altered),
        ("expired", expired),
        ("another token's", foreign),
    ] {
        console.cookie = Some(format!("sundial_console={forged}"));
        let page = console.get("/ui").await;
        assert_eq!(page.status, 303, "{what} cookie accepted");
        assert!(page.header("location").starts_with("/ui/login"), "{what}");
        let post = console
            .post("/ui/tasks/1/pause", &[("csrf", "x")], None)
            .await;
        assert_eq!(post.status, 303, "{what} cookie accepted for a POST");
    }
    console.cookie = Some(format!("sundial_console={later}"));
    assert_eq!(
        console.get("/ui").await.status,
        200,
        "a valid forged-by-the-key session"
    );

    console.cookie = Some(format!("sundial_console={value}"));
    let csrf = console.get("/ui").await.csrf();
    let out = console.post("/ui/logout", &[("csrf", &csrf)], None).await;
    assert_eq!(out.status, 303);
    assert!(
        out.header("set-cookie")
            .starts_with("sundial_console=; Path=/ui; Max-Age=0"),
        "{:?}",
        out.headers
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn every_answer_carries_the_security_headers(pool: PgPool) {
    let (console, _) = logged_in(&pool).await;
    let overview = console.get("/ui").await;
    assert_eq!(overview.header("x-content-type-options"), "nosniff");
    assert_eq!(overview.header("x-frame-options"), "DENY");
    assert_eq!(overview.header("cache-control"), "no-store");
    let css = overview
        .body
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .unwrap();
    let css = &css[..css.find('"').unwrap()];
    let sheet = console.get(css).await;
    assert_eq!(sheet.status, 200);
    assert_eq!(sheet.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(
        sheet.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(sheet.header("content-security-policy"), CSP);
    assert_eq!(
        console
            .get("/ui/assets/console-000000000000.css")
            .await
            .status,
        404
    );
    let anonymous = Console::start(&pool).await;
    for path in ["/ui", "/ui/login", "/ui/nope", css] {
        let page = anonymous.get(path).await;
        assert_eq!(page.header("content-security-policy"), CSP, "{path}");
        assert_eq!(page.header("x-content-type-options"), "nosniff", "{path}");
    }
    // The JSON API keeps its own answers.
    let api = anonymous.get("/v1/tasks").await;
    assert_eq!(api.status, 401);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn bad_input_is_a_400_or_404_page_never_a_500(pool: PgPool) {
    let (console, seeded) = logged_in(&pool).await;
    let id = seeded.healthy;
    for (path, status) in [
        ("/ui/tasks?cursor=abc".to_string(), 400),
        ("/ui/tasks?cursor=99999999999999999999".to_string(), 400),
        ("/ui/tasks?state=sleeping".to_string(), 400),
        (format!("/ui/tasks?tag={}", "x".repeat(100)), 400),
        ("/ui/tasks?q=%00".to_string(), 400),
        ("/ui/tasks/abc".to_string(), 400),
        ("/ui/tasks/-3".to_string(), 400),
        ("/ui/tasks/999999999".to_string(), 404),
        ("/ui/tasks/999999999/delete".to_string(), 404),
        (format!("/ui/tasks/{id}?before=yesterday"), 400),
        (format!("/ui/tasks/{id}?before=99999-01-01T00:00:00Z"), 400),
        ("/ui/flows?after=%20".to_string(), 400),
        ("/ui/nope/nothing".to_string(), 404),
    ] {
        let page = console.get(&path).await;
        assert_eq!(page.status, status, "{path}: {}", page.body);
        assert_eq!(
            page.header("content-type"),
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(page.header("content-security-policy"), CSP, "{path}");
    }
    let csrf = console.get("/ui").await.csrf();
    let gone = console
        .post("/ui/tasks/999999999/pause", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let long = "r".repeat(20_000);
    let big = console
        .post(
            &format!("/ui/tasks/{id}/pause"),
            &[("csrf", &csrf), ("reason", &long)],
            None,
        )
        .await;
    assert_eq!(big.status, 413);
    assert!(task_row(&pool, id).await.unwrap().0);
    // A page of runs further back is still a page.
    let older = console
        .get(&format!("/ui/tasks/{id}?before=2020-01-01T00:00:00Z"))
        .await;
    assert_page(&older, "older runs");
    assert!(older.body.contains("No runs recorded."));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn iam_mode_says_how_to_reach_the_console(pool: PgPool) {
    let console = Console::start_iam(&pool).await;
    seed(&console).await;
    for path in ["/ui", "/ui/tasks", "/ui/login", "/ui/tasks/1"] {
        let page = console.get(path).await;
        assert_page(&page, path);
        assert!(
            page.body.contains("SUNDIAL_ADMIN_AUTH=iam"),
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains("sundial dev"), "{path}");
        assert!(
            !page.body.contains("name=\"token\""),
            "{path}: a login form in IAM mode"
        );
        assert!(
            !page.body.contains("healthy-report"),
            "{path}: task data in IAM mode"
        );
    }
    let post = console
        .post("/ui/login", &[("token", "anything")], None)
        .await;
    assert_eq!(post.status, 403);
    assert!(post.header("set-cookie").is_empty());
}

/// `sundial admin`: the API and the console alone, as a container runs it
/// where the admin Lambda uses IAM auth.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn sundial_admin_serves_the_console_alone(pool: PgPool) {
    use sundial_e2e::{driver_env, fresh_queue, workspace_bin, Child};
    let queue = fresh_queue("console-admin").await;
    let mut env = driver_env(&sundial_testkit::database_url_for(&pool), queue.queue_url());
    env.push(("SUNDIAL_ADMIN_TOKEN".into(), TOKEN.into()));
    let child = Child::spawn(
        &workspace_bin("sundial"),
        &["admin", "--listen", "127.0.0.1:0"],
        &env,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let console_url = loop {
        let lines = child.stdout_lines();
        if let Some(url) = lines.iter().find_map(|l| l.strip_prefix("console: ")) {
            break url.split(' ').next().unwrap_or("").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no console address: {lines:?} {:?}",
            child.stderr_lines()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let base = console_url.trim_end_matches("/ui").to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("{base}/ui/login"))
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("token", TOKEN)]))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = format!("sundial_console={}", session_value(cookie).unwrap());
    let overview = http
        .get(format!("{base}/ui"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    assert!(overview.text().await.unwrap().contains("<h1>Overview</h1>"));
    // No scanner runs in it: a SQL-registered row stays unscheduled.
    let row = sundial_testkit::TaskBuilder::new().insert(&pool).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let next: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT next_run_at FROM tasks WHERE id = $1")
            .bind(row.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        next, None,
        "sundial admin scheduled a task: it runs a scanner"
    );
}
