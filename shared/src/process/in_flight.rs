//! The messages this processor is firing right now, so that a second copy
//! of one does not fire it a second time.
//!
//! SQS delivers at least once: now and then two receivers get the same
//! message (the emulator does it often). A `forbid` occurrence is guarded
//! by its lease and the task's `next_run_at`, and a recorded occurrence is
//! dropped as stale, but an `allow` occurrence holds no lease: without
//! this, both copies would fire. A copy that finds its twin here is handed
//! back to the queue for about as long as the twin can take; when it comes
//! again the twin is recorded and the copy is dropped. (Copies that reach
//! two processes at once are kept apart by `store::claim_fires`, claimed
//! in `Processor::prepare` before this.)
//!
//! The key is [`DispatchMessage::claim_key`], one attempt at one run: a
//! retry (next attempt) is a different message and never waits for its
//! predecessor, but a copy flow control moved (new `fire_at`) is the same
//! attempt and waits for a twin being fired. An entry is released once its
//! outcome is written (or the message went back unfired), and lapses by
//! itself at its expiry, so an entry left behind (a cancelled invocation)
//! cannot hold a message back for long.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::message::DispatchMessage;

/// Longest a copy is handed back for.
const MAX_HOLD: Duration = Duration::from_secs(15 * 60);
/// Shortest.
const MIN_HOLD: Duration = Duration::from_secs(1);

/// See the module documentation.
#[derive(Default)]
pub(super) struct InFlightMessages {
    entries: Mutex<HashMap<String, Instant>>,
}

impl InFlightMessages {
    /// Takes `message` for firing until `expires` (from now). `Err` is the
    /// time its twin may still take: hand this copy back for that long.
    pub(super) fn claim(
        &self,
        message: &DispatchMessage,
        expires: Duration,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            // A poisoned lock only loses the deduplication.
            return Ok(());
        };
        let key = message.claim_key();
        if let Some(until) = entries.get(&key) {
            if *until > now {
                return Err((*until - now).clamp(MIN_HOLD, MAX_HOLD));
            }
        }
        entries.insert(key, now + expires.min(MAX_HOLD));
        Ok(())
    }

    /// Its outcome is written (or given up): copies may come through.
    pub(super) fn release(&self, message: &DispatchMessage) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&message.claim_key());
            // Lapsed entries go with the next release.
            if entries.len() > 1024 {
                let now = Instant::now();
                entries.retain(|_, until| *until > now);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn message(attempt: u32) -> DispatchMessage {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let mut m = DispatchMessage::new(7, at, 1);
        m.attempt = attempt;
        m
    }

    #[test]
    fn a_second_copy_waits_for_the_first_and_passes_once_it_is_released() {
        let seen = InFlightMessages::default();
        assert_eq!(seen.claim(&message(1), Duration::from_secs(40)), Ok(()));
        let wait = seen
            .claim(&message(1), Duration::from_secs(40))
            .unwrap_err();
        assert!(wait > Duration::from_secs(39) && wait <= Duration::from_secs(40));
        seen.release(&message(1));
        assert_eq!(seen.claim(&message(1), Duration::from_secs(40)), Ok(()));
    }

    #[test]
    fn another_attempt_is_another_message() {
        let seen = InFlightMessages::default();
        assert_eq!(seen.claim(&message(1), Duration::from_secs(40)), Ok(()));
        assert_eq!(seen.claim(&message(2), Duration::from_secs(40)), Ok(()));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_moved_copy_waits_for_its_twin() {
        let seen = InFlightMessages::default();
        let m = message(1);
        let later = m.occurrence + chrono::Duration::seconds(2);
        assert_eq!(seen.claim(&m, Duration::from_secs(40)), Ok(()));
        assert!(seen
            .claim(&m.held_until(later), Duration::from_secs(40))
            .is_err());
        seen.release(&m);
        assert_eq!(
            seen.claim(&m.held_until(later), Duration::from_secs(40)),
            Ok(())
        );
    }

    #[test]
    fn an_entry_left_behind_lapses_and_holds_are_bounded() {
        let seen = InFlightMessages::default();
        assert_eq!(seen.claim(&message(1), Duration::ZERO), Ok(()));
        // Lapsed at once: the next copy fires.
        assert_eq!(seen.claim(&message(1), Duration::from_secs(3600)), Ok(()));
        let wait = seen
            .claim(&message(1), Duration::from_secs(3600))
            .unwrap_err();
        assert!(wait <= MAX_HOLD, "{wait:?}");
    }
}
