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

use futures::stream::{Fuse, FuturesUnordered};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use url::Url;

use super::request::{FireRequest, FireResult, Firer};

/// Below this much remaining time (after the margin) a request is not worth
/// starting: it would most likely be cut off and redelivered anyway.
pub const MIN_USEFUL_TIME: Duration = Duration::from_secs(1);

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
}

impl Limits {
    /// Limits without a deadline.
    pub fn new(concurrency: usize, per_host: usize) -> Self {
        Self {
            concurrency,
            per_host,
            deadline: None,
            deadline_margin: Duration::ZERO,
        }
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
        expired: false,
        next_id: 0,
    }
}

type InFlight = Pin<Box<dyn Future<Output = (u64, FireResult)> + Send>>;

struct Job<T> {
    tag: T,
    request: FireRequest,
    host: String,
}

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
    started: HashMap<u64, (T, String)>,
    per_host: HashMap<String, usize>,
    /// Jobs the deadline guard stopped, waiting to be yielded.
    not_started: VecDeque<T>,
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
                        let host = host_key(&request.url);
                        self.pending.push_back(Job { tag, request, host });
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
        while i < self.pending.len() && self.in_flight.len() < self.limits.concurrency {
            let host_busy = self
                .per_host
                .get(&self.pending[i].host)
                .is_some_and(|n| *n >= self.limits.per_host);
            if host_busy {
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
            self.launch(job);
            started += 1;
        }
        started
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

    fn launch(&mut self, job: Job<T>) {
        let id = self.next_id;
        self.next_id += 1;
        *self.per_host.entry(job.host.clone()).or_insert(0) += 1;
        self.started.insert(id, (job.tag, job.host));
        let firer = Arc::clone(&self.firer);
        let request = job.request;
        self.in_flight.push(Box::pin(async move {
            let result = firer.fire(&request).await;
            (id, result)
        }));
    }

    fn finish(&mut self, id: u64) -> Option<T> {
        let (tag, host) = self.started.remove(&id)?;
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
            // Alternate pulling and starting until neither makes progress:
            // starting frees buffer room, pulling may bring eligible jobs.
            loop {
                let pulled = this.pull_input(cx);
                let started = if this.expired {
                    0
                } else {
                    this.start_eligible()
                };
                if !this.not_started.is_empty() || (pulled == 0 && started == 0) {
                    break;
                }
            }
            if !this.not_started.is_empty() {
                continue;
            }
            if let Poll::Ready(Some((id, result))) = this.in_flight.poll_next_unpin(cx) {
                match this.finish(id) {
                    Some(tag) => return Poll::Ready(Some((tag, Fired::Done(result)))),
                    // Unreachable: every launched id is recorded.
                    None => continue,
                }
            }
            let drained = this.jobs.is_done() && this.pending.is_empty();
            if drained && this.in_flight.is_empty() {
                return Poll::Ready(None);
            }
            // Wakers are registered: by the input stream if it was polled to
            // Pending, otherwise by in-flight requests (a full buffer or a
            // capped host implies something is in flight).
            return Poll::Pending;
        }
    }
}

/// `host:port` of a URL; unparseable URLs share one key and fail fast anyway.
fn host_key(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            Some(format!("{host}:{}", u.port_or_known_default()?))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        assert_eq!(host_key("http://Example.com/x"), "example.com:80");
        assert_eq!(host_key("https://example.com/x"), "example.com:443");
        assert_eq!(host_key("http://127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(host_key("http://[::1]:9/"), "[::1]:9");
        assert_eq!(host_key("nope"), "");
    }
}
