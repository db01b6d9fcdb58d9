//! What the server is doing, in one log line every few seconds while it is busy.
//!
//! A 100,000-message run applies tens of thousands of batches; a line per batch (kept at DEBUG)
//! buries everything else, so at INFO the server sums them up instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apply::BatchSummary;
use rockets_embedded::QueueDepth;

use crate::front::FrontStats;

/// Counters shared by the HTTP front and the event source.
#[derive(Default, Debug)]
pub struct Activity {
    /// `POST /messages` answered 2xx, 4xx and 5xx.
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub unavailable: AtomicU64,
    pub applied: AtomicU64,
    pub parked: AtomicU64,
    pub duplicates: AtomicU64,
    pub conflicts: AtomicU64,
    /// Over the park limit, sent to the dead-letter queue.
    pub refused: AtomicU64,
    pub failed: AtomicU64,
}

impl Activity {
    pub fn record_post(&self, status: u16) {
        let counter = match status {
            200..=299 => &self.accepted,
            400..=499 => &self.rejected,
            _ => &self.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_batch(&self, summary: &BatchSummary) {
        for (counter, n) in [
            (&self.applied, summary.applied),
            (&self.parked, summary.parked),
            (&self.duplicates, summary.duplicates),
            (&self.conflicts, summary.conflicts),
            (&self.refused, summary.refused),
            (&self.failed, summary.failed),
        ] {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Everything counted since start.
    pub fn totals(&self) -> Totals {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            accepted: read(&self.accepted),
            rejected: read(&self.rejected),
            unavailable: read(&self.unavailable),
            applied: read(&self.applied),
            parked: read(&self.parked),
            duplicates: read(&self.duplicates),
            conflicts: read(&self.conflicts),
            refused: read(&self.refused),
            failed: read(&self.failed),
        }
    }
}

/// [`Activity`]'s counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub rejected: u64,
    pub unavailable: u64,
    pub applied: u64,
    pub parked: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub refused: u64,
    pub failed: u64,
}

impl Totals {
    /// What was counted after `earlier`.
    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            accepted: self.accepted - earlier.accepted,
            rejected: self.rejected - earlier.rejected,
            unavailable: self.unavailable - earlier.unavailable,
            applied: self.applied - earlier.applied,
            parked: self.parked - earlier.parked,
            duplicates: self.duplicates - earlier.duplicates,
            conflicts: self.conflicts - earlier.conflicts,
            refused: self.refused - earlier.refused,
            failed: self.failed - earlier.failed,
        }
    }
}

/// Reads the queue's depth, where the backend can tell it without a request.
pub type DepthProbe = Box<dyn Fn() -> QueueDepth + Send + Sync>;

/// Logs what changed every `every`, and nothing while nothing does.
pub async fn report(
    activity: Arc<Activity>,
    front: Arc<FrontStats>,
    depth: Option<DepthProbe>,
    every: Duration,
) {
    let mut last = activity.totals();
    let mut last_depth = QueueDepth::default();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = activity.totals();
        let queue = depth.as_ref().map(|probe| probe()).unwrap_or_default();
        if now == last && queue == last_depth {
            continue;
        }
        let d = now.since(&last);
        tracing::info!(
            accepted = d.accepted,
            rejected = d.rejected,
            unavailable = d.unavailable,
            applied = d.applied,
            parked = d.parked,
            duplicates = d.duplicates,
            conflicts = d.conflicts,
            refused = d.refused,
            failed = d.failed,
            queued = queue.visible,
            in_flight = queue.in_flight,
            dead_letters = queue.dead,
            connections = front.open.load(Ordering::Relaxed),
            connections_accepted = front.accepted.load(Ordering::Relaxed),
            idle_closed = front.idle_timeouts.load(Ordering::Relaxed),
            reclaimed = front.reclaimed.load(Ordering::Relaxed),
            accept_errors = front.accept_errors.load(Ordering::Relaxed),
            total_accepted = now.accepted,
            total_applied = now.applied,
            "activity in the last {}s",
            every.as_secs()
        );
        last = now;
        last_depth = queue;
    }
}
