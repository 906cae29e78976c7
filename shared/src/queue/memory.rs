//! In-process dispatch queue for `sundial dev`, benchmarks and unit tests.
//!
//! It honours per-message delays and is bounded. It is not durable: if the
//! process dies, queued occurrences are recovered by the database leases
//! (the scanner dispatches them again once their lease lapses), and a
//! graceful shutdown hands them back at once with [`MemoryQueue::drain`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DispatchQueue, Outgoing, SendReport, MAX_DELAY};
use crate::message::DispatchMessage;

/// Default bound on queued messages.
pub const DEFAULT_CAPACITY: usize = 200_000;

struct Entry {
    ready_at: Instant,
    seq: u64,
    message: DispatchMessage,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.ready_at, self.seq) == (other.ready_at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ready_at, self.seq).cmp(&(other.ready_at, other.seq))
    }
}

struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    closed: bool,
}

/// A bounded, delay-honouring queue in memory.
pub struct MemoryQueue {
    state: Mutex<State>,
    capacity: usize,
    seq: AtomicU64,
    changed: Notify,
    sent_calls: AtomicU64,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl MemoryQueue {
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                closed: false,
            }),
            capacity,
            seq: AtomicU64::new(0),
            changed: Notify::new(),
            sent_calls: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the heap half-edited
        // (every mutation is a single push/pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages queued, ready or not.
    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `send` calls made so far.
    pub fn send_calls(&self) -> u64 {
        self.sent_calls.load(Ordering::Relaxed)
    }

    /// Waits until up to `max` messages are ready (at least one), or until
    /// `wait` passes (returns empty), or until the queue is closed and
    /// nothing is ready (returns empty).
    pub async fn receive(&self, max: usize, wait: Duration) -> Vec<DispatchMessage> {
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so a send between the look
            // and the wait is not missed.
            let changed = self.changed.notified();
            let next_ready = {
                let mut state = self.lock();
                let now = Instant::now();
                let mut out = Vec::new();
                while out.len() < max {
                    match state.heap.peek() {
                        Some(Reverse(e)) if e.ready_at <= now => {
                            if let Some(Reverse(e)) = state.heap.pop() {
                                out.push(e.message);
                            }
                        }
                        _ => break,
                    }
                }
                if !out.is_empty() {
                    return out;
                }
                if state.closed {
                    return out;
                }
                state.heap.peek().map(|Reverse(e)| e.ready_at)
            };
            let wake = next_ready.map_or(deadline, |r| r.min(deadline));
            if Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Takes every message out, ready or not (for a graceful shutdown that
    /// hands them back to the database).
    pub fn drain(&self) -> Vec<DispatchMessage> {
        let mut state = self.lock();
        let out = std::mem::take(&mut state.heap)
            .into_iter()
            .map(|Reverse(e)| e.message)
            .collect();
        drop(state);
        self.changed.notify_waiters();
        out
    }

    /// Whether [`MemoryQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Stops accepting messages and wakes receivers.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// [`DispatchQueue::send`] without the `async`: queues the messages at
    /// once (for callers that cannot await, such as the processor's
    /// settle callback re-sending a message to be delivered again).
    pub fn push(&self, messages: &[Outgoing]) -> SendReport {
        self.sent_calls.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut report = SendReport {
            calls: 1,
            ..Default::default()
        };
        {
            let mut state = self.lock();
            for (i, out) in messages.iter().enumerate() {
                if state.closed || state.heap.len() >= self.capacity {
                    report.failed.push(i);
                    report.first_error.get_or_insert_with(|| {
                        if state.closed {
                            "queue is closed".into()
                        } else {
                            format!("queue is full ({} messages)", self.capacity)
                        }
                    });
                    continue;
                }
                state.heap.push(Reverse(Entry {
                    ready_at: now + out.delay.min(MAX_DELAY),
                    seq: self.seq.fetch_add(1, Ordering::Relaxed),
                    message: out.message.clone(),
                }));
            }
        }
        self.changed.notify_waiters();
        report
    }
}

#[async_trait]
impl DispatchQueue for MemoryQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        self.push(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn out(task_id: i64, delay_ms: u64) -> Outgoing {
        Outgoing {
            message: DispatchMessage::new(task_id, Utc::now(), 1),
            delay: Duration::from_millis(delay_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn honours_delays_in_order() {
        let q = MemoryQueue::new(10);
        q.send(&[out(1, 3000), out(2, 0), out(3, 1000)]).await;
        let first = q.receive(10, Duration::from_secs(10)).await;
        assert_eq!(first.iter().map(|m| m.task_id).collect::<Vec<_>>(), vec![2]);
        let start = Instant::now();
        let second = q.receive(10, Duration::from_secs(10)).await;
        assert_eq!(second[0].task_id, 3);
        assert!(start.elapsed() >= Duration::from_millis(1000));
        let third = q.receive(10, Duration::from_secs(10)).await;
        assert_eq!(third[0].task_id, 1);
        assert!(q.receive(10, Duration::from_millis(100)).await.is_empty());
    }

    #[tokio::test]
    async fn is_bounded_and_reports_each_refused_message() {
        let q = MemoryQueue::new(2);
        let report = q.send(&[out(1, 0), out(2, 0), out(3, 0)]).await;
        assert_eq!(report.failed, vec![2]);
        assert!(report.first_error.unwrap().contains("full"));
        assert_eq!(q.drain().len(), 2);
        q.close();
        let report = q.send(&[out(4, 0)]).await;
        assert_eq!(report.failed, vec![0]);
        assert!(q.receive(1, Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver() {
        let q = std::sync::Arc::new(MemoryQueue::new(10));
        let r = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(5, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.send(&[out(7, 0)]).await;
        let got = r.await.unwrap();
        assert_eq!(got[0].task_id, 7);
    }
}
