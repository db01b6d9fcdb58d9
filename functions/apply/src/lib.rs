//! The SQS consumer: applies each channel's messages to its rocket.
//!
//! A batch may hold several channels; they are applied concurrently, and each channel's
//! records in queue order with one load and one conditional commit. A record that fails
//! takes every later record of its channel in the batch with it into `batchItemFailures`, so
//! SQS redelivers them in their original order; other channels are unaffected.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures_util::future::join_all;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{Received, Timeline, same_or_conflict};
use rockets::ports::{ChannelStore, CommitOutcome, RecordVisibility, StoreError};

/// How often a channel's commit is retried when another applier got there first.
pub const MAX_COMMIT_ATTEMPTS: u32 = 8;

/// The batch cannot be answered record by record, so the whole batch must come back.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("record {index} of the batch has no messageId")]
    MissingMessageId { index: usize },
}

impl From<ApplyError> for lambda_runtime::Diagnostic {
    fn from(error: ApplyError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "ApplyError".into(),
            error_message: error.to_string(),
        }
    }
}

/// Why a channel's records could not be applied this time (they are reported failed).
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {MAX_COMMIT_ATTEMPTS} commits lost to concurrent appliers")]
    Contended,
}

/// What a batch did, for the batch's log line.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct BatchSummary {
    pub applied: usize,
    pub parked: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub failed: usize,
}

impl std::ops::AddAssign for BatchSummary {
    fn add_assign(&mut self, other: Self) {
        self.applied += other.applied;
        self.parked += other.parked;
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
        self.failed += other.failed;
    }
}

/// The visibility timeout of the template's queue, the first back-off after an outage.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest one back-off lasts.
const MAX_BACKOFF: Duration = Duration::from_secs(2 * 60 * 60);

/// How long a record stays hidden after the store was unavailable for it, by how often it has
/// been received: `base` (the queue's visibility timeout) times 4 to the receives before this
/// one, at most two hours.
///
/// An outage is not the message's fault, yet every receive counts towards the dead-letter
/// queue; backing off stretches the receives over a long outage instead of spending them in
/// minutes. A message's last receive is its last chance, so what it outlasts is the sum of the
/// back-offs before it: with 60 s and the template's five receives, 1 + 4 + 16 + 64 minutes,
/// about an hour and a half, against five minutes without backing off.
pub fn outage_backoff(base: Duration, receive_count: u32) -> Duration {
    let factor = 4u32.saturating_pow(receive_count.saturating_sub(1).min(15));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Applies a batch and reports, per message id, the records SQS must deliver again; those that
/// failed because the store was unavailable are hidden for an [`outage_backoff`] of `base`.
pub async fn handle<S: ChannelStore, V: RecordVisibility>(
    store: &S,
    visibility: &V,
    base: Duration,
    event: SqsEvent,
) -> Result<SqsBatchResponse, ApplyError> {
    let (response, summary) =
        apply_batch_backing_off(store, visibility, base, &event.records).await?;
    tracing::info!(
        records = event.records.len(),
        applied = summary.applied,
        parked = summary.parked,
        duplicates = summary.duplicates,
        conflicts = summary.conflicts,
        failed = summary.failed,
        "batch done"
    );
    Ok(response)
}

/// [`handle`], also returning what the batch did.
pub async fn apply_batch_backing_off<S: ChannelStore, V: RecordVisibility>(
    store: &S,
    visibility: &V,
    base: Duration,
    records: &[SqsMessage],
) -> Result<(SqsBatchResponse, BatchSummary), ApplyError> {
    let (response, summary, unavailable) = apply_records(store, records).await?;
    let hidden: Vec<(String, Duration)> = unavailable
        .into_iter()
        .filter_map(|record| {
            let count = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            Some((record.receipt_handle.clone()?, outage_backoff(base, count)))
        })
        .collect();
    if !hidden.is_empty() {
        let longest = hidden.iter().map(|(_, d)| *d).max().unwrap_or_default();
        tracing::warn!(
            records = hidden.len(),
            hidden_secs = longest.as_secs(),
            "store unavailable; backing off"
        );
        if let Err(error) = visibility.hide(hidden).await {
            tracing::warn!(%error, "could not back off; the records return after the visibility timeout");
        }
    }
    Ok((response, summary))
}

/// Applies a batch without backing off: what each record came to, and what the batch did.
pub async fn apply_batch<S: ChannelStore>(
    store: &S,
    records: &[SqsMessage],
) -> Result<(SqsBatchResponse, BatchSummary), ApplyError> {
    let (response, summary, _) = apply_records(store, records).await?;
    Ok((response, summary))
}

/// The batch's response and summary, and the records that failed because the store was
/// unavailable.
async fn apply_records<'r, S: ChannelStore>(
    store: &S,
    records: &'r [SqsMessage],
) -> Result<(SqsBatchResponse, BatchSummary, Vec<&'r SqsMessage>), ApplyError> {
    if let Some(index) = records
        .iter()
        .position(|r| r.message_id.as_deref().is_none_or(str::is_empty))
    {
        return Err(ApplyError::MissingMessageId { index });
    }
    let results = join_all(
        group_by_channel(records)
            .into_iter()
            .map(|(group, records)| apply_channel(store, group, records)),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    let mut summary = BatchSummary::default();
    let mut unavailable = Vec::new();
    for outcome in results {
        summary += outcome.summary;
        if outcome.store_unavailable {
            unavailable.extend(outcome.failed.iter().copied());
        }
        response
            .batch_item_failures
            .extend(outcome.failed.into_iter().filter_map(|record| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone()?;
                Some(failure)
            }));
    }
    Ok((response, summary, unavailable))
}

/// What became of one channel's records.
struct ChannelOutcome<'r> {
    failed: Vec<&'r SqsMessage>,
    summary: BatchSummary,
    /// The records failed because the store could not be reached, not because of them.
    store_unavailable: bool,
}

/// The records of each message group, in queue order. The group id is the channel; a record
/// without one (never the case from a FIFO queue) stands alone.
fn group_by_channel(records: &[SqsMessage]) -> Vec<(&str, Vec<&SqsMessage>)> {
    let mut groups: Vec<(&str, Vec<&SqsMessage>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for record in records {
        let key = record
            .attributes
            .get("MessageGroupId")
            .map(String::as_str)
            .or(record.message_id.as_deref())
            .unwrap_or_default();
        match index.get(key) {
            Some(&i) => groups[i].1.push(record),
            None => {
                index.insert(key, groups.len());
                groups.push((key, vec![record]));
            }
        }
    }
    groups
}

/// Applies one channel's records.
async fn apply_channel<'r, S: ChannelStore>(
    store: &S,
    group: &str,
    records: Vec<&'r SqsMessage>,
) -> ChannelOutcome<'r> {
    let mut messages = Vec::with_capacity(records.len());
    for record in &records {
        let parsed = record
            .body
            .as_deref()
            .ok_or_else(|| "record has no body".to_string())
            .and_then(|body| Envelope::parse(body.as_bytes()).map_err(|e| e.to_string()))
            .and_then(|message| {
                let grouped = record.attributes.contains_key("MessageGroupId");
                if grouped && message.channel.as_str() != group {
                    Err(format!("channel {} sent in group {group}", message.channel))
                } else {
                    Ok(message)
                }
            });
        match parsed {
            Ok(message) => messages.push(message),
            Err(error) => {
                tracing::warn!(
                    message_id = record.message_id.as_deref(),
                    receive_count = record.attributes.get("ApproximateReceiveCount").map(String::as_str),
                    %error,
                    "unreadable record blocks its channel until it reaches the dead-letter queue"
                );
                break;
            }
        }
    }
    let mut summary = BatchSummary::default();
    let mut first_failed = messages.len();
    let mut store_unavailable = false;
    if let Some(first) = messages.first() {
        let channel = first.channel.clone();
        match apply_messages(store, &channel, &messages).await {
            Ok(done) => summary = done,
            Err(error) => {
                tracing::error!(%channel, %error, records = records.len(), "channel not applied; SQS will redeliver");
                store_unavailable =
                    matches!(error, ChannelError::Store(StoreError::Unavailable(_)));
                first_failed = 0;
            }
        }
    }
    let failed = records[first_failed..].to_vec();
    summary.failed = failed.len();
    ChannelOutcome {
        failed,
        summary,
        store_unavailable,
    }
}

/// Loads the channel, receives the messages and commits, retrying with jittered backoff
/// while another applier commits first.
async fn apply_messages<S: ChannelStore>(
    store: &S,
    channel: &Channel,
    messages: &[Envelope],
) -> Result<BatchSummary, ChannelError> {
    // Messages the store says were accepted first under the same numbers as ours; they
    // replace ours from then on.
    let mut accepted: HashMap<MessageNumber, Envelope> = HashMap::new();
    for attempt in 1..=MAX_COMMIT_ATTEMPTS {
        let now = Utc::now();
        let (mut timeline, version) = match store.load(channel).await? {
            Some(snapshot) => (
                Timeline::load(snapshot.rocket, snapshot.parked, now),
                snapshot.version,
            ),
            None => (Timeline::empty(channel.clone(), now), 0),
        };
        let outcomes: Vec<Received> = messages
            .iter()
            .map(|m| timeline.receive(accepted.get(&m.number).unwrap_or(m).clone()))
            .collect();
        let outcome = match timeline.into_change() {
            None => CommitOutcome::Committed,
            Some(change) => store.commit(version, &change).await?,
        };
        match outcome {
            CommitOutcome::Committed => {
                return Ok(summarise(store, channel, messages, &outcomes, &accepted).await);
            }
            CommitOutcome::Superseded(first) => {
                accepted.extend(first.into_iter().map(|m| (m.number, m)));
            }
            CommitOutcome::VersionMismatch => {
                tracing::debug!(%channel, attempt, "commit lost to a concurrent applier; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    Err(ChannelError::Contended)
}

/// Counts the outcomes, telling resends of earlier-applied messages from conflicts.
async fn summarise<S: ChannelStore>(
    store: &S,
    channel: &Channel,
    messages: &[Envelope],
    outcomes: &[Received],
    accepted: &HashMap<MessageNumber, Envelope>,
) -> BatchSummary {
    let mut summary = BatchSummary::default();
    let mut earlier = Vec::new();
    for (message, outcome) in messages.iter().zip(outcomes) {
        if accepted
            .get(&message.number)
            .is_some_and(|first| first != message)
        {
            summary.conflicts += 1;
            report_conflict(message);
        }
        match outcome {
            Received::Applied { unparked } => summary.applied += 1 + unparked,
            Received::Parked => summary.parked += 1,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_backs_off_four_times_longer_each_receive_up_to_two_hours() {
        let minute = Duration::from_secs(60);
        let schedule: Vec<u64> = (1..=7)
            .map(|count| outage_backoff(minute, count).as_secs() / 60)
            .collect();
        assert_eq!(schedule, [1, 4, 16, 64, 120, 120, 120]);
        assert_eq!(outage_backoff(minute, 0), minute);
        assert_eq!(outage_backoff(minute, u32::MAX), MAX_BACKOFF);
        // With the template's five receives: the outage a valid message outlasts in the queue.
        let survived: Duration = (1..5).map(|count| outage_backoff(minute, count)).sum();
        assert_eq!(survived, Duration::from_secs(85 * 60));
    }
}
