//! What Lambda's SQS event source mapping does, in process: long-poll the queue, hand the apply
//! handler batches of up to ten records shaped as SQS delivers them, delete what succeeded,
//! and leave failures to reappear after their visibility timeout.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apply::BatchSummary;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use futures_util::FutureExt as _;
use rockets::ports::QueueRecord;
use rockets::ports::{ChannelStore, MessageQueue, QueueConsumer, SourceQueue};
use tokio::sync::watch;

use crate::activity::Activity;
use crate::invoke::Invoker;

/// How long one receive waits for a message: the longest SQS long poll.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// How the event source has a batch applied: by the apply handler in this process, or by the
/// apply function behind a Lambda Invoke endpoint.
pub trait Applier<R>: Send + Sync {
    /// Each record's fate as `batchItemFailures`, and what the batch did when it is known; an
    /// error fails the whole batch, as a failed invocation does.
    fn apply(
        &self,
        records: &[R],
    ) -> impl Future<Output = Result<(SqsBatchResponse, Option<BatchSummary>), String>> + Send;
}

/// The apply handler, in process.
pub struct InProcess<V, S, D> {
    pub visibility: Arc<V>,
    pub store: Arc<S>,
    pub dead_letters: Arc<D>,
    pub settings: apply::Settings,
}

impl<V, S, D, R> Applier<R> for InProcess<V, S, D>
where
    V: SourceQueue,
    S: ChannelStore,
    D: MessageQueue,
    R: QueueRecord,
{
    async fn apply(
        &self,
        records: &[R],
    ) -> Result<(SqsBatchResponse, Option<BatchSummary>), String> {
        // A panicking handler fails its invocation, as in Lambda; the batch comes back.
        let outcome = AssertUnwindSafe(apply::apply_batch(
            &*self.store,
            &*self.visibility,
            &*self.dead_letters,
            &self.settings,
            records,
        ))
        .catch_unwind()
        .await;
        match outcome {
            Ok(Ok((response, summary))) => Ok((response, Some(summary))),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the apply handler panicked".into()),
        }
    }
}

/// The apply function behind an invoke endpoint.
impl Applier<SqsMessage> for Invoker {
    async fn apply(
        &self,
        records: &[SqsMessage],
    ) -> Result<(SqsBatchResponse, Option<BatchSummary>), String> {
        self.invoke(records)
            .await
            .map(|response| (response, None))
            .map_err(|error| error.to_string())
    }
}

/// Feeds batches from `source` to `applier` until `stop` turns true; a batch already received
/// is applied and deleted first.
pub async fn pump<C: QueueConsumer, A: Applier<C::Record>>(
    source: Arc<C>,
    applier: Arc<A>,
    batch_size: usize,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let received = tokio::select! {
            received = source.receive(batch_size, LONG_POLL) => received,
            _ = stop.changed() => return,
        };
        let records = match received {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let failed: HashSet<String> = match applier.apply(&records).await {
            Ok((response, summary)) => {
                if summary.is_none() {
                    tracing::debug!(
                        records = records.len(),
                        failed = response.batch_item_failures.len(),
                        "batch done"
                    );
                }
                if let Some(summary) = summary {
                    tracing::debug!(
                        records = records.len(),
                        applied = summary.applied,
                        parked = summary.parked,
                        duplicates = summary.duplicates,
                        conflicts = summary.conflicts,
                        refused = summary.refused,
                        failed = summary.failed,
                        "batch done"
                    );
                    activity.record_batch(&summary);
                }
                response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect()
            }
            Err(error) => {
                tracing::error!(%error, records = records.len(), "batch failed as a whole; it will be redelivered");
                continue;
            }
        };
        let done: Vec<&str> = records
            .iter()
            .filter(|r| r.message_id().is_some_and(|id| !failed.contains(id)))
            .filter_map(QueueRecord::receipt_handle)
            .collect();
        if let Err(error) = source.delete(&done).await {
            tracing::warn!(%error, "delete failed; those records will be delivered again");
        }
    }
}
