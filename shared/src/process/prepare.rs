//! Step 1–2 of the pipeline: parse a chunk of messages, load their tasks
//! and recorded occurrences (one query each), and decide for each message
//! ([`super::decide::before_firing`]): drop, skip, put back, or fire (held
//! until its instant if it came early).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::decide::{self, Before, Stale};
use super::{Disposition, InFlight, ProcessReport, Processor, Settled, Triage};
use crate::fire::{FireRequest, FiredFor};
use crate::message::DispatchMessage;
use crate::store::{self, RunRecord, RunStatus};
use crate::task::{header_map, Task, Timing};
use crate::trigger::Trigger;

/// A fired message stays claimed this long past its hold and timeout: the
/// time to record its outcome.
pub(super) const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// A chunk's tasks, by id, and its occurrences that have a recorded run.
struct Loaded {
    tasks: HashMap<i64, Arc<Task>>,
    recorded: HashSet<(i64, DateTime<Utc>, i64)>,
}

/// Why an occurrence is recorded as skipped before any call.
enum SkippedBefore {
    /// Catch-up `none`, and past the misfire grace.
    CatchUpNone,
    /// It fell while its flow was open, and the flow's policy is `skip`.
    FlowWasOpen,
}

/// A chunk's messages that could not be fired, and those to fire.
type Prepared<Id> = (Vec<Settled<Id>>, Vec<(InFlight<Id>, FireRequest)>);

impl Processor {
    /// Parses a chunk, loads its tasks in one query, drops what is stale,
    /// and turns the rest into requests.
    pub(super) async fn prepare<Id>(&self, chunk: Vec<(Id, String)>) -> Prepared<Id> {
        let (mut settled, parsed) = parse_chunk(chunk);
        if parsed.is_empty() {
            return (settled, Vec::new());
        }
        let ids: Vec<i64> = parsed.iter().map(|(_, m)| m.task_id).collect();
        let occurrences: Vec<(i64, DateTime<Utc>, i64)> = parsed
            .iter()
            .map(|(_, m)| (m.task_id, m.occurrence, m.rerun()))
            .collect();
        let Some(loaded) = self.load(&ids, &occurrences).await else {
            settled.extend(parsed.into_iter().map(|(id, _)| {
                Settled::hand_back(
                    id,
                    ProcessReport {
                        received: 1,
                        write_failures: 1,
                        ..Default::default()
                    },
                )
            }));
            return (settled, Vec::new());
        };
        let now = Utc::now();
        let jobs = self.triage_chunk(parsed, &loaded, &mut settled, now);
        let jobs = self.repace_late(jobs, &mut settled, now).await;
        let jobs = self.claim_across(jobs, &mut settled).await;
        let jobs = self.claim_in_flight(jobs, &mut settled);
        (settled, jobs)
    }

    /// Loads the tasks `ids` and which of `occurrences` have a recorded run
    /// (one query each), and the limits of flows new to this processor;
    /// `None` when the database cannot be reached (the chunk is handed back).
    async fn load(&self, ids: &[i64], occurrences: &[(i64, DateTime<Utc>, i64)]) -> Option<Loaded> {
        let loaded = futures::try_join!(
            store::load_tasks(&self.pool, ids),
            store::recorded_occurrences(&self.pool, occurrences)
        );
        let (tasks, recorded) = match loaded {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(error = %err, "cannot load tasks; handing the messages back");
                return None;
            }
        };
        // Flows new to this processor: their limits before their first call.
        let flows: Vec<&str> = tasks.iter().map(|t| t.flow.as_str()).collect();
        self.flows.ensure(&flows).await;
        Some(Loaded {
            tasks: tasks.into_iter().map(|t| (t.id, Arc::new(t))).collect(),
            recorded: recorded.into_iter().collect(),
        })
    }

    /// Decides for each parsed message of a chunk: what settles now goes to
    /// `settled`, what fires is returned.
    fn triage_chunk<Id>(
        &self,
        parsed: Vec<(Id, DispatchMessage)>,
        loaded: &Loaded,
        settled: &mut Vec<Settled<Id>>,
        now: DateTime<Utc>,
    ) -> Vec<(InFlight<Id>, FireRequest)> {
        // Each task's timing is parsed once per chunk.
        let mut timings: HashMap<i64, Option<Arc<Timing>>> = HashMap::new();
        let mut jobs = Vec::new();
        for (id, message) in parsed {
            let task = loaded.tasks.get(&message.task_id).cloned();
            let timing = task.as_ref().and_then(|t| {
                timings
                    .entry(t.id)
                    .or_insert_with(|| Timing::of(t).ok().map(Arc::new))
                    .clone()
            });
            let seen =
                loaded
                    .recorded
                    .contains(&(message.task_id, message.occurrence, message.rerun()));
            match self.triage(id, message, task, timing, seen, now) {
                Triage::Settled(mut one) => {
                    one.report.received = 1;
                    settled.push(one);
                }
                Triage::Fire(job, request) => jobs.push((job, request)),
            }
        }
        jobs
    }

    /// A message whose twin is being fired here hands back for as long as
    /// the twin may take (see [`super::in_flight`]); the others are claimed
    /// until their hold, timeout and a margin have passed.
    fn claim_in_flight<Id>(
        &self,
        jobs: Vec<(InFlight<Id>, FireRequest)>,
        settled: &mut Vec<Settled<Id>>,
    ) -> Vec<(InFlight<Id>, FireRequest)> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(jobs.len());
        for (job, request) in jobs {
            let hold = job.hold_until.map(|t| t - now).unwrap_or_default();
            let expires = hold + request.timeout + CLAIM_MARGIN;
            match self.in_flight.claim(&job.message, expires) {
                Ok(()) => out.push((job, request)),
                Err(wait) => settled.push(super::claims::copy_handed_back(
                    job,
                    wait,
                    "a copy of this message is being fired here; handing it back",
                )),
            }
        }
        out
    }

    /// Messages of rate-limited flows that arrive after their slot (the
    /// queue delivered late) would fire together and break the flow's rate,
    /// and retries and held messages were sent without one: they take
    /// slots from the flow's shared schedule, at or after their own fire
    /// instant (one transaction per chunk), and are held, or put back,
    /// until then. If the schedule cannot be reached they fire as they are.
    async fn repace_late<Id>(
        &self,
        jobs: Vec<(InFlight<Id>, FireRequest)>,
        settled: &mut Vec<Settled<Id>>,
        now: DateTime<Utc>,
    ) -> Vec<(InFlight<Id>, FireRequest)> {
        let late: Vec<usize> = (0..jobs.len())
            .filter(|&i| {
                let job = &jobs[i].0;
                decide::repaces(&job.message, &job.task, job.ready_at, || {
                    self.flows.limits(&job.task.flow).rate.is_some()
                })
            })
            .collect();
        if late.is_empty() {
            return jobs;
        }
        let wants: Vec<(&str, DateTime<Utc>)> = late
            .iter()
            .map(|&i| (jobs[i].0.task.flow.as_str(), jobs[i].0.ready_at.max(now)))
            .collect();
        let slots = match store::pace_dispatch_alone(&self.pool, now, &wants).await {
            Ok(slots) => slots,
            Err(err) => {
                tracing::warn!(error = %err, "cannot re-pace late messages; firing them as they are");
                return jobs;
            }
        };
        log_repaced(&jobs, &late, &slots, now);
        let new_at: HashMap<usize, DateTime<Utc>> = late.into_iter().zip(slots).collect();
        let mut kept = Vec::with_capacity(jobs.len());
        for (i, (mut job, request)) in jobs.into_iter().enumerate() {
            let Some(&at) = new_at.get(&i) else {
                kept.push((job, request));
                continue;
            };
            job.message = job.message.held_until(at);
            let wait = (at - now).to_std().unwrap_or_default();
            if wait > crate::firetime::HOLD_MAX {
                let InFlight {
                    id, message, task, ..
                } = job;
                let early = crate::firetime::paced_delay(at, now);
                let mut one = self.put_back(id, message, &task, at, early, now);
                one.report.received = 1;
                settled.push(one);
                continue;
            }
            job.hold_until = (!wait.is_zero()).then(|| Instant::now() + wait);
            job.ready_at = at.max(now);
            kept.push((job, request));
        }
        kept
    }

    /// Carries out [`decide::before_firing`] for one parsed message.
    fn triage<Id>(
        &self,
        id: Id,
        message: DispatchMessage,
        task: Option<Arc<Task>>,
        timing: Option<Arc<Timing>>,
        recorded: bool,
        now: DateTime<Utc>,
    ) -> Triage<Id> {
        let span = occurrence_span(&message);
        let decision =
            decide::before_firing(&message, task.as_deref(), timing.as_deref(), recorded, now);
        let (Some(task), Some(timing)) = (task, timing) else {
            // Deleted, disabled or unreadable: nothing to write.
            if let Before::Drop(why) = decision {
                span.in_scope(|| tracing::info!("{}", why.reason()));
            }
            return Triage::Settled(Settled::drop_stale(id, None));
        };
        match decision {
            Before::Drop(why) => {
                Triage::Settled(drop_stale(id, why, &message, &task, &timing, &span, now))
            }
            Before::Skip => Triage::Settled(self.skipped_before(
                id,
                &message,
                &task,
                &timing,
                SkippedBefore::CatchUpNone,
                now,
            )),
            Before::PutBack { fire_at, early } => {
                span.in_scope(|| {
                    tracing::info!(
                        early_ms = early.as_millis() as u64,
                        "message arrived far too early; putting it back"
                    )
                });
                Triage::Settled(self.put_back(id, message, &task, fire_at, early, now))
            }
            Before::Fire { .. } if self.open_flow_skips(&message, &task) => {
                span.in_scope(|| tracing::info!(flow = %task.flow, "missed while the flow was open; skipping (on_open = skip)"));
                Triage::Settled(self.skipped_before(
                    id,
                    &message,
                    &task,
                    &timing,
                    SkippedBefore::FlowWasOpen,
                    now,
                ))
            }
            Before::Fire { fire_at, hold } => {
                self.fire(id, message, task, timing, span, fire_at, hold, now)
            }
        }
    }

    /// [`decide::open_flow_skips`], asking this processor's view of the
    /// task's flow.
    fn open_flow_skips(&self, message: &DispatchMessage, task: &Task) -> bool {
        decide::open_flow_skips(message, || {
            self.flows.missed_while_open(&task.flow, message.occurrence)
        })
    }

    /// Records an occurrence as skipped without a call and moves on.
    fn skipped_before<Id>(
        &self,
        id: Id,
        message: &DispatchMessage,
        task: &Task,
        timing: &Timing,
        why: SkippedBefore,
        now: DateTime<Utc>,
    ) -> Settled<Id> {
        let (error, report) = match why {
            SkippedBefore::CatchUpNone => (
                "missed its time; catch-up policy is `none`".to_string(),
                ProcessReport {
                    skipped: 1,
                    ..Default::default()
                },
            ),
            SkippedBefore::FlowWasOpen => (
                format!("flow {} was open: skipped (on_open = skip)", task.flow),
                ProcessReport {
                    skipped: 1,
                    flow_skipped: 1,
                    ..Default::default()
                },
            ),
        };
        let run = without_call(message, task, RunStatus::Skipped, error, now);
        self.finish(id, message, task, timing, run, now, report)
    }

    /// Builds the request of a message that fires (or a failed run when
    /// the stored headers are unusable).
    #[allow(clippy::too_many_arguments)]
    fn fire<Id>(
        &self,
        id: Id,
        message: DispatchMessage,
        task: Arc<Task>,
        timing: Arc<Timing>,
        span: tracing::Span,
        fire_at: DateTime<Utc>,
        hold: Duration,
        now: DateTime<Utc>,
    ) -> Triage<Id> {
        let headers = match header_map(&task.headers) {
            Ok(h) => h.into_iter().collect(),
            Err(err) => {
                span.in_scope(|| tracing::warn!(error = %err, "task headers unusable; recording a failed run"));
                let run = without_call(&message, &task, RunStatus::Failed, err.to_string(), now);
                let report = ProcessReport {
                    failed: 1,
                    tags: task.tags.clone(),
                    ..Default::default()
                };
                return Triage::Settled(
                    self.finish(id, &message, &task, &timing, run, now, report),
                );
            }
        };
        let ready_at = fire_at.max(now);
        let trigger = Trigger::of(&message, task.jitter_secs, ready_at);
        let request = FireRequest {
            method: task.method.clone(),
            url: task.url.clone(),
            headers,
            body: task.body.clone(),
            timeout: Duration::from_millis(task.timeout_ms.max(1) as u64),
            idempotency_key: message.idempotency_key(),
            flow: Some(task.flow.clone()),
            fired_for: Some(FiredFor {
                trigger,
                attempt: message.attempt,
                scheduled_for: message.occurrence,
            }),
        };
        let job = InFlight {
            id,
            message,
            task,
            timing,
            span,
            hold_until: (!hold.is_zero()).then(|| Instant::now() + hold),
            ready_at,
            delivery_late: (now - fire_at).max(chrono::Duration::zero()),
            trigger,
        };
        Triage::Fire(job, request)
    }
}

/// The span of one occurrence's processing: its task, instant, attempt.
fn occurrence_span(message: &DispatchMessage) -> tracing::Span {
    tracing::info_span!(
        "occurrence",
        task_id = message.task_id,
        occurrence = %message.occurrence,
        attempt = message.attempt
    )
}

/// A message of a known task dropped as stale: logged in its span, with
/// the write it still asks for ([`decide::stale_outcome`]).
fn drop_stale<Id>(
    id: Id,
    why: Stale,
    message: &DispatchMessage,
    task: &Task,
    timing: &Timing,
    span: &tracing::Span,
    now: DateTime<Utc>,
) -> Settled<Id> {
    span.in_scope(|| tracing::info!(current = task.version, "{}", why.reason()));
    Settled::drop_stale(id, decide::stale_outcome(why, message, task, timing, now))
}

/// Parses each body once. Unreadable ones are poison; a second copy of an
/// occurrence in the same chunk is dropped (one call is enough).
fn parse_chunk<Id>(chunk: Vec<(Id, String)>) -> (Vec<Settled<Id>>, Vec<(Id, DispatchMessage)>) {
    let mut settled = Vec::new();
    let mut parsed = Vec::with_capacity(chunk.len());
    let mut seen = HashSet::new();
    for (id, body) in chunk {
        let one = match DispatchMessage::parse(&body) {
            Ok(m) if seen.insert((m.task_id, m.occurrence, m.manual, m.rerun())) => {
                parsed.push((id, m));
                continue;
            }
            Ok(_) => Settled::drop_stale(id, None),
            Err(err) => {
                tracing::warn!(error = %err, "unreadable dispatch message; leaving it for the dead-letter queue");
                Settled::new(
                    id,
                    Disposition::Poison,
                    ProcessReport {
                        invalid: 1,
                        ..Default::default()
                    },
                )
            }
        };
        settled.push(Settled {
            releases: None,
            report: ProcessReport {
                received: 1,
                ..one.report
            },
            ..one
        });
    }
    (settled, parsed)
}

/// A run recorded without a call (skipped, or unusable headers).
fn without_call(
    message: &DispatchMessage,
    task: &Task,
    status: RunStatus,
    error: String,
    now: DateTime<Utc>,
) -> RunRecord {
    RunRecord {
        trigger: Trigger::of(message, task.jitter_secs, now),
        backfill_id: message.backfill.map(|b| b.id),
        rerun: message.rerun(),
        status,
        attempts: message.attempt as i32,
        fired_at: None,
        finished_at: now,
        http_status: None,
        latency_ms: None,
        error: Some(error),
        response_excerpt: None,
        pacing_ms: (message.paced_ms > 0).then(|| message.paced_ms.min(i32::MAX as u64) as i32),
    }
}

/// What re-pacing did to a chunk (debug level): how many, how late the
/// latest was, and how far ahead the last slot is.
fn log_repaced<Id>(
    jobs: &[(InFlight<Id>, FireRequest)],
    late: &[usize],
    slots: &[DateTime<Utc>],
    now: DateTime<Utc>,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let lateness = |i: usize| now - decide::fire_instant(&jobs[i].0.message, &jobs[i].0.task);
    let most_late_ms = late.iter().map(|&i| lateness(i).num_milliseconds()).max();
    let slot_on_arrival = late
        .iter()
        .filter(|&&i| jobs[i].0.message.slot_on_arrival)
        .count();
    let last_slot_in_ms = slots.iter().max().map(|s| (*s - now).num_milliseconds());
    tracing::debug!(
        late = late.len(),
        slot_on_arrival,
        most_late_ms,
        last_slot_in_ms,
        "re-paced messages that came late"
    );
}
