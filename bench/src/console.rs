//! `sundial bench console`: the operator console's pages at scale. Seeds
//! `--tasks` tasks (mixed schedules, zones, tags, 5 % paused, 4 % failing,
//! 50 flows with limits) and `--runs` runs over the last 7 days with two
//! `INSERT ... SELECT generate_series`, serves the real admin router on
//! loopback, logs in through `/ui/login` like a browser, and times each
//! page `--requests` times over HTTP (after 3 warm-up requests). Also
//! times `GET /v1/status` for comparison (the overview's figures computed
//! per request; the overview takes them at most every 10 s), and
//! records `EXPLAIN ANALYZE` of the statements behind the task list, the
//! name search, the run history and the lag charts, and the load average
//! the figures were taken under.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{Duration, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::measure::{round2, round3, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::{Common, Ctx};

const TOKEN: &str = "sundial-bench-console-token";
/// The console's goal per page.
pub const GOAL_MS: f64 = 50.0;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Tasks [default: 10000, --quick: 2000].
    #[arg(long)]
    pub tasks: Option<i64>,
    /// Runs, spread over the last 7 days [default: 1000000, --quick: 200000].
    #[arg(long)]
    pub runs: Option<i64>,
    /// Timed requests per page [default: 50, --quick: 20].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Keep the scratch database afterwards (to look at plans by hand).
    #[arg(long)]
    pub keep_db: bool,
    #[command(flatten)]
    pub common: Common,
}

/// One page's timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageTiming {
    pub page: String,
    pub path: String,
    /// Wall time of the whole answer (request to last byte), ms.
    pub ms: Dist,
    pub bytes: usize,
}

/// A statement's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub statement: String,
    pub execution_ms: f64,
    pub plan: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleResults {
    pub tasks: i64,
    pub runs: i64,
    pub requests_per_page: usize,
    pub seed_s: f64,
    /// `/proc/loadavg` (1, 5, 15 min) before and after the timed requests.
    pub load_before: String,
    pub load_after: String,
    pub pages: Vec<PageTiming>,
    pub plans: Vec<Plan>,
    pub resources: Resources,
}

impl ConsoleResults {
    /// The slowest page at p99, ms.
    pub fn worst_p99(&self) -> f64 {
        self.pages
            .iter()
            .filter(|p| p.path.starts_with("/ui"))
            .map(|p| p.ms.p99)
            .fold(0.0, f64::max)
    }
}

pub async fn run(args: ConsoleArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let tasks = args
        .tasks
        .unwrap_or(if ctx.quick { 2_000 } else { 10_000 })
        .max(100);
    let runs = args
        .runs
        .unwrap_or(if ctx.quick { 200_000 } else { 1_000_000 })
        .max(1);
    let requests = args
        .requests
        .unwrap_or(if ctx.quick { 20 } else { 50 })
        .max(1);
    let pool = ctx.db.fresh(10).await?;
    let mut progress = Progress::new("console");
    progress.update(|| format!("seeding {tasks} tasks and {runs} runs"));
    let started = Instant::now();
    let first_id = seed(&pool, tasks, runs).await?;
    let seed_s = started.elapsed().as_secs_f64();
    progress.done(&format!("seeded in {seed_s:.1} s"));

    let base = serve(&pool).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = login(&http, &base).await?;
    let meter = Meter::start(None);
    let load_before = loadavg();
    let mut pages = Vec::new();
    for (page, path) in page_paths(first_id, tasks) {
        progress.update(|| format!("timing {page}"));
        let auth = ("cookie", cookie.clone());
        pages.push(time_page(&http, &base, &auth, page, &path, requests).await?);
    }
    // For comparison: what the overview's figures cost when computed for
    // every request (the JSON API does; the overview takes them every 10 s).
    let bearer = ("authorization", format!("Bearer {TOKEN}"));
    let status = "GET /v1/status (JSON, computed per request)";
    pages.push(time_page(&http, &base, &bearer, status, "/v1/status", requests).await?);
    let load_after = loadavg();
    let resources = meter.finish();
    progress.done("pages timed");
    let plans = explain_all(&pool, first_id + 6).await?;
    let results = ConsoleResults {
        tasks,
        runs,
        requests_per_page: requests,
        seed_s: round3(seed_s),
        load_before,
        load_after,
        pages,
        plans,
        resources: resources.clone(),
    };
    println!("{}", table(&results).text());
    for plan in &results.plans {
        println!(
            "{} ({} ms):\n  {}",
            plan.statement,
            plan.execution_ms,
            plan.plan.join("\n  ")
        );
    }
    pool.close().await;
    if !args.keep_db {
        ctx.db.drop_database().await?;
    }
    ctx.finish("console", "none (nothing is fired)", resources, &results)
}

/// The tasks and runs; returns the first task's id.
async fn seed(pool: &PgPool, tasks: i64, runs: i64) -> Result<i64> {
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO tasks (name, schedule, timezone, url, next_run_at, enabled, tags, \
                            consecutive_failures, last_status, last_run_at, flow_key) \
         SELECT 'console-' || g, \
                (ARRAY['*/5 * * * *', '0 2 * * *', 'rate(1 minute)', 'rate(1 hour)', \
                       '30 9 * * MON-FRI'])[1 + g % 5], \
                (ARRAY['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo'])[1 + g % 4], \
                'http://127.0.0.1:9/t/' || g, \
                $2::timestamptz + (g % 3600) * interval '1 second', \
                g % 20 <> 0, ARRAY['team-' || (g % 10)], \
                CASE WHEN g % 25 = 0 THEN 2 ELSE 0 END, \
                CASE WHEN g % 25 = 0 THEN 'failed' ELSE 'succeeded' END, \
                $2::timestamptz - (g % 600) * interval '1 second', \
                'flow-' || (g % 50) \
         FROM generate_series(1, $1::bigint) g",
    )
    .bind(tasks)
    .bind(now)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO flows (key, rate_per_sec, burst) \
         SELECT 'flow-' || g, 10, 2 FROM generate_series(0, 49) g",
    )
    .execute(pool)
    .await?;
    let first_id: i64 = sqlx::query_scalar("SELECT min(id) FROM tasks")
        .fetch_one(pool)
        .await?;
    // Runs g = 1..runs, evenly over the last 7 days, task by task in turn:
    // each occurrence distinct, so the run key never collides.
    let step_ms = Duration::days(7).num_milliseconds() as f64 / runs as f64;
    sqlx::query(
        "INSERT INTO task_runs (task_id, scheduled_for, attempts, fired_at, finished_at, status, \
                                http_status, latency_ms, error, trigger) \
         SELECT $2 + g % $3, s, 1, s + (g % 97) * 3 * interval '1 millisecond', \
                s + ((g % 97) * 3 + 20 + g % 200) * interval '1 millisecond', \
                CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, \
                CASE WHEN g % 50 = 0 THEN 500 ELSE 200 END, 20 + g % 200, \
                CASE WHEN g % 50 = 0 THEN 'HTTP 500' END, 'schedule' \
         FROM generate_series(1, $1::bigint) g, \
              LATERAL (SELECT $4::timestamptz + g * $5::float8 * interval '1 millisecond' AS s) o",
    )
    .bind(runs)
    .bind(first_id)
    .bind(tasks)
    .bind(now - Duration::days(7))
    .bind(step_ms)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE tasks").execute(pool).await?;
    sqlx::query("ANALYZE task_runs").execute(pool).await?;
    Ok(first_id)
}

/// Serves the real admin router (console included) on loopback.
async fn serve(pool: &PgPool) -> Result<String> {
    let guard = sundial::fire::TargetGuard::new(&[])?;
    let queue = Arc::new(sundial::queue::memory::MemoryQueue::new(1_000));
    let state = sundial::admin::AdminState::new(pool.clone(), queue, Arc::new(guard), TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = sundial::admin::router(state);
    tokio::spawn(sundial::admin::serve::serve(
        listener,
        router,
        std::future::pending(),
        Default::default(),
    ));
    Ok(base)
}

/// Logs in as a browser does; returns the `Cookie` header value.
async fn login(http: &reqwest::Client, base: &str) -> Result<String> {
    let answer = http
        .post(format!("{base}/ui/login"))
        .header("origin", base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await?;
    let cookie = answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the login set no session cookie")?;
    Ok(cookie.to_string())
}

/// The pages timed: each kind once, the heavy variants of the list too.
fn page_paths(first_id: i64, tasks: i64) -> Vec<(&'static str, String)> {
    // Task 7 is `rate(1 minute)`: its day holds 1,440 occurrences, the
    // largest ledger a page shows.
    let busy = first_id + 6;
    let three_days_ago = (Utc::now() - Duration::days(3)).format("%Y-%m-%dT%H:%M:%SZ");
    vec![
        ("overview", "/ui".to_string()),
        ("tasks", "/ui/tasks".to_string()),
        ("tasks, failing", "/ui/tasks?state=failing".to_string()),
        ("tasks, tag", "/ui/tasks?tag=team-3".to_string()),
        (
            "tasks, name search (1 match)",
            format!("/ui/tasks?q=console-{}", tasks - 1),
        ),
        (
            "tasks, last page",
            format!("/ui/tasks?cursor={}", first_id + tasks - 30),
        ),
        ("task", format!("/ui/tasks/{busy}")),
        (
            "task, older runs",
            format!("/ui/tasks/{busy}?before={three_days_ago}"),
        ),
        ("flows", "/ui/flows".to_string()),
    ]
}

async fn time_page(
    http: &reqwest::Client,
    base: &str,
    auth: &(&str, String),
    page: &str,
    path: &str,
    requests: usize,
) -> Result<PageTiming> {
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    // The overview's requests are spread over more than its figures'
    // freshness (10 s), so refreshes run while pages are being served.
    let pause = if path == "/ui" {
        std::time::Duration::from_millis(300)
    } else {
        std::time::Duration::ZERO
    };
    for i in 0..requests + 3 {
        tokio::time::sleep(pause).await;
        let started = Instant::now();
        let answer = http
            .get(format!("{base}{path}"))
            .header(auth.0, auth.1.as_str())
            .send()
            .await?;
        let status = answer.status();
        let body = answer.bytes().await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status != reqwest::StatusCode::OK {
            bail!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        bytes = body.len();
        if i >= 3 {
            times.push(round3(ms));
        }
    }
    Ok(PageTiming {
        page: page.to_string(),
        path: path.to_string(),
        ms: Dist::of(&mut times),
        bytes,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `EXPLAIN ANALYZE` of the statements behind the list, the search, the
/// run history and the charts (the same SQL as the store's, with the
/// page's parameters written in).
async fn explain_all(pool: &PgPool, task_id: i64) -> Result<Vec<Plan>> {
    let statements = [
        ("task list, failing (store::search_tasks)",
         "SELECT id FROM tasks WHERE (consecutive_failures > 0) = true ORDER BY id LIMIT 51".to_string()),
        ("name search (store::search_tasks)",
         "SELECT id FROM tasks WHERE name ILIKE '%console-9999%' ORDER BY id LIMIT 51".to_string()),
        ("run history (store::list_runs)",
         format!("SELECT * FROM task_runs WHERE task_id = {task_id} ORDER BY scheduled_for DESC, rerun LIMIT 26")),
        ("task lag chart (store::task_lag_series)",
         format!("SELECT date_bin(interval '1 hour', scheduled_for, now() - interval '1 day'), count(*) \
                  FROM task_runs WHERE task_id = {task_id} AND scheduled_for >= now() - interval '1 day' GROUP BY 1")),
        ("overview lag chart (store::lag_series)",
         "SELECT date_bin(interval '15 minutes', finished_at, now() - interval '6 hours'), \
                 floor(ln(1 + latency_ms) * 100)::int, count(*) \
          FROM task_runs WHERE finished_at >= now() - interval '6 hours' GROUP BY 1, 2".to_string()),
    ];
    let mut plans = Vec::new();
    for (name, sql) in statements {
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) {sql}");
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .fetch_all(pool)
            .await?;
        let execution_ms = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("Execution Time: "))
            .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
            .unwrap_or(0.0);
        plans.push(Plan {
            statement: name.to_string(),
            execution_ms: round2(execution_ms),
            plan: lines
                .into_iter()
                .filter(|l| !l.contains("Buffers:"))
                .collect(),
        });
    }
    Ok(plans)
}

pub fn table(r: &ConsoleResults) -> Table {
    let mut t = Table::new([
        "page",
        "p50 ms",
        "p99 ms",
        "max ms",
        "KiB",
        "≤ 50 ms at p99",
    ]);
    for p in &r.pages {
        t.row([
            p.page.clone(),
            num(p.ms.p50),
            num(p.ms.p99),
            num(p.ms.max),
            num(p.bytes as f64 / 1024.0),
            match (p.path.starts_with("/ui"), p.ms.p99 <= GOAL_MS) {
                (false, _) => "(reference)",
                (true, true) => "yes",
                (true, false) => "no",
            }
            .to_string(),
        ]);
    }
    t
}

/// The console's row of the targets table in docs/BENCHMARKS.md.
pub fn target(t: &mut Table, out: &std::path::Path, verdict: fn(f64, f64, bool) -> String) {
    match super::report::read::<ConsoleResults>(out, "console") {
        Ok(f) => {
            let r = &f.results;
            t.row([
                format!(
                    "console: every page ≤ {GOAL_MS} ms at {} tasks and {} runs (p99)",
                    r.tasks, r.runs
                ),
                format!("{} ms (slowest page, p99)", num(r.worst_p99())),
                verdict(r.worst_p99(), GOAL_MS, false),
            ]);
        }
        Err(_) => {
            t.row(["console".to_string(), "not run".into(), "—".into()]);
        }
    }
}

/// The console's section of docs/BENCHMARKS.md.
pub fn section(out: &std::path::Path) -> String {
    let mut md = String::from("## Console: the operator pages at scale\n\n");
    let Ok(f) = super::report::read::<ConsoleResults>(out, "console") else {
        md.push_str("_Not run._\n\n");
        return md;
    };
    let r = &f.results;
    md.push_str(&format!(
        "{} tasks, {} runs over 7 days (seeded in {} s), the admin router on loopback, one \
         logged-in client; each page {} times after 3 warm-ups, request to last byte. Load \
         average (1/5/15 min) {} before and {} after: the machine is shared, so these are \
         figures under that load, not on an idle machine.\n\n",
        r.tasks,
        r.runs,
        num(r.seed_s),
        r.requests_per_page,
        r.load_before,
        r.load_after
    ));
    md.push_str(&table(r).markdown());
    md.push_str("\nStatement plans at that scale (`EXPLAIN ANALYZE`, execution time):\n\n");
    for plan in &r.plans {
        // The line that says how the rows are found (which index).
        let top = plan
            .plan
            .iter()
            .find(|l| l.contains("Scan"))
            .or(plan.plan.first())
            .map_or("", |l| l.trim().trim_start_matches("->  "));
        md.push_str(&format!(
            "- {}: {} ms — `{}`\n",
            plan.statement,
            num(plan.execution_ms),
            top
        ));
    }
    md.push('\n');
    md
}
