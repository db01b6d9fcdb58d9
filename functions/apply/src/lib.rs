//! The SQS consumer: applies each channel's messages to its rocket.
//!
//! A batch may hold several channels; they are applied concurrently, and each channel's
//! records in queue order with one load and one conditional commit. A record that fails
//! takes every later record of its channel in the batch with it into `batchItemFailures`, so
//! SQS redelivers them in their original order; other channels are unaffected.
//!
//! What a batch reads and writes is bounded by the batch and [`Settings::park_window`], not
//! by how many messages its channel parks; a drain longer than the window commits in rounds.
//! A channel parks at most [`Settings::park_limit`] messages: one more goes straight to the
//! dead-letter queue, from where an operator redrives it once the gap is filled.

use std::collections::HashMap;

use std::time::Duration;
use tracing::Instrument as _;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use futures_util::future::join_all;
use rockets::config::ConfigError;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{Received, Timeline, same_or_conflict};
use rockets::ports::{
    ChannelSnapshot, ChannelStore, CommitOutcome, MessageQueue, QueueRecord, RecordVisibility,
    StoreError,
};

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
    /// Over the park limit, and sent to the dead-letter queue.
    pub refused: usize,
    pub failed: usize,
    /// Commits lost to a concurrent applier and tried again.
    pub commit_retries: usize,
    /// Parked messages applied once their gap filled (counted in `applied` too).
    pub drained: usize,
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
    }
}

/// The visibility timeout of the template's queue, the first back-off after an outage.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the apply side treats parked messages and failures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Settings {
    /// The queue's visibility timeout: the first back-off after an outage.
    pub visibility_timeout: Duration,
    /// The most messages one channel may park. The state item holds the count, so it costs
    /// nothing to check; the limit bounds a channel's storage and the longest drain.
    pub park_limit: u64,
    /// The most parked messages one load reads, and so one commit drains.
    pub park_window: usize,
    /// How long one batch keeps draining a channel. A longer drain stops there and its
    /// channel's last record comes back at once to go on with it, so no invocation runs into
    /// its timeout however many messages a filled gap releases.
    pub drain_budget: Duration,
}

impl Settings {
    /// The default park limit: ten thousand messages behind one gap.
    pub const PARK_LIMIT: u64 = 10_000;
    /// The variable that sets [`Settings::park_limit`].
    pub const PARK_LIMIT_ENV: &'static str = "PARK_LIMIT";

    /// The defaults, with the park limit from `PARK_LIMIT` when it is set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Settings {
            park_limit: rockets::config::parsed(Self::PARK_LIMIT_ENV, Self::PARK_LIMIT)?,
            ..Settings::default()
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            visibility_timeout: VISIBILITY_TIMEOUT,
            park_limit: Self::PARK_LIMIT,
            park_window: 100,
            drain_budget: Duration::from_secs(4),
        }
    }
}

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
/// failed because the store was unavailable are hidden for an [`outage_backoff`] of the
/// visibility timeout, and those over the park limit go to `dead_letters`.
pub async fn handle<S, V, D>(
    store: &S,
    visibility: &V,
    dead_letters: &D,
    settings: &Settings,
    event: SqsEvent,
) -> Result<SqsBatchResponse, ApplyError>
where
    S: ChannelStore,
    V: RecordVisibility,
    D: MessageQueue,
{
    let received_ms = chrono::Utc::now().timestamp_millis();
    let (response, summary) =
        apply_batch(store, visibility, dead_letters, settings, &event.records).await?;
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
        .count(names::DEAD_LETTERED, summary.refused)
        .count(names::FAILED_RECORDS, summary.failed)
        .count(names::COMMIT_RETRIES, summary.commit_retries)
        .count(names::DRAINED_PARKED, summary.drained);
    if let Some(sent) = oldest_sent {
        metrics.millis(names::OLDEST_RECORD_AGE, (now_ms - sent) as f64);
    }
    metrics
}

/// [`handle`], also returning what the batch did.
pub async fn apply_batch<S, V, D, R>(
    store: &S,
    visibility: &V,
    dead_letters: &D,
    settings: &Settings,
    records: &[R],
) -> Result<(SqsBatchResponse, BatchSummary), ApplyError>
where
    S: ChannelStore,
    V: RecordVisibility,
    D: MessageQueue,
    R: QueueRecord,
{
    let (response, summary, returns) =
        apply_records(store, dead_letters, settings, records).await?;
    let base = settings.visibility_timeout;
    let mut resume = Vec::new();
    let mut hidden = Vec::new();
    for (record, reason) in returns {
        let Some(handle) = record.receipt_handle().map(str::to_owned) else {
            continue;
        };
        match reason {
            Return::Resume => resume.push((handle, Duration::ZERO)),
            Return::Outage => {
                let count = record.receive_count().unwrap_or(1);
                hidden.push((handle, outage_backoff(base, count)));
            }
        }
    }
    if !resume.is_empty()
        && let Err(error) = visibility.hide(resume).await
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
        if let Err(error) = visibility.hide(hidden).await {
            tracing::warn!(%error, "could not back off; the records return after the visibility timeout");
        }
    }
    Ok((response, summary))
}

/// Why a failed record should come back sooner or later than the visibility timeout.
enum Return {
    /// The store was unavailable: back off.
    Outage,
    /// Its channel's drain ran out of time: at once, to go on with it.
    Resume,
}

/// The batch's response and summary, and the failed records that should come back sooner or
/// later than the visibility timeout.
#[allow(clippy::type_complexity)]
async fn apply_records<'r, S: ChannelStore, D: MessageQueue, R: QueueRecord>(
    store: &S,
    dead_letters: &D,
    settings: &Settings,
    records: &'r [R],
) -> Result<(SqsBatchResponse, BatchSummary, Vec<(&'r R, Return)>), ApplyError> {
    if let Some(index) = records
        .iter()
        .position(|r| r.message_id().is_none_or(str::is_empty))
    {
        return Err(ApplyError::MissingMessageId { index });
    }
    let results = join_all(
        group_by_channel(records)
            .into_iter()
            .map(|(group, records)| apply_channel(store, dead_letters, settings, group, records)),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    let mut summary = BatchSummary::default();
    let mut returns = Vec::new();
    for outcome in results {
        summary += outcome.summary;
        if outcome.store_unavailable {
            returns.extend(outcome.failed.iter().map(|r| (*r, Return::Outage)));
        } else if outcome.drain_unfinished {
            returns.extend(outcome.failed.iter().map(|r| (*r, Return::Resume)));
        }
        response
            .batch_item_failures
            .extend(outcome.failed.into_iter().filter_map(|record| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id()?.to_owned();
                Some(failure)
            }));
    }
    Ok((response, summary, returns))
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

/// Applies one channel's records.
async fn apply_channel<'r, S: ChannelStore, D: MessageQueue, R: QueueRecord>(
    store: &S,
    dead_letters: &D,
    settings: &Settings,
    group: &str,
    records: Vec<&'r R>,
) -> ChannelOutcome<'r, R> {
    let mut messages = Vec::with_capacity(records.len());
    for record in &records {
        let parsed = record.message().and_then(|message| {
            let grouped = record.group_id().is_some();
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
                    message_id = record.message_id(),
                    receive_count = record.receive_count(),
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
    let mut drain_unfinished = false;
    if let Some(first) = messages.first() {
        let channel = first.channel.clone();
        // At DEBUG, every line logged while loading and committing carries the channel and
        // the numbers. Those above DEBUG name their channel themselves, so the span is not
        // built for every channel of every batch at INFO.
        let span =
            tracing::debug_span!("channel", channel = %channel, numbers = ?Numbers(&messages));
        let applied = apply_messages(store, settings, &channel, &messages)
            .instrument(span)
            .await;
        match applied {
            Ok(Applied {
                summary: done,
                refused,
                drain_unfinished: unfinished,
            }) => {
                summary = done;
                if unfinished && first_failed == records.len() {
                    tracing::info!(%channel, "drain goes on in the next delivery");
                    drain_unfinished = true;
                    first_failed = records.len() - 1;
                }
                // Sent in queue order; one that cannot be sent comes back with what follows it.
                for (sent, &index) in refused.iter().enumerate() {
                    let message = &messages[index];
                    match dead_letters.send(message).await {
                        Ok(()) => tracing::warn!(
                            %channel,
                            number = %message.number,
                            park_limit = settings.park_limit,
                            "over the park limit: sent to the dead-letter queue"
                        ),
                        Err(error) => {
                            tracing::error!(%channel, number = %message.number, %error, "over the park limit, and the dead-letter queue did not take it; SQS will redeliver");
                            summary.refused -= refused.len() - sent;
                            first_failed = index;
                            break;
                        }
                    }
                }
            }
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
        drain_unfinished: drain_unfinished && first_failed == records.len() - 1,
    }
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

/// What [`apply_messages`] did.
struct Applied {
    summary: BatchSummary,
    /// The indices of the messages refused for the park limit.
    refused: Vec<usize>,
    /// The drain stopped at its budget with more to apply.
    drain_unfinished: bool,
}

/// Loads the channel, receives the messages and commits, retrying with jittered backoff
/// while another applier commits first; then drains in further rounds for as long as the
/// commit says more may be parked, within the drain budget.
async fn apply_messages<S: ChannelStore>(
    store: &S,
    settings: &Settings,
    channel: &Channel,
    messages: &[Envelope],
) -> Result<Applied, ChannelError> {
    let started = std::time::Instant::now();
    let probe: Vec<MessageNumber> = messages.iter().map(|m| m.number).collect();
    // Messages the store says were accepted first under the same numbers as ours; they
    // replace ours from then on.
    let mut accepted: HashMap<MessageNumber, Envelope> = HashMap::new();
    let mut attempt = 0;
    let (mut summary, refused, mut drain_more) = loop {
        attempt += 1;
        if attempt > MAX_COMMIT_ATTEMPTS {
            return Err(ChannelError::Contended);
        }
        let (mut timeline, version) = open(store, settings, channel, &probe).await?;
        let outcomes: Vec<Received> = messages
            .iter()
            .map(|m| timeline.receive(accepted.get(&m.number).unwrap_or(m).clone()))
            .collect();
        let change = timeline.into_change();
        let outcome = match &change {
            None => CommitOutcome::Committed,
            Some(change) => store.commit(version, change).await?,
        };
        match outcome {
            CommitOutcome::Committed => {
                let mut summary = summarise(store, channel, messages, &outcomes, &accepted).await;
                summary.commit_retries = (attempt - 1) as usize;
                let refused = (outcomes.iter().enumerate())
                    .filter(|(_, o)| **o == Received::OverParkLimit)
                    .map(|(i, _)| i)
                    .collect();
                break (summary, refused, change.is_some_and(|c| c.drain_more));
            }
            CommitOutcome::Superseded(first) => {
                accepted.extend(first.into_iter().map(|m| (m.number, m)));
            }
            CommitOutcome::VersionMismatch => {
                tracing::debug!(%channel, attempt, "commit lost to a concurrent applier; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    };
    let mut attempt = 0;
    while drain_more {
        if started.elapsed() >= settings.drain_budget {
            return Ok(Applied {
                summary,
                refused,
                drain_unfinished: true,
            });
        }
        attempt += 1;
        if attempt > MAX_COMMIT_ATTEMPTS {
            return Err(ChannelError::Contended);
        }
        let (timeline, version) = open(store, settings, channel, &[]).await?;
        let Some(change) = timeline.into_change() else {
            break;
        };
        match store.commit(version, &change).await? {
            CommitOutcome::Committed => {
                summary.applied += change.applied.len();
                summary.drained += change.applied.len();
                drain_more = change.drain_more;
                attempt = 0;
            }
            CommitOutcome::Superseded(_) | CommitOutcome::VersionMismatch => {
                summary.commit_retries += 1;
                // What it would have drained was applied by whoever committed first, or is
                // theirs to drain; look again.
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    Ok(Applied {
        summary,
        refused,
        drain_unfinished: false,
    })
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
    Ok((timeline.with_park_limit(settings.park_limit), version))
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
            Received::Applied { unparked } => {
                summary.applied += 1 + unparked;
                summary.drained += unparked;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;

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
            ..BatchSummary::default()
        };
        let metrics =
            batch_metrics(&[record("9000"), record("4000")], &summary, 10_000).to_json(10_000);
        assert_eq!(metrics["Records"], 2.0);
        assert_eq!(metrics["Applied"], 5.0);
        assert_eq!(metrics["DrainedParked"], 2.0);
        assert_eq!(metrics["Conflicts"], 1.0);
        assert_eq!(metrics["CommitRetries"], 3.0);
        assert_eq!(metrics["OldestRecordAge"], 6000.0);
        assert_eq!(metrics["function"], "apply");
    }
}
