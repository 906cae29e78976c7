//! The overlap policy of a manual trigger (`POST /v1/tasks/{id}/trigger`):
//! a `forbid` or `skip` task whose scheduled run is in flight is not fired
//! again by hand unless the request says `{"force": true}`. `skip` also
//! records the refused trigger as a skipped manual run, so the ledger
//! shows it; `allow` tasks always fire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{AdminError, Result};
use super::extract::parse_json;
use crate::store::{self, SkippedOccurrence};
use crate::task::{Overlap, Task};

/// The body of `POST /v1/tasks/{id}/trigger` (optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Fire even while a run is in flight (`forbid` and `skip` tasks
    /// refuse otherwise). Default false.
    #[serde(default)]
    pub force: bool,
}

/// An empty body (or `null`) is a trigger without `force`.
pub fn trigger_request(body: &[u8]) -> Result<TriggerRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TriggerRequest::default());
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if !value.is_object() && !value.is_null() {
            return Err(AdminError::invalid(
                "body",
                "must be a JSON object such as {\"force\": true}",
            ));
        }
    }
    let request: Option<TriggerRequest> = parse_json(body)?;
    Ok(request.unwrap_or_default())
}

/// The scheduled occurrence of `task` in flight at `now`: one that is due,
/// not recorded, and held by a live lease.
pub fn in_flight(task: &Task, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let next = task.next_run_at?;
    let leased = task.lease_until.is_some_and(|until| until > now);
    (leased && next <= now).then_some(next)
}

/// Refuses the trigger the task's overlap policy forbids (recording it as
/// skipped for `skip`); `Ok` when it may fire.
pub async fn admit(
    pool: &sqlx::PgPool,
    task: &Task,
    request: &TriggerRequest,
    occurrence: DateTime<Utc>,
) -> Result<()> {
    if request.force || task.overlap == Overlap::Allow {
        return Ok(());
    }
    let Some(running) = in_flight(task, occurrence) else {
        return Ok(());
    };
    let running_text = running.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (overlap, recorded) = match task.overlap {
        Overlap::Skip => {
            let skip = SkippedOccurrence {
                task_id: task.id,
                occurrence,
                reason: format!(
                    "overlap: manual trigger while the run of {} was in flight (overlap = skip)",
                    running.format("%Y-%m-%d %H:%M:%SZ")
                ),
                manual: true,
            };
            store::record_skips(pool, &[skip], occurrence).await?;
            ("skip", ": recorded as skipped")
        }
        _ => ("forbid", ""),
    };
    Err(AdminError::RunInFlight {
        task_id: task.id,
        occurrence: running_text,
        overlap,
        recorded,
    })
}
