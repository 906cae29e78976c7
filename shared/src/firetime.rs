//! When an occurrence fires, and how a queue gets it there on time.
//!
//! The rule is "never early, on the dot": every message carries (or can
//! derive) its fire time; queues can only delay in whole seconds (SQS
//! `DelaySeconds`), so delays are rounded *down* and a message may arrive
//! up to a second early — never late because of rounding. The processor
//! then holds an early message until its instant ([`on_arrival`]); a
//! message that arrives more than [`HOLD_MAX`] early (a clock or delay
//! error, or a delay longer than the queue can express) is put back with
//! the remaining delay instead of occupying a worker.
//!
//! The jitter offset of an occurrence comes from a fixed hash (SplitMix64
//! over the task id and the occurrence's milliseconds), so the same
//! occurrence gets the same offset on every dispatch, after an upgrade of
//! Rust or of Sundial, and on every platform.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest delay a queue accepts on one message (SQS: 15 minutes).
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// A message that arrives at most this early is held until its instant;
/// earlier ones are put back on the queue with the remaining delay. It
/// covers the SQS adapter's delivery lead (at most
/// [`MAX_DELIVERY_LEAD`]) plus the second lost to rounding down, with room
/// to spare.
pub const HOLD_MAX: Duration = Duration::from_secs(4);

/// Messages whose fire time pacing set (a flow's slot, its backoff) are
/// sent this much earlier still ([`paced_delay`]): a paced message that
/// arrives late has lost its slot and must take a later one, which
/// lengthens the flow's whole schedule, while one that arrives early is
/// only held a little longer. Within [`HOLD_MAX`] with the delivery lead
/// and the rounding.
pub const PACED_LEAD: Duration = Duration::from_secs(1);

/// The queue delay for a message that pacing moved to `fire_at`: as
/// [`delay_until`], [`PACED_LEAD`] earlier.
pub fn paced_delay(fire_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    delay_until(fire_at, now).saturating_sub(PACED_LEAD)
}

/// Longest delivery lead a queue adapter may use (see
/// `SUNDIAL_DELIVERY_LEAD_MS`).
pub const MAX_DELIVERY_LEAD: Duration = Duration::from_secs(1);

/// A delay as `DelaySeconds` for a queue that delivers up to `lead` late
/// (SQS makes a delayed message receivable a little after its delay; the
/// emulator up to a second after): aim `lead` earlier, round down, and let
/// the processor hold the message until its instant.
pub fn delay_seconds_with_lead(delay: Duration, lead: Duration) -> i32 {
    whole_seconds(delay.saturating_sub(lead.min(MAX_DELIVERY_LEAD)))
}

/// The jitter offset of an occurrence: stable, in `0..=jitter_secs` seconds
/// at millisecond resolution.
pub fn jitter_offset(task_id: i64, occurrence: DateTime<Utc>, jitter_secs: i32) -> Duration {
    if jitter_secs <= 0 {
        return Duration::ZERO;
    }
    let seed = (task_id as u64)
        .rotate_left(32)
        .wrapping_add(occurrence.timestamp_millis() as u64);
    let span = u64::from(jitter_secs.unsigned_abs()) * 1000 + 1;
    Duration::from_millis(splitmix64(seed) % span)
}

/// The instant an occurrence fires: its time plus its jitter offset.
pub fn fire_at(task_id: i64, occurrence: DateTime<Utc>, jitter_secs: i32) -> DateTime<Utc> {
    occurrence
        + chrono::Duration::from_std(jitter_offset(task_id, occurrence, jitter_secs))
            .unwrap_or_default()
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed, well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Exact delay from `now` until `fire_at` (zero when overdue), capped at
/// [`MAX_DELAY`]. Queue adapters that count in whole seconds round it down
/// with [`whole_seconds`].
pub fn delay_until(fire_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (fire_at - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .min(MAX_DELAY)
}

/// A delay as whole seconds for a queue (`DelaySeconds`, visibility
/// timeouts): rounded down, so the message arrives early (and is held)
/// rather than late; capped at [`MAX_DELAY`].
pub fn whole_seconds(delay: Duration) -> i32 {
    delay.min(MAX_DELAY).as_secs() as i32
}

/// What to do with a message that just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Its time has come (or passed): fire now.
    Fire,
    /// Slightly early: hold it for this long, then fire.
    Hold(Duration),
    /// Far too early: send it again with this delay.
    PutBack(Duration),
}

/// The hold rule, see the module docs.
pub fn on_arrival(fire_at: DateTime<Utc>, now: DateTime<Utc>) -> Arrival {
    let Ok(early) = (fire_at - now).to_std() else {
        return Arrival::Fire;
    };
    if early.is_zero() {
        Arrival::Fire
    } else if early <= HOLD_MAX {
        Arrival::Hold(early)
    } else {
        Arrival::PutBack(early)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn queue_delays_round_down_so_messages_arrive_early_never_late() {
        let now = t("2026-12-01T09:00:00.000Z");
        let cases = [
            ("2026-12-01T09:00:00.001Z", ms(1), 0),
            ("2026-12-01T09:00:00.999Z", ms(999), 0),
            ("2026-12-01T09:00:01.000Z", ms(1000), 1),
            ("2026-12-01T09:00:01.500Z", ms(1500), 1),
            ("2026-12-01T09:15:00.000Z", ms(900_000), 900),
            // Beyond what the queue can express: capped, put back on arrival.
            ("2026-12-01T09:20:00.000Z", ms(900_000), 900),
            // Overdue: at once.
            ("2026-12-01T08:59:58.000Z", ms(0), 0),
        ];
        for (at, exact, secs) in cases {
            let d = delay_until(t(at), now);
            assert_eq!(d, exact, "{at}");
            assert_eq!(whole_seconds(d), secs, "{at}");
            assert!(
                Duration::from_secs(secs as u64) <= d,
                "{at}: rounding made it late"
            );
        }
    }

    #[test]
    fn arrivals_are_held_until_their_instant_or_put_back() {
        let fire = t("2026-12-01T09:00:00.000Z");
        let at = |s: &str| on_arrival(fire, t(s));
        assert_eq!(at("2026-12-01T08:59:59.999Z"), Arrival::Hold(ms(1)));
        assert_eq!(at("2026-12-01T08:59:59.001Z"), Arrival::Hold(ms(999)));
        assert_eq!(at("2026-12-01T08:59:59.000Z"), Arrival::Hold(ms(1000)));
        assert_eq!(at("2026-12-01T08:59:58.000Z"), Arrival::Hold(ms(2000)));
        assert_eq!(at("2026-12-01T08:59:57.000Z"), Arrival::Hold(ms(3000)));
        assert_eq!(at("2026-12-01T08:59:56.000Z"), Arrival::Hold(ms(4000)));
        assert_eq!(at("2026-12-01T08:59:55.999Z"), Arrival::PutBack(ms(4001)));
        assert_eq!(
            at("2026-12-01T08:45:00.000Z"),
            Arrival::PutBack(ms(900_000))
        );
        assert_eq!(at("2026-12-01T09:00:00.000Z"), Arrival::Fire);
        assert_eq!(at("2026-12-01T09:00:00.001Z"), Arrival::Fire);
        assert_eq!(at("2026-12-01T10:00:00.000Z"), Arrival::Fire);
    }

    #[test]
    fn a_delivery_lead_makes_messages_due_earlier_but_never_later() {
        let lead = ms(1000);
        assert_eq!(delay_seconds_with_lead(ms(0), lead), 0);
        assert_eq!(delay_seconds_with_lead(ms(999), lead), 0);
        assert_eq!(delay_seconds_with_lead(ms(1999), lead), 0);
        assert_eq!(delay_seconds_with_lead(ms(2000), lead), 1);
        assert_eq!(delay_seconds_with_lead(ms(900_000), lead), 899);
        // Capped lead: a message is never due more than lead + 1 s early,
        // which the hold covers.
        for d in (0..5000).step_by(7) {
            let sent = delay_seconds_with_lead(ms(d), ms(60_000)) as u64 * 1000;
            assert!(sent <= d && d - sent < (MAX_DELIVERY_LEAD + ms(1000)).as_millis() as u64);
            assert!(MAX_DELIVERY_LEAD + ms(1000) < HOLD_MAX);
            assert!(MAX_DELIVERY_LEAD + PACED_LEAD + ms(1000) < HOLD_MAX);
        }
    }

    /// Pinned: a change of these values moves every jittered task's fire
    /// time after an upgrade. Change them only on purpose.
    #[test]
    fn jitter_offsets_are_pinned() {
        let occ = t("2026-12-01T09:00:00Z");
        let got: Vec<u128> = [(1, 30), (2, 30), (42, 30), (42, 900), (7, 1)]
            .iter()
            .map(|&(id, j)| jitter_offset(id, occ, j).as_millis())
            .collect();
        assert_eq!(got, PINNED);
        // The reference SplitMix64's first output for seed 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(jitter_offset(42, occ, 0), Duration::ZERO);
        assert_eq!(fire_at(42, occ, 0), occ);
        // Bounded and spread.
        let offsets: Vec<Duration> = (0..1000).map(|i| jitter_offset(i, occ, 10)).collect();
        assert!(offsets.iter().all(|o| *o <= Duration::from_secs(10)));
        let distinct: std::collections::HashSet<_> = offsets.iter().collect();
        assert!(distinct.len() > 900);
    }

    const PINNED: [u128; 5] = [18572, 28084, 14561, 425955, 253];
}
