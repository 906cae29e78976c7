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
//!   1 and the flow's cap.
//!
//! [`FlowControl`] is a processor's view of its flows: local decisions
//! are made at once (this processor's own 429 stops it before the next
//! request), and a sync task pushes what it saw to `flow_state` and pulls
//! what the others saw, every [`FlowSettings::sync_every`] and at once
//! after a 429 or a breaker change. docs/DESIGN.md states the rules.

pub mod aimd;
pub mod pace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::fire::{FireResult, Verdict};
use crate::store::{self, FlowDelta, FlowRow, OnOpen};
use aimd::{Aimd, Signal};
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
    /// Where adaptive concurrency starts for a flow (clamped to its cap;
    /// by default the cap: a healthy flow runs as before, the limiter only
    /// steps in on 429s and rising latency).
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
            initial_limit: usize::MAX,
            breaker_failures: 5,
            breaker_window: Duration::from_secs(60),
            breaker_cooldown: Duration::from_secs(30),
            retry_budget: 0.2,
            throttle_backoff: Duration::from_secs(1),
            sync_every: Duration::from_millis(250),
        }
    }
}

/// The limits in force for one flow: its `flows` row over the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowLimits {
    pub rate: Option<Rate>,
    pub cap: usize,
    pub retry_budget: f64,
    pub breaker_failures: u32,
    pub breaker_window: Duration,
    pub breaker_cooldown: Duration,
    pub on_open: OnOpen,
}

impl FlowLimits {
    fn defaults(s: &FlowSettings) -> Self {
        FlowLimits {
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
        FlowLimits {
            rate: row.rate_per_sec.filter(|r| *r > 0.0).map(|per_sec| Rate {
                per_sec,
                burst: row.burst.unwrap_or(1).max(1) as u32,
            }),
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
    limits: FlowLimits,
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
        let limits = FlowLimits::defaults(settings);
        Entry {
            aimd: Aimd::new(settings.initial_limit, limits.cap),
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

    fn apply(&mut self, row: &FlowRow, settings: &FlowSettings) {
        let limits = FlowLimits::of(row, settings);
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
    pub fn limits(&self, flow: &str) -> FlowLimits {
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
        self.with(flow, |e| e.aimd.limit().min(e.limits.cap).max(1))
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
        let mut urgent = false;
        self.with(flow, |e| {
            let at = tokio::time::Instant::now().into_std();
            e.tally.requests += 1;
            match health {
                Health::Up => {
                    e.aimd.observe(Signal::Answered(result.latency), at);
                    e.tally.successes += 1;
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
                        urgent |= Self::failed(e, now);
                    } else {
                        // The target is up, only busy.
                        e.tally.successes += 1;
                        e.tally.trailing = 0;
                        e.local_failures = 0;
                    }
                }
                Health::Down => {
                    e.aimd.observe(Signal::Failed, at);
                    urgent |= Self::failed(e, now);
                }
                Health::Neutral => {}
            }
        });
        if matches!(health, Health::Throttled) {
            self.count(|c| c.throttled += 1);
        }
        if urgent {
            self.wake.notify_one();
        }
    }

    /// A failure towards the breaker; true when it opened the flow locally.
    fn failed(e: &mut Entry, now: DateTime<Utc>) -> bool {
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

    /// When a retry of `flow` wanted at `wanted` may go out: at `wanted`
    /// while the flow's retry budget lasts (and not before its backoff),
    /// else when the budget's window turns.
    pub fn retry_at(&self, flow: &str, wanted: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
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
        at
    }

    /// Loads the limits and state of flows this processor has not seen
    /// yet (one query), so their first requests obey their limits.
    pub async fn ensure(&self, flows: &[&str]) {
        let unknown: Vec<String> = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<String> = flows
                .iter()
                .filter(|f| !entries.get(**f).is_some_and(|e| e.loaded))
                .map(|f| f.to_string())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if unknown.is_empty() {
            return;
        }
        match store::load_flows(&self.pool, &unknown).await {
            Ok(rows) => {
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                for key in &unknown {
                    let e = entries
                        .entry(key.clone())
                        .or_insert_with(|| Entry::new(&self.settings));
                    e.loaded = true;
                }
                for row in &rows {
                    if let Some(e) = entries.get_mut(&row.key) {
                        e.apply(row, &self.settings);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot load flow limits; using defaults"),
        }
    }

    /// Pushes what this processor saw and pulls the shared state of the
    /// flows it knows: one statement (two when flows are new to the table).
    pub async fn sync(&self) -> Result<(), store::StoreError> {
        let now = Utc::now();
        let (deltas, watched, new_keys) = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|_, e| e.last_used.elapsed() < FORGET_AFTER || !e.tally.is_empty());
            let mut deltas = Vec::new();
            let mut new_keys = Vec::new();
            let mut watched = Vec::with_capacity(entries.len());
            for (key, e) in entries.iter_mut() {
                watched.push(key.clone());
                if e.tally.is_empty() {
                    continue;
                }
                if !e.stored {
                    new_keys.push(key.clone());
                }
                let t = std::mem::take(&mut e.tally);
                deltas.push(FlowDelta {
                    key: key.clone(),
                    requests: t.requests as i64,
                    retries: t.retries as i64,
                    successes: t.successes as i64,
                    failures: t.failures as i64,
                    trailing: t.trailing as i64,
                    throttled: t.throttled as i64,
                    not_before: t.not_before,
                    threshold: e.limits.breaker_failures as i32,
                    window_secs: e.limits.breaker_window.as_secs_f64(),
                    cooldown_secs: e.limits.breaker_cooldown.as_secs_f64(),
                });
            }
            (deltas, watched, new_keys)
        };
        if watched.is_empty() {
            return Ok(());
        }
        let result = async {
            if !new_keys.is_empty() {
                store::ensure_flow_states(&self.pool, &new_keys).await?;
            }
            store::sync_flows(
                &self.pool,
                now,
                BUDGET_WINDOW.as_secs_f64(),
                &deltas,
                &watched,
            )
            .await
        }
        .await;
        let rows = match result {
            Ok(rows) => rows,
            Err(err) => {
                // Put the tallies back: they are pushed with the next sync.
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                for d in deltas {
                    if let Some(e) = entries.get_mut(&d.key) {
                        e.tally.requests += d.requests as u64;
                        e.tally.retries += d.retries as u64;
                        e.tally.successes += d.successes as u64;
                        e.tally.failures += d.failures as u64;
                        e.tally.trailing += d.trailing as u64;
                        e.tally.throttled += d.throttled as u64;
                        e.tally.not_before = e.tally.not_before.max(d.not_before);
                    }
                }
                return Err(err);
            }
        };
        let mut opened = 0;
        let mut closed = 0;
        let mut open_now = 0;
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for row in &rows {
                match (row.was_breaker.as_deref(), row.breaker.as_str()) {
                    (Some("closed"), "open") => {
                        opened += 1;
                        tracing::warn!(
                            flow = %row.key,
                            failures = row.failures,
                            probe_at = ?row.probe_at,
                            "flow opened: holding its occurrences, probing once per cooldown"
                        );
                    }
                    (Some("open"), "closed") => {
                        closed += 1;
                        tracing::info!(flow = %row.key, "flow closed: firing again");
                    }
                    _ => {}
                }
                if row.breaker == "open" {
                    open_now += 1;
                }
                if let Some(e) = entries.get_mut(&row.key) {
                    e.apply(row, &self.settings);
                }
            }
        }
        self.count(|c| {
            c.opened += opened;
            c.closed += closed;
            c.open_now = open_now;
        });
        Ok(())
    }

    /// Syncs every [`FlowSettings::sync_every`] (sooner when woken) until
    /// `stop` resolves, then once more so nothing seen is left unpushed.
    pub async fn run_sync(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(self.settings.sync_every) => {}
                () = self.wake.notified() => {}
            }
            if let Err(err) = self.sync().await {
                tracing::warn!(error = %err, "cannot sync flow state; retrying");
            }
        }
        if let Err(err) = self.sync().await {
            tracing::warn!(error = %err, "cannot sync flow state at the end of a batch");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow control whose pool is never used by the calls under test.
    fn control(settings: FlowSettings) -> FlowControl {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/unused")
            .expect("lazy pool");
        FlowControl::new(pool, settings)
    }

    fn answer(status: Option<u16>, verdict: Verdict) -> FireResult {
        FireResult {
            started_at: Utc::now(),
            latency: Duration::from_millis(5),
            verdict,
            http_status: status,
            error: None,
            response_excerpt: None,
        }
    }

    fn down() -> FireResult {
        answer(
            None,
            Verdict::Retryable {
                retry_after: None,
                timed_out: false,
            },
        )
    }

    fn throttled() -> FireResult {
        answer(
            Some(429),
            Verdict::Retryable {
                retry_after: Some(Duration::from_secs(2)),
                timed_out: false,
            },
        )
    }

    #[tokio::test]
    async fn a_429_holds_the_flow_until_retry_after() {
        let flows = control(FlowSettings::default());
        let now = Utc::now();
        assert_eq!(flows.gate("a:443", now, 1), Gate::Go);
        flows.observe("a:443", &throttled(), Some(Duration::from_secs(2)));
        match flows.gate("a:443", now, 1) {
            Gate::Hold { until, why } => {
                assert_eq!(why, HoldReason::Backoff);
                let wait = until - now;
                assert!(wait >= chrono::Duration::milliseconds(1_900), "{wait}");
                assert!(wait <= chrono::Duration::milliseconds(2_400), "{wait}");
            }
            other => panic!("{other:?}"),
        }
        // Other flows are not affected; the flow itself goes after it.
        assert_eq!(flows.gate("b:443", now, 1), Gate::Go);
        assert_eq!(
            flows.gate("a:443", now + chrono::Duration::seconds(3), 1),
            Gate::Go
        );
        assert_eq!(flows.take_counters().throttled, 1);
    }

    #[tokio::test]
    async fn consecutive_failures_open_the_flow_and_a_success_closes_it() {
        let flows = control(FlowSettings {
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(10),
            ..FlowSettings::default()
        });
        let now = Utc::now();
        flows.observe("h:80", &down(), None);
        flows.observe("h:80", &down(), None);
        // A 404 is an answer: the host is up, the count starts again.
        flows.observe("h:80", &answer(Some(404), Verdict::Failed), None);
        flows.observe("h:80", &down(), None);
        flows.observe("h:80", &down(), None);
        assert_eq!(flows.gate("h:80", now, 7), Gate::Go);
        flows.observe("h:80", &down(), None);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let while_open = Utc::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        match flows.gate("h:80", Utc::now(), 7) {
            Gate::Hold { why, until } => {
                assert_eq!(why, HoldReason::Open(OnOpen::FireLatest));
                assert!(until > now + chrono::Duration::seconds(9));
            }
            other => panic!("{other:?}"),
        }
        // At the probe instant, one may go.
        let later = Utc::now() + chrono::Duration::seconds(11);
        assert_eq!(flows.gate("h:80", later, 7), Gate::Probe);
        flows.observe("h:80", &answer(Some(200), Verdict::Succeeded), None);
        assert_eq!(flows.gate("h:80", later, 7), Gate::Go);
        // Occurrences of the open period are known as such afterwards.
        assert_eq!(
            flows.missed_while_open("h:80", while_open),
            Some(OnOpen::FireLatest)
        );
        assert_eq!(
            flows.missed_while_open("h:80", now - chrono::Duration::seconds(60)),
            None
        );
    }

    #[tokio::test]
    async fn retries_beyond_the_budget_wait_for_the_next_window() {
        let flows = control(FlowSettings {
            retry_budget: 0.1,
            ..FlowSettings::default()
        });
        let now = Utc::now();
        // 50 requests: budget max(10, 5) = 10 retries in this window.
        for _ in 0..50 {
            flows.observe("busy:443", &answer(Some(500), Verdict::Failed), None);
        }
        let wanted = now + chrono::Duration::milliseconds(200);
        for k in 0..10 {
            assert_eq!(flows.retry_at("busy:443", wanted, now), wanted, "retry {k}");
        }
        let at = flows.retry_at("busy:443", wanted, now);
        assert!(
            at >= now + chrono::Duration::from_std(BUDGET_WINDOW).unwrap(),
            "{at}"
        );
        assert_eq!(flows.take_counters().budget_delayed, 1);
    }

    #[tokio::test]
    async fn throttling_shrinks_the_flows_concurrency() {
        let flows = control(FlowSettings {
            per_flow_cap: 40,
            ..FlowSettings::default()
        });
        assert_eq!(flows.in_flight_limit("x:443"), 40);
        flows.observe("x:443", &throttled(), None);
        assert_eq!(flows.in_flight_limit("x:443"), 20);
        assert_eq!(flows.in_flight_limit("y:443"), 40);
    }

    #[test]
    fn health_of_answers() {
        assert_eq!(Health::of(&throttled()), Health::Throttled);
        assert_eq!(
            Health::of(&answer(Some(503), Verdict::Failed)),
            Health::Unavailable
        );
        assert_eq!(
            Health::of(&answer(Some(502), Verdict::Failed)),
            Health::Down
        );
        assert_eq!(Health::of(&answer(Some(404), Verdict::Failed)), Health::Up);
        assert_eq!(Health::of(&down()), Health::Down);
        assert_eq!(Health::of(&answer(None, Verdict::Refused)), Health::Neutral);
    }
}
