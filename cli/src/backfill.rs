//! `sundial tasks backfill TASK --from --to [--all]`: asks the admin API
//! to fire the occurrences of a past range (`POST /v1/tasks/{id}/backfill`)
//! and follows the backfill (`GET /v1/backfills/{id}`) until every
//! dispatched occurrence is recorded: a progress bar on a terminal, a
//! plain line per change otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::tasks::{render, str_of, ApiOptions, Client};

/// `sundial tasks backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// Task id.
    pub id: i64,
    /// Start of the range, included (RFC 3339).
    #[arg(long)]
    pub from: DateTime<Utc>,
    /// End of the range, excluded (RFC 3339); not in the future.
    #[arg(long)]
    pub to: DateTime<Utc>,
    /// Fire every occurrence, recorded ones again (default: only those
    /// without a recorded run).
    #[arg(long)]
    pub all: bool,
    /// Print the backfill's id and counts and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// Poll interval while following, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    pub poll_ms: u64,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// Stop following after this long without any change.
const STALL: Duration = Duration::from_secs(300);

/// Starts the backfill and follows it, writing to `out` (progress bar when
/// `tty`).
pub async fn run(args: BackfillArgs, out: &mut dyn Write, tty: bool) -> anyhow::Result<()> {
    let api = Client::new(&args.api)?;
    let body = json!({
        "from": args.from,
        "to": args.to,
        "mode": if args.all { "all" } else { "missing" },
    });
    let path = format!("/v1/tasks/{}/backfill", args.id);
    let mut progress = api.call(Method::POST, &path, &[], Some(&body), &[]).await?;
    let id = progress["id"].as_i64().unwrap_or_default();
    if args.api.json && args.no_wait {
        writeln!(out, "{}", render(true, &progress, String::new).trim_end())?;
        return Ok(());
    }
    if !args.api.json {
        writeln!(
            out,
            "backfill {id} of task {}: {} occurrences in [{}, {}), mode {}",
            args.id,
            progress["requested"],
            str_of(&progress["from"]),
            str_of(&progress["to"]),
            str_of(&progress["mode"]),
        )?;
    }
    let mut last = String::new();
    let mut changed = Instant::now();
    loop {
        let line = describe(&progress, tty);
        if line != last {
            if !args.api.json {
                if tty {
                    write!(out, "\r{line}\x1b[K")?;
                } else {
                    writeln!(out, "{line}")?;
                }
                out.flush()?;
            }
            last = line;
            changed = Instant::now();
        }
        if args.no_wait || str_of(&progress["state"]) == "done" {
            break;
        }
        if changed.elapsed() > STALL {
            if tty && !args.api.json {
                writeln!(out)?;
            }
            writeln!(
                out,
                "no progress for {} s; the backfill goes on (sundial's scanner continues it): \
                 GET /v1/backfills/{id} follows it",
                STALL.as_secs()
            )?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms.max(50))).await;
        progress = api.get(&format!("/v1/backfills/{id}"), &[]).await?;
    }
    if args.api.json {
        writeln!(out, "{}", render(true, &progress, String::new).trim_end())?;
    } else {
        if tty {
            writeln!(out)?;
        }
        let error = progress["last_error"]
            .as_str()
            .map(|e| format!(" (last stop: {})", crate::tasks::printable(e)))
            .unwrap_or_default();
        writeln!(
            out,
            "backfill {id} {}: {} fired, {} succeeded, {} failed{error}",
            str_of(&progress["state"]),
            progress["fired"],
            progress["succeeded"],
            progress["failed"],
        )?;
    }
    Ok(())
}

/// One progress line: a bar over the requested occurrences, counting
/// those passed over and those recorded.
fn describe(p: &Value, tty: bool) -> String {
    let n = |k: &str| p[k].as_i64().unwrap_or(0);
    let requested = n("requested").max(0);
    let settled = (n("skipped_existing") + n("recorded")).clamp(0, requested);
    let counts = format!(
        "{settled}/{requested} settled: {} dispatched, {} skipped (recorded already), \
         {} recorded ({} succeeded, {} failed), {}",
        n("dispatched"),
        n("skipped_existing"),
        n("recorded"),
        n("succeeded"),
        n("failed"),
        str_of(&p["state"]),
    );
    if !tty {
        return format!("backfill {}: {counts}", n("id"));
    }
    const WIDTH: i64 = 30;
    let filled = if requested == 0 {
        WIDTH
    } else {
        settled * WIDTH / requested
    };
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    format!("[{bar}] {counts}")
}

/// Is stdout a terminal (a progress bar) or not (plain lines)?
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let p = json!({"id": 7, "requested": 10, "dispatched": 4, "skipped_existing": 6,
                       "recorded": 2, "succeeded": 2, "failed": 0, "state": "dispatched"});
        assert_eq!(
            describe(&p, false),
            "backfill 7: 8/10 settled: 4 dispatched, 6 skipped (recorded already), \
             2 recorded (2 succeeded, 0 failed), dispatched"
        );
        assert!(describe(&p, true).starts_with("[########################------] 8/10"));
    }
}
