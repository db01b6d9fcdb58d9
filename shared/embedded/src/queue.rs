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
//! follows it, and every later change (receives, deletes, dead letters,
//! redrives, ids leaving the window) is written with the next group commit. Leases are not
//! written: the consumers holding them ran in the process that stopped, so at open every
//! message is visible again.
//!
//! Every message passes through here twice on its way to the store, so the queue copies
//! little: a message sent in this process keeps the message itself, and a queue in memory
//! writes its JSON only if something reads it (the apply handler in this process reads the
//! message; an operator, a Lambda invocation or the disk read the JSON); ids are shared, not
//! copied, between the queue and what it hands out.

use foldhash::HashMap;
use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use aws_lambda_events::event::sqs::SqsMessage;

use rockets::message::{Envelope, push_decimal};
use rockets::ports::{
    Cause, MessageQueue, QueueConsumer, QueueError, QueueRecord, QueuedMessage, RecordVisibility,
    deduplication_id,
};

use crate::disk::{DataDir, DataDirError, DiskError, Op, Space, Wait};

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
            max_receive_count: 5,
            deduplication_window: Duration::from_secs(300),
        }
    }
}

/// A message's body: its JSON, or the message itself when it was sent in this process (a
/// durable queue keeps both, since the disk needs the JSON).
#[derive(Clone, PartialEq, Debug)]
struct Body {
    json: Option<Arc<str>>,
    message: Option<Envelope>,
}

impl Body {
    fn of_json(json: impl Into<Arc<str>>) -> Self {
        Body {
            json: Some(json.into()),
            message: None,
        }
    }

    /// The JSON, written from the message if the queue has not needed it before.
    fn json(&self) -> Arc<str> {
        match (&self.json, &self.message) {
            (Some(json), _) => json.clone(),
            (None, Some(message)) => message.to_json().into(),
            (None, None) => unreachable!("a body holds its JSON or its message"),
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
    /// The body's JSON, once something read it.
    json: OnceLock<Arc<str>>,
}

impl ReceivedMessage {
    /// The body, as SQS would deliver it.
    pub fn body(&self) -> &str {
        self.json.get_or_init(|| self.body.json())
    }

    /// The message the body holds, as it was sent in this process; a message read back from a
    /// data directory, or sent as JSON, has only its body.
    pub fn message(&self) -> Option<&Envelope> {
        self.body.message.as_ref()
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
    /// Whether a receive is lingering, looking for the next message without sleeping: a send
    /// then wakes no one, since that receive will find it.
    lingering: AtomicBool,
    config: QueueConfig,
    dir: Option<DataDir>,
}

struct Message {
    id: Arc<str>,
    sequence: u64,
    body: Body,
    deduplication_id: Arc<str>,
    receive_count: u32,
    sent_ms: u64,
    first_receive_ms: Option<u64>,
}

struct Group {
    id: Arc<str>,
    messages: VecDeque<Message>,
    /// The first `in_flight` messages are out with a consumer under `lease`.
    in_flight: usize,
    lease: u64,
    /// When the lease ends, as entered in `State::leases`.
    deadline: Option<Instant>,
    /// Whether the group is in `State::ready`.
    ready: bool,
}

impl Group {
    fn new(id: Arc<str>) -> Self {
        Group {
            id,
            messages: VecDeque::new(),
            in_flight: 0,
            lease: 0,
            deadline: None,
            ready: false,
        }
    }

    /// Whether a consumer may take its next messages: it has some, and none are out.
    fn deliverable(&self) -> bool {
        !self.ready && self.in_flight == 0 && !self.messages.is_empty()
    }
}

#[derive(Default)]
struct State {
    /// Whether changes are written to a data directory.
    durable: bool,
    /// Changes for the data directory, made under the lock and submitted when it is released,
    /// so they reach the directory in order.
    journal: Vec<Op>,
    /// Every group that has had a message, kept when empty: a channel sends again.
    groups: HashMap<Arc<str>, Group>,
    /// Groups with messages and nothing in flight, in the order they became so.
    ready: VecDeque<Arc<str>>,
    /// The leases out with consumers, by when they end: one entry per group in flight.
    leases: BTreeSet<(Instant, u64, Arc<str>)>,
    seen: HashMap<Arc<str>, Instant>,
    seen_order: VecDeque<(Instant, Arc<str>)>,
    dead: Vec<(Arc<str>, Message)>,
    next_sequence: u64,
    /// Every sequence number up to this one may have been used, as the data directory says; a
    /// restart carries on above it, so ids are never reused.
    reserved_sequence: u64,
    next_lease: u64,
}

/// How long a receive that finds nothing looks again before it sleeps until a send wakes it.
const LINGER: Duration = Duration::from_micros(50);

/// The one lingering receive's claim on [`EmbeddedQueue::lingering`], given up when dropped,
/// also when the receive is cancelled, so that sends never stop waking receives.
struct Lingering<'q>(&'q AtomicBool);

impl<'q> Lingering<'q> {
    fn take(flag: &'q AtomicBool) -> Option<Self> {
        (!flag.swap(true, Ordering::SeqCst)).then_some(Lingering(flag))
    }
}

impl Drop for Lingering<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Sequence numbers reserved in the data directory at a time, so that a message's send writes
/// no counter of its own.
const SEQUENCE_BLOCK: u64 = 4096;

/// Receive counts are written from this receive on: a message at the data directory's open is
/// taken to have been received once already (its last process may have stopped while it was
/// being applied), so only the counts above that need the disk.
const FIRST_RECEIPT: u32 = 2;

/// `00000000000000000042-local`: sequence numbers as fixed-width ids, so ids sort as numbers.
fn message_id(sequence: u64) -> Arc<str> {
    let mut id = String::with_capacity(26);
    push_decimal(&mut id, u128::from(sequence), 20);
    id.push_str("-local");
    id.into()
}

/// `lease:sequence:group`, which [`State::leased`] reads back.
fn receipt_handle(lease: u64, sequence: u64, group_id: &str) -> String {
    let mut handle = String::with_capacity(42 + group_id.len());
    push_decimal(&mut handle, u128::from(lease), 1);
    handle.push(':');
    push_decimal(&mut handle, u128::from(sequence), 1);
    handle.push(':');
    handle.push_str(group_id);
    handle
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl State {
    /// Puts a group in the ready line if a consumer may take from it.
    fn mark_ready(&mut self, group_id: &str) {
        if let Some(group) = self.groups.get_mut(group_id)
            && group.deliverable()
        {
            group.ready = true;
            self.ready.push_back(group.id.clone());
        }
    }

    fn end_expired_leases(&mut self, now: Instant) {
        while let Some(first) = self.leases.first() {
            if first.0 > now {
                break;
            }
            let (_, lease, group_id) = self.leases.pop_first().expect("looked at");
            if let Some(group) = self.groups.get_mut(&group_id)
                && group.lease == lease
                && group.in_flight > 0
            {
                group.in_flight = 0;
                group.deadline = None;
                self.mark_ready(&group_id);
            }
        }
    }

    /// Remembers a deduplication id until `expires`; false if it is already within its window.
    fn see(&mut self, deduplication_id: &Arc<str>, expires: Instant) -> bool {
        match self.seen.entry(deduplication_id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(expires);
                self.seen_order
                    .push_back((expires, deduplication_id.clone()));
                true
            }
        }
    }

    fn forget_old_ids(&mut self, now: Instant) {
        while let Some((expires, _)) = self.seen_order.front() {
            if *expires > now {
                break;
            }
            let (expires, id) = self.seen_order.pop_front().expect("peeked");
            if self.seen.get(&id) == Some(&expires) {
                self.seen.remove(&id);
                if self.durable {
                    self.journal
                        .push(Op::Delete(Space::Seen, id.as_bytes().to_vec()));
                }
            }
        }
    }

    /// The next message's sequence number; in a data directory, it reserves the next block when
    /// this one is used up.
    fn take_sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        if self.durable && self.next_sequence > self.reserved_sequence {
            self.reserved_sequence = self.next_sequence + SEQUENCE_BLOCK;
            self.journal.push(sequence_record(self.reserved_sequence));
        }
        self.next_sequence
    }

    /// A new message under the next sequence number, appended to its group; its id.
    fn push(&mut self, group_id: &str, deduplication_id: Arc<str>, body: Body) -> Arc<str> {
        let sequence = self.take_sequence();
        let message = Message {
            id: message_id(sequence),
            sequence,
            body,
            deduplication_id,
            receive_count: 0,
            sent_ms: now_ms(),
            first_receive_ms: None,
        };
        if self.durable {
            self.journal.push(record(Space::Queue, group_id, &message));
        }
        self.enqueue(group_id, message)
    }

    /// Appends `message` to its group; returns its id.
    fn enqueue(&mut self, group_id: &str, message: Message) -> Arc<str> {
        let id = message.id.clone();
        let group = match self.groups.get_mut(group_id) {
            Some(group) => group,
            None => {
                let key: Arc<str> = group_id.into();
                self.groups
                    .entry(key.clone())
                    .or_insert_with(|| Group::new(key))
            }
        };
        group.messages.push_back(message);
        if group.deliverable() {
            group.ready = true;
            self.ready.push_back(group.id.clone());
        }
        id
    }

    fn forget(&mut self, message: &Message) {
        if self.durable {
            let key = message.sequence.to_be_bytes().to_vec();
            if message.receive_count >= FIRST_RECEIPT {
                self.journal.push(Op::Delete(Space::Receipts, key.clone()));
            }
            self.journal.push(Op::Delete(Space::Queue, key));
        }
    }

    fn bury(&mut self, group_id: Arc<str>, message: Message) {
        self.forget(&message);
        if self.durable {
            self.journal.push(record(Space::Dead, &group_id, &message));
        }
        self.dead.push((group_id, message));
    }
}

/// The group and sequence number a receipt handle names, if its lease is still running (after
/// [`State::end_expired_leases`]).
fn leased<'g>(
    groups: &'g mut HashMap<Arc<str>, Group>,
    receipt_handle: &str,
) -> Option<(&'g mut Group, u64)> {
    let (lease, rest) = number_before_colon(receipt_handle)?;
    let (sequence, group_id) = number_before_colon(rest)?;
    let group = groups.get_mut(group_id)?;
    (group.lease == lease && group.in_flight > 0).then_some((group, sequence))
}

/// The decimal number that `text` starts with up to its first `:`, and what follows the `:`.
fn number_before_colon(text: &str) -> Option<(u64, &str)> {
    let (digits, rest) = text.split_once(':')?;
    Some((digits.parse().ok()?, rest))
}

/// A message as the data directory keeps it in [`Space::Queue`] and [`Space::Dead`].
struct Stored {
    group: String,
    deduplication_id: String,
    body: String,
    sent_ms: u64,
}

/// `message` as kept under its sequence number in `space` ([`Space::Queue`] or [`Space::Dead`]).
fn record(space: Space, group_id: &str, message: &Message) -> Op {
    Op::Put(
        space,
        message.sequence.to_be_bytes().to_vec(),
        stored(
            group_id,
            message.sent_ms,
            &message.deduplication_id,
            &message.body.json(),
        ),
    )
}

/// The time it was sent (8 bytes), its group and deduplication id (each a 2-byte length and
/// the text), then its body: copied as they are, since a body is JSON that a JSON record would
/// escape.
fn stored(group_id: &str, sent_ms: u64, deduplication_id: &str, body: &str) -> Vec<u8> {
    let (group, id) = (group_id.as_bytes(), deduplication_id.as_bytes());
    let mut value = Vec::with_capacity(12 + group.len() + id.len() + body.len());
    value.extend_from_slice(&sent_ms.to_be_bytes());
    for text in [group, id] {
        let len = u16::try_from(text.len()).expect("group and deduplication ids are short");
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(text);
    }
    value.extend_from_slice(body.as_bytes());
    value
}

impl Stored {
    fn parse(value: &[u8]) -> Option<Stored> {
        let (sent, mut rest) = value.split_first_chunk::<8>()?;
        let mut text = || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let (text, tail) = (tail.get(..len)?, tail.get(len..)?);
            rest = tail;
            String::from_utf8(text.to_vec()).ok()
        };
        let (group, deduplication_id) = (text()?, text()?);
        Some(Stored {
            group,
            deduplication_id,
            body: String::from_utf8(rest.to_vec()).ok()?,
            sent_ms: u64::from_be_bytes(*sent),
        })
    }
}

const SEQUENCE_KEY: &[u8] = b"sequence";

fn sequence_record(next: u64) -> Op {
    Op::Put(
        Space::Meta,
        SEQUENCE_KEY.to_vec(),
        next.to_be_bytes().to_vec(),
    )
}

fn receipt(message: &Message) -> Op {
    let mut value = message.receive_count.to_be_bytes().to_vec();
    value.extend_from_slice(&message.first_receive_ms.unwrap_or(0).to_be_bytes());
    Op::Put(
        Space::Receipts,
        message.sequence.to_be_bytes().to_vec(),
        value,
    )
}

/// The queue's state, locked; changes made through it are submitted to the data directory
/// when it is released.
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

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl EmbeddedQueue {
    /// A queue in memory only.
    pub fn new(config: QueueConfig) -> Self {
        EmbeddedQueue {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            lingering: AtomicBool::new(false),
            config,
            dir: None,
        }
    }

    /// The queue kept in `dir`, as it was when last written.
    pub fn open(config: QueueConfig, dir: &DataDir) -> Result<Self, DataDirError> {
        let damaged = |detail: String| DataDirError::Damaged {
            path: dir.path().to_path_buf(),
            detail,
        };
        let read = |space| dir.all(space).map_err(|e| damaged(e.to_string()));
        let parse = |key: &[u8], value: &[u8]| -> Result<(u64, Stored), DataDirError> {
            let sequence =
                be_u64(key).ok_or_else(|| damaged("a queue key is not a number".into()))?;
            let stored = Stored::parse(value)
                .ok_or_else(|| damaged("a queued message is cut short".into()))?;
            Ok((sequence, stored))
        };
        let message = |sequence: u64, stored: Stored| Message {
            id: message_id(sequence),
            sequence,
            body: Body::of_json(stored.body),
            deduplication_id: stored.deduplication_id.into(),
            receive_count: 0,
            sent_ms: stored.sent_ms,
            first_receive_ms: None,
        };
        let mut state = State {
            durable: true,
            ..State::default()
        };
        let mut receipts: HashMap<u64, (u32, u64)> = HashMap::default();
        for (key, value) in read(Space::Receipts)? {
            let receipt = value.split_first_chunk::<4>().and_then(|(count, first)| {
                Some((be_u64(&key)?, (u32::from_be_bytes(*count), be_u64(first)?)))
            });
            match receipt {
                // Only counts of FIRST_RECEIPT and above are kept, and deleted with their message.
                Some((sequence, receipt)) if receipt.0 >= FIRST_RECEIPT => {
                    receipts.insert(sequence, receipt);
                }
                _ => state.journal.push(Op::Delete(Space::Receipts, key)),
            }
        }
        let mut highest = dir
            .get(Space::Meta, SEQUENCE_KEY)
            .map_err(|e| damaged(e.to_string()))?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0);
        for (key, value) in read(Space::Queue)? {
            let (sequence, stored) = parse(&key, &value)?;
            highest = highest.max(sequence);
            let group = stored.group.clone();
            let mut message = message(sequence, stored);
            // Never so many that a message is refused without one more delivery.
            message.receive_count =
                (FIRST_RECEIPT - 1).min(config.max_receive_count.saturating_sub(1));
            if let Some((count, first)) = receipts.get(&sequence) {
                message.receive_count = *count;
                message.first_receive_ms = (*first > 0).then_some(*first);
            }
            state.enqueue(&group, message);
        }
        for (key, value) in read(Space::Dead)? {
            let (sequence, stored) = parse(&key, &value)?;
            highest = highest.max(sequence);
            let group: Arc<str> = stored.group.as_str().into();
            state.dead.push((group, message(sequence, stored)));
        }
        let (now, wall) = (Instant::now(), now_ms());
        let mut seen: Vec<(Instant, Arc<str>)> = Vec::new();
        for (key, value) in read(Space::Seen)? {
            let id = String::from_utf8(key)
                .map_err(|_| damaged("a deduplication id is not UTF-8".into()))?;
            match be_u64(&value) {
                Some(until) if until > wall => {
                    seen.push((now + Duration::from_millis(until - wall), id.into()))
                }
                _ => state.journal.push(Op::Delete(Space::Seen, id.into_bytes())),
            }
        }
        seen.sort();
        for (expires, id) in seen {
            state.see(&id, expires);
        }
        state.next_sequence = highest;
        state.reserved_sequence = highest;
        dir.submit_later(std::mem::take(&mut state.journal));
        Ok(EmbeddedQueue {
            state: Mutex::new(state),
            wake: Notify::new(),
            lingering: AtomicBool::new(false),
            config,
            dir: Some(dir.clone()),
        })
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            dir: self.dir.as_ref(),
        }
    }

    /// Sends a message and returns once the queue has it (on disk, for a durable queue): its
    /// id, or `None` when its deduplication id was seen within the window.
    pub async fn accept(&self, message: QueuedMessage) -> Result<Option<Arc<str>>, QueueError> {
        self.offer(
            &message.group_id,
            message.deduplication_id.into(),
            Body::of_json(message.body),
        )
        .await
    }

    /// [`EmbeddedQueue::accept`] for a message already made into a body.
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
                    stored(group_id, sent_ms, &deduplication_id, &body.json()),
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
        let id = state.enqueue(
            group_id,
            Message {
                id: message_id(sequence),
                sequence,
                body,
                deduplication_id,
                receive_count: 0,
                sent_ms,
                first_receive_ms: None,
            },
        );
        drop(state);
        self.wake_one();
        Ok(Some(id))
    }

    /// Enqueues a message; returns its id, or `None` when its deduplication id was seen
    /// within the window (the send still succeeds, as with SQS).
    pub fn send_message(&self, message: QueuedMessage) -> Option<Arc<str>> {
        self.send_body(
            &message.group_id,
            message.deduplication_id.into(),
            Body::of_json(message.body),
        )
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
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        state.end_expired_leases(now);
        let mut batch = Vec::new();
        while batch.len() < max {
            let Some(group_id) = state.ready.pop_front() else {
                break;
            };
            state.next_lease += 1;
            let lease = state.next_lease;
            let (mut buried, mut noted) = (Vec::new(), Vec::new());
            let durable = state.durable;
            let group = state.groups.get_mut(&group_id).expect("ready groups exist");
            group.ready = false;
            while batch.len() < max && group.in_flight < group.messages.len() {
                let message = &mut group.messages[group.in_flight];
                if message.receive_count >= self.config.max_receive_count {
                    buried.push(group.messages.remove(group.in_flight).expect("in range"));
                    continue;
                }
                message.receive_count += 1;
                let first = *message.first_receive_ms.get_or_insert_with(now_ms);
                if durable && message.receive_count >= FIRST_RECEIPT {
                    noted.push(receipt(message));
                }
                batch.push(ReceivedMessage {
                    message_id: message.id.clone(),
                    receipt_handle: receipt_handle(lease, message.sequence, &group_id),
                    group_id: group_id.clone(),
                    deduplication_id: message.deduplication_id.clone(),
                    sequence_number: message.sequence,
                    receive_count: message.receive_count,
                    sent_timestamp_ms: message.sent_ms,
                    first_receive_timestamp_ms: first,
                    body: message.body.clone(),
                    json: OnceLock::new(),
                });
                group.in_flight += 1;
            }
            if group.in_flight > 0 {
                group.lease = lease;
                let deadline = now + self.config.visibility_timeout;
                group.deadline = Some(deadline);
                state.leases.insert((deadline, lease, group_id.clone()));
            }
            state.journal.append(&mut noted);
            for message in buried {
                state.bury(group_id.clone(), message);
            }
        }
        batch
    }

    /// Receives up to `max` messages, waiting up to `wait` for the first one (long polling).
    pub async fn receive(&self, max: usize, wait: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + wait;
        // Before sleeping on the queue, one receive at a time looks again for a moment, as
        // Go's scheduler spins before it parks: under load the next message is usually that
        // close, and taking it without a wake-up saves the sender a thread hand-off (on a
        // virtual machine, a vCPU's way out of idle, tens of microseconds).
        if let Some(lingering) = Lingering::take(&self.lingering) {
            let batch = self.linger(max).await;
            drop(lingering);
            if !batch.is_empty() {
                return self.handed_out(batch);
            }
        }
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.try_receive(max);
            let now = Instant::now();
            if !batch.is_empty() {
                return self.handed_out(batch);
            }
            if now >= deadline {
                return batch;
            }
            let next_expiry = self.lock().leases.first().map(|(at, _, _)| *at);
            let until = next_expiry.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Looks for messages for [`LINGER`] without sleeping; an empty batch if none came.
    async fn linger(&self, max: usize) -> Vec<ReceivedMessage> {
        let until = std::time::Instant::now() + LINGER;
        loop {
            let batch = self.try_receive(max);
            if !batch.is_empty() || std::time::Instant::now() >= until {
                return batch;
            }
            // The thread first offers its vCPU to any other thread waiting for one (the sender
            // of the next message, often): without that, a busy machine made it wait for the
            // end of this thread's time slice. With nothing waiting, it comes straight back.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }

    /// Wakes a sleeping receive, unless one is lingering and will find the news itself.
    fn wake_one(&self) {
        if !self.lingering.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// A batch a receive hands out. One message wakes one poller; if it left work behind, the
    /// wake passes on.
    fn handed_out(&self, batch: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
        if !self.lock().ready.is_empty() {
            self.wake.notify_one();
        }
        batch
    }

    /// Deletes a received message. Returns false for a receipt whose visibility timeout has
    /// ended (the message may already be with another consumer), as SQS FIFO does.
    pub fn delete(&self, receipt_handle: &str) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.end_expired_leases(Instant::now());
        let Some((group, sequence)) = leased(&mut state.groups, receipt_handle) else {
            return false;
        };
        let Some(at) = group
            .messages
            .iter()
            .take(group.in_flight)
            .position(|m| m.sequence == sequence)
        else {
            return false;
        };
        let message = group.messages.remove(at).expect("in range");
        group.in_flight -= 1;
        let mut woken = false;
        if group.in_flight == 0 {
            let deadline = group.deadline.take().expect("a lease");
            state
                .leases
                .remove(&(deadline, group.lease, group.id.clone()));
            if group.deliverable() {
                group.ready = true;
                state.ready.push_back(group.id.clone());
                woken = true;
            }
        }
        state.forget(&message);
        drop(guard);
        if woken {
            self.wake_one();
        }
        true
    }

    /// Keeps a received message hidden for `hidden` from now, as SQS's ChangeMessageVisibility
    /// does; its group, which waits for it in any case, with it.
    /// Returns false for a receipt whose visibility timeout has ended.
    pub fn hide(&self, receipt_handle: &str, hidden: Duration) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = Instant::now();
        state.end_expired_leases(now);
        let Some((group, _)) = leased(&mut state.groups, receipt_handle) else {
            return false;
        };
        // The group waits for its longest-hidden message, as a FIFO group in SQS does.
        let before = group.deadline.expect("a lease");
        let deadline = before.max(now + hidden);
        group.deadline = Some(deadline);
        let (lease, id) = (group.lease, group.id.clone());
        state.leases.remove(&(before, lease, id.clone()));
        state.leases.insert((deadline, lease, id));
        true
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
            .map(|(_, m)| m.body.json().to_string())
            .collect()
    }

    /// Moves every dead letter back to the end of its group, as a DLQ redrive does: a new
    /// message with a new deduplication id and a fresh receive count. Returns how many moved.
    pub fn redrive(&self) -> usize {
        let moved = {
            let mut state = self.lock();
            let dead = std::mem::take(&mut state.dead);
            let moved = dead.len();
            for (group_id, message) in dead {
                if state.durable {
                    let key = message.sequence.to_be_bytes().to_vec();
                    state.journal.push(Op::Delete(Space::Dead, key));
                }
                let deduplication_id =
                    format!("{}/redrive-{}", message.deduplication_id, message.id);
                state.push(&group_id, deduplication_id.into(), message.body);
            }
            moved
        };
        self.wake.notify_waiters();
        moved
    }
}

/// An [`EmbeddedQueue`]'s dead-letter queue as a queue to send to, the way the apply side
/// sends a message it refuses ([`QueuedMessage::refused`]). A deduplication id already there is
/// not added again.
#[derive(Clone)]
pub struct DeadLetters(pub Arc<EmbeddedQueue>);

impl MessageQueue for DeadLetters {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        let queued = QueuedMessage::refused(message);
        let written = {
            let mut state = self.0.lock();
            if state
                .dead
                .iter()
                .any(|(_, m)| *m.deduplication_id == *queued.deduplication_id)
            {
                return Ok(());
            }
            let sequence = state.take_sequence();
            let message = Message {
                id: message_id(sequence),
                sequence,
                body: Body::of_json(queued.body),
                deduplication_id: queued.deduplication_id.into(),
                receive_count: 0,
                sent_ms: now_ms(),
                first_receive_ms: None,
            };
            let written = self.0.dir.as_ref().map(|dir| {
                let mut ops = std::mem::take(&mut state.journal);
                ops.push(record(Space::Dead, &queued.group_id, &message));
                // Ahead of the delete of the record that brought it, which is what needs it.
                dir.submit(ops, Wait::Written)
            });
            state.dead.push((queued.group_id.into(), message));
            written
        };
        match written {
            Some(written) => written.done().await.map_err(unavailable),
            None => Ok(()),
        }
    }
}

impl MessageQueue for EmbeddedQueue {
    /// In memory, the message is kept as it is, its JSON written only if something reads it;
    /// a durable queue writes the JSON to disk.
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        let body = Body {
            json: self.dir.is_some().then(|| message.to_json().into()),
            message: Some(message.clone()),
        };
        let deduplication_id = deduplication_id(&message.channel, message.number).into();
        self.offer(message.channel.as_str(), deduplication_id, body)
            .await
            .map(drop)
    }
}

impl QueueConsumer for EmbeddedQueue {
    type Record = ReceivedMessage;

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(EmbeddedQueue::receive(self, max, wait).await)
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<(), QueueError> {
        for &handle in receipt_handles {
            if !EmbeddedQueue::delete(self, handle) {
                tracing::warn!(handle, "delete refused: the visibility timeout had ended");
            }
        }
        Ok(())
    }
}

impl RecordVisibility for EmbeddedQueue {
    async fn hide(&self, records: Vec<(String, Duration)>) -> Result<(), QueueError> {
        for (handle, hidden) in records {
            if !EmbeddedQueue::hide(self, &handle, hidden) {
                tracing::warn!(
                    handle,
                    "visibility change refused: the visibility timeout had ended"
                );
            }
        }
        Ok(())
    }
}

/// The record the apply handler reads in process: what [`ReceivedMessage::into_record`] would
/// tell it, without building the map of attributes, and the message itself when it was sent in
/// this process.
impl QueueRecord for ReceivedMessage {
    fn message_id(&self) -> Option<&str> {
        Some(&self.message_id)
    }

    fn receipt_handle(&self) -> Option<&str> {
        Some(&self.receipt_handle)
    }

    fn group_id(&self) -> Option<&str> {
        Some(&self.group_id)
    }

    fn receive_count(&self) -> Option<u32> {
        Some(self.receive_count)
    }

    fn sent_ms(&self) -> Option<i64> {
        i64::try_from(self.sent_timestamp_ms).ok()
    }

    fn trace_header(&self) -> Option<&str> {
        None
    }

    fn deduplication_id(&self) -> Option<&str> {
        Some(&self.deduplication_id)
    }

    fn body(&self) -> Option<&str> {
        Some(ReceivedMessage::body(self))
    }

    fn message(&self) -> Result<Cow<'_, Envelope>, String> {
        match ReceivedMessage::message(self) {
            Some(message) => Ok(Cow::Borrowed(message)),
            None => Envelope::parse(self.body().as_bytes())
                .map(Cow::Owned)
                .map_err(|e| e.to_string()),
        }
    }
}

impl ReceivedMessage {
    /// The record as the SQS event source hands it to Lambda.
    pub fn into_record(self) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.body = Some(self.body().to_owned());
        record.attributes = [
            ("ApproximateReceiveCount", self.receive_count.to_string()),
            ("SentTimestamp", self.sent_timestamp_ms.to_string()),
            ("SenderId", "000000000000".to_string()),
            (
                "ApproximateFirstReceiveTimestamp",
                self.first_receive_timestamp_ms.to_string(),
            ),
            ("SequenceNumber", format!("{:020}", self.sequence_number)),
            ("MessageGroupId", self.group_id.to_string()),
            ("MessageDeduplicationId", self.deduplication_id.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        record.message_id = Some(self.message_id.to_string());
        record.receipt_handle = Some(self.receipt_handle);
        record.event_source = Some("aws:sqs".into());
        record.event_source_arn = Some("arn:aws:sqs:local:000000000000:rockets.fifo".into());
        record.aws_region = Some("local".into());
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(group: &str, n: u32) -> QueuedMessage {
        QueuedMessage {
            group_id: group.into(),
            deduplication_id: format!("{n}:{group}"),
            body: format!("{group}/{n}"),
        }
    }

    fn queue(visibility_ms: u64, max_receive_count: u32) -> EmbeddedQueue {
        EmbeddedQueue::new(QueueConfig {
            visibility_timeout: Duration::from_millis(visibility_ms),
            max_receive_count,
            deduplication_window: Duration::from_secs(300),
        })
    }

    fn bodies(batch: &[ReceivedMessage]) -> Vec<&str> {
        batch.iter().map(ReceivedMessage::body).collect()
    }

    /// Sends skip the wake-up while a receive lingers; no message may be left waiting for a
    /// receive's long poll to end by that, whatever the interleaving of senders, lingering and
    /// sleeping receives and deletes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_reaches_a_receive_at_once_while_one_lingers_and_others_sleep() {
        let q = Arc::new(queue(60_000, 5));
        let (sender_count, per_sender) = (4u32, 60u32);
        let started = std::time::Instant::now();
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = 0;
                    loop {
                        let batch = q.receive(1, Duration::from_secs(2)).await;
                        if batch.is_empty() {
                            return got;
                        }
                        for message in batch {
                            assert!(q.delete(&message.receipt_handle));
                            got += 1;
                        }
                    }
                })
            })
            .collect();
        let senders: Vec<_> = (0..sender_count)
            .map(|s| {
                let q = q.clone();
                tokio::spawn(async move {
                    for n in 1..=per_sender {
                        // Now and then slower than the linger, so that receives fall asleep.
                        let pause = if n % 3 == 0 { 400 } else { 20 };
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                        q.send_message(queued(&format!("g{}", n % 5), s * 1000 + n));
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
        let mut received = 0;
        for receiver in receivers {
            received += receiver.await.unwrap();
        }
        assert_eq!(received, (sender_count * per_sender) as usize);
        // Every receive ends two seconds after the last message it took; a message that had to
        // wait for a long poll to end would add two more.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
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

    #[test]
    fn ids_and_receipt_handles_are_written_as_format_would() {
        for n in [0, 1, 42, 99_999, u64::MAX] {
            assert_eq!(*message_id(n), format!("{n:020}-local"));
            assert_eq!(receipt_handle(n, 7, "a:b"), format!("{n}:7:a:b"));
            assert_eq!(
                number_before_colon(&receipt_handle(n, 7, "a:b")),
                Some((n, "7:a:b"))
            );
        }
        for refused in [
            "",
            ":",
            "x:1",
            "1x:2",
            "-1:2",
            "18446744073709551616:1",
            "12",
        ] {
            assert_eq!(number_before_colon(refused), None, "{refused}");
        }
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

    #[tokio::test]
    async fn long_polling_wakes_on_send() {
        let q = Arc::new(queue(60_000, 5));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(10, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        q.send_message(queued("a", 1));
        let batch = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(bodies(&batch), ["a/1"]);
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

    #[tokio::test]
    async fn a_message_sent_in_process_is_handed_out_as_it_was_sent_and_as_its_json() {
        let q = queue(60_000, 5);
        let sent = Envelope::parse(
            br#"{"metadata":{"channel":"m","messageNumber":2,"messageTime":"2022-02-02T19:39:05.5+01:00","messageType":"RocketMissionChanged"},"message":{"newMission":"ARTEMIS"}}"#,
        )
        .unwrap();
        MessageQueue::send(&q, &sent).await.unwrap();
        MessageQueue::send(&q, &sent).await.unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn long_polling_returns_empty_after_the_wait() {
        let q = queue(60_000, 5);
        assert!(q.receive(10, Duration::from_millis(50)).await.is_empty());
    }
}
