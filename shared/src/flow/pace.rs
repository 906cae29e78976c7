//! Pacing at dispatch: the generic cell rate algorithm (GCRA). A flow
//! limited to `rate` requests per second with a `burst` keeps one number,
//! its theoretical arrival time (TAT, `flow_state.next_slot`); each request
//! wanting to go out at `t` is given the earliest instant that keeps every
//! window of length `w` at no more than `rate * w + burst` requests.
//! The scanner advances it under the row lock of its claim transaction,
//! so any number of scanners (and processors chaining occurrences) share
//! one schedule per flow without talking to each other.

use chrono::{DateTime, Duration, Utc};

/// A flow's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second (> 0).
    pub per_sec: f64,
    /// Requests that may go out back to back (≥ 1).
    pub burst: u32,
}

impl Rate {
    /// The spacing of requests at the full rate.
    pub fn interval(&self) -> Duration {
        let micros = (1_000_000.0 / self.per_sec.max(1e-6)).round();
        Duration::microseconds(micros.clamp(1.0, 1e12) as i64)
    }

    /// How far ahead of the TAT a request may go (the burst allowance).
    fn tolerance(&self) -> Duration {
        self.interval() * (self.burst.max(1) as i32 - 1)
    }
}

/// Gives a request that wants to go out at `wanted` its slot, and moves
/// the flow's TAT (`None`: the flow has not paced anything yet) past it.
/// Returns the slot: `wanted` itself when the flow has room, later when not.
pub fn slot(rate: Rate, tat: &mut Option<DateTime<Utc>>, wanted: DateTime<Utc>) -> DateTime<Utc> {
    let current = tat.unwrap_or(wanted).max(wanted - rate.tolerance());
    let at = wanted.max(current - rate.tolerance());
    *tat = Some(current.max(at) + rate.interval());
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn ms(n: i64) -> Duration {
        Duration::milliseconds(n)
    }

    /// The largest number of slots in any window of `w` starting at a slot.
    fn max_in_window(slots: &[DateTime<Utc>], w: Duration) -> usize {
        slots
            .iter()
            .map(|s| slots.iter().filter(|x| **x >= *s && **x < *s + w).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_burst_due_at_once_is_spread_at_the_rate() {
        let rate = Rate {
            per_sec: 50.0,
            burst: 1,
        };
        let mut tat = None;
        let slots: Vec<_> = (0..300).map(|_| slot(rate, &mut tat, t0())).collect();
        assert_eq!(slots[0], t0());
        assert_eq!(slots[1], t0() + ms(20));
        assert_eq!(slots[299], t0() + ms(20 * 299));
        assert!(max_in_window(&slots, Duration::seconds(1)) <= 50);
    }

    #[test]
    fn burst_lets_that_many_go_at_once_then_paces() {
        let rate = Rate {
            per_sec: 10.0,
            burst: 5,
        };
        let mut tat = None;
        let slots: Vec<_> = (0..20).map(|_| slot(rate, &mut tat, t0())).collect();
        assert!(slots[..5].iter().all(|s| *s == t0()));
        assert_eq!(slots[5], t0() + ms(100));
        assert_eq!(slots[6], t0() + ms(200));
        // Any one-second window: rate + burst at most.
        assert!(max_in_window(&slots, Duration::seconds(1)) <= 10 + 5);
    }

    #[test]
    fn an_idle_flow_has_room_again() {
        let rate = Rate {
            per_sec: 2.0,
            burst: 1,
        };
        let mut tat = None;
        assert_eq!(slot(rate, &mut tat, t0()), t0());
        assert_eq!(slot(rate, &mut tat, t0()), t0() + ms(500));
        // Long after: no debt carried over, the request goes at once.
        let later = t0() + Duration::seconds(60);
        assert_eq!(slot(rate, &mut tat, later), later);
        assert_eq!(slot(rate, &mut tat, later), later + ms(500));
    }

    #[test]
    fn requests_wanting_later_instants_keep_them_when_there_is_room() {
        let rate = Rate {
            per_sec: 1.0,
            burst: 1,
        };
        let mut tat = None;
        let wanted: Vec<_> = (0..5).map(|k| t0() + Duration::seconds(2 * k)).collect();
        let slots: Vec<_> = wanted.iter().map(|w| slot(rate, &mut tat, *w)).collect();
        assert_eq!(slots, wanted);
    }
}
