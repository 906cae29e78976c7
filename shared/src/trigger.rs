//! Why a request goes out: the `Sundial-Trigger` of an attempt, sent with
//! `Sundial-Attempt` and `Sundial-Scheduled-For` on every fired request
//! (all three covered by the signature, see [`crate::fire::signing`]) and
//! recorded on the run (`task_runs.trigger`).
//!
//! The rule, in order: an attempt after the first is a `retry`; a firing
//! by hand is `manual`; one sent by a backfill is `backfill`; a scheduled
//! first attempt that goes out more than [`MISFIRE_GRACE`] after the
//! instant it was meant for (its occurrence plus jitter; delay added by
//! flow control does not count, it is deliberate) is `catch-up`, which is
//! what the catch-up policy fires after downtime or a backlog; every other
//! one is `schedule`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::message::DispatchMessage;
pub use crate::task::MISFIRE_GRACE;

/// Header naming the trigger.
pub const TRIGGER_HEADER: &str = "Sundial-Trigger";
/// Header with the attempt number, 1 for the first.
pub const ATTEMPT_HEADER: &str = "Sundial-Attempt";
/// Header with the occurrence (RFC 3339, UTC, milliseconds).
pub const SCHEDULED_FOR_HEADER: &str = "Sundial-Scheduled-For";

/// The trigger of one attempt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
#[sqlx(type_name = "text", rename_all = "kebab-case")]
pub enum Trigger {
    /// On time, by the schedule.
    Schedule,
    /// Attempt 2 or later of an occurrence.
    Retry,
    /// A scheduled occurrence fired late (more than the misfire grace).
    CatchUp,
    /// Sent by a backfill (`POST /v1/tasks/{id}/backfill`).
    Backfill,
    /// Fired by hand (`POST /v1/tasks/{id}/trigger`).
    Manual,
}

impl Trigger {
    /// The header value (and the stored one).
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::CatchUp => "catch-up",
            Trigger::Backfill => "backfill",
            Trigger::Manual => "manual",
        }
    }

    /// The trigger of `message`'s attempt when it goes out at `at`
    /// (see the module's rule); `jitter_secs` is its task's.
    pub fn of(message: &DispatchMessage, jitter_secs: i32, at: DateTime<Utc>) -> Trigger {
        if message.attempt > 1 {
            return Trigger::Retry;
        }
        if message.manual {
            return Trigger::Manual;
        }
        if message.backfill.is_some() {
            return Trigger::Backfill;
        }
        let planned = crate::firetime::fire_at(message.task_id, message.occurrence, jitter_secs);
        let paced = chrono::Duration::milliseconds(i64::try_from(message.paced_ms).unwrap_or(0));
        if at - planned - paced > MISFIRE_GRACE {
            Trigger::CatchUp
        } else {
            Trigger::Schedule
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Sundial-Scheduled-For` of an occurrence: the same spelling as the
/// occurrence part of the `Idempotency-Key`.
pub fn scheduled_for_value(occurrence: DateTime<Utc>) -> String {
    occurrence.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::BackfillRef;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn the_rule_in_order() {
        let occ = t("2026-12-01T09:00:00Z");
        let m = DispatchMessage::new(1, occ, 1);
        let on_time = occ + chrono::Duration::seconds(2);
        let late = occ + chrono::Duration::seconds(61);
        assert_eq!(Trigger::of(&m, 0, on_time), Trigger::Schedule);
        assert_eq!(Trigger::of(&m, 0, late), Trigger::CatchUp);
        // Jitter and pacing are planned delays, not lateness.
        assert_eq!(Trigger::of(&m, 900, late), Trigger::Schedule);
        let paced = m
            .clone()
            .firing_at(occ)
            .held_until(occ + chrono::Duration::seconds(50));
        assert_eq!(Trigger::of(&paced, 0, late), Trigger::Schedule);
        assert_eq!(Trigger::of(&m.retry(late), 0, on_time), Trigger::Retry);
        let manual = DispatchMessage {
            manual: true,
            ..m.clone()
        };
        assert_eq!(Trigger::of(&manual, 0, late), Trigger::Manual);
        let backfill = DispatchMessage {
            backfill: Some(BackfillRef { id: 3, rerun: true }),
            ..m.clone()
        };
        assert_eq!(Trigger::of(&backfill, 0, late), Trigger::Backfill);
        assert_eq!(Trigger::of(&backfill.retry(late), 0, late), Trigger::Retry);
    }

    #[test]
    fn spelled_as_on_the_wire() {
        let all = [
            Trigger::Schedule,
            Trigger::Retry,
            Trigger::CatchUp,
            Trigger::Backfill,
            Trigger::Manual,
        ];
        for trigger in all {
            let json = serde_json::to_value(trigger).unwrap();
            assert_eq!(json, trigger.as_str());
        }
        assert_eq!(
            scheduled_for_value(t("2026-03-08T07:00:00Z")),
            "2026-03-08T07:00:00.000Z"
        );
    }
}
