//! The items the store writes, built in one place, and what writing them costs: each write's
//! partition key (the table's, or a listing index's) and its write units, as DynamoDB bills
//! them. The store writes these items; [`TableLayout::commit_writes`] accounts for a commit
//! from the same items, which is what a model of the table's load at scale needs.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::index::{index_attribute, index_value};
use super::shards::ListingShards;
use super::{EVENT, PARKED, PK, SK, STATE, STATUS, s, sort_key};
use rockets::listing::SortKey;
use rockets::message::Envelope;
use rockets::ordering::ChannelChange;
use rockets::rocket::Rocket;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// A unit of write capacity covers up to this many bytes of an item.
const WRITE_UNIT_BYTES: usize = 1024;

/// What DynamoDB adds to each index entry it stores and bills.
const INDEX_ENTRY_OVERHEAD: usize = 100;

/// How the store lays the rocket table out: the listing shards and how long history lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableLayout {
    pub shards: ListingShards,
    /// How long history items live (DynamoDB TTL on `expiresAt`); `None` keeps them.
    pub history_retention: Option<std::time::Duration>,
}

/// What a write lands in: one of the table's item kinds, or a listing index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Target {
    State,
    History,
    Parked,
    Index(SortKey),
}

/// One write of a commit: where it lands and the write units it costs there.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyedWrite {
    pub target: Target,
    /// The partition key the write lands on: the channel in the table, the shard's key
    /// (`st`) in an index.
    pub partition: String,
    pub units: u64,
}

impl TableLayout {
    /// The `expiresAt` of a history item written now, in epoch seconds, if history expires.
    fn history_expiry(&self) -> Option<i64> {
        self.history_retention.map(|keep| {
            chrono::Utc::now().timestamp() + i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2)
        })
    }

    /// A message's item under `prefix` (history or parked), its JSON in `body`.
    pub(crate) fn message_item(&self, prefix: &str, message: &Envelope, body: String) -> Item {
        let mut item = super::key(&message.channel, sort_key(prefix, message.number));
        item.insert("body".into(), s(body));
        if prefix == EVENT
            && let Some(expiry) = self.history_expiry()
        {
            item.insert("expiresAt".into(), AttributeValue::N(expiry.to_string()));
        }
        item
    }

    /// A rocket's state item at `version`: the rocket, and its key in every listing index.
    pub(crate) fn state_item(&self, version: u64, rocket: &Rocket) -> Item {
        let mut item = super::key(&rocket.channel, STATE);
        let json = serde_json::to_string(rocket).expect("rockets serialise");
        item.insert("rocket".into(), s(json));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        item.insert(
            STATUS.into(),
            s(self.shards.partition_of(rocket.status, &rocket.channel)),
        );
        for sort_key in SortKey::ALL {
            let value = index_value(&sort_key.position(rocket));
            item.insert(index_attribute(sort_key), s(value));
        }
        item
    }

    /// Every write a commit of `change` makes once it succeeds, against a channel whose state
    /// was `before` (none for a new channel) at `version`: the history and parked items, the
    /// state item (billed at the larger of its old and new sizes, as DynamoDB bills a
    /// replacement), the parked items it removes, and in each listing index whose key for the
    /// rocket changed, the delete of the old entry and the put of the new one.
    pub fn commit_writes(
        &self,
        before: Option<&Rocket>,
        version: u64,
        change: &ChannelChange,
    ) -> Vec<KeyedWrite> {
        let channel = change.rocket.channel.as_str();
        let in_table = |target, item: &Item| KeyedWrite {
            target,
            partition: channel.to_owned(),
            units: units(item_size(item)),
        };
        let mut writes = Vec::new();
        for message in &change.applied {
            let item = self.message_item(EVENT, message, message.to_json());
            writes.push(in_table(Target::History, &item));
        }
        for message in &change.parked {
            let item = self.message_item(PARKED, message, message.to_json());
            writes.push(in_table(Target::Parked, &item));
        }
        let old = before.map(|rocket| self.state_item(version, rocket));
        let new = self.state_item(version + 1, &change.rocket);
        let larger = old.as_ref().map_or(0, item_size).max(item_size(&new));
        writes.push(KeyedWrite {
            target: Target::State,
            partition: channel.to_owned(),
            units: units(larger),
        });
        for number in &change.unparked {
            // An unparked message is applied by the same change, which holds its content.
            if let Some(message) = change.applied.iter().find(|m| m.number == *number) {
                let item = self.message_item(PARKED, message, message.to_json());
                writes.push(in_table(Target::Parked, &item));
            }
        }
        for sort_key in SortKey::ALL {
            let was = old.as_ref().and_then(|item| index_entry(item, sort_key));
            let now = index_entry(&new, sort_key);
            if was.as_ref().map(IndexEntry::key) == now.as_ref().map(IndexEntry::key) {
                continue;
            }
            for entry in was.iter().chain(&now) {
                writes.push(KeyedWrite {
                    target: Target::Index(sort_key),
                    partition: entry.partition.to_owned(),
                    units: units(entry.size),
                });
            }
        }
        writes
    }
}

/// A state item's entry in a listing index.
struct IndexEntry<'a> {
    /// Its partition key there, the shard's `st`.
    partition: &'a str,
    /// Its sort key there.
    value: &'a str,
    /// Its size as DynamoDB bills it: the table's key, the index's key and what DynamoDB adds
    /// (the indexes project nothing else).
    size: usize,
}

impl<'a> IndexEntry<'a> {
    /// Where the entry stands: it moves when either part changes.
    fn key(&self) -> (&'a str, &'a str) {
        (self.partition, self.value)
    }
}

fn index_entry(item: &Item, sort_key: SortKey) -> Option<IndexEntry<'_>> {
    let attribute = index_attribute(sort_key);
    let partition = item.get(STATUS)?.as_s().ok()?;
    let value = item.get(&attribute)?.as_s().ok()?;
    let table_key: usize = [PK, SK]
        .iter()
        .filter_map(|name| Some(name.len() + value_size(item.get(*name)?)))
        .sum();
    Some(IndexEntry {
        partition,
        value,
        size: table_key
            + STATUS.len()
            + partition.len()
            + attribute.len()
            + value.len()
            + INDEX_ENTRY_OVERHEAD,
    })
}

/// An item's size as DynamoDB bills it: each attribute's name and value.
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number_size(number),
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        // The store writes no other kinds.
        _ => 0,
    }
}

/// A number takes a byte for every two significant digits, and one more.
fn number_size(number: &str) -> usize {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.max(1).div_ceil(2) + 1
}

/// Write units for an item of `bytes`: one per kilobyte begun, at least one.
fn units(bytes: usize) -> u64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64
}
