//! The dispatch message: what the scanner puts on the queue for one
//! occurrence. It is small and versioned; the processor reloads the task
//! itself from the database, so a message never carries stale definitions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The message format this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// One occurrence of one task, to be fired.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DispatchMessage {
    /// Format version, [`MESSAGE_VERSION`].
    pub v: u32,
    /// `tasks.id`.
    pub task_id: i64,
    /// The occurrence (`scheduled_for`); with `task_id` the idempotency key.
    pub occurrence: DateTime<Utc>,
    /// `tasks.version` when dispatched; a different version means the task
    /// was edited since, and the message is dropped.
    pub task_version: i64,
    /// 1 for the first attempt, incremented by each retry.
    pub attempt: u32,
    /// Fired by hand (`POST /v1/tasks/{id}/trigger`), outside the schedule:
    /// recorded as a run but never advances the schedule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// The instant to fire at: the occurrence plus its jitter for a first
    /// attempt, the end of the backoff for a retry. The processor holds a
    /// message that arrives before it (see [`crate::firetime`]). Absent in
    /// messages of older builds: the processor then derives it from the
    /// task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<DateTime<Utc>>,
    /// How much flow control (pacing, a flow's backoff or open breaker)
    /// moved `fire_at` past the occurrence's own instant, in ms: recorded
    /// as the run's pacing, apart from its lateness.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paced_ms: u64,
    /// Sent by a backfill (`POST /v1/tasks/{id}/backfill`): like a manual
    /// firing it is recorded but never moves the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillRef>,
    /// Sent without a slot of its flow (retries and messages a flow held):
    /// if the flow paces when it arrives, it takes the next free slot at or
    /// after its `fire_at` then. A slot reserved when it was sent stays
    /// empty whenever the queue delivers the message after it (a backlog
    /// ahead of it, as after a 429 burst), and the flow's schedule, already
    /// moved past it, leaves the target idle meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slot_on_arrival: bool,
}

/// The backfill a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackfillRef {
    /// `backfills.id`.
    pub id: i64,
    /// The occurrence has a recorded run already (mode `all`): this one is
    /// recorded beside it, as the backfill's re-run (`task_runs.rerun`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rerun: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A message body that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or JSON of another shape.
    #[error("dispatch message is not valid: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer (or unknown) format.
    #[error("dispatch message version {0} is not supported (this build reads version {MESSAGE_VERSION})")]
    UnsupportedVersion(u32),
    /// Fields out of range.
    #[error("dispatch message field `{0}` is out of range")]
    OutOfRange(&'static str),
}

impl DispatchMessage {
    /// The first attempt at an occurrence.
    pub fn new(task_id: i64, occurrence: DateTime<Utc>, task_version: i64) -> Self {
        DispatchMessage {
            v: MESSAGE_VERSION,
            task_id,
            occurrence,
            task_version,
            attempt: 1,
            manual: false,
            fire_at: None,
            paced_ms: 0,
            backfill: None,
            slot_on_arrival: false,
        }
    }

    /// Outside the schedule (by hand or by a backfill): recorded as a run,
    /// but it holds no lease and never moves the schedule.
    pub fn off_schedule(&self) -> bool {
        self.manual || self.backfill.is_some()
    }

    /// `task_runs.rerun` of the run this message records: the backfill's
    /// id for a re-run, else 0 (the occurrence's own run).
    pub fn rerun(&self) -> i64 {
        self.backfill.filter(|b| b.rerun).map_or(0, |b| b.id)
    }

    /// The same message, to be fired at `at`.
    pub fn firing_at(mut self, at: DateTime<Utc>) -> Self {
        self.fire_at = Some(at);
        self
    }

    /// The same attempt, moved to fire at `at` by flow control (the move
    /// is added to `paced_ms`); a slot, if it waited for one, is `at`.
    pub fn held_until(&self, at: DateTime<Utc>) -> Self {
        let from = self.fire_at.unwrap_or(self.occurrence);
        let moved = (at - from).num_milliseconds().max(0) as u64;
        DispatchMessage {
            fire_at: Some(at),
            paced_ms: self.paced_ms.saturating_add(moved),
            slot_on_arrival: false,
            ..self.clone()
        }
    }

    /// The next attempt at the same occurrence, to be fired at `at`.
    pub fn retry(&self, at: DateTime<Utc>) -> Self {
        DispatchMessage {
            attempt: self.attempt.saturating_add(1),
            fire_at: Some(at),
            slot_on_arrival: false,
            ..self.clone()
        }
    }

    /// The same message, to take its flow's next free slot on arrival.
    pub fn slot_on_arrival(self) -> Self {
        DispatchMessage {
            slot_on_arrival: true,
            ..self
        }
    }

    /// `Idempotency-Key` header value: `<task id>:<occurrence>`, the same
    /// for every attempt and every duplicate delivery of an occurrence.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.task_id, self.occurrence)
    }

    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: no maps with non-string keys,
        // no floats.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The message's key in `fire_claims` (see `store::claim_fires`) and
    /// among the messages a processor is firing: one attempt at one run
    /// (task, version, occurrence, attempt, and what kind of run). Where
    /// and when it fires (`fire_at`, `paced_ms`, `slot_on_arrival`) is left
    /// out: a copy flow control moved (held, re-paced) while a twin SQS
    /// delivered twice is firing is the same attempt, and must not fire a
    /// second time. A retry is the next attempt: a new key.
    pub fn claim_key(&self) -> String {
        let backfill = self.backfill.map_or((0, false), |b| (b.id, b.rerun));
        format!(
            "{}:{}:{}:{}:{}:{}:{}",
            self.task_id,
            self.task_version,
            self.occurrence.timestamp_micros(),
            self.attempt,
            u8::from(self.manual),
            backfill.0,
            u8::from(backfill.1)
        )
    }

    /// Parses and checks a message body.
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        #[derive(Deserialize)]
        struct Probe {
            v: u32,
        }
        let probe: Probe = serde_json::from_str(body)?;
        if probe.v != MESSAGE_VERSION {
            return Err(MessageError::UnsupportedVersion(probe.v));
        }
        let msg: DispatchMessage = serde_json::from_str(body)?;
        if msg.task_id <= 0 {
            return Err(MessageError::OutOfRange("task_id"));
        }
        if msg.attempt == 0 {
            return Err(MessageError::OutOfRange("attempt"));
        }
        Ok(msg)
    }
}

/// `Idempotency-Key` of an occurrence.
pub fn idempotency_key(task_id: i64, occurrence: DateTime<Utc>) -> String {
    format!(
        "{task_id}:{}",
        occurrence.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-08T07:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn round_trips() {
        let occ = occurrence();
        let m = DispatchMessage::new(42, occ, 3);
        let back = DispatchMessage::parse(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.idempotency_key(), "42:2026-03-08T07:00:00.000Z");
        let later = occ + chrono::Duration::milliseconds(100);
        assert_eq!(m.retry(later).attempt, 2);
        assert_eq!(m.retry(later).fire_at, Some(later));
        assert!(!m.to_json().contains("manual"));
        assert!(!m.to_json().contains("fire_at"));
        let timed = m.clone().firing_at(later);
        assert_eq!(DispatchMessage::parse(&timed.to_json()).unwrap(), timed);
    }

    #[test]
    fn a_moved_copy_is_the_same_claim_and_a_retry_is_not() {
        let occ = occurrence();
        let m = DispatchMessage::new(42, occ, 3);
        let later = occ + chrono::Duration::milliseconds(1500);
        // Held or re-paced by flow control: the same attempt.
        assert_eq!(m.held_until(later).claim_key(), m.claim_key());
        assert_eq!(m.clone().firing_at(later).claim_key(), m.claim_key());
        assert_eq!(m.clone().slot_on_arrival().claim_key(), m.claim_key());
        // The next attempt, another run, another occurrence: another key.
        assert_ne!(m.retry(later).claim_key(), m.claim_key());
        let manual = DispatchMessage {
            manual: true,
            ..m.clone()
        };
        assert_ne!(manual.claim_key(), m.claim_key());
        let rerun = |rerun| DispatchMessage {
            backfill: Some(BackfillRef { id: 9, rerun }),
            ..m.clone()
        };
        assert_ne!(rerun(true).claim_key(), rerun(false).claim_key());
        assert_ne!(rerun(false).claim_key(), m.claim_key());
        let next = DispatchMessage::new(42, occ + chrono::Duration::microseconds(1), 3);
        assert_ne!(next.claim_key(), m.claim_key());
        assert_ne!(DispatchMessage::new(42, occ, 4).claim_key(), m.claim_key());
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        assert!(matches!(
            DispatchMessage::parse(r#"{"v":2,"task_id":1}"#),
            Err(MessageError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            DispatchMessage::parse("hello"),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            DispatchMessage::parse(
                r#"{"v":1,"task_id":0,"occurrence":"2026-01-01T00:00:00Z","task_version":1,"attempt":1}"#
            ),
            Err(MessageError::OutOfRange("task_id"))
        ));
    }
}
