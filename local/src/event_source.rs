//! What Lambda's SQS event source mapping does, in process: long-poll the queue, hand the apply
//! handler batches of up to ten records shaped as SQS delivers them, delete what succeeded,
//! and leave failures to reappear after their visibility timeout.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rockets::ports::{ChannelStore, MessageQueue, QueueConsumer, RecordVisibility};
use tokio::sync::watch;

use crate::activity::Activity;

/// How long one receive waits for a message: the longest SQS long poll.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// Feeds batches from `source` to the apply handler until `stop` turns true; a batch already
/// received is applied and deleted first.
pub async fn pump<C: QueueConsumer + RecordVisibility, S: ChannelStore, D: MessageQueue>(
    source: Arc<C>,
    store: Arc<S>,
    dead_letters: Arc<D>,
    batch_size: usize,
    settings: apply::Settings,
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
        let handles: Vec<(String, String)> = records
            .iter()
            .filter_map(|r| Some((r.message_id.clone()?, r.receipt_handle.clone()?)))
            .collect();
        // A panicking handler fails its invocation, as in Lambda; the batch comes back.
        let outcome = AssertUnwindSafe(apply::apply_batch_backing_off(
            &*store,
            &*source,
            &*dead_letters,
            &settings,
            &records,
        ))
        .catch_unwind()
        .await;
        let failed: HashSet<String> = match outcome {
            Ok(Ok((response, summary))) => {
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
                response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect()
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "batch failed as a whole");
                continue;
            }
            Err(_) => {
                tracing::error!("apply handler panicked; the batch will be redelivered");
                continue;
            }
        };
        let done: Vec<String> = handles
            .into_iter()
            .filter(|(id, _)| !failed.contains(id))
            .map(|(_, handle)| handle)
            .collect();
        if let Err(error) = source.delete(done).await {
            tracing::warn!(%error, "delete failed; those records will be delivered again");
        }
    }
}
