//! Flow control per target. Every task belongs to a flow (its URL's
//! `host:port`, or the task's `flow_key`); a flow can be limited by an
//! operator (`flows` table) and is protected by Sundial in any case:
//!
//! * **pacing** ([`pace`]): the scanner gives occurrences of a
//!   rate-limited flow fire times that respect the rate across all
//!   processors, under the flow's row lock in its claim transaction;
//! * **shared backoff**: a 429 or 503 sets the flow's `not_before`; every
//!   processor (and the scanner) holds the flow's new work until then;
//! * **retry budget**: retries as a share of a flow's requests per window;
//!   beyond it, retries wait for the next window;
//! * **circuit breaker**: consecutive connection errors, timeouts or 5xx
//!   open the flow; its occurrences are held (not fired, not lost), one
//!   probe goes out per cooldown, and a success closes it;
//! * **adaptive concurrency** ([`aimd`]): per flow and processor, between
//!   1 and the flow's cap;
//! * **adaptive rate** ([`learn`]): a flow without an operator's rate that
//!   answers 429 is paced at the rate its target was seen to admit.
//!
//! [`FlowControl`] is a processor's view of its flows: local decisions
//! are made at once (this processor's own 429 stops it before the next
//! request), and a sync task pushes what it saw to `flow_state` and pulls
//! what the others saw, every [`FlowSettings::sync_every`] and at once
//! after a 429 or a breaker change. docs/DESIGN.md states the rules.

pub mod aimd;
mod control;
pub mod learn;
pub mod pace;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::fire::{FireResult, Verdict};
use crate::store::{FlowRow, OnOpen};
pub use control::FlowControl;
pub use pace::Rate;

/// Length of a retry-budget window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Retries a flow may always make per window, whatever its traffic.
pub const MIN_RETRIES_PER_WINDOW: u64 = 10;
/// Longest shared backoff a `Retry-After` can set.
pub const MAX_BACKOFF: Duration = Duration::from_secs(900);
/// Flows not used for this long are dropped from a processor's view.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Held messages return spread over this much after the flow's instant,
/// so that a flow coming back is not hit by all of them in one millisecond.
const RETURN_SPREAD_MS: i64 = 250;

/// Defaults for flows without their own limits (`SUNDIAL_*` settings).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSettings {
    /// Requests in flight per flow and processor at most, unless the flow
    /// sets `max_in_flight` (`SUNDIAL_PER_HOST_CONCURRENCY`).
    pub per_flow_cap: usize,
    /// Where adaptive concurrency starts for a flow this processor has no
    /// history of (`SUNDIAL_FLOW_SLOW_START`, default 4): below the cap, a
    /// new flow ramps up from there in slow start (see [`aimd`]), which
    /// spares targets the full burst and costs a burst to a cold flow a few
    /// 20 ms rounds. `usize::MAX` (`off`) starts at the cap.
    pub initial_limit: usize,
    /// Consecutive failures that open a flow (`SUNDIAL_BREAKER_FAILURES`).
    pub breaker_failures: u32,
    /// The failures must fall within this window (`SUNDIAL_BREAKER_WINDOW_SECS`).
    pub breaker_window: Duration,
    /// Between probes of an open flow (`SUNDIAL_BREAKER_COOLDOWN_SECS`).
    pub breaker_cooldown: Duration,
    /// Retries as a share of requests per window (`SUNDIAL_RETRY_BUDGET`).
    pub retry_budget: f64,
    /// Backoff after a 429/503 without `Retry-After` (`SUNDIAL_THROTTLE_BACKOFF_MS`).
    pub throttle_backoff: Duration,
    /// How often a processor syncs its flows (`SUNDIAL_FLOW_SYNC_MS`).
    pub sync_every: Duration,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            per_flow_cap: crate::config::defaults::PER_HOST_CONCURRENCY,
            initial_limit: crate::config::defaults::FLOW_SLOW_START,
            breaker_failures: 5,
            breaker_window: Duration::from_secs(60),
            breaker_cooldown: Duration::from_secs(30),
            retry_budget: 0.2,
            throttle_backoff: Duration::from_secs(1),
            sync_every: Duration::from_millis(250),
        }
    }
}

/// The limits in force for one flow: its `flows` row over the defaults
/// (`store::FlowLimits` is what an operator sends; this is what applies).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPolicy {
    pub rate: Option<Rate>,
    pub cap: usize,
    pub retry_budget: f64,
    pub breaker_failures: u32,
    pub breaker_window: Duration,
    pub breaker_cooldown: Duration,
    pub on_open: OnOpen,
}

impl FlowPolicy {
    fn defaults(s: &FlowSettings) -> Self {
        FlowPolicy {
            rate: None,
            cap: s.per_flow_cap,
            retry_budget: s.retry_budget,
            breaker_failures: s.breaker_failures,
            breaker_window: s.breaker_window,
            breaker_cooldown: s.breaker_cooldown,
            on_open: OnOpen::FireLatest,
        }
    }

    fn of(row: &FlowRow, s: &FlowSettings) -> Self {
        let secs =
            |v: Option<i32>, d: Duration| v.map_or(d, |n| Duration::from_secs(n.max(1) as u64));
        FlowPolicy {
            rate: match row.rate_per_sec.filter(|r| *r > 0.0) {
                Some(per_sec) => Some(Rate {
                    per_sec,
                    burst: row.burst.unwrap_or(1).max(1) as u32,
                }),
                None => row
                    .learned_rate
                    .filter(|r| *r > 0.0)
                    .map(|per_sec| Rate { per_sec, burst: 1 }),
            },
            cap: row
                .max_in_flight
                .map_or(s.per_flow_cap, |n| n.max(1) as usize),
            retry_budget: row.retry_budget.unwrap_or(s.retry_budget).max(0.0),
            breaker_failures: row
                .breaker_failures
                .map_or(s.breaker_failures, |n| n.max(1) as u32),
            breaker_window: secs(row.breaker_window_secs, s.breaker_window),
            breaker_cooldown: secs(row.breaker_cooldown_secs, s.breaker_cooldown),
            on_open: row.on_open.unwrap_or_default(),
        }
    }
}

/// Why a message is held instead of fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The flow is backing off after a 429/503.
    Backoff,
    /// The flow's breaker is open.
    Open(OnOpen),
}

/// What the gate says about a request about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Fire it.
    Go,
    /// The flow is open and a probe is due: fire it if this processor wins
    /// the probe ([`FlowControl::claim_probe`]), else hold it.
    Probe,
    /// Do not fire it now: send it again to fire at `until`.
    Hold {
        until: DateTime<Utc>,
        why: HoldReason,
    },
}

/// What a call's outcome means for its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The target answered (any status but 429 and 5xx).
    Up,
    /// 429: slow down (and back off).
    Throttled,
    /// 503: back off, and it counts towards the breaker.
    Unavailable,
    /// Other 5xx, connection errors, timeouts: count towards the breaker.
    Down,
    /// Says nothing about the target (refused by the guard, bad request
    /// built from the task).
    Neutral,
}

impl Health {
    /// Classifies a call's result.
    pub fn of(result: &FireResult) -> Health {
        match (result.http_status, &result.verdict) {
            (Some(429), _) => Health::Throttled,
            (Some(503), _) => Health::Unavailable,
            (Some(s), _) if s >= 500 => Health::Down,
            (Some(_), _) => Health::Up,
            (None, Verdict::Retryable { .. }) => Health::Down,
            (None, _) => Health::Neutral,
        }
    }
}

/// Flow events since the last [`FlowControl::take_counters`], for EMF.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowCounters {
    /// 429 answers.
    pub throttled: u64,
    /// Flows this processor saw open (shared state changed by its sync).
    pub opened: u64,
    /// Flows this processor saw close.
    pub closed: u64,
    /// Messages held by a flow (backoff or open breaker).
    pub held: u64,
    /// Retries delayed to the next window by the retry budget.
    pub budget_delayed: u64,
    /// Probes sent.
    pub probes: u64,
    /// Flows open as last seen.
    pub open_now: u64,
}
