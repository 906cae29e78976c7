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
    },
}

pub fn run(cmd: ScheduleCmd) -> Result<()> {
    let ScheduleCmd::Preview {
        expr,
        tz,
        from,
        count,
        json,
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
    let lines: Vec<String> = next
        .iter()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(())
}
