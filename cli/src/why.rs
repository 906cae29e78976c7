//! `sundial why TASK [--at TIME]`: what became of one occurrence of a
//! task, in words first ("09:00 UTC on 2026-12-01 fired at 09:00:00.004,
//! 200 in 83 ms"), from the admin API's occurrence ledger. Without `--at`,
//! the latest occurrence that is due; `--json` prints the ledger entry.

use std::io::Write;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::tasks::{printable, render, str_of, ApiOptions, Client};

/// How far back `why` looks for the occurrence (the API lists the newest
/// 1000 of the range, so a frequent schedule costs nothing more).
const LOOK_BACK: Duration = Duration::days(400);

/// `sundial why`. The bearer token is read from `SUNDIAL_ADMIN_TOKEN`.
#[derive(Debug, Clone, clap::Args)]
pub struct WhyArgs {
    /// Task id or name.
    pub task: String,
    /// The occurrence at this instant, or the last one before it
    /// (RFC 3339; default: the latest occurrence that is due now).
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// Runs `sundial why`, printing to stdout.
pub async fn run(args: WhyArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let result = run_to(args, &mut out).await;
    std::io::stdout().write_all(&out)?;
    result
}

/// [`run`], writing to `out`.
pub async fn run_to(args: WhyArgs, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let api = Client::new(&args.api)?;
    let (id, name) = resolve(&api, &args.task).await?;
    let to = args.at.unwrap_or_else(Utc::now);
    let from = to.checked_sub_signed(LOOK_BACK).unwrap_or(to);
    let ledger = api
        .get(
            &format!("/v1/tasks/{id}/occurrences"),
            &[("from", from.to_rfc3339()), ("to", to.to_rfc3339())],
        )
        .await?;
    let Some(entry) = ledger["occurrences"]
        .as_array()
        .and_then(|entries| entries.last())
        .cloned()
    else {
        bail!(
            "task {id} ({}) has no occurrence at or in the {} days before {}",
            printable(&name),
            LOOK_BACK.num_days(),
            to.to_rfc3339()
        );
    };
    let text = render(args.api.json, &entry, || {
        let mut text = printable(&str_of(&entry["summary"]));
        text.push('\n');
        text.push_str(&format!(
            "  task {id} ({}), state {}, occurrence {}\n",
            printable(&name),
            str_of(&entry["state"]),
            str_of(&entry["scheduled_for"]),
        ));
        text
    });
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The id and name of the task named or numbered `task`.
async fn resolve(api: &Client, task: &str) -> anyhow::Result<(i64, String)> {
    if let Some(id) = task.parse::<i64>().ok().filter(|id| *id > 0) {
        let found = api.get(&format!("/v1/tasks/{id}"), &[]).await?;
        return Ok((id, str_of(&found["name"])));
    }
    let page = api
        .get(
            "/v1/tasks",
            &[("name", task.to_string()), ("limit", "1".to_string())],
        )
        .await?;
    let found: Option<&Value> = page["tasks"].as_array().and_then(|t| t.first());
    let id = found
        .and_then(|t| t["id"].as_i64())
        .ok_or_else(|| anyhow!("no task is named `{}`", printable(task)))?;
    Ok((id, task.to_string()))
}
