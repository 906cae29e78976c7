//! `sundial schedule preview`: the next occurrences of an expression,
//! explained: the schedule in words (a `# ` line first), each occurrence's
//! local time and DST note, occurrences an `--exclude` skips, and the
//! active window (`--start-at`, `--end-at`) as a task would have them.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use sundial::schedule::preview::{explain, Explained, PreviewInput};

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
        /// Print a JSON object (description, occurrences, entries with
        /// their DST notes, notes) instead of lines.
        #[arg(long)]
        json: bool,
        /// An exclusion, as a task's `exclude` (e.g. `0 0 25 12 *`).
        #[arg(long, value_name = "EXPR")]
        exclude: Option<String>,
        /// Start of the active window (RFC 3339), as a task's `start_at`.
        #[arg(long, value_name = "TIME")]
        start_at: Option<String>,
        /// End of the active window (RFC 3339), as a task's `end_at`.
        #[arg(long, value_name = "TIME")]
        end_at: Option<String>,
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
        exclude,
        start_at,
        end_at,
    } = cmd;
    if count == 0 || count > 1000 {
        bail!("--count must be between 1 and 1000");
    }
    let from: DateTime<Utc> = match from {
        Some(s) => instant("--from", &s)?,
        None => Utc::now(),
    };
    let input = PreviewInput {
        schedule: &expr,
        timezone: &tz,
        exclude: exclude.as_deref(),
        start_at: start_at.map(|s| instant("--start-at", &s)).transpose()?,
        end_at: end_at.map(|s| instant("--end-at", &s)).transpose()?,
        from,
        count,
    };
    let explained = explain(&input).map_err(|e| {
        let flag = match e.field {
            "timezone" => "--tz",
            "exclude" => "--exclude",
            "end_at" => "--end-at",
            _ => "EXPR",
        };
        anyhow::anyhow!("{flag}: {}", e.reason)
    })?;
    let next = explained.occurrences.clone();
    let fmt = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if jitter.is_none() {
        return print_explained(&explained, json);
    }
    let fires: Option<Vec<DateTime<Utc>>> = match (jitter, task_id) {
        (Some(j), Some(id)) => Some(
            next.iter()
                .map(|t| sundial::firetime::fire_at(id, *t, j))
                .collect(),
        ),
        _ => None,
    };
    match (fires, json) {
        (None, _) => print_explained(&explained, json)?,
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

fn instant(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{flag} `{text}` is not an RFC 3339 time"))?
        .to_utc())
}

/// `# description`, one line per occurrence (UTC first, then the local
/// time and what touches it), `# note` lines last; or all of it as JSON.
fn print_explained(explained: &Explained, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(explained)?);
        return Ok(());
    }
    println!("# {}", explained.description);
    if let Some(exclude) = &explained.exclude_description {
        println!("# except: {exclude}");
    }
    for entry in &explained.entries {
        let mut line = format!(
            "{}  {}",
            entry.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            entry.local
        );
        if let Some(why) = &entry.skipped {
            line.push_str(&format!("  skipped ({why})"));
        }
        if let Some(dst) = &entry.dst {
            line.push_str(&format!("  DST: {}", dst.note));
        }
        println!("{line}");
    }
    for note in &explained.notes {
        println!("# {note}");
    }
    Ok(())
}
