//! Adaptive concurrency per flow and processor: additive increase,
//! multiplicative decrease. A 429 halves the flow's limit; latency rising
//! well above the flow's baseline cuts it by a tenth; a stretch of calm
//! successes adds one. The limit stays between 1 and the flow's cap.
//!
//! A flow this processor has no history of starts in *slow start*: from
//! `SUNDIAL_FLOW_SLOW_START` (default 4) in flight, the window doubles every
//! [`SLOW_START_ROUND`] from the flow's first request until the cap, a 429
//! or congestion. A burst of thousands at the top of the hour then reaches
//! a target as a ramp of a few rounds instead of all at once, and a rate
//! limit answers its first 429s while few requests are in flight. Unlike
//! TCP's, the ramp runs on the clock, not on answers: a scheduled call that
//! takes 10 s must still fire on its second, not after a few of its round
//! trips (a fragile slow target wants `max_in_flight`). It costs a burst to
//! a cold flow log2(cap / window) rounds, 80 ms from 4 to the default cap
//! of 50 (see docs/BENCHMARKS.md); `SUNDIAL_FLOW_SLOW_START=off` skips it.

use std::time::{Duration, Instant};

/// After a decrease, how long before the limit may grow again (and before
/// another decrease: the requests already in flight answer alike).
pub const SETTLE: Duration = Duration::from_millis(500);
/// The limit grows by one at most this often.
pub const GROWTH_EVERY: Duration = Duration::from_millis(100);
/// In slow start the window doubles once per this long: long enough for a
/// fast target's 429s to come back within a round (doubling per round trip
/// of a 1 ms target reached the cap long before a per-second rate limit
/// had said anything), short enough that the ramp costs a burst little.
pub const SLOW_START_ROUND: Duration = Duration::from_millis(20);
/// Latency above `baseline * LATENCY_FACTOR + LATENCY_SLACK` is congestion.
pub const LATENCY_FACTOR: f64 = 2.0;
/// See [`LATENCY_FACTOR`] (keeps fast targets' jitter from counting).
pub const LATENCY_SLACK: Duration = Duration::from_millis(20);

/// One flow's limiter.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    cap: f64,
    /// Lowest recent latency, drifting up slowly so a target that got
    /// slower for good becomes the new normal.
    baseline: Option<Duration>,
    last_decrease: Option<Instant>,
    last_increase: Option<Instant>,
    /// Successes since the limit last grew.
    calm: u32,
    /// Doubling per round (see the module docs).
    slow_start: bool,
    /// When slow start's current round began: the first at the flow's
    /// first request ([`Aimd::limit_at`]).
    round_began: Option<Instant>,
}

/// What a call told the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The target answered (not 429) in this long.
    Answered(Duration),
    /// The target said 429.
    Throttled,
    /// No answer (connect error, timeout): the breaker's business, not
    /// the limiter's.
    Failed,
}

impl Aimd {
    /// A limiter starting at `initial` (clamped to `1..=cap`).
    pub fn new(initial: usize, cap: usize) -> Self {
        let cap = cap.max(1) as f64;
        Aimd {
            limit: (initial.max(1) as f64).min(cap),
            cap,
            baseline: None,
            last_decrease: None,
            last_increase: None,
            calm: 0,
            slow_start: false,
            round_began: None,
        }
    }

    /// A limiter in slow start from `initial` (none if `initial` is at
    /// least the cap).
    pub fn slow_start(initial: usize, cap: usize) -> Self {
        let mut a = Aimd::new(initial, cap);
        a.slow_start = a.limit < a.cap;
        a
    }

    /// Still ramping up (see the module docs)?
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Requests in flight allowed (as of the last [`Aimd::limit_at`]).
    pub fn limit(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }

    /// Requests in flight allowed at `now`, and while in slow start when the
    /// window doubles next. The first call begins slow start's first round.
    pub fn limit_at(&mut self, now: Instant) -> (usize, Option<Instant>) {
        if !self.slow_start {
            return (self.limit(), None);
        }
        let began = *self.round_began.get_or_insert(now);
        let rounds = (now.duration_since(began).as_nanos() / SLOW_START_ROUND.as_nanos()) as u32;
        if rounds > 0 {
            self.limit = (self.limit * 2f64.powi(rounds.min(64) as i32)).min(self.cap);
            self.round_began = Some(began + SLOW_START_ROUND * rounds);
            self.slow_start = self.limit < self.cap;
        }
        let next = self.round_began.filter(|_| self.slow_start);
        (self.limit(), next.map(|b| b + SLOW_START_ROUND))
    }

    /// A new cap (the flow's `max_in_flight` changed).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1) as f64;
        self.limit = self.limit.min(self.cap);
    }

    /// Takes a call's outcome into account.
    pub fn observe(&mut self, signal: Signal, now: Instant) {
        let settled = self
            .last_decrease
            .is_none_or(|at| now.duration_since(at) >= SETTLE);
        match signal {
            Signal::Throttled => {
                if settled {
                    self.decrease(0.5, now);
                }
            }
            Signal::Answered(latency) => {
                // The lowest latency seen, drifting up by 0.1 % per sample
                // while the target answers slower.
                let base = match self.baseline {
                    Some(b) if latency > b => b.mul_f64(1.001).min(latency),
                    _ => latency,
                };
                self.baseline = Some(base);
                let congested = latency > base.mul_f64(LATENCY_FACTOR) + LATENCY_SLACK;
                if congested {
                    if settled {
                        self.decrease(0.9, now);
                    }
                } else if self.slow_start {
                    // The clock grows the window ([`Aimd::limit_at`]).
                } else if settled {
                    self.calm = self.calm.saturating_add(1);
                    let paced = self
                        .last_increase
                        .is_none_or(|at| now.duration_since(at) >= GROWTH_EVERY);
                    if self.calm as f64 >= self.limit && paced && self.limit < self.cap {
                        self.calm = 0;
                        self.limit = (self.limit + 1.0).min(self.cap);
                        self.last_increase = Some(now);
                    }
                }
            }
            Signal::Failed => {}
        }
    }

    fn decrease(&mut self, factor: f64, now: Instant) {
        self.limit = (self.limit * factor).max(1.0);
        self.last_decrease = Some(now);
        self.calm = 0;
        self.slow_start = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(5);

    #[test]
    fn throttling_halves_once_per_settle_period() {
        let t = Instant::now();
        let mut a = Aimd::new(32, 64);
        a.observe(Signal::Throttled, t);
        assert_eq!(a.limit(), 16);
        // The other requests of the same burst answer 429 too: no collapse.
        a.observe(Signal::Throttled, t + Duration::from_millis(10));
        assert_eq!(a.limit(), 16);
        a.observe(Signal::Throttled, t + SETTLE);
        assert_eq!(a.limit(), 8);
    }

    #[test]
    fn never_below_one_nor_above_the_cap() {
        let t = Instant::now();
        let mut a = Aimd::new(4, 6);
        for k in 0..10 {
            a.observe(Signal::Throttled, t + SETTLE * k);
        }
        assert_eq!(a.limit(), 1);
        let later = t + SETTLE * 20;
        for k in 0..1000 {
            a.observe(Signal::Answered(FAST), later + GROWTH_EVERY * k);
        }
        assert_eq!(a.limit(), 6);
    }

    #[test]
    fn calm_successes_add_one_per_limit_of_them() {
        let t = Instant::now();
        let mut a = Aimd::new(4, 100);
        for _ in 0..4 {
            a.observe(Signal::Answered(FAST), t);
        }
        assert_eq!(a.limit(), 5);
        // At most one step per GROWTH_EVERY, however many successes.
        for _ in 0..50 {
            a.observe(Signal::Answered(FAST), t);
        }
        assert_eq!(a.limit(), 5);
        for _ in 0..5 {
            a.observe(Signal::Answered(FAST), t + GROWTH_EVERY);
        }
        assert_eq!(a.limit(), 6);
    }

    #[test]
    fn no_growth_while_settling_after_a_decrease() {
        let t = Instant::now();
        let mut a = Aimd::new(8, 100);
        a.observe(Signal::Throttled, t);
        for _ in 0..100 {
            a.observe(Signal::Answered(FAST), t + Duration::from_millis(100));
        }
        assert_eq!(a.limit(), 4);
    }

    #[test]
    fn latency_far_above_the_baseline_cuts_the_limit() {
        let t = Instant::now();
        let mut a = Aimd::new(20, 100);
        for _ in 0..10 {
            a.observe(Signal::Answered(Duration::from_millis(10)), t);
        }
        let before = a.limit();
        a.observe(Signal::Answered(Duration::from_millis(200)), t + SETTLE);
        assert!(a.limit() < before, "{} !< {before}", a.limit());
        // A slightly slower answer is not congestion.
        let mut b = Aimd::new(20, 100);
        b.observe(Signal::Answered(Duration::from_millis(10)), t);
        b.observe(Signal::Answered(Duration::from_millis(25)), t);
        assert!(b.limit() >= 20);
    }

    #[test]
    fn slow_start_doubles_per_round_until_the_cap() {
        let t = Instant::now();
        let mut a = Aimd::slow_start(4, 50);
        assert!(a.in_slow_start());
        // The first request begins the first round, at the starting window.
        assert_eq!(a.limit_at(t), (4, Some(t + SLOW_START_ROUND)));
        // However many answers come back within the round.
        let just_before = SLOW_START_ROUND - Duration::from_millis(1);
        for k in 0..40 {
            a.observe(Signal::Answered(FAST), t + just_before * k / 40);
        }
        assert_eq!(a.limit_at(t + just_before).0, 4);
        let r1 = t + SLOW_START_ROUND;
        assert_eq!(a.limit_at(r1), (8, Some(r1 + SLOW_START_ROUND)));
        // Two rounds without a look double twice.
        assert_eq!(a.limit_at(r1 + SLOW_START_ROUND * 2).0, 32);
        // The cap ends slow start.
        assert_eq!(a.limit_at(r1 + SLOW_START_ROUND * 3), (50, None));
        assert!(!a.in_slow_start());
        // Then congestion avoidance: at most one step per GROWTH_EVERY.
        a.set_cap(100);
        for _ in 0..200 {
            a.observe(Signal::Answered(FAST), r1 + SLOW_START_ROUND * 4);
        }
        assert_eq!(a.limit(), 51);
    }

    #[test]
    fn slow_start_runs_on_the_clock_not_on_answers() {
        // Requests that take longer than the whole ramp (or never answer)
        // hold nothing back: the window grows without them.
        let t = Instant::now();
        let mut a = Aimd::slow_start(4, 50);
        assert_eq!(a.limit_at(t).0, 4);
        assert_eq!(a.limit_at(t + SLOW_START_ROUND * 4), (50, None));
        // Their answers, when they come, are the baseline, not congestion.
        a.observe(
            Signal::Answered(Duration::from_secs(10)),
            t + SLOW_START_ROUND * 5,
        );
        assert_eq!(a.limit(), 50);
    }

    #[test]
    fn a_429_ends_slow_start() {
        let t = Instant::now();
        let mut a = Aimd::slow_start(4, 50);
        a.limit_at(t);
        assert_eq!(a.limit_at(t + SLOW_START_ROUND * 2).0, 16);
        let t = t + SLOW_START_ROUND * 2;
        a.observe(Signal::Throttled, t);
        assert_eq!(a.limit(), 8);
        assert!(!a.in_slow_start());
        assert_eq!(
            a.limit_at(t + SLOW_START_ROUND * 5),
            (8, None),
            "the clock stops"
        );
        for _ in 0..100 {
            a.observe(Signal::Answered(FAST), t + SETTLE);
        }
        assert_eq!(a.limit(), 9, "one step, not a hundred");
        // Starting at the cap there is nothing to ramp.
        assert!(!Aimd::slow_start(50, 50).in_slow_start());
    }

    #[test]
    fn failures_leave_the_limit_alone() {
        let t = Instant::now();
        let mut a = Aimd::new(10, 100);
        a.observe(Signal::Failed, t);
        assert_eq!(a.limit(), 10);
    }
}
