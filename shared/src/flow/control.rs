//! [`FlowControl`]: a processor's view of its flows, its gate, its
//! feedback and its sync with the others through `flow_state`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::aimd::{Aimd, Signal};
use super::pace;
mod sync;

use super::{
    FlowCounters, FlowPolicy, FlowSettings, Gate, Health, HoldReason, BUDGET_WINDOW, MAX_BACKOFF,
    MIN_RETRIES_PER_WINDOW, RETURN_SPREAD_MS,
};
use crate::fire::FireResult;
use crate::store::{self, FlowRow, OnOpen};
use sqlx::PgPool;

/// What this processor saw of a flow since its last sync.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    requests: u64,
    retries: u64,
    successes: u64,
    failures: u64,
    /// Failures after the last success.
    trailing: u64,
    throttled: u64,
    /// Answered, not 429 (what the target admits).
    admitted: u64,
    not_before: Option<DateTime<Utc>>,
}

impl Tally {
    fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

/// One flow as this processor knows it.
#[derive(Debug, Clone)]
struct Entry {
    limits: FlowPolicy,
    aimd: Aimd,
    tally: Tally,
    /// Shared state as last pulled (or set locally since).
    not_before: Option<DateTime<Utc>>,
    open: bool,
    opened_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    probe_at: Option<DateTime<Utc>>,
    window_start: Option<DateTime<Utc>>,
    window_requests: u64,
    window_retries: u64,
    /// Consecutive failures this processor saw (local breaker).
    local_failures: u32,
    /// This processor's own pacing slot (a second line behind the shared
    /// schedule: requests a late delivery bunched are spread again).
    local_tat: Option<DateTime<Utc>>,
    /// The row exists in `flow_state`.
    stored: bool,
    /// Pulled at least once (limits are those of the `flows` row).
    loaded: bool,
    last_used: tokio::time::Instant,
}

impl Entry {
    fn new(settings: &FlowSettings) -> Self {
        let limits = FlowPolicy::defaults(settings);
        Entry {
            aimd: Aimd::slow_start(settings.initial_limit, limits.cap),
            limits,
            tally: Tally::default(),
            not_before: None,
            open: false,
            opened_at: None,
            closed_at: None,
            probe_at: None,
            window_start: None,
            window_requests: 0,
            window_retries: 0,
            local_failures: 0,
            local_tat: None,
            stored: false,
            loaded: false,
            last_used: tokio::time::Instant::now(),
        }
    }

    /// A call's outcome on this entry: adaptive concurrency, the backoff,
    /// the local breaker, the tally. Returns (sync soon, opened here).
    fn observe(
        &mut self,
        health: Health,
        result: &FireResult,
        now: DateTime<Utc>,
        backoff: Duration,
    ) -> (bool, bool) {
        let e = self;
        let mut urgent = false;
        let mut opened = false;
        let at = tokio::time::Instant::now().into_std();
        e.tally.requests += 1;
        match health {
            Health::Up => {
                e.aimd.observe(Signal::Answered(result.latency), at);
                e.tally.successes += 1;
                e.tally.admitted += 1;
                e.tally.trailing = 0;
                e.local_failures = 0;
                if e.open {
                    // A probe answered: closed here at once; the sync
                    // closes it for everyone.
                    e.open = false;
                    e.closed_at = Some(now);
                    e.probe_at = None;
                    urgent = true;
                }
            }
            Health::Throttled | Health::Unavailable => {
                e.aimd.observe(Signal::Throttled, at);
                e.tally.throttled += 1;
                let until = now + chrono(backoff);
                if e.not_before.is_none_or(|nb| nb < until) {
                    e.not_before = Some(until);
                    e.tally.not_before = e.tally.not_before.max(Some(until));
                    urgent = true;
                }
                if health == Health::Unavailable {
                    opened |= e.failed(now);
                } else {
                    // The target is up, only busy.
                    e.tally.successes += 1;
                    e.tally.trailing = 0;
                    e.local_failures = 0;
                }
            }
            Health::Down => {
                e.aimd.observe(Signal::Failed, at);
                opened |= e.failed(now);
            }
            Health::Neutral => {}
        }
        (urgent, opened)
    }

    /// A failure towards the breaker; true when it opened the flow locally.
    fn failed(&mut self, now: DateTime<Utc>) -> bool {
        let e = self;
        e.tally.failures += 1;
        e.tally.trailing += 1;
        e.local_failures = e.local_failures.saturating_add(1);
        if !e.open && e.local_failures >= e.limits.breaker_failures {
            e.open = true;
            e.opened_at = Some(now);
            e.probe_at = Some(now + chrono(e.limits.breaker_cooldown));
            return true;
        }
        false
    }

    fn apply(&mut self, row: &FlowRow, settings: &FlowSettings) {
        let limits = FlowPolicy::of(row, settings);
        if limits.cap != self.limits.cap {
            self.aimd.set_cap(limits.cap);
        }
        self.limits = limits;
        // A backoff set locally since the push stays until it passes.
        self.not_before = self.not_before.max(row.not_before);
        self.open = row.breaker == "open";
        if self.open {
            self.probe_at = row.probe_at;
        } else {
            self.probe_at = None;
            self.local_failures = self.local_failures.min(row.failures.max(0) as u32);
        }
        self.opened_at = row.opened_at;
        self.closed_at = row.closed_at;
        self.window_start = row.window_start;
        self.window_requests = row.window_requests.max(0) as u64;
        self.window_retries = row.window_retries.max(0) as u64;
        self.stored = row.stored;
        self.loaded = true;
    }
}

/// A processor's flows: the gate, the feedback, the sync.
#[derive(Debug)]
pub struct FlowControl {
    pool: PgPool,
    settings: FlowSettings,
    entries: Mutex<HashMap<String, Entry>>,
    counters: Mutex<FlowCounters>,
    /// Wakes the sync task early (a 429, a breaker change).
    wake: Notify,
}

/// A fixed offset in `0..RETURN_SPREAD_MS` per task.
fn spread(seed: u64) -> chrono::Duration {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    chrono::Duration::milliseconds((mixed % RETURN_SPREAD_MS as u64) as i64)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

impl FlowControl {
    pub fn new(pool: PgPool, settings: FlowSettings) -> Self {
        FlowControl {
            pool,
            settings,
            entries: Mutex::new(HashMap::new()),
            counters: Mutex::new(FlowCounters::default()),
            wake: Notify::new(),
        }
    }

    pub fn settings(&self) -> &FlowSettings {
        &self.settings
    }

    fn with<R>(&self, flow: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(flow) {
            entries.insert(flow.to_string(), Entry::new(&self.settings));
        }
        let mut scratch = None;
        let entry = match entries.get_mut(flow) {
            Some(e) => e,
            // Unreachable (inserted above); a scratch entry keeps it total.
            None => scratch.insert(Entry::new(&self.settings)),
        };
        entry.last_used = tokio::time::Instant::now();
        f(entry)
    }

    fn count(&self, f: impl FnOnce(&mut FlowCounters)) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c);
    }

    /// The limits in force for a flow (defaults until first synced).
    pub fn limits(&self, flow: &str) -> FlowPolicy {
        self.with(flow, |e| e.limits.clone())
    }

    /// Does the flow pace its requests, or back off now? (Then chained
    /// occurrences go through [`store::pace_dispatch`].)
    pub fn paces_or_backs_off(&self, flow: &str, now: DateTime<Utc>) -> bool {
        self.with(flow, |e| {
            e.limits.rate.is_some() || e.not_before.is_some_and(|nb| nb > now)
        })
    }

    /// May a request of a rate-limited flow start now, as far as this
    /// processor's own spacing goes? `Ok` takes the slot; `Err(at)` says
    /// when one is free. Flows without a rate always pass.
    pub fn take_local_slot(&self, flow: &str, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        self.with(flow, |e| {
            let Some(rate) = e.limits.rate else {
                return Ok(());
            };
            let mut tat = e.local_tat;
            let at = pace::slot(rate, &mut tat, now);
            if at <= now {
                e.local_tat = tat;
                Ok(())
            } else {
                Err(at)
            }
        })
    }

    /// Requests in flight this processor allows the flow now.
    pub fn in_flight_limit(&self, flow: &str) -> usize {
        self.in_flight_window(flow).0
    }

    /// [`FlowControl::in_flight_limit`], and in slow start how long until
    /// it doubles (a pool at the limit looks again then: no answer need
    /// come first).
    pub fn in_flight_window(&self, flow: &str) -> (usize, Option<Duration>) {
        let now = tokio::time::Instant::now().into_std();
        self.with(flow, |e| {
            let (limit, grows_at) = e.aimd.limit_at(now);
            let grows_in = grows_at.map(|at| at.saturating_duration_since(now));
            (limit.min(e.limits.cap).max(1), grows_in)
        })
    }

    /// May a request of `flow` start now? `seed` spreads held messages'
    /// return (the task id).
    pub fn gate(&self, flow: &str, now: DateTime<Utc>, seed: u64) -> Gate {
        let gate = self.with(flow, |e| {
            if e.open {
                let probe_at = e.probe_at.unwrap_or(now);
                if probe_at <= now {
                    return Gate::Probe;
                }
                return Gate::Hold {
                    until: probe_at + spread(seed),
                    why: HoldReason::Open(e.limits.on_open),
                };
            }
            match e.not_before {
                Some(nb) if nb > now => Gate::Hold {
                    until: nb + spread(seed),
                    why: HoldReason::Backoff,
                },
                _ => Gate::Go,
            }
        });
        if matches!(gate, Gate::Hold { .. }) {
            self.count(|c| c.held += 1);
        }
        gate
    }

    /// For a flow that was open and has closed again: the flow's policy if
    /// `occurrence` fell within its last open period (those occurrences
    /// were held or never dispatched; `skip` records them as skipped).
    /// `None` while the flow is still open: the gate decides then, so that
    /// a probe can go out.
    pub fn missed_while_open(&self, flow: &str, occurrence: DateTime<Utc>) -> Option<OnOpen> {
        self.with(flow, |e| {
            if e.open {
                return None;
            }
            let opened = e.opened_at?;
            let closed = e.closed_at.filter(|c| *c >= opened)?;
            (occurrence >= opened && occurrence < closed).then_some(e.limits.on_open)
        })
    }

    /// Takes the probe of an open flow, shared by all processors: true if
    /// this call won it (the request may go out).
    pub async fn claim_probe(&self, flow: &str) -> bool {
        let now = Utc::now();
        let cooldown = self.limits(flow).breaker_cooldown;
        match store::claim_probe(&self.pool, flow, now, cooldown.as_secs_f64()).await {
            Ok(won) => {
                self.with(flow, |e| {
                    // Either way the next probe is a cooldown away.
                    e.probe_at = Some(now + chrono(cooldown));
                });
                if won {
                    self.count(|c| c.probes += 1);
                }
                won
            }
            Err(err) => {
                tracing::warn!(error = %err, flow, "cannot claim a probe; holding");
                false
            }
        }
    }

    /// Takes a call's outcome into account: adaptive concurrency, the
    /// backoff, the local breaker, the tally for the next sync.
    pub fn observe(&self, flow: &str, result: &FireResult, retry_after: Option<Duration>) {
        let now = Utc::now();
        let health = Health::of(result);
        let backoff = retry_after
            .unwrap_or(self.settings.throttle_backoff)
            .min(MAX_BACKOFF);
        let (mut urgent, opened) = self.with(flow, |e| e.observe(health, result, now, backoff));
        if matches!(health, Health::Throttled) {
            self.count(|c| c.throttled += 1);
        }
        if opened {
            tracing::warn!(
                flow,
                "flow failing here: holding its occurrences until a probe answers"
            );
            urgent = true;
        }
        if urgent {
            self.wake.notify_one();
        }
    }

    /// When a retry of `flow` wanted at `wanted` may go out: at `wanted`
    /// while the flow's retry budget lasts (and not before its backoff),
    /// else when the budget's window turns; the flag says the budget put
    /// it off.
    pub fn retry_at(
        &self,
        flow: &str,
        wanted: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (DateTime<Utc>, bool) {
        let window = chrono(BUDGET_WINDOW);
        let (at, delayed) = self.with(flow, |e| {
            let current = e.window_start.is_some_and(|s| s + window > now);
            let (requests, retries) = if current {
                (e.window_requests, e.window_retries)
            } else {
                (0, 0)
            };
            let requests = requests + e.tally.requests;
            let retries = retries + e.tally.retries;
            let allowed = ((requests as f64) * e.limits.retry_budget).floor() as u64;
            e.tally.retries += 1;
            let floor = e.not_before.unwrap_or(wanted);
            if retries < allowed.max(MIN_RETRIES_PER_WINDOW) {
                (wanted.max(floor), false)
            } else {
                let turn = match e.window_start {
                    Some(s) if current => s + window,
                    _ => now + window,
                };
                (wanted.max(floor).max(turn), true)
            }
        });
        if delayed {
            self.count(|c| c.budget_delayed += 1);
        }
        (at, delayed)
    }

    /// The counters since the last call (the open count is a gauge).
    pub fn take_counters(&self) -> FlowCounters {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let open_now = c.open_now;
        let taken = std::mem::take(&mut *c);
        c.open_now = open_now;
        taken
    }
}
