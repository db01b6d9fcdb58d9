//! What a durable queue keeps in its data directory, and how it comes back from it.
//!
//! Queued messages and dead letters are kept under their sequence numbers, receive counts from
//! the second receive on, deduplication ids with the end of their window (wall clock), and the
//! highest sequence number reserved so far. Leases are not kept: the consumers holding them ran
//! in the process that stopped, so at open every message is visible again, and counted as
//! received once, since its last process may have stopped while applying it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::fifo::{Message, State, message_id, now_ms};
use super::{Body, QueueConfig};
use crate::disk::{DataDir, DataDirError, Op, Space};

/// Sequence numbers reserved in the data directory at a time, so that a message's send writes
/// no counter of its own.
pub(super) const SEQUENCE_BLOCK: u64 = 4096;

/// Receive counts are written from this receive on: a message at the data directory's open is
/// taken to have been received once already (its last process may have stopped while it was
/// being applied), so only the counts above that need the disk.
pub(super) const FIRST_RECEIPT: u32 = 2;

const SEQUENCE_KEY: &[u8] = b"sequence";

/// `message` as kept under its sequence number in `space` ([`Space::Queue`] or [`Space::Dead`]).
pub(super) fn record(space: Space, group_id: &str, message: &Message) -> Op {
    Op::Put(
        space,
        message.sequence.to_be_bytes().to_vec(),
        stored(
            group_id,
            message.sent_ms,
            &message.deduplication_id,
            message.body.json(),
        ),
    )
}

/// The time it was sent (8 bytes), its group and deduplication id (each a 2-byte length and
/// the text), then its body: copied as they are, since a body is JSON that a JSON record would
/// escape.
pub(super) fn stored(group_id: &str, sent_ms: u64, deduplication_id: &str, body: &str) -> Vec<u8> {
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

/// A message as the data directory keeps it in [`Space::Queue`] and [`Space::Dead`].
struct Stored {
    group: String,
    deduplication_id: String,
    body: String,
    sent_ms: u64,
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

    fn into_message(self, sequence: u64) -> Message {
        Message {
            id: message_id(sequence),
            sequence,
            body: Body::of_json(self.body),
            deduplication_id: self.deduplication_id.into(),
            receive_count: 0,
            sent_ms: self.sent_ms,
            first_receive_ms: None,
        }
    }
}

pub(super) fn sequence_record(next: u64) -> Op {
    Op::Put(
        Space::Meta,
        SEQUENCE_KEY.to_vec(),
        next.to_be_bytes().to_vec(),
    )
}

pub(super) fn receipt(message: &Message) -> Op {
    let mut value = message.receive_count.to_be_bytes().to_vec();
    value.extend_from_slice(&message.first_receive_ms.unwrap_or(0).to_be_bytes());
    Op::Put(
        Space::Receipts,
        message.sequence.to_be_bytes().to_vec(),
        value,
    )
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The queue's state as `dir` holds it. What the reading found stale (receipts of deleted
/// messages, expired deduplication ids) is left in the state's journal, to be deleted.
pub(super) fn recover(config: &QueueConfig, dir: &DataDir) -> Result<State, DataDirError> {
    let damaged = |detail: String| DataDirError::Damaged {
        path: dir.path().to_path_buf(),
        detail,
    };
    let read = |space| dir.all(space).map_err(|e| damaged(e.to_string()));
    let parse = |key: &[u8], value: &[u8]| -> Result<(u64, Stored), DataDirError> {
        let sequence = be_u64(key).ok_or_else(|| damaged("a queue key is not a number".into()))?;
        let stored =
            Stored::parse(value).ok_or_else(|| damaged("a queued message is cut short".into()))?;
        Ok((sequence, stored))
    };
    let mut state = State {
        durable: true,
        ..State::default()
    };
    let mut receipts: HashMap<u64, (u32, u64)> = HashMap::new();
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
        let mut message = stored.into_message(sequence);
        // Never so many that a message is refused without one more delivery.
        message.receive_count = (FIRST_RECEIPT - 1).min(config.max_receive_count.saturating_sub(1));
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
        state.dead.push((group, stored.into_message(sequence)));
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
    Ok(state)
}
