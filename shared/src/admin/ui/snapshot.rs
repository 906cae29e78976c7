//! The overview's figures, computed at most every [`FRESH_FOR`] per
//! process. They are what `GET /v1/status` computes plus the lag chart:
//! a hundred milliseconds of aggregation over the last hours' runs at a
//! million runs, too much to repeat for every page view. A request that
//! finds them older than [`FRESH_FOR`] gets them as they are and starts
//! one refresh in the background; older than [`MAX_AGE`] (a Lambda frozen
//! between invocations, an idle process) or not computed yet, it waits
//! for fresh ones. The page says when its figures were taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::chart::Window;
use super::overview::{CHART_BUCKET, CHART_SPAN};
use super::page::UiError;
use crate::admin::status::{self, Status};
use crate::admin::AdminState;
use crate::store::{self, LagPoint};

/// Figures younger than this are served as they are.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// Figures older than this are never served.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The overview's figures at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub taken_at: DateTime<Utc>,
    pub status: Status,
    pub window: Window,
    pub lag: Vec<LagPoint>,
}

/// The process's latest [`Snapshot`] (one per [`AdminState`]).
#[derive(Debug, Default)]
pub struct SnapshotCache {
    latest: Mutex<Option<Arc<Snapshot>>>,
    refreshing: AtomicBool,
}

impl SnapshotCache {
    fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    fn keep(&self, snapshot: Arc<Snapshot>) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(snapshot);
        }
    }
}

/// Computes the figures now: the status and the chart at once, each on a
/// connection of its own.
pub async fn compute(state: &AdminState) -> Result<Snapshot, UiError> {
    let now = Utc::now();
    let window = Window {
        from: now - CHART_SPAN,
        to: now,
        bucket: CHART_BUCKET,
    };
    let chart = async {
        store::lag_series(&state.pool, window.from, window.bucket)
            .await
            .map_err(UiError::from)
    };
    let status = async { status::current_status(state).await.map_err(UiError::from) };
    let (status, lag) = tokio::try_join!(status, chart)?;
    Ok(Snapshot {
        taken: Instant::now(),
        taken_at: now,
        status,
        window,
        lag,
    })
}

/// The figures the overview shows now (see the module docs).
pub async fn current(state: &AdminState) -> Result<Arc<Snapshot>, UiError> {
    let cache = state.console.clone();
    match cache.latest() {
        Some(s) if s.taken.elapsed() < FRESH_FOR => Ok(s),
        Some(s) if s.taken.elapsed() < MAX_AGE => {
            if !cache.refreshing.swap(true, Ordering::AcqRel) {
                let state = state.clone();
                tokio::spawn(async move {
                    match compute(&state).await {
                        Ok(fresh) => cache.keep(Arc::new(fresh)),
                        Err(err) => tracing::warn!(?err, "console overview: refresh failed"),
                    }
                    cache.refreshing.store(false, Ordering::Release);
                });
            }
            Ok(s)
        }
        _ => {
            let fresh = Arc::new(compute(state).await?);
            cache.keep(fresh.clone());
            Ok(fresh)
        }
    }
}
