//! `sundial status`: is Sundial keeping up? The pipeline's verdict first
//! (see [`crate::pipeline`]), then the counts, the last hour's figures,
//! the tasks that fired latest and failed most, and the open flows.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use crate::tasks::{printable, render, str_of, when, ApiOptions, Client};

/// `sundial status`. The bearer token is read from `SUNDIAL_ADMIN_TOKEN`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiOptions,
}

/// Runs `sundial status`, printing to stdout.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let result = status_to(args, &mut out).await;
    std::io::stdout().write_all(&out)?;
    result
}

/// [`status`], writing to `out`.
pub async fn status_to(args: StatusArgs, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let api = Client::new(&args.api)?;
    let st = api.get("/v1/status", &[]).await?;
    let text = render(args.api.json, &st, || {
        let h = &st["last_hour"];
        let t = &st["tasks"];
        format!(
            "tasks:          {} total, {} enabled, {} failing, {} invalid\n\
             backlog:        {} due, oldest {:.0}s overdue, {} missed\n\
             last hour:      {} runs, {} succeeded, {} failed, {} timed out, {} skipped\n\
             fire lag:       p50 {}, p99 {}\n",
            t["total"],
            t["enabled"],
            t["failing"],
            t["invalid"],
            st["backlog"],
            st["oldest_due_age_secs"].as_f64().unwrap_or(0.0),
            st["missed"].as_i64().unwrap_or(0),
            h["runs"],
            h["succeeded"],
            h["failed"],
            h["timed_out"],
            h["skipped"],
            ms(&h["lag_p50_ms"]),
            ms(&h["lag_p99_ms"]),
        ) + &worst_tasks(&st["last_hour_tasks"])
            + &flow_status(&st["flows"])
    });
    // The pipeline's verdict first: what an operator runs `status` for.
    let text = if args.api.json {
        text
    } else {
        crate::pipeline::pipeline_status(&st) + &text
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".to_string(), |v| format!("{v:.0} ms"))
}

/// A task as `status` names it: `#id name [tag, tag]`.
fn task_label(t: &Value) -> String {
    let tags: Vec<String> = t["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    let mut label = format!("#{} {}", str_of(&t["task_id"]), str_of(&t["name"]));
    if !tags.is_empty() {
        let _ = write!(label, " [{}]", tags.join(", "));
    }
    label
}

/// The tasks that fired latest and failed most in the last hour (nothing
/// for an admin API older than these figures).
fn worst_tasks(figures: &Value) -> String {
    if !figures.is_object() {
        return String::new();
    }
    let mut out = String::new();
    let late = figures["worst_lateness"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "latest tasks:   {}",
        if late.is_empty() {
            "none"
        } else {
            "(last hour, by lateness p99)"
        }
    );
    for t in &late {
        let _ = writeln!(
            out,
            "  p99 {:>9}  max {:>9}  {} runs  {}",
            ms(&t["lag_p99_ms"]),
            ms(&t["lag_max_ms"]),
            t["runs"].as_i64().unwrap_or(0),
            task_label(t),
        );
    }
    let failing = figures["most_failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "failing tasks:  {}",
        if failing.is_empty() {
            "none"
        } else {
            "(last hour, by failed runs)"
        }
    );
    for t in &failing {
        let _ = writeln!(
            out,
            "  {:>4} of {:<4} failed  {}  {}",
            t["failed"].as_i64().unwrap_or(0),
            t["runs"].as_i64().unwrap_or(0),
            task_label(t),
            printable(t["last_error"].as_str().unwrap_or("")),
        );
    }
    out
}

/// The flows part of `sundial status`: counts, then each open flow.
fn flow_status(flows: &Value) -> String {
    // An admin API older than flows says nothing of them.
    if !flows.is_object() {
        return String::new();
    }
    let mut out = format!(
        "flows:          {} open, {} backing off\n",
        flows["open"].as_i64().unwrap_or(0),
        flows["backing_off"].as_i64().unwrap_or(0),
    );
    let open = flows["open_flows"].as_array().cloned().unwrap_or_default();
    for flow in &open {
        let _ = writeln!(
            out,
            "  open          {} since {}, next probe {}",
            str_of(&flow["key"]),
            when(&flow["opened_at"]),
            when(&flow["probe_at"]),
        );
    }
    let shown = open.len() as i64;
    if flows["open"].as_i64().unwrap_or(0) > shown {
        let _ = writeln!(out, "  (and more: sundial flows list)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worst_tasks_name_the_task_its_tags_and_figures() {
        let text = worst_tasks(&json!({
            "worst_lateness": [
                {"task_id": 7, "name": "report", "tags": ["team:a", "billing"],
                 "runs": 12, "lag_p99_ms": 30512.4, "lag_max_ms": 31000.0}
            ],
            "most_failures": [
                {"task_id": 9, "name": "sync\u{1b}[2J", "tags": [], "runs": 5,
                 "failed": 4, "last_error": "HTTP 500"}
            ]
        }));
        assert!(text.contains("p99  30512 ms"), "{text}");
        assert!(text.contains("#7 report [team:a, billing]"), "{text}");
        assert!(text.contains("   4 of 5    failed  #9 sync"), "{text}");
        assert!(text.contains("HTTP 500"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "control characters are not printed: {text}"
        );
        let none = worst_tasks(&json!({"worst_lateness": [], "most_failures": []}));
        assert_eq!(none, "latest tasks:   none\nfailing tasks:  none\n");
        assert_eq!(worst_tasks(&Value::Null), "");
    }
}
