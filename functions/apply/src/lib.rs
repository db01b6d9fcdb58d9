//! The SQS consumer: applies each channel's messages to its rocket.
//!
//! A batch may hold several channels; they are applied concurrently, and each channel's
//! records in queue order with one load and one conditional commit. A record that fails
//! takes every later record of its channel in the batch with it into `batchItemFailures`, so
//! SQS redelivers them in their original order; other channels are unaffected.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures_util::future::join_all;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{Received, Timeline, same_or_conflict};
use rockets::ports::{ChannelStore, CommitOutcome, StoreError};

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

/// Applies a batch and reports, per message id, the records SQS must deliver again.
pub async fn handle<S: ChannelStore>(
    store: &S,
    event: SqsEvent,
) -> Result<SqsBatchResponse, ApplyError> {
    let (response, summary) = apply_batch(store, &event.records).await?;
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
pub async fn apply_batch<S: ChannelStore>(
    store: &S,
    records: &[SqsMessage],
) -> Result<(SqsBatchResponse, BatchSummary), ApplyError> {
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
    for (failed, channel_summary) in results {
        summary += channel_summary;
        response
            .batch_item_failures
            .extend(failed.into_iter().map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            }));
    }
    Ok((response, summary))
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

/// Applies one channel's records; returns the ids that failed and what was done.
async fn apply_channel<S: ChannelStore>(
    store: &S,
    group: &str,
    records: Vec<&SqsMessage>,
) -> (Vec<String>, BatchSummary) {
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
    if let Some(first) = messages.first() {
        let channel = first.channel.clone();
        match apply_messages(store, &channel, &messages).await {
            Ok(done) => summary = done,
            Err(error) => {
                tracing::error!(%channel, %error, records = records.len(), "channel not applied; SQS will redeliver");
                first_failed = 0;
            }
        }
    }
    let failed: Vec<String> = records[first_failed..]
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();
    summary.failed = failed.len();
    (failed, summary)
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
        message_type = message.event.message_type(),
        "conflict: a different message with this number was accepted first; this one is kept out"
    );
}

/// Full jitter over an exponential ceiling: 0–2 ms, 0–4 ms, … capped at 100 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling_us = (1_000u64 << attempt.min(7)).min(100_000);
    let random = RandomState::new().hash_one(attempt);
    Duration::from_micros(random % ceiling_us)
}
