//! What a commit costs in DynamoDB, key by key: a model of the DynamoDB store's writes, built
//! from the very items the store writes ([`TableLayout`]) and billed as DynamoDB bills them, for
//! benchmarks that price traffic at a scale no emulator reaches. A test on DynamoDB Local holds
//! the model to the capacity DynamoDB reports for the same commits.

use aws_sdk_dynamodb::types::AttributeValue;
use rockets::ordering::ChannelChange;
use rockets::rocket::Rocket;
use rockets_aws::{Item, MessageItem, TableLayout};

/// The table's keys, and the listing index's key and what it projects.
const KEYS: [&str; 2] = ["pk", "sk"];
const LISTED: &str = "by_channel";
const PROJECTED: &str = "rocket";

/// A unit of write capacity covers up to this many bytes of an item.
const WRITE_UNIT_BYTES: usize = 1024;

/// What DynamoDB adds to each index entry it stores and bills.
const INDEX_ENTRY_OVERHEAD: usize = 100;

/// What a write lands in: one of the table's item kinds, or the listing index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Target {
    State,
    History,
    Parked,
    Listing,
}

/// One write of a commit: where it lands and the write units it costs there.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyedWrite {
    pub target: Target,
    /// The partition key the write lands on: the channel, in the table and in the index.
    pub partition: String,
    pub units: u64,
}

/// Every write a commit of `change` makes once it succeeds, against a channel whose state
/// was `before` (none for a new channel) at `version`: the items of the messages it accepts
/// (a parked message applied now was written when it parked), the state item (billed at the
/// larger of its old and new sizes, as DynamoDB bills a replacement), and the state's entry in
/// the listing index, which every state write rewrites in place.
pub fn commit_writes(
    layout: &TableLayout,
    before: Option<&Rocket>,
    version: u64,
    change: &ChannelChange,
) -> Vec<KeyedWrite> {
    let channel = change.rocket.channel.as_str();
    let write = |target, bytes| KeyedWrite {
        target,
        partition: channel.to_owned(),
        units: units(bytes),
    };
    let mut writes = Vec::new();
    for message in &change.applied {
        if !change.unparked.contains(&message.number) {
            let item = layout.message_item(MessageItem::History, message, message.to_json());
            writes.push(write(Target::History, item_size(&item)));
        }
    }
    for message in &change.parked {
        let item = layout.message_item(MessageItem::Parked, message, message.to_json());
        writes.push(write(Target::Parked, item_size(&item)));
    }
    let old = before.map(|rocket| layout.state_item(version, rocket));
    let new = layout.state_item(version + 1, &change.rocket);
    let larger = |size: fn(&Item) -> usize| old.as_ref().map_or(0, size).max(size(&new));
    writes.push(write(Target::State, larger(item_size)));
    writes.push(write(Target::Listing, larger(entry_size)));
    writes
}

/// A rocket's entry in the listing index, in bytes as DynamoDB bills them.
pub fn listing_entry_size(rocket: &Rocket) -> usize {
    entry_size(&TableLayout::default().state_item(1, rocket))
}

/// A state item's entry in the listing index, as DynamoDB bills it: the table's key, the
/// index's key, the projected rocket, and what DynamoDB adds.
fn entry_size(item: &Item) -> usize {
    let attributes: usize = (KEYS.iter().chain(&[LISTED, PROJECTED]))
        .filter_map(|name| Some(name.len() + value_size(item.get(*name)?)))
        .sum();
    attributes + INDEX_ENTRY_OVERHEAD
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
