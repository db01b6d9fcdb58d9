//! SQS FIFO's semantics, as one state the queue keeps under its lock: message groups delivered
//! in order and one batch at a time under a lease, the deduplication window, receive counts and
//! the dead-letter queue. Every change a durable queue must keep is also entered in the
//! journal, which the queue submits to its data directory when the lock is released.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::durable::{self, FIRST_RECEIPT};
use super::{Body, QueueConfig, ReceivedMessage};
use crate::disk::{Op, Space};

pub(super) struct Message {
    pub(super) id: Arc<str>,
    pub(super) sequence: u64,
    pub(super) body: Body,
    pub(super) deduplication_id: Arc<str>,
    pub(super) receive_count: u32,
    pub(super) sent_ms: u64,
    pub(super) first_receive_ms: Option<u64>,
}

impl Message {
    pub(super) fn new(sequence: u64, body: Body, deduplication_id: Arc<str>) -> Self {
        Message {
            id: message_id(sequence),
            sequence,
            body,
            deduplication_id,
            receive_count: 0,
            sent_ms: now_ms(),
            first_receive_ms: None,
        }
    }
}

pub(super) struct Group {
    pub(super) id: Arc<str>,
    pub(super) messages: VecDeque<Message>,
    /// The first `in_flight` messages are out with a consumer under `lease`.
    pub(super) in_flight: usize,
    pub(super) lease: u64,
    /// When the lease ends, as entered in `State::leases`.
    pub(super) deadline: Option<Instant>,
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
pub(super) struct State {
    /// Whether changes are written to a data directory.
    pub(super) durable: bool,
    /// Changes for the data directory, made under the lock and submitted when it is released,
    /// so they reach the directory in order.
    pub(super) journal: Vec<Op>,
    /// Every group that has had a message, kept when empty: a channel sends again.
    pub(super) groups: HashMap<Arc<str>, Group>,
    /// Groups with messages and nothing in flight, in the order they became so.
    pub(super) ready: VecDeque<Arc<str>>,
    /// The leases out with consumers, by when they end: one entry per group in flight.
    pub(super) leases: BTreeSet<(Instant, u64, Arc<str>)>,
    pub(super) seen: HashMap<Arc<str>, Instant>,
    pub(super) seen_order: VecDeque<(Instant, Arc<str>)>,
    pub(super) dead: Vec<(Arc<str>, Message)>,
    pub(super) next_sequence: u64,
    /// Every sequence number up to this one may have been used, as the data directory says; a
    /// restart carries on above it, so ids are never reused.
    pub(super) reserved_sequence: u64,
    pub(super) next_lease: u64,
}

/// `00000000000000000042-local`: sequence numbers as fixed-width ids, so ids sort as numbers.
pub(super) fn message_id(sequence: u64) -> Arc<str> {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(sequence);
    let padding = "0".repeat(20 - digits.len());
    [padding.as_str(), digits, "-local"].concat().into()
}

/// `lease:sequence:group`, which [`State::leased`] reads back.
fn receipt_handle(lease: u64, sequence: u64, group_id: &str) -> String {
    let (mut lease_digits, mut sequence_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    [
        lease_digits.format(lease),
        ":",
        sequence_digits.format(sequence),
        ":",
        group_id,
    ]
    .concat()
}

pub(super) fn now_ms() -> u64 {
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

    pub(super) fn end_expired_leases(&mut self, now: Instant) {
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
    pub(super) fn see(&mut self, deduplication_id: &Arc<str>, expires: Instant) -> bool {
        match self.seen.entry(deduplication_id.clone()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(new) => {
                new.insert(expires);
                self.seen_order
                    .push_back((expires, deduplication_id.clone()));
                true
            }
        }
    }

    pub(super) fn forget_old_ids(&mut self, now: Instant) {
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
    pub(super) fn take_sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        if self.durable && self.next_sequence > self.reserved_sequence {
            self.reserved_sequence = self.next_sequence + durable::SEQUENCE_BLOCK;
            self.journal
                .push(durable::sequence_record(self.reserved_sequence));
        }
        self.next_sequence
    }

    /// A new message under the next sequence number, appended to its group; its id.
    pub(super) fn push(
        &mut self,
        group_id: &str,
        deduplication_id: Arc<str>,
        body: Body,
    ) -> Arc<str> {
        let sequence = self.take_sequence();
        let message = Message::new(sequence, body, deduplication_id);
        if self.durable {
            self.journal
                .push(durable::record(Space::Queue, group_id, &message));
        }
        self.enqueue(group_id, message)
    }

    /// Appends `message` to its group; returns its id.
    pub(super) fn enqueue(&mut self, group_id: &str, message: Message) -> Arc<str> {
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
            self.journal
                .push(durable::record(Space::Dead, &group_id, &message));
        }
        self.dead.push((group_id, message));
    }

    /// Hands out up to `max` messages, the next batch of each ready group in turn, each group's
    /// under a lease that ends after `config.visibility_timeout`; a message received
    /// `config.max_receive_count` times already moves to the dead-letter queue instead.
    pub(super) fn take(
        &mut self,
        max: usize,
        now: Instant,
        config: &QueueConfig,
    ) -> Vec<ReceivedMessage> {
        self.end_expired_leases(now);
        let mut batch = Vec::new();
        while batch.len() < max {
            let Some(group_id) = self.ready.pop_front() else {
                break;
            };
            self.next_lease += 1;
            let lease = self.next_lease;
            let (mut buried, mut noted) = (Vec::new(), Vec::new());
            let durable = self.durable;
            let group = self.groups.get_mut(&group_id).expect("ready groups exist");
            group.ready = false;
            while batch.len() < max && group.in_flight < group.messages.len() {
                let message = &mut group.messages[group.in_flight];
                if message.receive_count >= config.max_receive_count {
                    buried.push(group.messages.remove(group.in_flight).expect("in range"));
                    continue;
                }
                message.receive_count += 1;
                let first = *message.first_receive_ms.get_or_insert_with(now_ms);
                if durable && message.receive_count >= FIRST_RECEIPT {
                    noted.push(durable::receipt(message));
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
                });
                group.in_flight += 1;
            }
            if group.in_flight > 0 {
                group.lease = lease;
                let deadline = now + config.visibility_timeout;
                group.deadline = Some(deadline);
                self.leases.insert((deadline, lease, group_id.clone()));
            }
            self.journal.append(&mut noted);
            for message in buried {
                self.bury(group_id.clone(), message);
            }
        }
        batch
    }

    /// Deletes a received message: false for a receipt whose lease has ended (the message may
    /// be with another consumer by now), as SQS FIFO refuses it. `Some(true)` when its group
    /// became ready again.
    pub(super) fn delete(&mut self, receipt_handle: &str, now: Instant) -> Option<bool> {
        self.end_expired_leases(now);
        let (group, sequence) = leased(&mut self.groups, receipt_handle)?;
        let at = group
            .messages
            .iter()
            .take(group.in_flight)
            .position(|m| m.sequence == sequence)?;
        let message = group.messages.remove(at).expect("in range");
        group.in_flight -= 1;
        let mut ready = false;
        if group.in_flight == 0 {
            let deadline = group.deadline.take().expect("a lease");
            self.leases
                .remove(&(deadline, group.lease, group.id.clone()));
            if group.deliverable() {
                group.ready = true;
                self.ready.push_back(group.id.clone());
                ready = true;
            }
        }
        self.forget(&message);
        Some(ready)
    }

    /// Keeps a received message's group hidden for at least `hidden` from `now`, as SQS's
    /// ChangeMessageVisibility does (a FIFO group waits for its longest-hidden message); false
    /// for a receipt whose lease has ended.
    pub(super) fn hide(&mut self, receipt_handle: &str, hidden: Duration, now: Instant) -> bool {
        self.end_expired_leases(now);
        let Some((group, _)) = leased(&mut self.groups, receipt_handle) else {
            return false;
        };
        let before = group.deadline.expect("a lease");
        let deadline = before.max(now + hidden);
        group.deadline = Some(deadline);
        let (lease, id) = (group.lease, group.id.clone());
        self.leases.remove(&(before, lease, id.clone()));
        self.leases.insert((deadline, lease, id));
        true
    }

    /// Moves every dead letter back to the end of its group, as a DLQ redrive does: a new
    /// message with a new deduplication id and a fresh receive count. Returns how many moved.
    pub(super) fn redrive(&mut self) -> usize {
        let dead = std::mem::take(&mut self.dead);
        let moved = dead.len();
        for (group_id, message) in dead {
            if self.durable {
                let key = message.sequence.to_be_bytes().to_vec();
                self.journal.push(Op::Delete(Space::Dead, key));
            }
            let deduplication_id = format!("{}/redrive-{}", message.deduplication_id, message.id);
            self.push(&group_id, deduplication_id.into(), message.body);
        }
        moved
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_handles_read_back_as_written() {
        for n in [0, 1, 42, u64::MAX] {
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
}
