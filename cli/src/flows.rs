//! `sundial flows list|show|set|delete`: the limits per target (flow),
//! through the admin API like `sundial tasks`, with the same `--api`,
//! `--json` and `SUNDIAL_ADMIN_TOKEN`.

use std::fmt::Write as _;
use std::io::Write;

use reqwest::Method;
use serde_json::{json, Map, Value};
use sundial::task::validate_flow_key;

use crate::tasks::{render, str_of, table, when, ApiOptions, Client};

/// `sundial flows ...`.
#[derive(Debug, clap::Subcommand)]
pub enum FlowsCmd {
    /// List the flows with limits or engine state, ordered by key.
    List(FlowListArgs),
    /// Show a flow: its limits, breaker and backoff, and number of tasks.
    Show(FlowRef),
    /// Set the limits of a flow, replacing those it had: a limit not given
    /// goes back to its default (no limit for rate and in-flight).
    Set(Box<SetArgs>),
    /// Remove the limits of a flow (its tasks and engine state stay).
    Delete(FlowRef),
}

/// One flow, by key (`api.internal:443`, `[::1]:9`, or a task's `flow_key`).
#[derive(Debug, Clone, clap::Args)]
pub struct FlowRef {
    /// Flow key.
    pub key: String,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial flows list` paging.
#[derive(Debug, Clone, clap::Args)]
pub struct FlowListArgs {
    /// Page size (1 to 500).
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Start after this key (printed under a partial list).
    #[arg(long)]
    pub after: Option<String>,
    /// Follow the pages to the last one.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `sundial flows set`: the limits to put in force.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// Flow key.
    pub key: String,
    /// Requests per second at most (above 0, up to 100000).
    #[arg(long, value_parser = finite)]
    pub rate: Option<f64>,
    /// Requests that may go out back to back before pacing applies (default 1).
    #[arg(long)]
    pub burst: Option<i32>,
    /// Requests in flight per processor at most.
    #[arg(long)]
    pub max_in_flight: Option<i32>,
    /// Retries as a share of requests per 10-second window (0 to 10).
    #[arg(long, value_parser = finite)]
    pub retry_budget: Option<f64>,
    /// Consecutive failures that open the circuit breaker.
    #[arg(long)]
    pub breaker_failures: Option<i32>,
    /// Window the failures must fall in, in seconds.
    #[arg(long, value_name = "SECS")]
    pub breaker_window: Option<i32>,
    /// Seconds between probes while the breaker is open.
    #[arg(long, value_name = "SECS")]
    pub breaker_cooldown: Option<i32>,
    /// Occurrences missed while open: fire the latest once on close, or skip them.
    #[arg(long, value_parser = ["fire_latest", "skip"])]
    pub on_open: Option<String>,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// A number that JSON can carry: `inf` and `NaN` would be sent as `null`
/// (no limit), so they are refused here.
fn finite(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number".into()),
        Err(err) => Err(err.to_string()),
    }
}

/// Runs a `sundial flows` command, printing to stdout.
pub async fn run(cmd: FlowsCmd) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let result = run_to(cmd, &mut out).await;
    std::io::stdout().write_all(&out)?;
    result
}

/// [`run`], writing to `out`.
pub async fn run_to(cmd: FlowsCmd, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let opts = match &cmd {
        FlowsCmd::List(a) => &a.api,
        FlowsCmd::Set(a) => &a.api,
        FlowsCmd::Show(a) | FlowsCmd::Delete(a) => &a.api,
    };
    let api = Client::new(opts)?;
    let json_out = opts.json;
    let text = match cmd {
        FlowsCmd::List(list) => {
            let page = list_flows(&api, &list).await?;
            render(json_out, &page, || flow_table(&page))
        }
        FlowsCmd::Show(FlowRef { key, .. }) => {
            let flow = api.get(&flow_path(&key)?, &[]).await?;
            render(json_out, &flow, || flow_detail(&flow))
        }
        FlowsCmd::Set(set) => {
            let body = limits_body(&set);
            let flow = api
                .call(Method::PUT, &flow_path(&set.key)?, &[], Some(&body), &[])
                .await?;
            render(json_out, &flow, || {
                format!("set the limits of flow {}\n", str_of(&flow["key"])) + &flow_detail(&flow)
            })
        }
        FlowsCmd::Delete(FlowRef { key, .. }) => {
            api.call(Method::DELETE, &flow_path(&key)?, &[], None, &[])
                .await?;
            let done = json!({"deleted": key});
            render(json_out, &done, || {
                format!("removed the limits of flow {}\n", str_of(&done["deleted"]))
            })
        }
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// `/v1/flows/<key>`, the key checked as the API does and percent-encoded
/// whole (`:`, `[`, `]`, `/` included).
fn flow_path(key: &str) -> anyhow::Result<String> {
    // Refuses keys of dots only too: URL parsers resolve `.` and `..`
    // segments (also as `%2E`) before sending.
    let key = validate_flow_key("KEY", key)?;
    let mut path = String::from("/v1/flows/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            path.push(char::from(byte));
        } else {
            let _ = write!(path, "%{byte:02X}");
        }
    }
    Ok(path)
}

/// The body of `PUT /v1/flows/{key}`: only the limits given.
fn limits_body(set: &SetArgs) -> Value {
    let mut body = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    };
    put("rate_per_sec", set.rate.map(|v| json!(v)));
    put("burst", set.burst.map(|v| json!(v)));
    put("max_in_flight", set.max_in_flight.map(|v| json!(v)));
    put("retry_budget", set.retry_budget.map(|v| json!(v)));
    put("breaker_failures", set.breaker_failures.map(|v| json!(v)));
    put("breaker_window_secs", set.breaker_window.map(|v| json!(v)));
    put(
        "breaker_cooldown_secs",
        set.breaker_cooldown.map(|v| json!(v)),
    );
    put("on_open", set.on_open.as_ref().map(|v| json!(v)));
    Value::Object(body)
}

async fn list_flows(api: &Client, list: &FlowListArgs) -> anyhow::Result<Value> {
    let mut after = list.after.clone();
    let mut flows = Vec::new();
    loop {
        let mut query = vec![("limit", list.limit.to_string())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let page = api.get("/v1/flows", &query).await?;
        flows.extend(page["flows"].as_array().cloned().unwrap_or_default());
        after = page["next_after"].as_str().map(str::to_string);
        if !list.all || after.is_none() {
            break;
        }
    }
    Ok(json!({"flows": flows, "next_after": after}))
}

/// `50/s`, or `-` when no rate is set.
fn rate(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |r| format!("{r}/s"))
}

fn flow_table(page: &Value) -> String {
    let flows = page["flows"].as_array().cloned().unwrap_or_default();
    if flows.is_empty() {
        return "no flows\n".into();
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            let c = &f["config"];
            let s = &f["state"];
            vec![
                str_of(&f["key"]),
                rate(&c["rate_per_sec"]),
                str_of(&c["burst"]),
                str_of(&c["max_in_flight"]),
                str_of(&s["breaker"]),
                when(&s["not_before"]),
                str_of(&f["tasks"]),
                str_of(&s["throttled_total"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "KEY",
            "RATE",
            "BURST",
            "IN FLIGHT",
            "BREAKER",
            "NOT BEFORE",
            "TASKS",
            "THROTTLED",
        ],
        &rows,
    );
    if let Some(after) = page["next_after"].as_str() {
        let _ = writeln!(out, "(more: --after {}, or --all)", str_of(&json!(after)));
    }
    out
}

fn flow_detail(f: &Value) -> String {
    let c = &f["config"];
    let s = &f["state"];
    let mut fields = vec![("key", str_of(&f["key"])), ("tasks", str_of(&f["tasks"]))];
    if c.is_object() {
        fields.extend([
            ("rate", rate(&c["rate_per_sec"])),
            ("burst", str_of(&c["burst"])),
            ("max_in_flight", str_of(&c["max_in_flight"])),
            ("retry_budget", str_of(&c["retry_budget"])),
            ("breaker_failures", str_of(&c["breaker_failures"])),
            ("breaker_window", secs(&c["breaker_window_secs"])),
            ("breaker_cooldown", secs(&c["breaker_cooldown_secs"])),
            ("on_open", str_of(&c["on_open"])),
            ("limits_updated", when(&c["updated_at"])),
        ]);
    } else {
        fields.push(("limits", "none set (defaults from the settings)".into()));
    }
    if s.is_object() {
        fields.extend([
            ("breaker", str_of(&s["breaker"])),
            ("failures", str_of(&s["failures"])),
            ("opened_at", when(&s["opened_at"])),
            ("probe_at", when(&s["probe_at"])),
            ("not_before", when(&s["not_before"])),
            ("learned_rate", str_of(&s["learned_rate"])),
            ("throttled_total", str_of(&s["throttled_total"])),
            ("opened_total", str_of(&s["opened_total"])),
            ("state_updated", when(&s["updated_at"])),
        ]);
    } else {
        fields.push(("state", "not seen by the engine yet".into()));
    }
    let mut out = String::new();
    for (k, v) in fields {
        let _ = writeln!(out, "{k:<17} {v}");
    }
    out
}

/// `60 s`, or `-`.
fn secs(v: &Value) -> String {
    v.as_i64().map_or("-".into(), |s| format!("{s} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_whole() {
        assert_eq!(
            flow_path("127.0.0.1:8080").unwrap(),
            "/v1/flows/127.0.0.1%3A8080"
        );
        assert_eq!(flow_path("[::1]:9").unwrap(), "/v1/flows/%5B%3A%3A1%5D%3A9");
        assert_eq!(flow_path(" a/b c ").unwrap(), "/v1/flows/a%2Fb%20c");
        assert_eq!(flow_path("é").unwrap(), "/v1/flows/%C3%A9");
        assert!(flow_path("").is_err());
        assert!(flow_path("..").is_err());
        assert!(flow_path("...").is_err());
        assert!(flow_path("a.").is_ok());
    }

    #[test]
    fn limits_not_given_are_not_sent() {
        let set = SetArgs {
            key: "k".into(),
            rate: Some(50.0),
            burst: None,
            max_in_flight: None,
            retry_budget: Some(0.2),
            breaker_failures: None,
            breaker_window: Some(60),
            breaker_cooldown: None,
            on_open: Some("skip".into()),
            api: ApiOptions {
                api: String::new(),
                json: false,
            },
        };
        assert_eq!(
            limits_body(&set),
            json!({"rate_per_sec": 50.0, "retry_budget": 0.2,
                   "breaker_window_secs": 60, "on_open": "skip"})
        );
    }

    #[test]
    fn infinite_and_nan_limits_are_refused() {
        assert_eq!(finite("2.5"), Ok(2.5));
        for bad in ["inf", "-inf", "NaN", "x"] {
            assert!(finite(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_text_cannot_drive_the_terminal() {
        let flow = json!({"key": "evil\u{1b}[2J", "tasks": 1,
            "config": null, "state": {"breaker": "open\u{7}", "failures": 1}});
        let page = json!({"flows": [flow.clone()], "next_after": "x\u{1b}"});
        for text in [flow_detail(&flow), flow_table(&page)] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}'),
                "{text:?}"
            );
        }
    }
}
