//! One channel's records of a batch: loaded once, received by the channel's timeline in queue
//! order, committed conditionally, and drained in further rounds for as long as the drain
//! budget allows.

use std::time::{Duration, Instant};

use chrono::Utc;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{Received, Timeline, same_or_conflict};
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, StoreError};

use crate::{BatchSummary, Settings};

/// How often a channel's commit is retried when another applier got there first.
pub const MAX_COMMIT_ATTEMPTS: u32 = 8;

/// Why a channel's records could not be applied this time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChannelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {MAX_COMMIT_ATTEMPTS} commits lost to concurrent appliers")]
    Contended,
}

/// What [`apply_messages`] did.
pub(crate) struct Applied {
    pub(crate) summary: BatchSummary,
    /// The indices of the messages refused for the park limit.
    pub(crate) refused: Vec<usize>,
    /// The drain stopped at its budget with more to apply, at this version of the channel.
    pub(crate) unfinished_at: Option<u64>,
}

/// Loads the channel, receives the messages and commits, retrying with jittered backoff
/// while another applier commits first; then drains in further rounds for as long as the
/// commit says more may be parked, within the drain budget.
pub(crate) async fn apply_messages<S: ChannelStore>(
    store: &S,
    settings: &Settings,
    channel: &Channel,
    messages: &[Envelope],
) -> Result<Applied, ChannelError> {
    let started = Instant::now();
    let mut applied = receive(store, settings, channel, messages).await?;
    if let Some(version) = applied.unfinished_at.take() {
        let budget = settings.drain_budget.saturating_sub(started.elapsed());
        applied.unfinished_at = drain(
            store,
            settings,
            channel,
            version,
            budget,
            &mut applied.summary,
        )
        .await?;
    }
    Ok(applied)
}

/// The batch's own commit: its messages received by the channel's timeline, committed against
/// the version loaded. `unfinished_at` is the version it committed when a drain may go on.
async fn receive<S: ChannelStore>(
    store: &S,
    settings: &Settings,
    channel: &Channel,
    messages: &[Envelope],
) -> Result<Applied, ChannelError> {
    let probe: Vec<MessageNumber> = messages.iter().map(|m| m.number).collect();
    for attempt in 1..=MAX_COMMIT_ATTEMPTS {
        let (mut timeline, version) = open(store, settings, channel, &probe).await?;
        let outcomes: Vec<Received> = messages
            .iter()
            .map(|m| timeline.receive(m.clone()))
            .collect();
        let change = timeline.into_change();
        let outcome = match &change {
            None => CommitOutcome::Committed,
            Some(change) => store.commit(version, change).await?,
        };
        if outcome == CommitOutcome::VersionMismatch {
            tracing::debug!(%channel, attempt, "commit lost to a concurrent applier; retrying");
            tokio::time::sleep(backoff(attempt)).await;
            continue;
        }
        let mut summary = summarise(store, channel, messages, &outcomes).await;
        summary.commit_retries = (attempt - 1) as usize;
        if let Some(change) = &change {
            // What the commit applied beyond the batch's own messages was drained, also what a
            // load found next in line before any message was received.
            summary.drained = change.applied.len() - summary.applied;
            summary.applied = change.applied.len();
            summary.expired = change.expired.len();
        }
        let refused = (outcomes.iter().enumerate())
            .filter(|(_, o)| **o == Received::OverParkLimit)
            .map(|(i, _)| i)
            .collect();
        let drain_more = change.as_ref().is_some_and(|c| c.drain_more);
        return Ok(Applied {
            summary,
            refused,
            unfinished_at: drain_more.then_some(version + 1),
        });
    }
    Err(ChannelError::Contended)
}

/// Further drain rounds from `version`, each a load and a commit, while more may be parked and
/// `budget` lasts; the version to go on from when the budget ran out first.
async fn drain<S: ChannelStore>(
    store: &S,
    settings: &Settings,
    channel: &Channel,
    mut version: u64,
    budget: Duration,
    summary: &mut BatchSummary,
) -> Result<Option<u64>, ChannelError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        if started.elapsed() >= budget {
            return Ok(Some(version));
        }
        attempt += 1;
        if attempt > MAX_COMMIT_ATTEMPTS {
            return Err(ChannelError::Contended);
        }
        let (timeline, loaded) = open(store, settings, channel, &[]).await?;
        let Some(change) = timeline.into_change() else {
            return Ok(None);
        };
        match store.commit(loaded, &change).await? {
            CommitOutcome::Committed => {
                summary.applied += change.applied.len();
                summary.drained += change.applied.len();
                summary.expired += change.expired.len();
                if !change.drain_more {
                    return Ok(None);
                }
                version = loaded + 1;
                attempt = 0;
            }
            CommitOutcome::VersionMismatch => {
                // What it would have drained was applied by whoever committed first, or is
                // theirs to drain; look again.
                summary.commit_retries += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// The channel's timeline and version, as far as one load reads it.
async fn open<S: ChannelStore>(
    store: &S,
    settings: &Settings,
    channel: &Channel,
    probe: &[MessageNumber],
) -> Result<(Timeline, u64), StoreError> {
    let now = Utc::now();
    let (timeline, version) = match store.load(channel, settings.park_window, probe).await? {
        Some(ChannelSnapshot {
            rocket,
            parked,
            version,
        }) => (Timeline::load(rocket, parked, now), version),
        None => (Timeline::empty(channel.clone(), now), 0),
    };
    let mut timeline = timeline.with_park_limit(settings.park_limit);
    if let Ok(retention) = chrono::Duration::from_std(settings.parked_retention) {
        timeline.expire_parked(now - retention);
    }
    Ok((timeline, version))
}

/// Counts the outcomes, telling resends of earlier-applied messages from conflicts; `applied`
/// counts the batch's own messages only (the commit's change says what it drained).
async fn summarise<S: ChannelStore>(
    store: &S,
    channel: &Channel,
    messages: &[Envelope],
    outcomes: &[Received],
) -> BatchSummary {
    let mut summary = BatchSummary::default();
    let mut earlier = Vec::new();
    for (message, outcome) in messages.iter().zip(outcomes) {
        match outcome {
            Received::Applied { .. } => summary.applied += 1,
            Received::Parked => summary.parked += 1,
            Received::OverParkLimit => summary.refused += 1,
            Received::Duplicate => summary.duplicates += 1,
            Received::Conflict => {
                summary.conflicts += 1;
                report_conflict(message);
            }
            Received::AlreadyApplied => earlier.push(message),
        }
    }
    if earlier.is_empty() {
        return summary;
    }
    let numbers: Vec<_> = earlier.iter().map(|m| m.number).collect();
    match store.applied(channel, &numbers).await {
        Ok(applied) => {
            for message in earlier {
                let outcome = applied
                    .iter()
                    .find(|a| a.number == message.number)
                    .map_or(Received::Duplicate, |a| same_or_conflict(a, message));
                if outcome == Received::Conflict {
                    summary.conflicts += 1;
                    report_conflict(message);
                } else {
                    summary.duplicates += 1;
                }
            }
        }
        Err(error) => {
            // The messages changed nothing either way; only the count is uncertain.
            tracing::warn!(%channel, %error, "could not compare resends with the history");
            summary.duplicates += earlier.len();
        }
    }
    summary
}

fn report_conflict(message: &Envelope) {
    tracing::warn!(
        channel = %message.channel,
        number = %message.number,
        message_type = message.event.message_type().as_str(),
        "conflict: a different message with this number was accepted first; this one is kept out"
    );
}

/// Full jitter over an exponential ceiling: 0–2 ms, 0–4 ms, … capped at 100 ms.
fn backoff(attempt: u32) -> Duration {
    rockets::backoff::full_jitter(
        attempt,
        Duration::from_millis(2),
        Duration::from_millis(100),
    )
}
