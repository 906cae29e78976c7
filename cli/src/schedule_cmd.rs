//! `sundial schedule preview`: the next occurrences of an expression.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Print the next occurrences of EXPR strictly after --from, in UTC.
    Preview {
        /// cron (5 or 6 fields), cron(...), rate(...), at(...) or @daily-style macro.
        expr: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start instant (RFC 3339); default now.
        #[arg(long)]
        from: Option<String>,
        /// How many occurrences.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Print a JSON array instead of one timestamp per line.
        #[arg(long)]
        json: bool,
        /// The task's jitter window in seconds (`jitter_secs`): also print
        /// the instant each occurrence fires at (needs --task-id).
        #[arg(long, value_name = "SECS", requires = "task_id",
              value_parser = clap::value_parser!(i32).range(0..=900))]
        jitter: Option<i32>,
        /// The task's id: the jitter offset is a fixed hash of the id and
        /// the occurrence, the same on every dispatch and release.
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
        task_id: Option<i64>,
    },
}

pub fn run(cmd: ScheduleCmd) -> Result<()> {
    let ScheduleCmd::Preview {
        expr,
        tz,
        from,
        count,
        json,
        jitter,
        task_id,
    } = cmd;
    if count == 0 || count > 1000 {
        bail!("--count must be between 1 and 1000");
    }
    let from: DateTime<Utc> = match from {
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .with_context(|| format!("--from `{s}` is not an RFC 3339 time"))?
            .to_utc(),
        None => Utc::now(),
    };
    let next = sundial::schedule::preview(&expr, &tz, from, count)?;
    let fmt = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let fires: Option<Vec<DateTime<Utc>>> = match (jitter, task_id) {
        (Some(j), Some(id)) => Some(
            next.iter()
                .map(|t| sundial::firetime::fire_at(id, *t, j))
                .collect(),
        ),
        _ => None,
    };
    match (fires, json) {
        (None, false) => next.iter().for_each(|t| println!("{}", fmt(t))),
        (None, true) => {
            let lines: Vec<String> = next.iter().map(fmt).collect();
            println!("{}", serde_json::to_string_pretty(&lines)?);
        }
        (Some(fires), false) => {
            for (t, f) in next.iter().zip(&fires) {
                println!(
                    "{}  fires {} (+{} ms jitter)",
                    fmt(t),
                    f.to_rfc3339_opts(SecondsFormat::Millis, true),
                    (*f - *t).num_milliseconds()
                );
            }
        }
        (Some(fires), true) => {
            let rows: Vec<serde_json::Value> = next
                .iter()
                .zip(&fires)
                .map(|(t, f)| {
                    serde_json::json!({
                        "occurrence": fmt(t),
                        "fires_at": f.to_rfc3339_opts(SecondsFormat::Millis, true),
                        "jitter_ms": (*f - *t).num_milliseconds(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    Ok(())
}
