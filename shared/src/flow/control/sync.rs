//! How a processor's [`FlowControl`] meets the others: it loads the
//! limits and state of flows it meets for the first time, and every
//! [`FlowSettings::sync_every`](crate::flow::FlowSettings) pushes what it
//! saw (one [`FlowDelta`] per flow) and pulls the shared `flow_state` of
//! every flow it knows, in one statement.

use std::sync::Arc;

use chrono::Utc;

use super::{Entry, FlowControl, Tally};
use crate::flow::{BUDGET_WINDOW, FORGET_AFTER};
use crate::store::{self, FlowDelta, FlowRow};

impl Tally {
    /// The tally as the delta the sync pushes for `key`.
    fn into_delta(self, key: &str, e: &Entry) -> FlowDelta {
        FlowDelta {
            key: key.to_string(),
            requests: self.requests as i64,
            retries: self.retries as i64,
            successes: self.successes as i64,
            failures: self.failures as i64,
            trailing: self.trailing as i64,
            throttled: self.throttled as i64,
            admitted: self.admitted as i64,
            not_before: self.not_before,
            threshold: e.limits.breaker_failures as i32,
            window_secs: e.limits.breaker_window.as_secs_f64(),
            cooldown_secs: e.limits.breaker_cooldown.as_secs_f64(),
        }
    }

    /// Adds back a delta that could not be pushed.
    fn restore(&mut self, d: &FlowDelta) {
        self.requests += d.requests as u64;
        self.retries += d.retries as u64;
        self.successes += d.successes as u64;
        self.failures += d.failures as u64;
        self.trailing += d.trailing as u64;
        self.throttled += d.throttled as u64;
        self.admitted += d.admitted as u64;
        self.not_before = self.not_before.max(d.not_before);
    }
}

/// What one sync pushes: the deltas, every flow to pull, and the flows
/// that have no `flow_state` row yet.
struct Outgoing {
    deltas: Vec<FlowDelta>,
    watched: Vec<String>,
    new_keys: Vec<String>,
}

impl FlowControl {
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
        let out = self.take_outgoing();
        if out.watched.is_empty() {
            return Ok(());
        }
        let result = async {
            if !out.new_keys.is_empty() {
                store::ensure_flow_states(&self.pool, &out.new_keys).await?;
            }
            let window = BUDGET_WINDOW.as_secs_f64();
            store::sync_flows(&self.pool, now, window, &out.deltas, &out.watched).await
        }
        .await;
        match result {
            Ok(rows) => {
                self.apply_pulled(&rows);
                Ok(())
            }
            Err(err) => {
                // Put the tallies back: they are pushed with the next sync.
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                for d in &out.deltas {
                    if let Some(e) = entries.get_mut(&d.key) {
                        e.tally.restore(d);
                    }
                }
                Err(err)
            }
        }
    }

    /// Forgets flows unused for [`FORGET_AFTER`] and takes every tally.
    fn take_outgoing(&self) -> Outgoing {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.last_used.elapsed() < FORGET_AFTER || !e.tally.is_empty());
        let mut out = Outgoing {
            deltas: Vec::new(),
            watched: Vec::with_capacity(entries.len()),
            new_keys: Vec::new(),
        };
        for (key, e) in entries.iter_mut() {
            out.watched.push(key.clone());
            if e.tally.is_empty() {
                continue;
            }
            if !e.stored {
                out.new_keys.push(key.clone());
            }
            let tally = std::mem::take(&mut e.tally);
            out.deltas.push(tally.into_delta(key, e));
        }
        out
    }

    /// Takes in the shared state pulled: breaker changes are logged and
    /// counted, every entry is brought up to date.
    fn apply_pulled(&self, rows: &[FlowRow]) {
        let (mut opened, mut closed, mut open_now) = (0, 0, 0);
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for row in rows {
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
    }

    /// Syncs every [`FlowSettings::sync_every`](crate::flow::FlowSettings)
    /// (sooner when woken) until `stop` resolves, then once more so
    /// nothing seen is left unpushed.
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
}
