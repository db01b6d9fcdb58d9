//! In-process FIFO queue with the SQS FIFO semantics the pipeline relies on.
//!
//! - Messages of one group are delivered in order, and a group with messages in flight
//!   delivers nothing more until they are deleted or their visibility timeout ends.
//! - A deduplication id seen within the deduplication window is accepted and dropped.
//! - A message received `max_receive_count` times without being deleted moves to the
//!   dead-letter queue on its next receive, which unblocks its group.
//!
//! Opened on a [`DataDir`], it is durable: a send returns once the message and its
//! deduplication id are synced, a dead letter once it is written ahead of the delete that
//! follows it, and every later change (receives, deletes, dead letters, redrives, ids leaving
//! the window) is written with the next group commit.
//!
//! - `fifo.rs`: the semantics, as the state kept under the queue's lock.
//! - `durable.rs`: what a durable queue keeps in its data directory, and its recovery.
//! - `receive.rs`: how a receive waits, and the lingering that spares a wake-up.
//! - `ports.rs`: the queue as the pipeline's ports, and its dead-letter queue as one.

mod durable;
mod fifo;
mod ports;
mod receive;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use rockets::message::Envelope;
use rockets::ports::{Cause, QueueError, QueuedMessage};

use crate::disk::{DataDir, DataDirError, DiskError, Op, Space, Wait};
use fifo::{Message, State, now_ms};

pub use ports::DeadLetters;

#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub deduplication_window: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            // The template's queue's.
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 16,
            deduplication_window: Duration::from_secs(300),
        }
    }
}

/// A message handed to a consumer, with the attributes SQS would report.
#[derive(Clone, PartialEq, Debug)]
pub struct ReceivedMessage {
    pub message_id: Arc<str>,
    pub receipt_handle: String,
    pub group_id: Arc<str>,
    pub deduplication_id: Arc<str>,
    pub sequence_number: u64,
    pub receive_count: u32,
    pub sent_timestamp_ms: u64,
    pub first_receive_timestamp_ms: u64,
    body: Body,
}

impl ReceivedMessage {
    /// The body, as SQS would deliver it: the message's JSON.
    pub fn body(&self) -> &str {
        self.body.json()
    }

    /// The message, when it was sent in this process.
    pub fn message(&self) -> Option<&Envelope> {
        self.body.message()
    }
}

/// A message's body. Every message passes through the queue on its way to the store, and a
/// message sent in this process is handed to the apply handler in this process: the queue keeps
/// it as it was sent, and writes its JSON once something needs that (the disk, an operator, a
/// Lambda invocation). Writing and reading the JSON back cost about a fifth of a message's way
/// through the local server (BENCHMARKS.md, "What the hand-written paths pay").
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Body(Arc<Contents>);

#[derive(Debug, PartialEq)]
struct Contents {
    message: Option<Envelope>,
    json: OnceLock<Arc<str>>,
}

impl Body {
    fn of_json(json: impl Into<Arc<str>>) -> Self {
        Body(Arc::new(Contents {
            message: None,
            json: OnceLock::from(json.into()),
        }))
    }

    fn of_message(message: Envelope) -> Self {
        Body(Arc::new(Contents {
            message: Some(message),
            json: OnceLock::new(),
        }))
    }

    fn json(&self) -> &str {
        self.0.json.get_or_init(|| {
            let message = self
                .0
                .message
                .as_ref()
                .expect("a body holds its message or its JSON");
            message.to_json().into()
        })
    }

    fn message(&self) -> Option<&Envelope> {
        self.0.message.as_ref()
    }
}

/// What the queue holds right now.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct QueueDepth {
    pub visible: usize,
    pub in_flight: usize,
    pub dead: usize,
}

pub struct EmbeddedQueue {
    state: Mutex<State>,
    wake: Notify,
    lingering: receive::Lingering,
    config: QueueConfig,
    dir: Option<DataDir>,
}

/// The queue's state, locked; changes made through it are submitted to the data directory
/// when it is released, so they reach the directory in the order they were made.
struct Locked<'a> {
    guard: std::sync::MutexGuard<'a, State>,
    dir: Option<&'a DataDir>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir
            && !self.guard.journal.is_empty()
        {
            dir.submit_later(std::mem::take(&mut self.guard.journal));
        }
    }
}

fn unavailable(error: DiskError) -> QueueError {
    QueueError::Unavailable(Cause::new("data directory", error))
}

impl EmbeddedQueue {
    /// A queue in memory only.
    pub fn new(config: QueueConfig) -> Self {
        Self::with_state(config, State::default(), None)
    }

    /// The queue kept in `dir`, as it was when last written.
    pub fn open(config: QueueConfig, dir: &DataDir) -> Result<Self, DataDirError> {
        let mut state = durable::recover(&config, dir)?;
        dir.submit_later(std::mem::take(&mut state.journal));
        Ok(Self::with_state(config, state, Some(dir.clone())))
    }

    fn with_state(config: QueueConfig, state: State, dir: Option<DataDir>) -> Self {
        EmbeddedQueue {
            state: Mutex::new(state),
            wake: Notify::new(),
            lingering: receive::Lingering::default(),
            config,
            dir,
        }
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            dir: self.dir.as_ref(),
        }
    }

    /// Sends a message and returns once the queue has it (on disk, for a durable queue): its
    /// id, or `None` when its deduplication id was seen within the window, which SQS answers
    /// as a success too.
    pub async fn accept(&self, message: QueuedMessage) -> Result<Option<Arc<str>>, QueueError> {
        let QueuedMessage {
            group_id,
            deduplication_id,
            body,
        } = message;
        self.offer(&group_id, deduplication_id.into(), Body::of_json(body))
            .await
    }

    /// [`EmbeddedQueue::accept`] for a body already made.
    async fn offer(
        &self,
        group_id: &str,
        deduplication_id: Arc<str>,
        body: Body,
    ) -> Result<Option<Arc<str>>, QueueError> {
        let Some(dir) = &self.dir else {
            return Ok(self.send_body(group_id, deduplication_id, body));
        };
        let now = Instant::now();
        let submitted = {
            let mut state = self.lock();
            state.forget_old_ids(now);
            if state.see(&deduplication_id, now + self.config.deduplication_window) {
                let sequence = state.take_sequence();
                let sent_ms = now_ms();
                let until = sent_ms + self.config.deduplication_window.as_millis() as u64;
                let mut ops = std::mem::take(&mut state.journal);
                ops.push(Op::Put(
                    Space::Queue,
                    sequence.to_be_bytes().to_vec(),
                    durable::stored(group_id, sent_ms, &deduplication_id, body.json()),
                ));
                ops.push(Op::Put(
                    Space::Seen,
                    deduplication_id.as_bytes().to_vec(),
                    until.to_be_bytes().to_vec(),
                ));
                Some((dir.submit(ops, Wait::Synced), sequence, sent_ms))
            } else {
                None
            }
        };
        let Some((written, sequence, sent_ms)) = submitted else {
            // A resend. Its first copy may still be on its way to the disk: answer once
            // everything submitted before now is synced, so that this answer never promises
            // more than the disk holds.
            return dir
                .barrier()
                .done()
                .await
                .map(|()| None)
                .map_err(unavailable);
        };
        let synced = written.done().await;
        let mut state = self.lock();
        if let Err(error) = synced {
            state.seen.remove(&deduplication_id);
            return Err(unavailable(error));
        }
        let message = Message {
            sent_ms,
            ..Message::new(sequence, body, deduplication_id)
        };
        let id = state.enqueue(group_id, message);
        drop(state);
        self.wake_one();
        Ok(Some(id))
    }

    /// Enqueues a message in memory, or with the next group commit of a durable queue; its
    /// id, or `None` when its deduplication id was seen within the window.
    pub fn send_message(&self, message: QueuedMessage) -> Option<Arc<str>> {
        let body = Body::of_json(message.body);
        self.send_body(&message.group_id, message.deduplication_id.into(), body)
    }

    fn send_body(
        &self,
        group_id: &str,
        deduplication_id: Arc<str>,
        body: Body,
    ) -> Option<Arc<str>> {
        let now = Instant::now();
        let id = {
            let mut state = self.lock();
            state.forget_old_ids(now);
            if !state.see(&deduplication_id, now + self.config.deduplication_window) {
                return None;
            }
            state.push(group_id, deduplication_id, body)
        };
        self.wake_one();
        Some(id)
    }

    /// Receives up to `max` messages without waiting.
    pub fn try_receive(&self, max: usize) -> Vec<ReceivedMessage> {
        self.lock().take(max, Instant::now(), &self.config)
    }

    /// Deletes a received message. Returns false for a receipt whose visibility timeout has
    /// ended (the message may already be with another consumer), as SQS FIFO does.
    pub fn delete(&self, receipt_handle: &str) -> bool {
        let deleted = self.lock().delete(receipt_handle, Instant::now());
        if deleted == Some(true) {
            self.wake_one();
        }
        deleted.is_some()
    }

    /// Keeps a received message hidden for `hidden` from now, as SQS's ChangeMessageVisibility
    /// does; its group, which waits for it in any case, with it. Returns false for a receipt
    /// whose visibility timeout has ended.
    pub fn hide(&self, receipt_handle: &str, hidden: Duration) -> bool {
        self.lock().hide(receipt_handle, hidden, Instant::now())
    }

    pub fn depth(&self) -> QueueDepth {
        let state = self.lock();
        let in_flight: usize = state.groups.values().map(|g| g.in_flight).sum();
        let total: usize = state.groups.values().map(|g| g.messages.len()).sum();
        QueueDepth {
            visible: total - in_flight,
            in_flight,
            dead: state.dead.len(),
        }
    }

    /// The bodies in the dead-letter queue, oldest first.
    pub fn dead_letters(&self) -> Vec<String> {
        self.lock()
            .dead
            .iter()
            .map(|(_, m)| m.body.json().to_owned())
            .collect()
    }

    /// Moves every dead letter back to the end of its group, as a DLQ redrive does: a new
    /// message with a new deduplication id and a fresh receive count. Returns how many moved.
    pub fn redrive(&self) -> usize {
        let moved = self.lock().redrive();
        self.wake.notify_waiters();
        moved
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rockets::message::Envelope;
    use rockets::ports::MessageQueue as _;

    pub(crate) fn queued(group: &str, n: u32) -> QueuedMessage {
        QueuedMessage {
            group_id: group.into(),
            deduplication_id: format!("{n}:{group}"),
            body: format!("{group}/{n}"),
        }
    }

    pub(crate) fn queue(visibility_ms: u64, max_receive_count: u32) -> EmbeddedQueue {
        EmbeddedQueue::new(QueueConfig {
            visibility_timeout: Duration::from_millis(visibility_ms),
            max_receive_count,
            deduplication_window: Duration::from_secs(300),
        })
    }

    fn bodies(batch: &[ReceivedMessage]) -> Vec<&str> {
        batch.iter().map(ReceivedMessage::body).collect()
    }

    #[tokio::test]
    async fn groups_are_delivered_in_order_and_blocked_while_in_flight() {
        let q = queue(60_000, 5);
        for n in 1..=3 {
            q.send_message(queued("a", n));
        }
        q.send_message(queued("b", 1));
        let first = q.try_receive(2);
        assert_eq!(bodies(&first), ["a/1", "a/2"]);
        let second = q.try_receive(10);
        assert_eq!(
            bodies(&second),
            ["b/1"],
            "a is blocked while a/1 and a/2 are out"
        );
        assert!(q.delete(&first[0].receipt_handle));
        assert!(q.try_receive(10).is_empty(), "a/2 is still in flight");
        assert!(q.delete(&first[1].receipt_handle));
        assert_eq!(bodies(&q.try_receive(10)), ["a/3"]);
    }

    #[tokio::test]
    async fn duplicates_within_the_window_are_dropped() {
        let q = queue(60_000, 5);
        assert!(q.send_message(queued("a", 1)).is_some());
        assert!(q.send_message(queued("a", 1)).is_none());
        assert_eq!(q.depth().visible, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn undeleted_messages_come_back_after_the_visibility_timeout() {
        let q = queue(1_000, 5);
        q.send_message(queued("a", 1));
        q.send_message(queued("a", 2));
        let first = q.try_receive(10);
        assert_eq!(first.len(), 2);
        assert!(q.delete(&first[0].receipt_handle));
        tokio::time::advance(Duration::from_millis(1_001)).await;
        let again = q.try_receive(10);
        assert_eq!(bodies(&again), ["a/2"]);
        assert_eq!(again[0].receive_count, 2);
        assert!(!q.delete(&first[1].receipt_handle), "stale receipt");
        assert!(q.delete(&again[0].receipt_handle));
        assert_eq!(q.depth(), QueueDepth::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_received_too_often_moves_to_the_dead_letter_queue_and_unblocks_its_group() {
        let q = queue(10, 2);
        q.send_message(queued("a", 1));
        q.send_message(queued("a", 2));
        for _ in 0..2 {
            let batch = q.try_receive(1);
            assert_eq!(bodies(&batch), ["a/1"]);
            tokio::time::advance(Duration::from_millis(11)).await;
        }
        let batch = q.try_receive(1);
        assert_eq!(bodies(&batch), ["a/2"]);
        assert_eq!(q.dead_letters(), ["a/1"]);
        assert!(q.delete(&batch[0].receipt_handle));

        assert_eq!(q.redrive(), 1);
        let batch = q.try_receive(10);
        assert_eq!((bodies(&batch), batch[0].receive_count), (vec!["a/1"], 1));
    }

    fn durable(path: &std::path::Path) -> (DataDir, Arc<EmbeddedQueue>) {
        let dir = DataDir::open(path).unwrap();
        let config = QueueConfig {
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 2,
            deduplication_window: Duration::from_secs(300),
        };
        let q = EmbeddedQueue::open(config, &dir).unwrap();
        (dir, Arc::new(q))
    }

    #[tokio::test]
    async fn a_durable_queue_reopens_as_it_was_left() {
        let path = crate::disk::tests::scratch("queue");
        let refused = Envelope::parse(
            br#"{"metadata":{"channel":"d","messageNumber":9,"messageTime":"2022-02-02T19:39:05+01:00","messageType":"RocketSpeedIncreased"},"message":{"by":1}}"#,
        )
        .unwrap();
        let last_id = {
            let (_dir, q) = durable(&path);
            for n in 1..=3 {
                assert!(q.accept(queued("a", n)).await.unwrap().is_some());
            }
            for group in ["b", "c"] {
                assert!(q.accept(queued(group, 1)).await.unwrap().is_some());
            }
            DeadLetters(q.clone()).send(&refused).await.unwrap();
            let first = q.try_receive(10);
            assert_eq!(bodies(&first), ["a/1", "a/2", "a/3", "b/1", "c/1"]);
            assert!(q.delete(&first[0].receipt_handle), "a/1 done");
            assert!(q.delete(&first[3].receipt_handle), "b/1 done");
            // a/2, a/3 and c/1 come back, received twice: the limit.
            tokio::time::pause();
            tokio::time::advance(Duration::from_secs(61)).await;
            let second = q.try_receive(10);
            assert_eq!(bodies(&second), ["a/2", "a/3", "c/1"]);
            assert!(q.delete(&second[0].receipt_handle), "a/2 done");
            tokio::time::resume();
            first.iter().map(|m| m.message_id.clone()).max().unwrap()
        };
        let (dir, q) = durable(&path);
        let depth = q.depth();
        assert_eq!(
            (depth.visible, depth.in_flight, depth.dead),
            (2, 0, 1),
            "in-flight messages are visible again"
        );
        assert!(
            q.try_receive(10).is_empty(),
            "receive counts are kept: a/3 and c/1 were received twice, the limit"
        );
        assert_eq!(
            q.dead_letters(),
            [refused.to_json(), "a/3".into(), "c/1".into()]
        );
        assert!(
            q.accept(queued("a", 1)).await.unwrap().is_none(),
            "the deduplication window is kept"
        );
        let new = q.accept(queued("e", 1)).await.unwrap().unwrap();
        assert!(new > last_id, "ids are not reused: {new} after {last_id}");
        assert_eq!(q.redrive(), 3);
        drop((dir, q));
        let (_dir, q) = durable(&path);
        assert_eq!(q.depth().dead, 0, "the redrive is kept");
        let mut redriven: Vec<String> = q
            .try_receive(10)
            .iter()
            .map(|m| m.body().to_owned())
            .collect();
        redriven.sort();
        assert_eq!(redriven, ["a/3", "c/1", "e/1", &refused.to_json()]);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test]
    async fn a_message_left_in_a_durable_queue_counts_as_received_once_and_ids_go_on() {
        let path = crate::disk::tests::scratch("counts");
        let first_id = {
            let (_dir, q) = durable(&path);
            let id = q.accept(queued("a", 1)).await.unwrap().unwrap();
            assert!(q.accept(queued("b", 1)).await.unwrap().is_some());
            assert_eq!(
                q.try_receive(1)[0].receive_count,
                1,
                "a/1 is in flight at the stop"
            );
            id
        };
        let (_dir, q) = durable(&path);
        let again = q.try_receive(10);
        assert_eq!(bodies(&again), ["a/1", "b/1"]);
        assert!(
            again.iter().all(|m| m.receive_count == 2),
            "either may have been with a consumer when the process stopped"
        );
        let id = q.accept(queued("c", 1)).await.unwrap().unwrap();
        assert!(id > first_id && again.iter().all(|m| m.message_id < id));
        for m in &again {
            assert!(q.delete(&m.receipt_handle));
        }
        drop((_dir, q));
        let (_dir, q) = durable(&path);
        assert_eq!(
            bodies(&q.try_receive(10)),
            ["c/1"],
            "deleted messages stay deleted"
        );
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test]
    async fn with_a_single_receive_allowed_a_reopened_queue_still_delivers_once() {
        let path = crate::disk::tests::scratch("single");
        let config = QueueConfig {
            max_receive_count: 1,
            ..QueueConfig::default()
        };
        {
            let dir = DataDir::open(&path).unwrap();
            let q = EmbeddedQueue::open(config, &dir).unwrap();
            assert!(q.accept(queued("a", 1)).await.unwrap().is_some());
        }
        let dir = DataDir::open(&path).unwrap();
        let q = EmbeddedQueue::open(config, &dir).unwrap();
        assert_eq!(bodies(&q.try_receive(10)), ["a/1"]);
        drop((q, dir));
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_kept_only_while_its_group_is_in_flight() {
        let q = queue(1_000, 5);
        for n in 1..=200 {
            q.send_message(queued(&format!("g{}", n % 7), n));
        }
        let mut handled = 0;
        while handled < 200 {
            let batch = q.try_receive(10);
            assert!(!batch.is_empty());
            // One message of every batch is hidden a while longer first.
            assert!(q.hide(&batch[0].receipt_handle, Duration::from_secs(5)));
            for m in &batch {
                assert!(q.delete(&m.receipt_handle));
            }
            handled += batch.len();
        }
        let state = q.lock();
        assert!(
            state.leases.is_empty(),
            "{} leases left",
            state.leases.len()
        );
        assert!(state.ready.is_empty());
        assert!(
            state
                .groups
                .values()
                .all(|g| g.messages.is_empty() && g.in_flight == 0)
        );
    }

    #[tokio::test]
    async fn a_message_sent_in_process_is_handed_out_as_it_was_sent_and_as_its_json() {
        let q = queue(60_000, 5);
        let sent = Envelope::parse(
            br#"{"metadata":{"channel":"m","messageNumber":2,"messageTime":"2022-02-02T19:39:05.5+01:00","messageType":"RocketMissionChanged"},"message":{"newMission":"ARTEMIS"}}"#,
        )
        .unwrap();
        q.send(&sent).await.unwrap();
        q.send(&sent).await.unwrap();
        let batch = q.try_receive(10);
        assert_eq!(batch.len(), 1, "the resend was dropped");
        assert_eq!(batch[0].message(), Some(&sent));
        assert_eq!(batch[0].body(), sent.to_json());
        assert_eq!(&*batch[0].group_id, "m");
        assert_eq!(&*batch[0].deduplication_id, "2:m");
        assert_eq!(
            batch[0].clone().into_record().body.as_deref(),
            Some(&*sent.to_json())
        );
    }
}
