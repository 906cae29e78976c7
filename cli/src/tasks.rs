//! `sundial tasks add|list|show|pause|resume|trigger|backfill|delete|runs`:
//! a client of the admin API (whose [`Client`] and printing helpers
//! `sundial status` and `sundial flows` share).
//!
//! Human tables by default, the API's JSON with `--json`. An API error is
//! printed as the field and the reason it gave, and the command exits
//! non-zero.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

/// Where the API is and how to print its answers.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiOptions {
    /// Base URL of the admin API.
    #[arg(long, env = "SUNDIAL_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Print the API's JSON instead of a table (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// `sundial tasks ...`. The bearer token is read from `SUNDIAL_ADMIN_TOKEN`.
#[derive(Debug, clap::Subcommand)]
pub enum TasksCmd {
    /// Register a task.
    Add(Box<AddArgs>),
    /// List tasks, ordered by id.
    List(ListArgs),
    /// Show a task and its next occurrences.
    Show(TaskRef),
    /// Pause a task: nothing fires until it is resumed (or `--until`).
    Pause(PauseArgs),
    /// Resume a paused task from its next occurrence after now.
    Resume(TaskRef),
    /// Fire a task once now, outside its schedule (its overlap policy
    /// refuses while a run is in flight, unless --force).
    Trigger(TriggerArgs),
    /// Fire the occurrences of a past range (those without a run, or
    /// `--all`), following the backfill with a progress bar.
    Backfill(crate::backfill::BackfillArgs),
    /// Delete a task and its run history.
    Delete(TaskRef),
    /// Run history of a task, newest first.
    Runs(RunsArgs),
}

/// One task, by id.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskRef {
    /// Task id.
    pub id: i64,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial tasks trigger`.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// Task id.
    pub id: i64,
    /// Fire even while a run of a `forbid` or `skip` task is in flight.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial tasks pause`.
#[derive(Debug, Clone, clap::Args)]
pub struct PauseArgs {
    /// Task id.
    pub id: i64,
    /// Why (kept on the task and in its ledger).
    #[arg(long)]
    pub reason: Option<String>,
    /// Resume by itself at this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial tasks runs`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunsArgs {
    /// Task id.
    pub id: i64,
    /// How many runs (1 to 200).
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    /// Only runs of occurrences before this instant (RFC 3339).
    #[arg(long)]
    pub before: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial tasks add`: only the flags given are sent; the API fills in
/// the defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct AddArgs {
    /// Unique name of the task.
    pub name: String,
    /// When to fire: cron (`*/5 * * * *`), `cron(...)`, `rate(5 minutes)`,
    /// `at(2026-01-01T09:00:00)` or `@daily`.
    #[arg(long)]
    pub schedule: String,
    /// The endpoint to call.
    #[arg(long)]
    pub url: String,
    /// IANA time zone the schedule is read in (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// HTTP method (default POST).
    #[arg(long, short = 'X')]
    pub method: Option<String>,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long)]
    pub body_file: Option<std::path::PathBuf>,
    /// Per-attempt timeout in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<i32>,
    /// Attempts per occurrence, the first included.
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// First retry delay in milliseconds (doubles each time).
    #[arg(long)]
    pub retry_backoff_ms: Option<i32>,
    /// Missed occurrences after downtime: skip, all or none.
    #[arg(long)]
    pub catch_up: Option<String>,
    /// Oldest occurrence `--catch-up all` still fires, in seconds.
    #[arg(long)]
    pub catch_up_max_age_secs: Option<i32>,
    /// allow, forbid or skip: whether an occurrence may start while the
    /// previous run is in flight (skip records it as skipped).
    #[arg(long)]
    pub overlap: Option<String>,
    /// No occurrence before this instant (RFC 3339).
    #[arg(long)]
    pub start_at: Option<String>,
    /// No occurrence at or after this instant (RFC 3339); the task then
    /// disables itself.
    #[arg(long)]
    pub end_at: Option<String>,
    /// Skip the occurrences this schedule expression matches.
    #[arg(long)]
    pub exclude: Option<String>,
    /// Spread firings up to this many seconds late.
    #[arg(long)]
    pub jitter_secs: Option<i32>,
    /// Create the task paused.
    #[arg(long)]
    pub paused: bool,
    /// Pause the task after this many consecutive failed occurrences.
    #[arg(long)]
    pub pause_after_failures: Option<i32>,
    /// Where this task's notification events are POSTed.
    #[arg(long)]
    pub notify_url: Option<String>,
    /// A label to group tasks by (repeatable; at most 10). Each tag is a
    /// `Tag` dimension of the lag and failure metrics.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Makes a retried add safe: the same key never creates a second task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial tasks list` filters and paging.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only enabled tasks.
    #[arg(long, conflicts_with = "paused")]
    pub enabled: bool,
    /// Only paused (or disabled) tasks.
    #[arg(long)]
    pub paused: bool,
    /// Only tasks whose last run failed.
    #[arg(long)]
    pub failing: bool,
    /// Only tasks carrying this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Page size (1 to 200).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Start after this cursor (printed under a partial list).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the cursor to the last page.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// Runs a `sundial tasks` command, printing to stdout.
pub async fn run(cmd: TasksCmd) -> anyhow::Result<()> {
    if let TasksCmd::Backfill(args) = cmd {
        // Progress goes out as it happens.
        let tty = crate::backfill::stdout_is_tty();
        return crate::backfill::run(args, &mut std::io::stdout(), tty).await;
    }
    let mut out = Vec::new();
    let result = run_to(cmd, &mut out).await;
    std::io::stdout().write_all(&out)?;
    result
}

/// [`run`], writing to `out`.
pub async fn run_to(cmd: TasksCmd, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let opts = match &cmd {
        TasksCmd::Backfill(args) => return crate::backfill::run(args.clone(), out, false).await,
        TasksCmd::Add(a) => &a.api,
        TasksCmd::List(a) => &a.api,
        TasksCmd::Runs(a) => &a.api,
        TasksCmd::Pause(a) => &a.api,
        TasksCmd::Trigger(a) => &a.api,
        TasksCmd::Show(a) | TasksCmd::Resume(a) | TasksCmd::Delete(a) => &a.api,
    };
    let api = Client::new(opts)?;
    let json_out = opts.json;
    let text = match cmd {
        TasksCmd::Add(add) => {
            let body = add_body(&add)?;
            let mut headers = Vec::new();
            if let Some(key) = &add.idempotency_key {
                headers.push(("Idempotency-Key", key.clone()));
            }
            let task = api
                .call(Method::POST, "/v1/tasks", &[], Some(&body), &headers)
                .await?;
            render(json_out, &task, || {
                format!(
                    "created task {} ({}), next run {}\n",
                    task["id"],
                    str_of(&task["name"]),
                    when(&task["next_run_at"])
                )
            })
        }
        TasksCmd::List(list) => {
            let page = list_tasks(&api, &list).await?;
            render(json_out, &page, || task_table(&page))
        }
        TasksCmd::Show(TaskRef { id, .. }) => {
            let task = api.get(&format!("/v1/tasks/{id}"), &[]).await?;
            render(json_out, &task, || task_detail(&task))
        }
        TasksCmd::Pause(PauseArgs {
            id, reason, until, ..
        }) => {
            let body = json!({ "reason": reason, "until": until });
            let path = format!("/v1/tasks/{id}/pause");
            let task = api.call(Method::POST, &path, &[], Some(&body), &[]).await?;
            render(json_out, &task, || {
                let until = match until {
                    Some(t) => format!(" until {}", t.to_rfc3339()),
                    None => String::new(),
                };
                format!("paused task {id} ({}){until}\n", str_of(&task["name"]))
            })
        }
        TasksCmd::Resume(TaskRef { id, .. }) => {
            let task = api.post(&format!("/v1/tasks/{id}/resume")).await?;
            render(json_out, &task, || {
                format!(
                    "resumed task {id} ({}), next run {}\n",
                    str_of(&task["name"]),
                    when(&task["next_run_at"])
                )
            })
        }
        TasksCmd::Trigger(TriggerArgs { id, force, .. }) => {
            let path = format!("/v1/tasks/{id}/trigger");
            let body = force.then(|| json!({"force": true}));
            let fired = api
                .call(Method::POST, &path, &[], body.as_ref(), &[])
                .await?;
            render(json_out, &fired, || {
                format!(
                    "triggered task {id}: occurrence {} queued\n",
                    when(&fired["occurrence"])
                )
            })
        }
        // Answered above, as it follows the backfill while it runs.
        TasksCmd::Backfill(_) => String::new(),
        TasksCmd::Delete(TaskRef { id, .. }) => {
            api.call(Method::DELETE, &format!("/v1/tasks/{id}"), &[], None, &[])
                .await?;
            let done = json!({"deleted": id});
            render(json_out, &done, || format!("deleted task {id}\n"))
        }
        TasksCmd::Runs(RunsArgs {
            id, limit, before, ..
        }) => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(before) = before {
                query.push(("before", before.to_rfc3339()));
            }
            let page = api.get(&format!("/v1/tasks/{id}/runs"), &query).await?;
            render(json_out, &page, || run_table(&page))
        }
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The API's JSON (`--json`) or the human text.
pub(crate) fn render(json_out: bool, value: &Value, human: impl FnOnce() -> String) -> String {
    if json_out {
        let mut s = json_for_terminal(&serde_json::to_string_pretty(value).unwrap_or_default());
        s.push('\n');
        s
    } else {
        human()
    }
}

/// Would printing `c` to a terminal do something else than show a glyph?
/// C0/C1 controls and DEL move the cursor, retitle windows or clear the
/// screen; bidirectional overrides show text in another order than it is.
fn is_unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Stored text made safe to print: every unprintable character is written
/// as an escape (`\n`, `\u{1b}`), so rows inserted with plain SQL cannot
/// drive the terminal. Backslashes are doubled, so the escape is unambiguous.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(|c| is_unprintable(c) || c == '\\') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unprintable(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// serde_json escapes C0 controls but prints DEL, C1 controls and bidi
/// overrides as they are; `\uXXXX` them too (still valid JSON: they can
/// only occur inside strings).
fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_unprintable(c) && !matches!(c, '\n' | ' ') {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON body of `tasks add`: only what was given.
fn add_body(add: &AddArgs) -> anyhow::Result<Value> {
    let mut body = Map::new();
    body.insert("name".into(), json!(add.name));
    body.insert("schedule".into(), json!(add.schedule));
    body.insert("url".into(), json!(add.url));
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    };
    put("timezone", add.timezone.as_ref().map(|v| json!(v)));
    put("method", add.method.as_ref().map(|v| json!(v)));
    put("timeout_ms", add.timeout_ms.map(|v| json!(v)));
    put("max_attempts", add.max_attempts.map(|v| json!(v)));
    put("retry_backoff_ms", add.retry_backoff_ms.map(|v| json!(v)));
    put("catch_up", add.catch_up.as_ref().map(|v| json!(v)));
    put(
        "catch_up_max_age_secs",
        add.catch_up_max_age_secs.map(|v| json!(v)),
    );
    put("overlap", add.overlap.as_ref().map(|v| json!(v)));
    put("start_at", add.start_at.as_ref().map(|v| json!(v)));
    put("end_at", add.end_at.as_ref().map(|v| json!(v)));
    put("exclude", add.exclude.as_ref().map(|v| json!(v)));
    put("jitter_secs", add.jitter_secs.map(|v| json!(v)));
    put(
        "pause_after_failures",
        add.pause_after_failures.map(|v| json!(v)),
    );
    put("notify_url", add.notify_url.as_ref().map(|v| json!(v)));
    if !add.tags.is_empty() {
        put("tags", Some(json!(add.tags)));
    }
    if add.paused {
        put("enabled", Some(json!(false)));
    }
    let file_body = match &add.body_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--body-file {}", path.display()))?,
        ),
        None => None,
    };
    put("body", add.body.clone().or(file_body).map(|v| json!(v)));
    if !add.headers.is_empty() {
        let mut headers = Map::new();
        for header in &add.headers {
            let Some((name, value)) = header.split_once(':') else {
                bail!("--header `{header}`: expected `Name: value`");
            };
            headers.insert(name.trim().to_string(), json!(value.trim()));
        }
        put("headers", Some(Value::Object(headers)));
    }
    Ok(Value::Object(body))
}

async fn list_tasks(api: &Client, list: &ListArgs) -> anyhow::Result<Value> {
    let mut query = vec![("limit", list.limit.to_string())];
    if list.enabled {
        query.push(("enabled", "true".into()));
    }
    if list.paused {
        query.push(("enabled", "false".into()));
    }
    if list.failing {
        query.push(("failing", "true".into()));
    }
    if let Some(tag) = &list.tag {
        query.push(("tag", tag.clone()));
    }
    let mut cursor = list.cursor.clone();
    let mut tasks = Vec::new();
    loop {
        let mut q = query.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = api.get("/v1/tasks", &q).await?;
        tasks.extend(page["tasks"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if !list.all || cursor.is_none() {
            break;
        }
    }
    Ok(json!({"tasks": tasks, "next_cursor": cursor}))
}

/// A field of an API answer, safe to print (see [`printable`]).
pub(crate) fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => printable(s),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A timestamp as `2026-03-08 07:00:00Z`, or `-`.
pub(crate) fn when(v: &Value) -> String {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.to_utc().format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn task_table(page: &Value) -> String {
    let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
    if tasks.is_empty() {
        return "no tasks\n".into();
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                str_of(&t["id"]),
                str_of(&t["name"]),
                str_of(&t["schedule"]),
                str_of(&t["timezone"]),
                if t["schedule_error"].is_string() {
                    "invalid".into()
                } else if t["enabled"] == true {
                    "enabled".into()
                } else {
                    "paused".into()
                },
                when(&t["next_run_at"]),
                str_of(&t["last_status"]),
                str_of(&t["consecutive_failures"]),
                str_of(&t["url"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID", "NAME", "SCHEDULE", "TZ", "STATE", "NEXT RUN", "LAST", "FAILS", "URL",
        ],
        &rows,
    );
    if let Some(cursor) = page["next_cursor"].as_str() {
        let _ = writeln!(out, "(more: --cursor {cursor}, or --all)");
    }
    out
}

/// "by sundial at ...: 5 consecutive failures; last: HTTP 500 (until ...)",
/// `-` while the task is not paused.
fn paused_line(t: &Value) -> String {
    if t["paused_by"].is_null() {
        return "-".into();
    }
    let mut line = format!(
        "by {} at {}",
        str_of(&t["paused_by"]),
        when(&t["paused_at"])
    );
    if !t["paused_reason"].is_null() {
        line.push_str(&format!(": {}", str_of(&t["paused_reason"])));
    }
    if !t["paused_until"].is_null() {
        line.push_str(&format!(" (until {})", when(&t["paused_until"])));
    }
    line
}

/// A task's tags, comma-separated (`-` for none).
fn tag_list(tags: &Value) -> String {
    let tags: Vec<String> = tags.as_array().into_iter().flatten().map(str_of).collect();
    if tags.is_empty() {
        "-".into()
    } else {
        tags.join(", ")
    }
}

fn task_detail(t: &Value) -> String {
    let mut out = String::new();
    let fields = [
        ("id", str_of(&t["id"])),
        ("name", str_of(&t["name"])),
        ("schedule", str_of(&t["schedule"])),
        ("timezone", str_of(&t["timezone"])),
        ("enabled", str_of(&t["enabled"])),
        (
            "request",
            format!("{} {}", str_of(&t["method"]), str_of(&t["url"])),
        ),
        ("headers", printable(&t["headers"].to_string())),
        ("body", str_of(&t["body"])),
        ("timeout_ms", str_of(&t["timeout_ms"])),
        (
            "retries",
            format!(
                "{} attempts, backoff {} ms",
                t["max_attempts"], t["retry_backoff_ms"]
            ),
        ),
        (
            "catch_up",
            format!(
                "{} (max age {}s)",
                str_of(&t["catch_up"]),
                t["catch_up_max_age_secs"]
            ),
        ),
        ("overlap", str_of(&t["overlap"])),
        ("start_at", when(&t["start_at"])),
        ("end_at", when(&t["end_at"])),
        ("exclude", str_of(&t["exclude"])),
        ("jitter_secs", str_of(&t["jitter_secs"])),
        ("version", str_of(&t["version"])),
        ("next_run_at", when(&t["next_run_at"])),
        ("last_run_at", when(&t["last_run_at"])),
        ("last_status", str_of(&t["last_status"])),
        ("last_error", str_of(&t["last_error"])),
        ("failures", str_of(&t["consecutive_failures"])),
        ("pause_after", str_of(&t["pause_after_failures"])),
        ("paused", paused_line(t)),
        ("notify_url", str_of(&t["notify_url"])),
        ("tags", tag_list(&t["tags"])),
        ("schedule_error", str_of(&t["schedule_error"])),
    ];
    for (k, v) in fields {
        let _ = writeln!(out, "{k:<15} {v}");
    }
    let next: Vec<String> = t["next_occurrences"]
        .as_array()
        .map(|a| a.iter().map(when).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "next:");
    if next.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for n in next {
        let _ = writeln!(out, "  {n}");
    }
    out
}

fn run_table(page: &Value) -> String {
    let runs = page["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        return "no runs\n".into();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                when(&r["scheduled_for"]),
                str_of(&r["status"]),
                str_of(&r["http_status"]),
                str_of(&r["attempts"]),
                r["latency_ms"]
                    .as_i64()
                    .map_or("-".into(), |ms| format!("{ms} ms")),
                if r["manual"] == true {
                    "manual"
                } else {
                    "scheduled"
                }
                .into(),
                str_of(&r["error"]).chars().take(80).collect(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SCHEDULED FOR",
            "STATUS",
            "HTTP",
            "ATTEMPTS",
            "LATENCY",
            "KIND",
            "ERROR",
        ],
        &rows,
    );
    if let Some(before) = page["next_before"].as_str() {
        let _ = writeln!(out, "(more: --before {before})");
    }
    out
}

/// The admin API over HTTP.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(opts: &ApiOptions) -> anyhow::Result<Self> {
        let token = std::env::var("SUNDIAL_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                anyhow!("SUNDIAL_ADMIN_TOKEN is not set (the admin API's bearer token)")
            })?;
        let base = opts.api.trim_end_matches('/').to_string();
        url::Url::parse(&base).with_context(|| format!("--api `{base}` is not a URL"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client { http, base, token })
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(Method::GET, path, query, None, &[]).await
    }

    async fn post(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::POST, path, &[], None, &[]).await
    }

    /// Sends a request; an error answer becomes an error naming the field.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("--api `{}` is not a URL", self.base))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("the admin API answered {status} with non-JSON"));
        }
        Err(api_error(status, &bytes))
    }
}

/// `url: target is a private address (HTTP 400 invalid_field)`.
fn api_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(err) = parsed
        .as_ref()
        .map(|v| &v["error"])
        .filter(|e| e.is_object())
    else {
        let text: String = printable(&String::from_utf8_lossy(body))
            .chars()
            .take(200)
            .collect();
        return anyhow!("the admin API answered {status}: {text}");
    };
    let message = str_of(&err["message"]);
    let code = str_of(&err["code"]);
    match err["field"].as_str() {
        Some(field) => anyhow!(
            "{}: {message} (HTTP {} {code})",
            printable(field),
            status.as_u16()
        ),
        None => anyhow!("{message} (HTTP {} {code})", status.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_name_the_field() {
        let body = br#"{"error":{"code":"invalid_field","field":"url","message":"forbidden"}}"#;
        let err = api_error(StatusCode::BAD_REQUEST, body).to_string();
        assert_eq!(err, "url: forbidden (HTTP 400 invalid_field)");
        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>").to_string();
        assert!(err.contains("502"), "{err}");
    }

    #[test]
    fn stored_text_cannot_drive_the_terminal() {
        let task = json!({
            "id": 1,
            "name": "evil\u{1b}]0;owned\u{7}",
            "schedule": "rate(1 minute)",
            "url": "https://x.io/\u{1b}[2J\u{9b}31m",
            "headers": {"X-A": "a\u{7f}\u{202e}b"},
            "body": "line\nnext\\n",
            "last_error": "\u{0}",
            "next_occurrences": [],
        });
        let page = json!({"tasks": [task.clone()]});
        for text in [
            task_detail(&task),
            task_table(&page),
            render(true, &task, String::new),
        ] {
            assert!(
                !text.chars().any(|c| is_unprintable(c) && c != '\n'),
                "{text:?}"
            );
        }
        let shown = task_detail(&task);
        assert!(
            shown.contains("https://x.io/\\u{1b}[2J\\u{9b}31m"),
            "{shown}"
        );
        assert!(shown.contains("line\\nnext\\\\n"), "{shown}");
        // --json stays JSON, with the same strings.
        let back: Value = serde_json::from_str(&render(true, &task, String::new)).unwrap();
        assert_eq!(back, task);
        let err = api_error(
            StatusCode::BAD_REQUEST,
            "{\"error\":{\"code\":\"x\",\"field\":\"url\",\"message\":\"\\u001b[2J\"}}".as_bytes(),
        );
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
