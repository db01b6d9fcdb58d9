//! The SQS consumer: applies each channel's messages to its rocket.
//!
//! A batch may hold several channels; they are applied concurrently, and each channel's
//! records in queue order with one load and one conditional commit (`channel.rs`). A record
//! that fails takes every later record of its channel in the batch with it into
//! `batchItemFailures`, so SQS redelivers them in their original order; other channels are
//! unaffected.
//!
//! What a batch reads and writes is bounded by the batch and [`Settings::park_window`], not
//! by how many messages its channel parks; a drain longer than the window commits in rounds,
//! and one longer than [`Settings::drain_budget`] goes on in a continuation it queues behind
//! its channel, so no record is received again for it. A message parks only within
//! [`Settings::park_limit`] numbers of its rocket's last applied one: one further ahead goes
//! straight to the dead-letter queue, from where an operator redrives it once the gap is
//! filled, so a flood of numbers far ahead cannot crowd out the channel's own. A parked message
//! that waited longer than [`Settings::parked_retention`] expires; [`purge_parked`] expires a
//! channel's parked messages at once.
//!
//! Failures of the store are told apart: a transient one (throttling, an outage) hides the
//! records for longer at each receive ([`outage_backoff`]), so that valid messages outlast a
//! long outage in the queue; a permanent one (access denied, a missing table) sends them to the
//! dead-letter queue after [`Settings::permanent_receives`] receives, where its alarm is seen.

mod channel;

use std::time::Duration;
use tracing::Instrument as _;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use rockets::config::ConfigError;
use rockets::message::{Channel, Envelope};
use rockets::ordering::Timeline;
use rockets::ports::{
    ChannelStore, CommitOutcome, Delivery, MessageQueue, QueueRecord, SourceQueue, StoreError,
};

pub use channel::MAX_COMMIT_ATTEMPTS;
use channel::{ChannelError, apply_messages};

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

/// What a batch did, for the batch's log line.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct BatchSummary {
    pub applied: usize,
    pub parked: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    /// Over the park limit, and sent to the dead-letter queue.
    pub refused: usize,
    /// Reported in `batchItemFailures`, to be delivered again.
    pub failed: usize,
    /// Commits lost to a concurrent applier and tried again.
    pub commit_retries: usize,
    /// Parked messages applied once their gap filled (counted in `applied` too).
    pub drained: usize,
    /// Failed because the store was unavailable, and hidden to wait the outage out.
    pub backed_off: usize,
    /// Sent to the dead-letter queue after the store refused them for good.
    pub store_failed: usize,
    /// Parked messages that waited past their retention, deleted.
    pub expired: usize,
}

impl std::ops::AddAssign for BatchSummary {
    fn add_assign(&mut self, other: Self) {
        self.applied += other.applied;
        self.parked += other.parked;
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
        self.refused += other.refused;
        self.failed += other.failed;
        self.commit_retries += other.commit_retries;
        self.drained += other.drained;
        self.backed_off += other.backed_off;
        self.store_failed += other.store_failed;
        self.expired += other.expired;
    }
}

/// The visibility timeout of the template's queue, the first back-off after an outage.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the apply side treats parked messages and failures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Settings {
    /// The queue's visibility timeout: the first back-off after an outage.
    pub visibility_timeout: Duration,
    /// How far ahead of its rocket's last applied message a message may park: it bounds a
    /// channel's storage and its longest drain, and moves with the rocket, so messages far
    /// ahead (anyone's) cannot fill it.
    pub park_limit: u64,
    /// How long a parked message waits for its gap before it expires.
    pub parked_retention: Duration,
    /// The most parked messages one load reads, and so one commit drains.
    pub park_window: usize,
    /// How long one batch keeps draining a channel. A longer drain stops there and goes on in
    /// a continuation queued behind its channel, so no invocation runs into its timeout however
    /// many messages a filled gap releases.
    pub drain_budget: Duration,
    /// Receives of a record that the store refuses for good (not an outage) before the apply
    /// side sends its message to the dead-letter queue itself.
    pub permanent_receives: u32,
}

impl Settings {
    /// The default park limit: ten thousand numbers past the last applied message.
    pub const PARK_LIMIT: u64 = 10_000;
    /// The variable that sets [`Settings::park_limit`].
    pub const PARK_LIMIT_ENV: &'static str = "PARK_LIMIT";
    /// The default retention of a parked message: the dead-letter queue's, so that a redriven
    /// message still finds what parked behind it.
    pub const PARKED_RETENTION_DAYS: u64 = 14;
    /// The variable that sets [`Settings::parked_retention`], in days.
    pub const PARKED_RETENTION_ENV: &'static str = "PARKED_RETENTION_DAYS";

    /// The defaults, with the park limit and the parked retention from `PARK_LIMIT` and
    /// `PARKED_RETENTION_DAYS` when they are set.
    pub fn from_env() -> Result<Self, ConfigError> {
        let days =
            rockets::config::parsed(Self::PARKED_RETENTION_ENV, Self::PARKED_RETENTION_DAYS)?;
        Ok(Settings {
            park_limit: rockets::config::parsed(Self::PARK_LIMIT_ENV, Self::PARK_LIMIT)?,
            parked_retention: days_long(days),
            ..Settings::default()
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            visibility_timeout: VISIBILITY_TIMEOUT,
            park_limit: Self::PARK_LIMIT,
            parked_retention: days_long(Self::PARKED_RETENTION_DAYS),
            park_window: 100,
            drain_budget: Duration::from_secs(4),
            permanent_receives: 3,
        }
    }
}

/// Expires every parked message of `channel` now, as an operator purging junk does: they stop
/// counting, are deleted, and free their numbers. Returns how many, or `None` for a channel
/// the store has never seen.
pub async fn purge_parked<S: ChannelStore>(
    store: &S,
    channel: &Channel,
) -> Result<Option<usize>, StoreError> {
    let mut attempts = 0;
    loop {
        let Some(snapshot) = store.load(channel, 0, &[]).await? else {
            return Ok(None);
        };
        let now = chrono::Utc::now();
        // All of them, each as old as can be; read after the load, so never older than it.
        let view = (store.parked(&snapshot.rocket).await?)
            .parked_at(|_| Some(chrono::DateTime::UNIX_EPOCH));
        let mut timeline = Timeline::load(snapshot.rocket, view, now);
        let expired = timeline.expire_parked(now);
        let Some(change) = timeline.into_change() else {
            return Ok(Some(0));
        };
        match store.commit(snapshot.version, &change).await? {
            CommitOutcome::Committed => return Ok(Some(expired)),
            CommitOutcome::VersionMismatch => {
                attempts += 1;
                if attempts > MAX_COMMIT_ATTEMPTS {
                    return Err(StoreError::Unavailable(
                        "the channel kept changing while its parked messages were purged".into(),
                    ));
                }
            }
        }
    }
}

/// `days` days.
pub fn days_long(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(86_400))
}

/// The longest one back-off lasts, in visibility timeouts: an hour with the template's 60 s,
/// and an outage's end is noticed at most that long after.
const MAX_BACKOFF_TIMEOUTS: u32 = 60;

/// How long a record stays hidden after the store was unavailable for it, by how often it has
/// been received: `base` (the queue's visibility timeout) times 4 to the receives before this
/// one, at most 60 times `base`.
///
/// An outage is not the message's fault, yet every receive counts towards the dead-letter
/// queue; backing off stretches the receives over a long outage instead of spending them in
/// minutes. A message's last receive is its last chance, so what it outlasts is the sum of the
/// back-offs before it: with 60 s and the template's 16 receives, 1 + 4 + 16 minutes and then
/// twelve hours, the longest SQS keeps a message hidden; a message is applied at most an hour
/// after the store answers again.
pub fn outage_backoff(base: Duration, receive_count: u32) -> Duration {
    let factor = 4u32.saturating_pow(receive_count.saturating_sub(1).min(15));
    base.saturating_mul(factor.min(MAX_BACKOFF_TIMEOUTS))
}

/// Applies a batch and reports, per message id, the records SQS must deliver again; those that
/// failed because the store was unavailable are hidden for an [`outage_backoff`] of the
/// visibility timeout, and those over the park limit go to `dead_letters`.
pub async fn handle<S, Q, D>(
    store: &S,
    source: &Q,
    dead_letters: &D,
    settings: &Settings,
    event: SqsEvent,
) -> Result<SqsBatchResponse, ApplyError>
where
    S: ChannelStore,
    Q: SourceQueue,
    D: MessageQueue,
{
    let received_ms = chrono::Utc::now().timestamp_millis();
    let (response, summary) =
        apply_batch(store, source, dead_letters, settings, &event.records).await?;
    // X-Ray's trace headers of the ingest requests that sent these records, to follow a
    // message from its POST to here.
    let traces: Vec<&str> = event
        .records
        .iter()
        .filter_map(QueueRecord::trace_header)
        .collect();
    tracing::info!(
        records = event.records.len(),
        applied = summary.applied,
        parked = summary.parked,
        duplicates = summary.duplicates,
        conflicts = summary.conflicts,
        refused = summary.refused,
        failed = summary.failed,
        commit_retries = summary.commit_retries,
        drained = summary.drained,
        backed_off = summary.backed_off,
        store_failed = summary.store_failed,
        expired = summary.expired,
        trace_headers = ?traces,
        "batch done"
    );
    batch_metrics(&event.records, &summary, received_ms).emit();
    Ok(response)
}

/// One batch's metrics: what it did, and how long its oldest record had waited since it was
/// sent when the batch began.
pub fn batch_metrics<R: QueueRecord>(
    records: &[R],
    summary: &BatchSummary,
    now_ms: i64,
) -> rockets::metrics::Metrics {
    use rockets::metrics::{Metrics, names};
    let oldest_sent = records.iter().filter_map(QueueRecord::sent_ms).min();
    let mut metrics = Metrics::new("apply");
    metrics
        .count(names::RECORDS, records.len())
        .count(names::APPLIED, summary.applied)
        .count(names::PARKED, summary.parked)
        .count(names::DUPLICATES, summary.duplicates)
        .count(names::CONFLICTS, summary.conflicts)
        .count(names::DEAD_LETTERED, summary.refused + summary.store_failed)
        .count(names::FAILED_RECORDS, summary.failed)
        .count(names::COMMIT_RETRIES, summary.commit_retries)
        .count(names::DRAINED_PARKED, summary.drained)
        .count(names::STORE_UNAVAILABLE, summary.backed_off)
        .count(names::STORE_FAILED, summary.store_failed);
    if let Some(sent) = oldest_sent {
        metrics.millis(names::OLDEST_RECORD_AGE, (now_ms - sent) as f64);
    }
    metrics
}

/// [`handle`] for any records, also returning what the batch did.
pub async fn apply_batch<S, Q, D, R>(
    store: &S,
    source: &Q,
    dead_letters: &D,
    settings: &Settings,
    records: &[R],
) -> Result<(SqsBatchResponse, BatchSummary), ApplyError>
where
    S: ChannelStore,
    Q: SourceQueue,
    D: MessageQueue,
    R: QueueRecord,
{
    if let Some(index) = records
        .iter()
        .position(|r| r.message_id().is_none_or(str::is_empty))
    {
        return Err(ApplyError::MissingMessageId { index });
    }
    let results = join_all(
        group_by_channel(records)
            .into_iter()
            .map(|(group, records)| {
                apply_channel(store, source, dead_letters, settings, group, records)
            }),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    let mut summary = BatchSummary::default();
    let (mut resume, mut hidden) = (Vec::new(), Vec::new());
    for outcome in results {
        summary += outcome.summary;
        for record in &outcome.failed {
            let Some(handle) = record.receipt_handle().map(str::to_owned) else {
                continue;
            };
            if outcome.store_unavailable {
                let count = record.receive_count().unwrap_or(1);
                hidden.push((handle, outage_backoff(settings.visibility_timeout, count)));
            } else if outcome.drain_unfinished {
                resume.push((handle, Duration::ZERO));
            }
        }
        response
            .batch_item_failures
            .extend(outcome.failed.into_iter().filter_map(|record| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id()?.to_owned();
                Some(failure)
            }));
    }
    if !resume.is_empty()
        && let Err(error) = source.hide(resume).await
    {
        tracing::warn!(%error, "could not return the record at once; the drain goes on after the visibility timeout");
    }
    if !hidden.is_empty() {
        let longest = hidden.iter().map(|(_, d)| *d).max().unwrap_or_default();
        tracing::warn!(
            records = hidden.len(),
            hidden_secs = longest.as_secs(),
            "store unavailable; backing off"
        );
        summary.backed_off += hidden.len();
        if let Err(error) = source.hide(hidden).await {
            tracing::warn!(%error, "could not back off; the records return after the visibility timeout");
        }
    }
    Ok((response, summary))
}

/// What became of one channel's records.
struct ChannelOutcome<'r, R> {
    failed: Vec<&'r R>,
    summary: BatchSummary,
    /// The records failed because the store could not be reached, not because of them.
    store_unavailable: bool,
    /// The last record failed so that it comes back to go on with its channel's drain.
    drain_unfinished: bool,
}

/// The records of each message group, in queue order. The group id is the channel; a record
/// without one (never the case from a FIFO queue) stands alone.
fn group_by_channel<R: QueueRecord>(records: &[R]) -> Vec<(&str, Vec<&R>)> {
    // A batch holds at most ten records: a search beats hashing their groups.
    let mut groups: Vec<(&str, Vec<&R>)> = Vec::new();
    for record in records {
        let key = record
            .group_id()
            .or(record.message_id())
            .unwrap_or_default();
        match groups.iter_mut().find(|(group, _)| *group == key) {
            Some((_, members)) => members.push(record),
            None => groups.push((key, vec![record])),
        }
    }
    groups
}

/// One channel's records read in order, up to the first unreadable one, which blocks its
/// channel until the queue dead-letters it: the channel, its messages and the index of the
/// record each came from, and how many records were read.
fn read<R: QueueRecord>(
    group: &str,
    records: &[&R],
) -> (
    Option<rockets::message::Channel>,
    Vec<(usize, Envelope)>,
    usize,
) {
    let (mut channel, mut messages) = (None, Vec::new());
    for (index, record) in records.iter().enumerate() {
        let delivery = record.delivery().and_then(|delivery| {
            let grouped = record.group_id().is_some();
            if grouped && delivery.channel().as_str() != group {
                Err(format!(
                    "channel {} sent in group {group}",
                    delivery.channel()
                ))
            } else {
                Ok(delivery)
            }
        });
        match delivery {
            Ok(delivery) => {
                channel.get_or_insert_with(|| delivery.channel().clone());
                if let Delivery::Message(message) = delivery {
                    messages.push((index, message));
                }
            }
            Err(error) => {
                tracing::warn!(
                    message_id = record.message_id(),
                    receive_count = record.receive_count(),
                    %error,
                    "unreadable record blocks its channel until it reaches the dead-letter queue"
                );
                return (channel, messages, index);
            }
        }
    }
    (channel, messages, records.len())
}

/// Applies one channel's records.
async fn apply_channel<'r, S, Q, D, R>(
    store: &S,
    source: &Q,
    dead_letters: &D,
    settings: &Settings,
    group: &str,
    records: Vec<&'r R>,
) -> ChannelOutcome<'r, R>
where
    S: ChannelStore,
    Q: SourceQueue,
    D: MessageQueue,
    R: QueueRecord,
{
    let (channel, messages, readable) = read(group, &records);
    let mut outcome = ChannelOutcome {
        failed: Vec::new(),
        summary: BatchSummary::default(),
        store_unavailable: false,
        drain_unfinished: false,
    };
    let mut first_failed = readable;
    if let Some(channel) = channel {
        let (indices, envelopes): (Vec<usize>, Vec<Envelope>) = messages.into_iter().unzip();
        // At DEBUG, every line logged while loading and committing carries the channel and
        // the numbers. Those above DEBUG name their channel themselves, so the span is not
        // built for every channel of every batch at INFO.
        let span =
            tracing::debug_span!("channel", channel = %channel, numbers = ?Numbers(&envelopes));
        let applied = apply_messages(store, settings, &channel, &envelopes)
            .instrument(span)
            .await;
        match applied {
            Ok(applied) => {
                outcome.summary = applied.summary;
                if let Some(version) = applied.unfinished_at
                    && readable == records.len()
                {
                    match source.continue_drain(&channel, version).await {
                        Ok(()) => tracing::info!(%channel, "drain goes on in a continuation"),
                        Err(error) => {
                            tracing::warn!(%channel, %error, "could not queue the drain's continuation; its last record comes back to go on with it");
                            outcome.drain_unfinished = true;
                            first_failed = records.len() - 1;
                        }
                    }
                }
                // Sent in queue order; one that cannot be sent comes back with what follows it.
                let refused = (applied.refused.iter())
                    .map(|&at| (&envelopes[at], indices[at]))
                    .collect();
                let (sent, unsent) =
                    dead_letter(dead_letters, refused, "over the park limit").await;
                for &at in &applied.refused[..sent] {
                    tracing::warn!(
                        %channel,
                        number = %envelopes[at].number,
                        park_limit = settings.park_limit,
                        "over the park limit: sent to the dead-letter queue"
                    );
                }
                if let Some(index) = unsent {
                    outcome.summary.refused -= applied.refused.len() - sent;
                    first_failed = first_failed.min(index);
                }
            }
            Err(ChannelError::Store(StoreError::Failed(cause)))
                if records[0].receive_count().unwrap_or(1) >= settings.permanent_receives =>
            {
                tracing::error!(%channel, error = %cause, records = readable, "the store refused the channel's records for good; they go to the dead-letter queue");
                let all = envelopes.iter().zip(indices.iter().copied()).collect();
                let (sent, unsent) = dead_letter(dead_letters, all, "refused by the store").await;
                first_failed = unsent.unwrap_or(readable);
                outcome.summary.store_failed = sent;
            }
            Err(error) => {
                tracing::error!(%channel, %error, records = records.len(), "channel not applied; SQS will redeliver");
                outcome.store_unavailable =
                    matches!(error, ChannelError::Store(StoreError::Unavailable(_)));
                first_failed = 0;
            }
        }
    }
    outcome.failed = records[first_failed..].to_vec();
    outcome.summary.failed = outcome.failed.len();
    outcome
}

/// Sends messages to the dead-letter queue in queue order, each with the index of its record,
/// stopping at the first the queue does not take: how many went, and the record index of the
/// one that did not (it comes back with every record of its channel after it).
async fn dead_letter<D: MessageQueue>(
    dead_letters: &D,
    messages: Vec<(&Envelope, usize)>,
    why: &str,
) -> (usize, Option<usize>) {
    let mut sent = 0;
    for (message, at) in messages {
        if let Err(error) = dead_letters.send(message).await {
            tracing::error!(channel = %message.channel, number = %message.number, why, %error, "the dead-letter queue did not take it; SQS will redeliver");
            return (sent, Some(at));
        }
        sent += 1;
    }
    (sent, None)
}

/// The messages' numbers, as a span shows them: written only if the span is.
struct Numbers<'a>(&'a [Envelope]);

impl std::fmt::Debug for Numbers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|m| m.number.get()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;

    #[test]
    fn an_outage_backs_off_four_times_longer_each_receive_up_to_an_hour() {
        let minute = Duration::from_secs(60);
        let schedule: Vec<u64> = (1..=7)
            .map(|count| outage_backoff(minute, count).as_secs() / 60)
            .collect();
        assert_eq!(schedule, [1, 4, 16, 60, 60, 60, 60]);
        assert_eq!(outage_backoff(minute, 0), minute);
        assert_eq!(
            outage_backoff(minute, u32::MAX),
            Duration::from_secs(60 * 60)
        );
        // With the template's sixteen receives: the outage a valid message outlasts in the
        // queue, at least the twelve hours SQS can keep it hidden.
        let survived: Duration = (1..16).map(|count| outage_backoff(minute, count)).sum();
        assert_eq!(survived, Duration::from_secs((1 + 4 + 16 + 12 * 60) * 60));
        assert!(survived >= Duration::from_secs(12 * 60 * 60));
    }

    #[test]
    fn a_batch_reports_what_it_did_and_how_long_its_oldest_record_waited() {
        let record = |sent: &str| {
            let mut record = SqsMessage::default();
            record
                .attributes
                .insert("SentTimestamp".into(), sent.into());
            record
        };
        let summary = BatchSummary {
            applied: 5,
            drained: 2,
            conflicts: 1,
            commit_retries: 3,
            refused: 1,
            store_failed: 2,
            backed_off: 4,
            ..BatchSummary::default()
        };
        let metrics =
            batch_metrics(&[record("9000"), record("4000")], &summary, 10_000).to_json(10_000);
        assert_eq!(metrics["Records"], 2.0);
        assert_eq!(metrics["Applied"], 5.0);
        assert_eq!(metrics["DrainedParked"], 2.0);
        assert_eq!(metrics["Conflicts"], 1.0);
        assert_eq!(metrics["CommitRetries"], 3.0);
        assert_eq!(metrics["DeadLettered"], 3.0);
        assert_eq!(metrics["StoreFailed"], 2.0);
        assert_eq!(metrics["StoreUnavailable"], 4.0);
        assert_eq!(metrics["OldestRecordAge"], 6000.0);
        assert_eq!(metrics["function"], "apply");
    }
}
