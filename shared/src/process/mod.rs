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
//!
//! The pipeline, one file per step: [`prepare`] (parse, load in one query,
//! decide), the hold (in [`Processor::process`]), firing
//! ([`crate::fire::fire_stream`]), [`settle`] (result → write and
//! disposition), [`write_back`] (one statement per flush). Every rule is a
//! pure function in [`decide`], with table tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::fire::{fire_stream, FireRequest, Firer, Limits};
use crate::flow::FlowControl;
use crate::message::DispatchMessage;
use crate::queue::{DispatchQueue, Outgoing, MAX_DELAY};
use crate::store::Outcome;
use crate::task::{Task, Timing};
use in_flight::InFlightMessages;

mod claims;
pub mod decide;
mod in_flight;
pub mod overlap;
mod prepare;
mod report;
mod settle;
mod write_back;

pub use report::ProcessReport;

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
    /// Flow-control defaults.
    pub flows: crate::flow::FlowSettings,
}

impl ProcessorOptions {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        ProcessorOptions {
            concurrency: settings.concurrency,
            per_host: settings.per_host_concurrency,
            deadline_margin: settings.deadline_margin,
            lease: settings.lease,
            chain_horizon: settings.lookahead,
            flows: settings.flow.clone(),
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
    /// This processor's view of its flows (one per process).
    flows: Arc<FlowControl>,
    /// Where retries are sent (the dispatch queue itself).
    retries: Arc<dyn DispatchQueue>,
    opts: ProcessorOptions,
    /// Delivers the notification events write-backs raise.
    notifier: Option<Arc<crate::notify::Notifier>>,
    /// The messages being fired, so a second copy of one waits.
    in_flight: InFlightMessages,
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
    chain: Option<Chain>,
    /// Occurrences to record as skipped with the outcome (overlap `skip`).
    skips: Vec<crate::store::SkippedOccurrence>,
    /// The fired message, released from [`InFlightMessages`] once the
    /// outcome is written.
    releases: Option<DispatchMessage>,
    report: ProcessReport,
}

impl<Id> Settled<Id> {
    fn new(id: Id, disposition: Disposition, report: ProcessReport) -> Self {
        Settled {
            releases: None,
            id,
            disposition,
            outcome: None,
            retry: None,
            chain: None,
            skips: Vec::new(),
            report,
        }
    }

    fn drop_stale(id: Id, outcome: Option<Outcome>) -> Self {
        Settled {
            releases: None,
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

/// A next occurrence the processor chains.
struct Chain {
    message: DispatchMessage,
    /// The task's flow (chained occurrences are paced like dispatched ones).
    flow: String,
    /// Lease kept past the fire time (timeout + lease).
    keep: chrono::Duration,
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
    /// When the message was both in hand and due: max(fire instant, arrival).
    ready_at: DateTime<Utc>,
    /// How late the queue delivered it after its fire instant (zero if early).
    delivery_late: chrono::Duration,
    /// Its `Sundial-Trigger`, sent and recorded.
    trigger: crate::trigger::Trigger,
}

impl Processor {
    pub fn new(
        pool: PgPool,
        firer: Arc<Firer>,
        retries: Arc<dyn DispatchQueue>,
        opts: ProcessorOptions,
    ) -> Self {
        let flows = Arc::new(FlowControl::new(pool.clone(), opts.flows.clone()));
        Processor {
            pool,
            firer,
            flows,
            retries,
            opts,
            notifier: None,
            in_flight: InFlightMessages::default(),
        }
    }

    /// Delivers the events its write-backs raise with `notifier`, next to
    /// the work (see [`crate::notify::Notifier::run_alongside`]).
    pub fn with_notifier(mut self, notifier: Arc<crate::notify::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The notifier, if any (the dev runner's scanner shares it).
    pub fn notifier(&self) -> Option<&Arc<crate::notify::Notifier>> {
        self.notifier.as_ref()
    }

    /// The firer (its client and signer are shared with the notifier).
    pub fn firer(&self) -> &Arc<Firer> {
        &self.firer
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
        let client_opts = crate::fire::ClientOptions::from_settings(settings);
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
        let jobs = self.jobs(inbound, settled_tx.clone());
        let limits = self.limits(deadline);
        let firing = async move {
            let mut fired = std::pin::pin!(fire_stream(self.firer.clone(), jobs, limits));
            while let Some((job, result)) = fired.next().await {
                let message = job.message.clone();
                let mut settled = self.settle(job, result);
                settled.releases = Some(message);
                let _ = settled_tx.send(settled);
            }
            // Dropping `settled_tx` (and the stream's copy) ends the writer.
        };
        let writing = self.write_back(settled_rx, &mut done);
        let work = async move {
            let (_, report) = futures::join!(firing, writing);
            report
        };
        self.alongside(work, deadline).await
    }

    /// The messages as requests ready to fire: parsed and loaded chunk by
    /// chunk ([`Self::prepare`]; what settles without a call goes to
    /// `early`), each held until its instant.
    fn jobs<'a, Id, S>(
        &'a self,
        inbound: S,
        early: mpsc::UnboundedSender<Settled<Id>>,
    ) -> BoxStream<'a, (InFlight<Id>, FireRequest)>
    where
        Id: Send + 'static,
        S: Stream<Item = (Id, String)> + Send + 'static,
    {
        inbound
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
            .boxed()
    }

    /// The firing limits: concurrency, per host, the flows, the deadline.
    fn limits(&self, deadline: Option<Instant>) -> Limits {
        let limits =
            Limits::new(self.opts.concurrency, self.opts.per_host).with_flows(self.flows.clone());
        match deadline {
            Some(deadline) => limits.with_deadline(deadline, self.opts.deadline_margin),
            None => limits,
        }
    }

    /// Runs `work` with the flow-state sync and the notifier beside it, both
    /// stopped when it is done; its report, with their figures added.
    async fn alongside(
        &self,
        work: impl Future<Output = ProcessReport>,
        deadline: Option<Instant>,
    ) -> ProcessReport {
        // Flow state is synced while the work runs, and once after it.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stop_notify_tx, stop_notify_rx) = tokio::sync::oneshot::channel::<()>();
        let work = async move {
            let report = work.await;
            let _ = stop_tx.send(());
            let _ = stop_notify_tx.send(());
            report
        };
        let sync = self.flows.clone().run_sync(async move {
            let _ = stop_rx.await;
        });
        // Notifications raised by the write-backs go out next to the work.
        let notify = async move {
            let stop = async move {
                let _ = stop_notify_rx.await;
            };
            match &self.notifier {
                Some(notifier) => notifier.run_alongside(stop, deadline).await,
                None => {
                    stop.await;
                    Default::default()
                }
            }
        };
        let (mut report, (), delivered) = futures::join!(work, sync, notify);
        report.add_flow_counters(&self.flows.take_counters());
        report.notifications_sent += delivered.sent;
        report.notifications_failed += delivered.failed;
        report
    }

    /// This processor's flows (for status and tests).
    pub fn flows(&self) -> &Arc<FlowControl> {
        &self.flows
    }
}

/// What [`Processor::triage`] decided. A short-lived return value, moved
/// once per message: boxing either variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Triage<Id> {
    Settled(Settled<Id>),
    Fire(InFlight<Id>, FireRequest),
}
