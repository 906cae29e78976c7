//! The console tests' harness: the admin router (console included) on
//! loopback over a `#[sqlx::test]` database, an HTTP client that keeps the
//! session cookie by hand (so tests see every `Set-Cookie`), and a
//! database with tasks in every state, written through the real code
//! paths: the test kit's `TaskBuilder`, the admin API (pause, flow
//! limits), the scanner's first scheduling (an invalid schedule) and the
//! processor's write-back (runs, failures).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::PgPool;
use sundial::admin::AdminState;
use sundial::queue::memory::MemoryQueue;
use sundial::store::{self, Outcome, OutcomeKind, RunRecord, RunStatus};
use sundial::trigger::Trigger;
use sundial_testkit::TaskBuilder;

/// The admin token of the console tests.
pub const TOKEN: &str = "console-test-token-0123456789";
/// The name that must render as text.
pub const XSS_NAME: &str = "<script>alert(1)</script>";

/// The router served for one test.
pub struct Console {
    pub base: String,
    pub pool: PgPool,
    pub queue: Arc<MemoryQueue>,
    pub http: reqwest::Client,
    /// `sundial_console=<value>` once logged in.
    pub cookie: Option<String>,
}

/// A page as fetched.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `csrf` field of the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a csrf field") + marker.len();
        let end = self.body[start..].find('"').expect("end of the csrf value");
        self.body[start..start + end].to_string()
    }
}

fn guard() -> Arc<sundial::fire::TargetGuard> {
    let allow = vec!["127.0.0.1/32".to_string()];
    Arc::new(sundial::fire::TargetGuard::new(&allow).expect("target guard"))
}

impl Console {
    /// The admin router with a token (the console's login takes it).
    pub async fn start(pool: &PgPool) -> Console {
        let queue = Arc::new(MemoryQueue::new(10_000));
        let state = AdminState::new(pool.clone(), queue.clone(), guard(), TOKEN);
        Console::serve(pool, queue, state).await
    }

    /// The admin router behind IAM auth (`SUNDIAL_ADMIN_AUTH=iam`).
    pub async fn start_iam(pool: &PgPool) -> Console {
        let queue = Arc::new(MemoryQueue::new(10_000));
        let state = AdminState::with_delegated_auth(pool.clone(), queue.clone(), guard());
        Console::serve(pool, queue, state).await
    }

    async fn serve(pool: &PgPool, queue: Arc<MemoryQueue>, state: AdminState) -> Console {
        let base = crate::serve_admin(state).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Console {
            base,
            pool: pool.clone(),
            queue,
            http,
            cookie: None,
        }
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("response body");
        Page {
            status,
            headers,
            body,
        }
    }

    /// `GET path` with the session cookie, if any.
    pub async fn get(&self, path: &str) -> Page {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        Console::page(request.send().await.expect("GET")).await
    }

    /// `POST path` with a form, the session cookie and an `Origin` (a
    /// browser's form post sends one).
    pub async fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        Console::page(request.send().await.expect("POST")).await
    }

    /// `POST /ui/login` with `token`; keeps the cookie it sets.
    pub async fn login_with(&mut self, token: &str) -> Page {
        let origin = self.base.clone();
        let page = self
            .post(
                "/ui/login",
                &[("token", token), ("next", "/ui")],
                Some(&origin),
            )
            .await;
        if let Some(value) = session_value(page.header("set-cookie")) {
            self.cookie = Some(format!("sundial_console={value}"));
        }
        page
    }

    /// Logs in with the right token.
    pub async fn login(&mut self) {
        let page = self.login_with(TOKEN).await;
        assert_eq!(page.status, 303, "{page:?}");
        assert!(self.cookie.is_some(), "no session cookie: {page:?}");
    }

    /// A JSON call to the admin API with the bearer token.
    pub async fn api(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> u16 {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin API call")
            .status()
            .as_u16()
    }
}

/// A form as a browser encodes it.
pub fn form_body(form: &[(&str, &str)]) -> String {
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in form {
        body.append_pair(name, value);
    }
    body.finish()
}

/// The value of `sundial_console=` in a `Set-Cookie` header.
pub fn session_value(set_cookie: &str) -> Option<&str> {
    set_cookie
        .strip_prefix("sundial_console=")?
        .split(';')
        .next()
        .filter(|v| !v.is_empty())
}

/// The ids of the seeded tasks.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    /// Enabled, fine, with runs (lag figures), tag `team-a`, Europe/Paris.
    pub healthy: i64,
    /// Paused through the admin API with a reason.
    pub paused: i64,
    /// Enabled; its last runs failed (HTTP 500), tag `team-b`.
    pub failing: i64,
    /// Disabled by the scanner's first scheduling: invalid schedule.
    pub invalid: i64,
    /// 02:30 daily in New York, next on the eve of the 2027 spring-forward.
    pub dst: i64,
    /// Named [`XSS_NAME`], with hostile header, body, error and excerpt.
    pub xss: i64,
}

/// A finished run as the processor writes it back.
pub fn run_outcome(
    task: (i64, i64),
    occurrence: DateTime<Utc>,
    status: RunStatus,
    lag_ms: i64,
    error: Option<&str>,
) -> Outcome {
    let fired = occurrence + Duration::milliseconds(lag_ms);
    let failed = status != RunStatus::Succeeded;
    Outcome {
        task_id: task.0,
        version: task.1,
        occurrence,
        kind: OutcomeKind::Finished {
            run: RunRecord {
                status,
                attempts: 1,
                fired_at: Some(fired),
                finished_at: fired + Duration::milliseconds(40),
                http_status: Some(if failed { 500 } else { 200 }),
                latency_ms: Some(40),
                error: error.map(str::to_string),
                response_excerpt: Some(
                    if failed {
                        "</pre><script>alert(3)</script>"
                    } else {
                        "ok"
                    }
                    .into(),
                ),
                pacing_ms: None,
                trigger: Trigger::Schedule,
                backfill_id: None,
                rerun: 0,
            },
            next_run_at: Some(occurrence + Duration::days(1)),
            manual: false,
            chain_lease: None,
        },
    }
}

/// The first occurrence of `schedule` in `zone` after `now`, as the
/// scanner would compute it.
fn first_after(schedule: &str, zone: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    let schedule = sundial::schedule::Schedule::parse(schedule).expect("a schedule");
    let zone = sundial::schedule::parse_zone(zone).expect("a zone");
    schedule.next_after(now, zone).expect("an occurrence")
}

/// Tasks in every state, and 60 more (`bulk-1..60`) to page through.
pub async fn seed(console: &Console) -> Seeded {
    let pool = &console.pool;
    let now = Utc::now();
    let tomorrow = now + Duration::days(1);
    let healthy = TaskBuilder::new()
        .name("healthy-report")
        .schedule("0 2 * * *")
        .timezone("Europe/Paris")
        .tags(&["team-a"])
        .next_run_at(first_after("0 2 * * *", "Europe/Paris", now))
        .insert(pool)
        .await;
    let paused = TaskBuilder::new()
        .name("paused-sync")
        .schedule("rate(5 minutes)")
        .next_run_at(first_after("rate(5 minutes)", "UTC", now))
        .insert(pool)
        .await;
    let failing = TaskBuilder::new()
        .name("flaky-webhook")
        .schedule("rate(1 minute)")
        .tags(&["team-b"])
        .next_run_at(first_after("rate(1 minute)", "UTC", now))
        .insert(pool)
        .await;
    let invalid = TaskBuilder::new()
        .name("broken-cron")
        .schedule("61 * * * *")
        .insert(pool)
        .await;
    let dst_next = DateTime::parse_from_rfc3339("2027-03-13T07:30:00Z")
        .expect("an instant")
        .to_utc();
    let dst = TaskBuilder::new()
        .name("ny-0230")
        .schedule("30 2 * * *")
        .timezone("America/New_York")
        .next_run_at(dst_next)
        .insert(pool)
        .await;
    let xss = TaskBuilder::new()
        .name(XSS_NAME)
        .url("http://127.0.0.1:9/?q=\"><img src=x onerror=alert(5)>")
        .headers(json!({"X-Note": "<b onmouseover=alert(6)>bold</b>"}))
        .body("<script>alert(4)</script>")
        .next_run_at(tomorrow)
        .insert(pool)
        .await;
    TaskBuilder::new()
        .name("bulk-")
        .next_run_at(tomorrow)
        .insert_many(pool, 60)
        .await;

    // The scanner's first scheduling marks the unreadable schedule.
    store::schedule_new(pool, now, 100)
        .await
        .expect("schedule new rows");
    // Runs of the last hours, written back as the processor does.
    let mut outcomes = Vec::new();
    for k in 1..=6i64 {
        let at = now - Duration::minutes(50 * k);
        outcomes.push(run_outcome(
            (healthy.id, healthy.version),
            at,
            RunStatus::Succeeded,
            20 * k,
            None,
        ));
    }
    for k in 1..=3i64 {
        let at = now - Duration::minutes(10 * k);
        outcomes.push(run_outcome(
            (failing.id, failing.version),
            at,
            RunStatus::Failed,
            5,
            Some("HTTP 500"),
        ));
    }
    let hostile = Some("<img src=x onerror=alert(2)>");
    outcomes.push(run_outcome(
        (xss.id, xss.version),
        now - Duration::minutes(5),
        RunStatus::Failed,
        5,
        hostile,
    ));
    // One flush each, as runs of different moments are written back.
    for outcome in outcomes {
        store::record_outcomes(pool, &[outcome])
            .await
            .expect("record a run");
    }

    // A pause and flow limits through the admin API.
    let status = console
        .api(
            reqwest::Method::POST,
            &format!("/v1/tasks/{}/pause", paused.id),
            json!({"reason": "deploy freeze"}),
        )
        .await;
    assert_eq!(status, 200, "pause through the API");
    let status = console
        .api(
            reqwest::Method::PUT,
            "/v1/flows/127.0.0.1%3A9",
            json!({"rate_per_sec": 5, "burst": 2}),
        )
        .await;
    assert_eq!(status, 200, "flow limits through the API");
    Seeded {
        healthy: healthy.id,
        paused: paused.id,
        failing: failing.id,
        invalid: invalid.id,
        dst: dst.id,
        xss: xss.id,
    }
}

/// `enabled`, `paused_by`, `paused_reason` of a task; `None` when gone.
pub async fn task_row(pool: &PgPool, id: i64) -> Option<(bool, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT enabled, paused_by, paused_reason FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("read the task")
}
