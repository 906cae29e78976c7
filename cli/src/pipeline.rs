//! The pipeline part of `sundial status`: when the scanner last ran and
//! whether the pipeline is healthy, with the reasons, from the `scanner`,
//! `health`, `leases_overdue` and `dead_letters` fields of `/v1/status`.
//! The verdict comes first: it is what an operator reads the command for.

use std::fmt::Write;

use serde_json::Value;

use crate::tasks::{printable, str_of, when};

/// The lines `sundial status` prints about the pipeline's health (nothing
/// for an admin API older than the heartbeat).
pub(crate) fn pipeline_status(st: &Value) -> String {
    let health = &st["health"];
    if !health.is_object() {
        return String::new();
    }
    let mut out = String::new();
    let healthy = health["healthy"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "pipeline:       {}",
        if healthy { "healthy" } else { "UNHEALTHY" }
    );
    for reason in health["reasons"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<13} {}",
            str_of(&reason["code"]),
            printable(reason["message"].as_str().unwrap_or(""))
        );
    }
    let scanner = &st["scanner"];
    let last = match scanner["seconds_ago"].as_f64() {
        Some(ago) => format!(
            "{} ({ago:.0}s ago) by {}, {} ticks",
            when(&scanner["last_tick_at"]),
            str_of(&scanner["last_tick"]["scanner"]),
            scanner["last_tick"]["ticks"].as_i64().unwrap_or(0)
        ),
        None => "never".to_string(),
    };
    let _ = writeln!(out, "scanner:        last tick {last}");
    let dead = match st["dead_letters"].as_i64() {
        Some(n) => n.to_string(),
        None => "not checked".to_string(),
    };
    let _ = writeln!(
        out,
        "leases overdue: {}, dead letters: {dead}",
        st["leases_overdue"].as_i64().unwrap_or(0)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_healthy_pipeline_says_when_the_scanner_ran() {
        let st = json!({
            "health": {"healthy": true, "reasons": []},
            "scanner": {"last_tick_at": "2026-12-01T09:00:00.5Z", "seconds_ago": 12.4,
                        "last_tick": {"scanner": "sundial-scanner", "ticks": 345}},
            "leases_overdue": 0, "dead_letters": 0
        });
        assert_eq!(
            pipeline_status(&st),
            "pipeline:       healthy\n\
             scanner:        last tick 2026-12-01 09:00:00Z (12s ago) by sundial-scanner, 345 ticks\n\
             leases overdue: 0, dead letters: 0\n"
        );
    }

    #[test]
    fn an_unhealthy_pipeline_lists_its_reasons_first() {
        let st = json!({
            "health": {"healthy": false, "reasons": [
                {"code": "scanner_never_seen", "message": "no scanner has ever ticked\u{1b}[2J"},
                {"code": "dead_letters", "message": "the dead-letter queue holds 2 message(s)"}
            ]},
            "scanner": {"last_tick_at": null, "seconds_ago": null, "last_tick": null},
            "leases_overdue": 3, "dead_letters": null
        });
        let text = pipeline_status(&st);
        assert!(text.starts_with("pipeline:       UNHEALTHY\n"), "{text}");
        assert!(
            text.contains("scanner_never_seen no scanner has ever ticked\\u{1b}[2J\n"),
            "{text}"
        );
        assert!(text.contains("scanner:        last tick never\n"), "{text}");
        assert!(
            text.contains("leases overdue: 3, dead letters: not checked\n"),
            "{text}"
        );
        assert_eq!(pipeline_status(&json!({"backlog": 0})), "");
    }
}
