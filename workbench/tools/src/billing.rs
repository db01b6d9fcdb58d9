//! What a commit costs in DynamoDB, key by key: a model of the DynamoDB store's writes, built
//! from the very items the store writes ([`TableLayout`]) and billed as DynamoDB bills them, for
//! benchmarks that price traffic at a scale no emulator reaches. A test on DynamoDB Local holds
//! the model to the capacity DynamoDB reports for the same commits.

use aws_sdk_dynamodb::types::AttributeValue;
use rockets::listing::SortKey;
use rockets::ordering::ChannelChange;
use rockets::rocket::Rocket;
use rockets_aws::{Item, MessageItem, TableLayout, index_attribute};

/// The table's keys, and the attribute that partitions the listing indexes.
const PK: &str = "pk";
const SK: &str = "sk";
const STATUS: &str = "st";

/// A unit of write capacity covers up to this many bytes of an item.
const WRITE_UNIT_BYTES: usize = 1024;

/// What DynamoDB adds to each index entry it stores and bills.
const INDEX_ENTRY_OVERHEAD: usize = 100;

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

/// Every write a commit of `change` makes once it succeeds, against a channel whose state
/// was `before` (none for a new channel) at `version`: the history and parked items, the
/// state item (billed at the larger of its old and new sizes, as DynamoDB bills a
/// replacement), the parked items it removes, and in each listing index whose key for the
/// rocket changed, the delete of the old entry and the put of the new one.
pub fn commit_writes(
    layout: &TableLayout,
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
        let item = layout.message_item(MessageItem::History, message, message.to_json());
        writes.push(in_table(Target::History, &item));
    }
    for message in &change.parked {
        let item = layout.message_item(MessageItem::Parked, message, message.to_json());
        writes.push(in_table(Target::Parked, &item));
    }
    let old = before.map(|rocket| layout.state_item(version, rocket));
    let new = layout.state_item(version + 1, &change.rocket);
    let larger = old.as_ref().map_or(0, item_size).max(item_size(&new));
    writes.push(KeyedWrite {
        target: Target::State,
        partition: channel.to_owned(),
        units: units(larger),
    });
    for number in &change.unparked {
        // An unparked message is applied by the same change, which holds its content.
        if let Some(message) = change.applied.iter().find(|m| m.number == *number) {
            let item = layout.message_item(MessageItem::Parked, message, message.to_json());
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
pub fn item_size(item: &Item) -> usize {
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
