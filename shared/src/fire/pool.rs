//! Firing many requests: bounded global concurrency, a per-host cap, no
//! batch barriers, and a deadline guard.
//!
//! # Why not `buffer_unordered`
//!
//! `buffer_unordered(n)` gives global concurrency without barriers, but a
//! per-host cap inside it would have to be a semaphore awaited *inside* the
//! buffered future — and a future waiting for its host would then occupy one
//! of the `n` global slots. Ten jobs for one saturated host could fill the
//! buffer and stall every other host. So [`fire_stream`] is a small driver
//! over `FuturesUnordered` instead: it pulls jobs into a bounded pending
//! buffer and starts, in input order, the first ones whose host has room,
//! only while a global slot is free. A job waiting for its host holds no
//! slot.
//!
//! Memory stays bounded: at most `concurrency` requests in flight plus
//! [`PENDING_PER_SLOT`]` * concurrency` jobs buffered; when the buffer is
//! full of jobs for saturated hosts, the input stream is simply not polled
//! (back-pressure) until one finishes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{Fuse, FuturesUnordered};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use url::Url;

use super::request::{FireRequest, FireResult, Firer, Verdict};
use super::warmup::{host_port, origin_of, Admit, FirstToOrigin};
use crate::flow::{FlowControl, Gate, HoldReason};

/// Below this much remaining time (after the margin) a request is not worth
/// starting: it would most likely be cut off and redelivered anyway.
pub const MIN_USEFUL_TIME: Duration = Duration::from_secs(1);

/// How often a request held for a cold origin's first connection looks
/// again (a fallback: the first request's pool is woken when it releases).
const WARMUP_LOOK_AGAIN: Duration = Duration::from_millis(5);

/// Pending-buffer size per global slot; see the module docs.
pub const PENDING_PER_SLOT: usize = 4;

/// Limits of one [`fire_stream`] run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests in flight at most, over all hosts (clamped to at least 1).
    pub concurrency: usize,
    /// Requests in flight at most per `host:port` (clamped to at least 1).
    pub per_host: usize,
    /// Hard end of the run (e.g. the Lambda's deadline); `None` = no guard.
    pub deadline: Option<Instant>,
    /// Time kept in reserve before `deadline` (for writing results back).
    pub deadline_margin: Duration,
    /// Flow control: per-flow adaptive caps (instead of `per_host`), the
    /// gate (backoff, open breakers, probes) and the feedback of each call.
    pub flows: Option<Arc<FlowControl>>,
}

impl Limits {
    /// Limits without a deadline.
    pub fn new(concurrency: usize, per_host: usize) -> Self {
        Self {
            concurrency,
            per_host,
            deadline: None,
            deadline_margin: Duration::ZERO,
            flows: None,
        }
    }

    /// Add flow control.
    pub fn with_flows(mut self, flows: Arc<FlowControl>) -> Self {
        self.flows = Some(flows);
        self
    }

    /// Add a deadline guard.
    pub fn with_deadline(mut self, deadline: Instant, margin: Duration) -> Self {
        self.deadline = Some(deadline);
        self.deadline_margin = margin;
        self
    }
}

/// The fate of one job.
#[derive(Debug, Clone)]
pub enum Fired {
    /// The request was made; here is its outcome.
    Done(FireResult),
    /// The deadline guard stopped it before it started: the processor
    /// should hand it back to the queue (batch item failure).
    NotStarted,
    /// Its flow holds it (backoff, open breaker): not fired; it should go
    /// out again at `until`.
    Held {
        until: DateTime<Utc>,
        why: HoldReason,
    },
}

/// Fire `jobs`, yielding `(tag, Fired)` for each one as soon as it is
/// settled, in completion order. See the module docs for the scheduling
/// rules.
///
/// Deadline guard: before a job starts, if `deadline - now <
/// deadline_margin + MIN_USEFUL_TIME`, it and every job after it (buffered
/// or still in the input) yield [`Fired::NotStarted`]; requests already in
/// flight finish. A started request's timeout is
/// `min(req.timeout, deadline - now - deadline_margin)`.
pub fn fire_stream<T, S>(
    firer: Arc<Firer>,
    jobs: S,
    limits: Limits,
) -> impl Stream<Item = (T, Fired)>
where
    S: Stream<Item = (T, FireRequest)> + Send,
    T: Send,
{
    let concurrency = limits.concurrency.max(1);
    FireStream {
        firer,
        jobs: Box::pin(jobs.fuse()),
        pending_cap: concurrency.saturating_mul(PENDING_PER_SLOT),
        limits: Limits {
            concurrency,
            per_host: limits.per_host.max(1),
            ..limits
        },
        pending: VecDeque::new(),
        in_flight: FuturesUnordered::new(),
        started: HashMap::new(),
        per_host: HashMap::new(),
        not_started: VecDeque::new(),
        held: VecDeque::new(),
        wake: None,
        expired: false,
        next_id: 0,
    }
}

type InFlight = Pin<Box<dyn Future<Output = (u64, Fired)> + Send>>;

struct Job<T> {
    tag: T,
    request: FireRequest,
    /// The flow (or `host:port`) its caps and flow control apply to.
    host: String,
    /// The HTTPS origin whose first connection it may wait for.
    origin: Option<String>,
}

/// What a finished request gives back: its tag, flow and origin.
type Started<T> = (T, String, Option<String>);

struct FireStream<T, S: Stream> {
    firer: Arc<Firer>,
    jobs: Pin<Box<Fuse<S>>>,
    limits: Limits,
    pending_cap: usize,
    /// Jobs pulled from the input and not yet started, in input order.
    pending: VecDeque<Job<T>>,
    /// Futures carry only an id and the result, so tags need not be
    /// `'static` or move into the future.
    in_flight: FuturesUnordered<InFlight>,
    started: HashMap<u64, Started<T>>,
    per_host: HashMap<String, usize>,
    /// Jobs the deadline guard stopped, waiting to be yielded.
    not_started: VecDeque<T>,
    /// Jobs their flow holds, waiting to be yielded.
    held: VecDeque<(T, Fired)>,
    /// Wakes the stream when a job waiting for its flow's spacing may go.
    wake: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The deadline guard tripped: nothing starts any more.
    expired: bool,
    next_id: u64,
}

// Nothing is structurally pinned: the input stream is boxed and tags are only
// moved around by value, never pinned.
impl<T, S: Stream> Unpin for FireStream<T, S> {}

impl<T, S> FireStream<T, S>
where
    S: Stream<Item = (T, FireRequest)>,
{
    /// Pull from the input while the buffer has room. Returns how many jobs
    /// were taken. After the deadline guard tripped, takes one job at a time
    /// straight to `not_started` so even a long input is drained in bounded
    /// memory.
    fn pull_input(&mut self, cx: &mut Context<'_>) -> usize {
        let mut pulled = 0;
        loop {
            let room = if self.expired {
                self.not_started.is_empty()
            } else {
                self.pending.len() < self.pending_cap
            };
            if !room || self.jobs.is_done() {
                return pulled;
            }
            match self.jobs.as_mut().poll_next(cx) {
                Poll::Ready(Some((tag, request))) => {
                    pulled += 1;
                    if self.expired {
                        self.not_started.push_back(tag);
                    } else {
                        let url = Url::parse(&request.url).ok();
                        let host = match &request.flow {
                            Some(flow) => flow.clone(),
                            None => url.as_ref().map(host_key).unwrap_or_default(),
                        };
                        let origin = match self.firer.warmup() {
                            Some(_) => url.as_ref().and_then(origin_of),
                            None => None,
                        };
                        self.pending.push_back(Job {
                            tag,
                            request,
                            host,
                            origin,
                        });
                    }
                }
                Poll::Ready(None) | Poll::Pending => return pulled,
            }
        }
    }

    /// Start eligible pending jobs in input order while global slots are
    /// free. Returns how many were started.
    fn start_eligible(&mut self) -> usize {
        let mut started = 0;
        let mut i = 0;
        let mut look_again: Option<Duration> = None;
        while i < self.pending.len() && self.in_flight.len() < self.limits.concurrency {
            if let Err(wait) = self.may_start(i) {
                look_again = wait
                    .map(|w| look_again.map_or(w, |l| l.min(w)))
                    .or(look_again);
                i += 1;
                continue;
            }
            let Some(time_left) = self.time_left() else {
                self.expire();
                return started;
            };
            let Some(mut job) = self.pending.remove(i) else {
                break;
            };
            if let Some(left) = time_left {
                job.request.timeout = job.request.timeout.min(left);
            }
            let probe = match &self.limits.flows {
                Some(flows) => match flows.gate(&job.host, Utc::now(), seed(&job.request)) {
                    Gate::Go => false,
                    Gate::Probe => true,
                    Gate::Hold { until, why } => {
                        self.held.push_back((job.tag, Fired::Held { until, why }));
                        continue;
                    }
                },
                None => false,
            };
            self.launch(job, probe);
            started += 1;
        }
        if let Some(wait) = look_again {
            self.wake = Some(Box::pin(tokio::time::sleep(wait)));
        }
        started
    }

    /// Whether pending job `i` may start now. `Err(None)`: its host is at
    /// its cap (a finishing request wakes the stream); `Err(Some(wait))`:
    /// look again after `wait` (the flow's spacing, or a cold origin's
    /// first connection, see [`super::warmup`]). Takes the flow's local
    /// slot when it says yes.
    fn may_start(&self, i: usize) -> Result<(), Option<Duration>> {
        let job = &self.pending[i];
        let (cap, grows_in) = match &self.limits.flows {
            Some(flows) => flows.in_flight_window(&job.host),
            None => (self.limits.per_host, None),
        };
        if self.per_host.get(&job.host).is_some_and(|n| *n >= cap) {
            // In slow start the window grows on the clock, not only when a
            // request finishes.
            return Err(grows_in);
        }
        if let (Some(origin), Some(warmup)) = (&job.origin, self.firer.warmup()) {
            if warmup.check(origin, Instant::now()) == Admit::Wait {
                return Err(Some(WARMUP_LOOK_AGAIN));
            }
        }
        if let Some(flows) = &self.limits.flows {
            if let Err(at) = flows.take_local_slot(&job.host, Utc::now()) {
                return Err(Some((at - Utc::now()).to_std().unwrap_or_default()));
            }
        }
        Ok(())
    }

    /// Time a request may still use: `Some(None)` without a deadline,
    /// `Some(Some(t))` with one, `None` when the guard says stop.
    fn time_left(&self) -> Option<Option<Duration>> {
        let Some(deadline) = self.limits.deadline else {
            return Some(None);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let usable = remaining.checked_sub(self.limits.deadline_margin)?;
        (usable >= MIN_USEFUL_TIME).then_some(Some(usable))
    }

    fn expire(&mut self) {
        self.expired = true;
        self.not_started
            .extend(self.pending.drain(..).map(|job| job.tag));
    }

    /// Starts a request. A probe of an open flow first takes the flow's
    /// probe (shared by all processors); if another took it, the job is
    /// held instead. Every answer goes back to flow control.
    fn launch(&mut self, job: Job<T>, probe: bool) {
        let id = self.next_id;
        self.next_id += 1;
        *self.per_host.entry(job.host.clone()).or_insert(0) += 1;
        let flow = job.host.clone();
        let first_to = match (&job.origin, self.firer.warmup()) {
            (Some(origin), Some(warmup)) if warmup.claim(origin, Instant::now()) => {
                Some((Arc::clone(warmup), origin.clone()))
            }
            _ => None,
        };
        self.started.insert(id, (job.tag, job.host, job.origin));
        let firer = Arc::clone(&self.firer);
        let flows = self.limits.flows.clone();
        let request = job.request;
        let fired = async move {
            if let (true, Some(flows)) = (probe, &flows) {
                if !flows.claim_probe(&flow).await {
                    if let Gate::Hold { until, why } = flows.gate(&flow, Utc::now(), seed(&request))
                    {
                        return (id, Fired::Held { until, why });
                    }
                }
            }
            let result = firer.fire(&request).await;
            if let Some(flows) = &flows {
                let retry_after = match result.verdict {
                    Verdict::Retryable { retry_after, .. } => retry_after,
                    _ => None,
                };
                flows.observe(&flow, &result, retry_after);
            }
            (id, Fired::Done(result))
        };
        match first_to {
            Some((warmup, origin)) => {
                self.in_flight
                    .push(Box::pin(FirstToOrigin::new(fired, warmup, origin)));
            }
            None => self.in_flight.push(Box::pin(fired)),
        }
    }

    fn finish(&mut self, id: u64) -> Option<T> {
        let (tag, host, origin) = self.started.remove(&id)?;
        if let (Some(origin), Some(warmup)) = (origin, self.firer.warmup()) {
            warmup.touch(&origin, Instant::now());
        }
        if let Some(n) = self.per_host.get_mut(&host) {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&host);
            }
        }
        Some(tag)
    }
}

impl<T, S> Stream for FireStream<T, S>
where
    S: Stream<Item = (T, FireRequest)>,
{
    type Item = (T, Fired);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(tag) = this.not_started.pop_front() {
                return Poll::Ready(Some((tag, Fired::NotStarted)));
            }
            if let Some(held) = this.held.pop_front() {
                return Poll::Ready(Some(held));
            }
            // Alternate pulling and starting until neither makes progress:
            // starting frees buffer room, pulling may bring eligible jobs.
            loop {
                let pulled = this.pull_input(cx);
                let started = if this.expired {
                    0
                } else {
                    this.start_eligible()
                };
                if !this.not_started.is_empty()
                    || !this.held.is_empty()
                    || (pulled == 0 && started == 0)
                {
                    break;
                }
            }
            if !this.not_started.is_empty() || !this.held.is_empty() {
                continue;
            }
            if let Poll::Ready(Some((id, fired))) = this.in_flight.poll_next_unpin(cx) {
                match this.finish(id) {
                    Some(tag) => return Poll::Ready(Some((tag, fired))),
                    // Unreachable: every launched id is recorded.
                    None => continue,
                }
            }
            let drained = this.jobs.is_done() && this.pending.is_empty();
            if drained && this.in_flight.is_empty() {
                return Poll::Ready(None);
            }
            // A job waits for its flow's spacing: wake when it may go.
            if let Some(wake) = this.wake.as_mut() {
                if wake.as_mut().poll(cx).is_ready() {
                    this.wake = None;
                    continue;
                }
            }
            // Wakers are registered: by the input stream if it was polled to
            // Pending, otherwise by in-flight requests (a full buffer or a
            // capped host implies something is in flight).
            return Poll::Pending;
        }
    }
}

/// Spreads held jobs of one flow over a moment (see [`FlowControl::gate`]).
fn seed(request: &FireRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    request.idempotency_key.hash(&mut h);
    h.finish()
}

/// `host:port` of a URL; unparseable URLs share one key and fail fast anyway.
fn host_key(url: &Url) -> String {
    host_port(url).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        let key = |url| Url::parse(url).map(|u| host_key(&u)).unwrap_or_default();
        assert_eq!(key("http://Example.com/x"), "example.com:80");
        assert_eq!(key("https://example.com/x"), "example.com:443");
        assert_eq!(key("http://127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(key("http://[::1]:9/"), "[::1]:9");
        assert_eq!(key("nope"), "");
    }
}
