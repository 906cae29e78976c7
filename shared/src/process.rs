//! The processor: turn dispatch messages into HTTP calls and write back
//! what happened.
//!
//! Messages arrive as a stream (an SQS batch, a long-polling consumer, or
//! the in-process queue). They are taken in chunks so that each chunk's
//! tasks load in one query; the calls then go through
//! [`crate::fire::fire_stream`], which has no batch barriers; outcomes are
//! written back in one statement per flush, and only then is a message
//! reported done, so a crash never loses an outcome whose message was
//! deleted.
//!
//! Retries are re-enqueued as a new message (attempt + 1) with a delay,
//! while the task's lease is extended past that attempt so no scanner
//! dispatches the occurrence again meanwhile. The attempt count travels in
//! the message instead of being inferred from SQS's receive count, which
//! also counts crashes and deadline hand-backs.
//!
//! Timing: a message that arrives before its fire time is held until then
//! (or put back when it is far too early), so an occurrence never fires
//! early however the queue rounds its delays ([`crate::firetime`]). When a
//! `forbid` task's occurrence is recorded and the next one falls within the
//! chain horizon (the scanner's lookahead), the same write leases that next
//! occurrence and the processor enqueues it: sub-minute schedules fire at
//! full rate with the scanner ticking once a minute.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::fire::{
    fire_stream, retry_delay, FireRequest, FireResult, Fired, Firer, Limits, Verdict,
};
use crate::firetime::{self, Arrival};
use crate::message::DispatchMessage;
use crate::queue::{DispatchQueue, Outgoing, MAX_DELAY};
use crate::store::{self, Outcome, OutcomeKind, RunRecord, RunStatus};
use crate::task::{header_map, Overlap, Task, Timing};

/// Messages whose tasks are loaded with one query.
const LOAD_CHUNK: usize = 100;
/// Chunks whose tasks load concurrently.
const PREPARE_AHEAD: usize = 3;
/// Outcomes written per statement at most.
const FLUSH_MAX: usize = 200;
/// How long a settled outcome may wait for others to share its write.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Longest retry backoff (SQS can delay a message at most 15 minutes).
const MAX_BACKOFF: Duration = MAX_DELAY;
/// How soon a message handed back (deadline near, database or queue down)
/// is delivered again: soon, not after the queue's visibility timeout.
pub const HAND_BACK_AFTER: Duration = Duration::from_secs(2);
/// Early messages held at once at most (each held at most
/// [`firetime::HOLD_MAX`]).
const HOLD_SLOTS: usize = 10_000;

/// How the processor runs.
#[derive(Debug, Clone)]
pub struct ProcessorOptions {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests in flight per target host at most.
    pub per_host: usize,
    /// Time kept free before a deadline (to write back and answer).
    pub deadline_margin: Duration,
    /// Lease kept past a retry's due time and timeout.
    pub lease: Duration,
    /// A `forbid` task whose next occurrence is due within this much of
    /// its recorded run is chained (leased and enqueued by the processor);
    /// later ones are left to the scanner. The scanner's lookahead.
    pub chain_horizon: Duration,
}

impl ProcessorOptions {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        ProcessorOptions {
            concurrency: settings.concurrency,
            per_host: settings.per_host_concurrency,
            deadline_margin: settings.deadline_margin,
            lease: settings.lease,
            chain_horizon: settings.lookahead,
        }
    }
}

/// What became of one message, and so what its inbox does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Handled (fired and recorded, retried or put back as a new message,
    /// or dropped as stale): delete it.
    Done,
    /// Not handled now (the deadline was near, the database or the queue
    /// failed): deliver it again after this long.
    Retry {
        /// When to deliver it again.
        after: Duration,
    },
    /// Unreadable: it will never work. Leave it to the queue's
    /// dead-letter policy (SQS: redelivered until `maxReceiveCount`).
    Poison,
}

impl Disposition {
    /// The hand-back used for deadline and outage cases.
    pub const HAND_BACK: Disposition = Disposition::Retry {
        after: HAND_BACK_AFTER,
    };
}

/// Figures of one processing run, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessReport {
    pub received: u64,
    /// Requests made.
    pub fired: u64,
    pub succeeded: u64,
    /// Runs recorded as failed (non-retryable, or attempts exhausted).
    pub failed: u64,
    /// Runs recorded as timed out (attempts exhausted on timeouts).
    pub timed_out: u64,
    /// Attempts that timed out (retried or not).
    pub attempt_timeouts: u64,
    /// Attempts scheduled again.
    pub retried: u64,
    /// Occurrences skipped under catch-up `none`.
    pub skipped: u64,
    /// Messages dropped: task deleted, disabled, edited, or occurrence
    /// already recorded.
    pub stale_dropped: u64,
    /// Messages whose body could not be read.
    pub invalid: u64,
    /// Messages handed back because the deadline was near.
    pub not_started: u64,
    /// Messages handed back because the database or queue failed.
    pub write_failures: u64,
    /// Messages that arrived early and were held until their fire time.
    pub held: u64,
    /// Messages that arrived far too early and were put back with the
    /// remaining delay.
    pub put_back: u64,
    /// Next occurrences leased and enqueued by the processor (chaining).
    pub chained: u64,
    /// Fire lag (start of the first attempt − occurrence), milliseconds.
    #[serde(skip)]
    pub fire_lag_ms: Vec<f64>,
    /// Target latency per request, milliseconds.
    #[serde(skip)]
    pub latency_ms: Vec<f64>,
}

impl ProcessReport {
    /// Adds another report's figures to this one.
    pub fn merge(&mut self, other: &ProcessReport) {
        self.received += other.received;
        self.fired += other.fired;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.attempt_timeouts += other.attempt_timeouts;
        self.retried += other.retried;
        self.skipped += other.skipped;
        self.stale_dropped += other.stale_dropped;
        self.invalid += other.invalid;
        self.not_started += other.not_started;
        self.write_failures += other.write_failures;
        self.held += other.held;
        self.put_back += other.put_back;
        self.chained += other.chained;
        self.fire_lag_ms.extend_from_slice(&other.fire_lag_ms);
        self.latency_ms.extend_from_slice(&other.latency_ms);
    }
}

/// A setting the processor cannot be built with.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct SetupError {
    /// The environment variable (or component) at fault.
    pub setting: &'static str,
    /// Why.
    pub reason: String,
}

/// The processor's dependencies, built once per process.
pub struct Processor {
    pool: PgPool,
    firer: Arc<Firer>,
    /// Where retries are sent (the dispatch queue itself).
    retries: Arc<dyn DispatchQueue>,
    opts: ProcessorOptions,
}

/// What a message settles into before the write-back.
struct Settled<Id> {
    id: Id,
    disposition: Disposition,
    outcome: Option<Outcome>,
    /// A message to send before the outcome is written (a retry, or a
    /// message put back); if it cannot be sent, the message is handed back.
    retry: Option<Outgoing>,
    /// The next occurrence, to enqueue if the write-back chained it.
    chain: Option<DispatchMessage>,
    report: ProcessReport,
}

impl<Id> Settled<Id> {
    fn new(id: Id, disposition: Disposition, report: ProcessReport) -> Self {
        Settled {
            id,
            disposition,
            outcome: None,
            retry: None,
            chain: None,
            report,
        }
    }

    fn drop_stale(id: Id, outcome: Option<Outcome>) -> Self {
        Settled {
            outcome,
            ..Settled::new(
                id,
                Disposition::Done,
                ProcessReport {
                    stale_dropped: 1,
                    ..Default::default()
                },
            )
        }
    }

    fn hand_back(id: Id, report: ProcessReport) -> Self {
        Settled::new(id, Disposition::HAND_BACK, report)
    }
}

/// A message whose request is being made.
struct InFlight<Id> {
    id: Id,
    message: DispatchMessage,
    task: Arc<Task>,
    timing: Arc<Timing>,
    span: tracing::Span,
    /// Hold until this instant before firing (the message came early).
    hold_until: Option<Instant>,
}

impl Processor {
    pub fn new(
        pool: PgPool,
        firer: Arc<Firer>,
        retries: Arc<dyn DispatchQueue>,
        opts: ProcessorOptions,
    ) -> Self {
        Processor {
            pool,
            firer,
            retries,
            opts,
        }
    }

    /// Builds the firer (guard, signer, HTTP client) from the settings and
    /// the processor around it: once per process.
    pub fn from_settings(
        pool: PgPool,
        settings: &crate::config::Settings,
        retries: Arc<dyn DispatchQueue>,
    ) -> Result<Self, SetupError> {
        let guard = Arc::new(
            crate::fire::TargetGuard::new(&settings.allow_targets).map_err(|e| SetupError {
                setting: "SUNDIAL_ALLOW_TARGETS",
                reason: e.to_string(),
            })?,
        );
        Self::build(pool, settings, guard, retries)
    }

    /// The processor around an existing target guard (see
    /// [`crate::app::App::processor`]).
    pub fn build(
        pool: PgPool,
        settings: &crate::config::Settings,
        guard: Arc<crate::fire::TargetGuard>,
        retries: Arc<dyn DispatchQueue>,
    ) -> Result<Self, SetupError> {
        let signer =
            crate::fire::Signer::new(settings.signing_secrets.clone()).map_err(|e| SetupError {
                setting: "SUNDIAL_SIGNING_SECRETS",
                reason: e.to_string(),
            })?;
        let client_opts = crate::fire::ClientOptions {
            concurrency: settings.concurrency,
            extra_roots: settings
                .extra_ca
                .as_ref()
                .map(|ca| ca.certs.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        let firer = Firer::build(guard, signer, &client_opts).map_err(|e| SetupError {
            setting: if settings.extra_ca.is_some() {
                "HTTP client (SUNDIAL_EXTRA_CA_FILE)"
            } else {
                "HTTP client"
            },
            reason: e.to_string(),
        })?;
        Ok(Processor::new(
            pool,
            Arc::new(firer),
            retries,
            ProcessorOptions::from_settings(settings),
        ))
    }

    /// Processes a whole batch (an SQS event): returns each message's
    /// disposition and the figures. `deadline` is the invocation's end.
    pub async fn process_batch<Id: Send + 'static>(
        &self,
        messages: Vec<(Id, String)>,
        deadline: Option<Instant>,
    ) -> (Vec<(Id, Disposition)>, ProcessReport) {
        let mut dispositions = Vec::with_capacity(messages.len());
        let report = self
            .process(futures::stream::iter(messages), deadline, |id, d| {
                dispositions.push((id, d))
            })
            .await;
        (dispositions, report)
    }

    /// Processes a stream of `(id, body)` messages until it ends, calling
    /// `done` for each message once its outcome is durable.
    pub async fn process<Id, S, F>(
        &self,
        inbound: S,
        deadline: Option<Instant>,
        mut done: F,
    ) -> ProcessReport
    where
        Id: Send + 'static,
        S: Stream<Item = (Id, String)> + Send + 'static,
        F: FnMut(Id, Disposition) + Send,
    {
        let (settled_tx, settled_rx) = mpsc::unbounded_channel::<Settled<Id>>();
        let early = settled_tx.clone();
        let jobs = inbound
            .ready_chunks(LOAD_CHUNK)
            .map(move |chunk| {
                let early = early.clone();
                async move {
                    let (settled, jobs) = self.prepare(chunk).await;
                    for s in settled {
                        let _ = early.send(s);
                    }
                    futures::stream::iter(jobs)
                }
            })
            // Load the next chunks' tasks while this one's are starting.
            .buffered(PREPARE_AHEAD)
            .flatten()
            // Early messages wait for their instant here, each on its own
            // timer: a held message occupies no firing slot, and the others
            // pass it by.
            .map(|(job, request): (InFlight<Id>, FireRequest)| async move {
                if let Some(until) = job.hold_until {
                    tokio::time::sleep_until(until).await;
                }
                (job, request)
            })
            .buffer_unordered(HOLD_SLOTS)
            // Boxing pins down the lifetimes, so the whole future is `Send`.
            .boxed();
        let mut limits = Limits::new(self.opts.concurrency, self.opts.per_host);
        if let Some(deadline) = deadline {
            limits = limits.with_deadline(deadline, self.opts.deadline_margin);
        }
        let firing = async move {
            let mut fired = std::pin::pin!(fire_stream(self.firer.clone(), jobs, limits));
            while let Some((job, result)) = fired.next().await {
                let _ = settled_tx.send(self.settle(job, result));
            }
            // Dropping `settled_tx` (and the stream's copy) ends the writer.
        };
        let writing = self.write_back(settled_rx, &mut done);
        let ((), report) = futures::join!(firing, writing);
        report
    }

    /// Parses a chunk, loads its tasks in one query, drops what is stale,
    /// and turns the rest into requests.
    async fn prepare<Id>(
        &self,
        chunk: Vec<(Id, String)>,
    ) -> (Vec<Settled<Id>>, Vec<(InFlight<Id>, FireRequest)>) {
        let mut settled = Vec::new();
        let mut parsed = Vec::with_capacity(chunk.len());
        let mut seen = HashSet::new();
        for (id, body) in chunk {
            match DispatchMessage::parse(&body) {
                Ok(m) => {
                    // The same occurrence twice in one chunk: one call is enough.
                    if seen.insert((m.task_id, m.occurrence, m.manual)) {
                        parsed.push((id, m));
                    } else {
                        settled.push(Settled::drop_stale(id, None));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "unreadable dispatch message; leaving it for the dead-letter queue");
                    settled.push(Settled::new(
                        id,
                        Disposition::Poison,
                        ProcessReport {
                            invalid: 1,
                            ..Default::default()
                        },
                    ));
                }
            }
        }
        for s in &mut settled {
            s.report.received = 1;
        }
        if parsed.is_empty() {
            return (settled, Vec::new());
        }
        let ids: Vec<i64> = parsed.iter().map(|(_, m)| m.task_id).collect();
        let occurrences: Vec<(i64, DateTime<Utc>)> = parsed
            .iter()
            .map(|(_, m)| (m.task_id, m.occurrence))
            .collect();
        let loaded = futures::try_join!(
            store::load_tasks(&self.pool, &ids),
            store::recorded_occurrences(&self.pool, &occurrences)
        );
        let (tasks, recorded) = match loaded {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(error = %err, "cannot load tasks; handing the messages back");
                for (id, _) in parsed {
                    settled.push(Settled::hand_back(
                        id,
                        ProcessReport {
                            received: 1,
                            write_failures: 1,
                            ..Default::default()
                        },
                    ));
                }
                return (settled, Vec::new());
            }
        };
        let tasks: HashMap<i64, Arc<Task>> =
            tasks.into_iter().map(|t| (t.id, Arc::new(t))).collect();
        let recorded: HashSet<(i64, DateTime<Utc>)> = recorded.into_iter().collect();
        let mut timings: HashMap<i64, Arc<Timing>> = HashMap::new();
        let now = Utc::now();
        let mut jobs = Vec::new();
        for (id, message) in parsed {
            match self.triage(id, message, &tasks, &recorded, &mut timings, now) {
                Triage::Settled(mut one) => {
                    one.report.received = 1;
                    settled.push(one);
                }
                Triage::Fire(job, request) => jobs.push((job, request)),
            }
        }
        (settled, jobs)
    }

    /// Decides what to do with one parsed message.
    fn triage<Id>(
        &self,
        id: Id,
        message: DispatchMessage,
        tasks: &HashMap<i64, Arc<Task>>,
        recorded: &HashSet<(i64, DateTime<Utc>)>,
        timings: &mut HashMap<i64, Arc<Timing>>,
        now: DateTime<Utc>,
    ) -> Triage<Id> {
        let span = tracing::info_span!(
            "occurrence",
            task_id = message.task_id,
            occurrence = %message.occurrence,
            attempt = message.attempt
        );
        let Some(task) = tasks.get(&message.task_id).cloned() else {
            span.in_scope(|| tracing::info!("task deleted; dropping message"));
            return Triage::Settled(Settled::drop_stale(id, None));
        };
        if !task.enabled {
            span.in_scope(|| tracing::info!("task disabled; dropping message"));
            return Triage::Settled(Settled::drop_stale(id, None));
        }
        let timing = match timings.get(&task.id) {
            Some(t) => t.clone(),
            None => match Timing::of(&task) {
                Ok(t) => {
                    let t = Arc::new(t);
                    timings.insert(task.id, t.clone());
                    t
                }
                Err(err) => {
                    // Only plain SQL can store such a schedule; the scanner
                    // disables it on its next pass.
                    span.in_scope(|| tracing::warn!(error = %err, "task schedule unreadable; dropping message"));
                    return Triage::Settled(Settled::drop_stale(id, None));
                }
            },
        };
        let base = |kind| Outcome {
            task_id: task.id,
            version: task.version,
            occurrence: message.occurrence,
            kind,
        };
        if recorded.contains(&(message.task_id, message.occurrence)) {
            // Already recorded. If the task still waits on it (its write-back
            // lost a race with an edit), move it on now.
            let heal =
                (!message.manual && task.next_run_at == Some(message.occurrence)).then(|| {
                    base(OutcomeKind::AlreadyRecorded {
                        next_run_at: timing.next_after_run(message.occurrence, now),
                    })
                });
            span.in_scope(|| tracing::info!("occurrence already recorded; dropping duplicate"));
            return Triage::Settled(Settled::drop_stale(id, heal));
        }
        if task.version != message.task_version {
            span.in_scope(|| {
                tracing::info!(
                    current = task.version,
                    "task edited since dispatch; dropping message"
                )
            });
            let release = (!message.manual).then(|| Outcome {
                version: message.task_version,
                ..base(OutcomeKind::Released)
            });
            return Triage::Settled(Settled::drop_stale(id, release));
        }
        if !message.manual && timing.should_skip(message.occurrence, now) {
            let run = RunRecord {
                status: RunStatus::Skipped,
                attempts: message.attempt as i32,
                fired_at: None,
                finished_at: now,
                http_status: None,
                latency_ms: None,
                error: Some("missed its time; catch-up policy is `none`".into()),
                response_excerpt: None,
            };
            let report = ProcessReport {
                skipped: 1,
                ..Default::default()
            };
            return Triage::Settled(self.finish(id, &message, &task, &timing, run, now, report));
        }
        // Never early: hold a message that came a little before its time,
        // put back one that came far too early.
        let fire_at = self.fire_at(&message, &task);
        let hold_until = match firetime::on_arrival(fire_at, now) {
            Arrival::Fire => None,
            Arrival::Hold(early) => Some(Instant::now() + early),
            Arrival::PutBack(early) => {
                span.in_scope(|| {
                    tracing::info!(
                        early_ms = early.as_millis() as u64,
                        "message arrived far too early; putting it back"
                    )
                });
                return Triage::Settled(self.put_back(id, message, &task, fire_at, early, now));
            }
        };
        let headers = match header_map(&task.headers) {
            Ok(h) => h.into_iter().collect(),
            Err(err) => {
                span.in_scope(|| tracing::warn!(error = %err, "task headers unusable; recording a failed run"));
                let run = RunRecord {
                    status: RunStatus::Failed,
                    attempts: message.attempt as i32,
                    fired_at: None,
                    finished_at: now,
                    http_status: None,
                    latency_ms: None,
                    error: Some(err.to_string()),
                    response_excerpt: None,
                };
                let report = ProcessReport {
                    failed: 1,
                    ..Default::default()
                };
                return Triage::Settled(
                    self.finish(id, &message, &task, &timing, run, now, report),
                );
            }
        };
        let request = FireRequest {
            method: task.method.clone(),
            url: task.url.clone(),
            headers,
            body: task.body.clone(),
            timeout: Duration::from_millis(task.timeout_ms.max(1) as u64),
            idempotency_key: message.idempotency_key(),
        };
        Triage::Fire(
            InFlight {
                id,
                message,
                task,
                timing,
                span,
                hold_until,
            },
            request,
        )
    }

    /// The instant a message fires: what it says, or (messages of older
    /// builds) its occurrence plus the task's jitter.
    fn fire_at(&self, message: &DispatchMessage, task: &Task) -> DateTime<Utc> {
        match message.fire_at {
            Some(at) => at,
            None if message.manual => message.occurrence,
            None => firetime::fire_at(task.id, message.occurrence, task.jitter_secs),
        }
    }

    /// Sends a message that came far too early again with the remaining
    /// delay, and keeps the lease until well after it.
    fn put_back<Id>(
        &self,
        id: Id,
        message: DispatchMessage,
        task: &Task,
        fire_at: DateTime<Utc>,
        early: Duration,
        now: DateTime<Utc>,
    ) -> Settled<Id> {
        let lease_until = fire_at + self.lease_after(task);
        let outcome = (!message.manual).then(|| Outcome {
            task_id: task.id,
            version: task.version,
            occurrence: message.occurrence,
            kind: OutcomeKind::Retrying {
                lease_until: lease_until.max(now),
            },
        });
        Settled {
            outcome,
            retry: Some(Outgoing {
                message: message.firing_at(fire_at),
                delay: early,
            }),
            ..Settled::new(
                id,
                Disposition::Done,
                ProcessReport {
                    put_back: 1,
                    ..Default::default()
                },
            )
        }
    }

    /// How long a lease lasts beyond an occurrence's fire time: its
    /// timeout plus the configured lease.
    fn lease_after(&self, task: &Task) -> chrono::Duration {
        chrono::Duration::from_std(
            Duration::from_millis(task.timeout_ms.max(0) as u64) + self.opts.lease,
        )
        .unwrap_or_default()
    }

    /// The occurrence is finished with `run`: record it, move the schedule
    /// on (unless manual), and chain the next occurrence of a `forbid` task
    /// when it is due within the chain horizon.
    #[allow(clippy::too_many_arguments)]
    fn finish<Id>(
        &self,
        id: Id,
        message: &DispatchMessage,
        task: &Task,
        timing: &Timing,
        run: RunRecord,
        now: DateTime<Utc>,
        report: ProcessReport,
    ) -> Settled<Id> {
        let next_run_at = if message.manual {
            None
        } else {
            timing.next_after_run(message.occurrence, now)
        };
        let horizon = now + chrono::Duration::from_std(self.opts.chain_horizon).unwrap_or_default();
        let chain = next_run_at
            .filter(|next| !message.manual && task.overlap == Overlap::Forbid && *next <= horizon)
            .map(|next| {
                let at = firetime::fire_at(task.id, next, task.jitter_secs);
                DispatchMessage::new(task.id, next, task.version).firing_at(at)
            });
        let chain_lease = chain
            .as_ref()
            .and_then(|m| m.fire_at)
            .map(|at| at.max(now) + self.lease_after(task));
        Settled {
            outcome: Some(Outcome {
                task_id: task.id,
                version: task.version,
                occurrence: message.occurrence,
                kind: OutcomeKind::Finished {
                    run,
                    next_run_at,
                    manual: message.manual,
                    chain_lease,
                },
            }),
            chain,
            ..Settled::new(id, Disposition::Done, report)
        }
    }

    /// Turns a call's result into a write and a disposition.
    fn settle<Id>(&self, job: InFlight<Id>, fired: Fired) -> Settled<Id> {
        let InFlight {
            id,
            message,
            task,
            timing,
            span,
            hold_until,
        } = job;
        let _entered = span.enter();
        let mut report = ProcessReport {
            received: 1,
            held: u64::from(hold_until.is_some()),
            ..Default::default()
        };
        let result = match fired {
            Fired::Done(result) => result,
            Fired::NotStarted => {
                report.not_started = 1;
                tracing::info!("deadline near; handing the message back");
                return Settled::hand_back(id, report);
            }
        };
        report.fired = 1;
        report
            .latency_ms
            .push(result.latency.as_secs_f64() * 1000.0);
        if message.attempt == 1 && !message.manual {
            let lag = (result.started_at - message.occurrence)
                .num_microseconds()
                .unwrap_or(0);
            report.fire_lag_ms.push(lag as f64 / 1000.0);
        }
        let now = Utc::now();
        let attempts_left = (message.attempt as i32) < task.max_attempts;
        if let Verdict::Retryable {
            retry_after,
            timed_out,
        } = &result.verdict
        {
            if *timed_out {
                report.attempt_timeouts = 1;
            }
            if attempts_left {
                let delay = retry_delay(
                    message.attempt.saturating_sub(1),
                    Duration::from_millis(task.retry_backoff_ms.max(1) as u64),
                    MAX_BACKOFF,
                    *retry_after,
                )
                .min(MAX_BACKOFF);
                report.retried = 1;
                tracing::info!(
                    status = result.http_status,
                    error = result.error.as_deref(),
                    retry_in_ms = delay.as_millis() as u64,
                    "attempt failed; retrying"
                );
                let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                let lease_until = retry_at + self.lease_after(&task);
                return Settled {
                    // Manual firings hold no lease.
                    outcome: (!message.manual).then(|| Outcome {
                        task_id: task.id,
                        version: task.version,
                        occurrence: message.occurrence,
                        kind: OutcomeKind::Retrying { lease_until },
                    }),
                    retry: Some(Outgoing {
                        message: message.retry(retry_at),
                        delay,
                    }),
                    ..Settled::new(id, Disposition::Done, report)
                };
            }
        }
        let status = match &result.verdict {
            Verdict::Succeeded => RunStatus::Succeeded,
            Verdict::Retryable {
                timed_out: true, ..
            } => RunStatus::TimedOut,
            _ => RunStatus::Failed,
        };
        match status {
            RunStatus::Succeeded => report.succeeded = 1,
            RunStatus::TimedOut => report.timed_out = 1,
            _ => report.failed = 1,
        }
        // Lag of this attempt (for a retry: since the occurrence, backoff
        // included), so each "fired" line shows how late the call went out.
        let lag_ms = (result.started_at - message.occurrence).num_milliseconds();
        tracing::info!(
            task = %task.name,
            status = result.http_status,
            outcome = status.as_str(),
            lag_ms,
            latency_ms = result.latency.as_millis() as u64,
            "fired"
        );
        let run = run_record(&result, status, message.attempt);
        self.finish(id, &message, &task, &timing, run, now, report)
    }

    /// Collects settled messages and writes them in batches: retries are
    /// enqueued first, then all outcomes in one statement, then `done`.
    async fn write_back<Id, F>(
        &self,
        mut settled: mpsc::UnboundedReceiver<Settled<Id>>,
        done: &mut F,
    ) -> ProcessReport
    where
        F: FnMut(Id, Disposition),
    {
        let mut report = ProcessReport::default();
        let mut buffer: Vec<Settled<Id>> = Vec::new();
        let mut open = true;
        while open {
            // Wait for the first of a flush, then gather for a moment.
            match settled.recv().await {
                Some(s) => buffer.push(s),
                None => open = false,
            }
            let gather_until = Instant::now() + FLUSH_EVERY;
            while open && buffer.len() < FLUSH_MAX {
                match tokio::time::timeout_at(gather_until, settled.recv()).await {
                    Ok(Some(s)) => buffer.push(s),
                    Ok(None) => open = false,
                    Err(_) => break,
                }
            }
            if !buffer.is_empty() {
                self.flush(std::mem::take(&mut buffer), &mut report, done)
                    .instrument(tracing::debug_span!("write_back"))
                    .await;
            }
        }
        report
    }

    async fn flush<Id, F>(
        &self,
        mut batch: Vec<Settled<Id>>,
        report: &mut ProcessReport,
        done: &mut F,
    ) where
        F: FnMut(Id, Disposition),
    {
        // Retries (and put-backs) first: an occurrence whose next message
        // could not be queued is handed back whole instead (its lease is
        // not extended).
        let retry_idx: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].retry.is_some())
            .collect();
        if !retry_idx.is_empty() {
            let outgoing: Vec<Outgoing> = retry_idx
                .iter()
                .filter_map(|&i| batch[i].retry.clone())
                .collect();
            let sent = self.retries.send(&outgoing).await;
            if !sent.failed.is_empty() {
                tracing::warn!(
                    failed = sent.failed.len(),
                    error = sent.first_error.as_deref().unwrap_or("unknown"),
                    "cannot enqueue retries; handing the messages back"
                );
            }
            for k in sent.failed {
                if let Some(&i) = retry_idx.get(k) {
                    let s = &mut batch[i];
                    s.disposition = Disposition::HAND_BACK;
                    s.outcome = None;
                    s.report.retried = 0;
                    s.report.put_back = 0;
                    s.report.write_failures = 1;
                }
            }
        }
        let outcomes: Vec<Outcome> = batch.iter().filter_map(|s| s.outcome.clone()).collect();
        // A poisoned outcome is stored as a failed run, or, if it cannot be
        // stored at all, dropped (the store logs it): its message is done
        // either way, since handing it back would poison the next flush.
        match store::record_outcomes_isolating(&self.pool, &outcomes).await {
            Ok(write) => {
                let owners: Vec<usize> = (0..batch.len())
                    .filter(|&i| batch[i].outcome.is_some())
                    .collect();
                for &k in &write.rewritten {
                    if let Some(r) = owners.get(k).map(|&i| &mut batch[i].report) {
                        r.failed += r.succeeded + r.timed_out + r.skipped;
                        (r.succeeded, r.timed_out, r.skipped) = (0, 0, 0);
                    }
                }
                self.enqueue_chained(&batch, &write.recorded, report).await;
            }
            Err(err) => {
                // The calls were made but cannot be recorded: hand the
                // messages back so their outcome is recorded on redelivery
                // (the target sees the same Idempotency-Key again).
                tracing::error!(error = %err, outcomes = outcomes.len(), "cannot write outcomes; handing the messages back");
                for s in &mut batch {
                    if s.outcome.is_some() {
                        s.disposition = Disposition::HAND_BACK;
                        s.report.write_failures = 1;
                    }
                }
            }
        }
        for s in batch {
            report.merge(&s.report);
            done(s.id, s.disposition);
        }
    }

    /// Enqueues the next occurrences the write-back leased. One the queue
    /// refuses is released at once, so the scanner dispatches it; if this
    /// process dies first, its lease lapses and the scanner does the same.
    async fn enqueue_chained<Id>(
        &self,
        batch: &[Settled<Id>],
        recorded: &store::Recorded,
        report: &mut ProcessReport,
    ) {
        if recorded.chained.is_empty() {
            return;
        }
        let leased: HashSet<i64> = recorded.chained.iter().copied().collect();
        let now = Utc::now();
        let outgoing: Vec<Outgoing> = batch
            .iter()
            .filter_map(|s| s.chain.as_ref())
            .filter(|m| leased.contains(&m.task_id))
            .map(|m| Outgoing {
                message: m.clone(),
                delay: firetime::delay_until(m.fire_at.unwrap_or(m.occurrence), now),
            })
            .collect();
        let sent = self.retries.send(&outgoing).await;
        report.chained += (outgoing.len() - sent.failed.len()) as u64;
        if sent.failed.is_empty() {
            return;
        }
        let refused: Vec<(i64, DateTime<Utc>)> = sent
            .failed
            .iter()
            .filter_map(|&k| outgoing.get(k))
            .map(|o| (o.message.task_id, o.message.occurrence))
            .collect();
        tracing::warn!(
            failed = refused.len(),
            error = sent.first_error.as_deref().unwrap_or("unknown"),
            "cannot enqueue next occurrences; releasing them to the scanner"
        );
        if let Err(err) = store::release(&self.pool, &refused).await {
            tracing::warn!(error = %err, "cannot release; the leases lapse and the scanner recovers them");
        }
    }
}

// Short-lived (one per message of a batch, moved once into a Vec): boxing
// either variant would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Triage<Id> {
    Settled(Settled<Id>),
    Fire(InFlight<Id>, FireRequest),
}

fn run_record(result: &FireResult, status: RunStatus, attempt: u32) -> RunRecord {
    RunRecord {
        status,
        attempts: attempt.min(i32::MAX as u32) as i32,
        fired_at: Some(result.started_at),
        finished_at: result.started_at
            + chrono::Duration::from_std(result.latency).unwrap_or_default(),
        http_status: result.http_status.map(i32::from),
        latency_ms: Some(result.latency.as_millis().min(i32::MAX as u128) as i32),
        error: result.error.clone(),
        response_excerpt: result.response_excerpt.clone(),
    }
}
