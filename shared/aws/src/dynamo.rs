//! The rocket table in DynamoDB.
//!
//! One table, partition key `pk` (the channel) and sort key `sk`:
//!
//! | `sk` | item | attributes |
//! |---|---|---|
//! | `event#<n:020>` | applied message *n* (the history) | `body` |
//! | `state` | the rocket | `rocket`, `version`, `st`, `by_<sortKey>` ×8 |
//! | `state#parked#<n:020>` | message *n*, waiting for a gap to fill | `body` |
//!
//! The parked items sort just after `state`, lowest number first, so one strongly consistent
//! Query on `begins_with(sk, "state")` with a limit loads a channel: its rocket and its first
//! parked messages, however many it parks; a BatchGetItem finds any further parked messages
//! with the numbers a batch holds. A commit writes the applied messages' history items and the newly parked
//! items first, each conditional on being absent or identical, then replaces the state item
//! conditional on `version`, then deletes the parked items it applied. The state write is the
//! commit point; a history item written ahead of it fixes which content message *n* has
//! (first writer wins), and leftovers of an interrupted commit are repaired by the next one.
//!
//! Listing uses eight sparse global secondary indexes, one per sort key, partitioned by status
//! (`st`) and sorted by an order-preserving string encoding of (value, channel). They project
//! keys only, so an index is written only when its own key changes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, KeysAndAttributes, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, Select,
};
use futures_util::future::join_all;

use super::store_error;
use rockets::listing::{ListQuery, Order, Position, RocketPage, SortKey, SortValue};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{ChannelChange, ParkedView};
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError};
use rockets::rocket::{Rocket, Status};

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
pub(crate) const STATUS: &str = "st";
const STATE: &str = "state";
const PARKED: &str = "state#parked#";
const EVENT: &str = "event#";
/// Longest encoded text kept in an index value: with the terminator, a null/value marker and a
/// channel of at most 128 bytes, the key stays well under DynamoDB's 1,024-byte cap on an
/// index sort key.
const MAX_INDEXED_TEXT: usize = 512;
/// Keys per BatchGetItem call, DynamoDB's limit.
const BATCH_GET_LIMIT: usize = 100;

/// The attribute that holds a sort key's index value.
pub fn index_attribute(key: SortKey) -> String {
    format!("by_{}", key.as_str())
}

/// The global secondary index for a sort key.
pub fn index_name(key: SortKey) -> String {
    format!("by-{}", key.as_str())
}

/// What the table's items cost to write, as DynamoDB reports it per item kind and for the
/// listing indexes together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteUnits {
    pub state: f64,
    pub history: f64,
    pub parked: f64,
    pub indexes: f64,
}

impl WriteUnits {
    pub fn total(&self) -> f64 {
        self.state + self.history + self.parked + self.indexes
    }
}

/// What a write was for; the discriminant is its counter in [`Capacity`].
#[derive(Clone, Copy)]
enum Written {
    State = 0,
    History = 1,
    Parked = 2,
}

/// The counter in [`Capacity`] for the listing indexes, after those of [`Written`].
const INDEXES: usize = 3;

/// Read and write units consumed, as DynamoDB reported them (in thousandths), and how many
/// strongly consistent reads were made.
#[derive(Default, Debug)]
pub struct Capacity {
    read_milli: AtomicU64,
    consistent_reads: AtomicU64,
    /// State, history, parked, indexes.
    write_milli: [AtomicU64; 4],
}

impl Capacity {
    pub fn read_units(&self) -> f64 {
        self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Strongly consistent requests (queries, gets), however many units each took.
    pub fn consistent_reads(&self) -> u64 {
        self.consistent_reads.load(Ordering::Relaxed)
    }

    pub fn write_units(&self) -> WriteUnits {
        let units = |i: usize| self.write_milli[i].load(Ordering::Relaxed) as f64 / 1000.0;
        WriteUnits {
            state: units(Written::State as usize),
            history: units(Written::History as usize),
            parked: units(Written::Parked as usize),
            indexes: units(INDEXES),
        }
    }

    fn add_read(&self, consumed: Option<&ConsumedCapacity>, consistent: bool) {
        if consistent {
            self.consistent_reads.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(units) = consumed.and_then(ConsumedCapacity::capacity_units) {
            self.read_milli.fetch_add(milli(units), Ordering::Relaxed);
        }
    }

    /// Splits a write's units (requested as INDEXES) between the item and the indexes.
    fn add_write(&self, consumed: Option<&ConsumedCapacity>, written: Written) {
        let Some(total) = consumed.and_then(ConsumedCapacity::capacity_units) else {
            return;
        };
        let table = consumed
            .and_then(ConsumedCapacity::table)
            .and_then(|t| t.capacity_units())
            .unwrap_or(total);
        self.write_milli[written as usize].fetch_add(milli(table), Ordering::Relaxed);
        self.write_milli[INDEXES].fetch_add(milli((total - table).max(0.0)), Ordering::Relaxed);
    }
}

fn milli(units: f64) -> u64 {
    (units * 1000.0).round() as u64
}

/// The rocket table, implementing both store ports.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    capacity: std::sync::Arc<Capacity>,
}

enum PutOnce {
    Written,
    /// Another message is already stored under this key; it wins.
    Taken(Envelope),
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn sort_key(prefix: &str, number: MessageNumber) -> String {
    format!("{prefix}{:020}", number.get())
}

fn key(channel: &Channel, sk: impl Into<String>) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.into(), s(channel.as_str())), (SK.into(), s(sk))])
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Failed(format!("item without string attribute {name}")))
}

fn envelope(item: &HashMap<String, AttributeValue>) -> Result<Envelope, StoreError> {
    Envelope::parse(text(item, "body")?.as_bytes())
        .map_err(|e| StoreError::Failed(format!("stored message unreadable: {e}")))
}

fn rocket(item: &HashMap<String, AttributeValue>) -> Result<Rocket, StoreError> {
    serde_json::from_str(text(item, "rocket")?)
        .map_err(|e| StoreError::Failed(format!("stored rocket unreadable: {e}")))
}

fn version(item: &HashMap<String, AttributeValue>) -> Result<u64, StoreError> {
    item.get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Failed("state item without a version".into()))
}

/// An order-preserving string for a position: `0` for null, `1` and the value otherwise,
/// then the channel. Integers are fixed-width offset hex, times fixed-width UTC, and text is
/// escaped and terminated so that no value is a prefix of another.
pub(crate) fn index_value(position: &Position) -> String {
    let mut out = String::with_capacity(64);
    match &position.value {
        SortValue::Null => out.push('0'),
        SortValue::Int(i) => {
            let offset = (*i as u128) ^ (1u128 << 127);
            let _ = write!(out, "1{offset:032x}");
        }
        SortValue::Text(t) => {
            out.push('1');
            // \u{1} escapes the two characters below \u{2}; \u{1}\u{1} ends the value and
            // sorts before anything a value can continue with. The cut is made on the encoded
            // text, which escaping can make twice as long as the value.
            let start = out.len();
            for c in t.chars() {
                let escaped = match c {
                    '\u{0}' => "\u{1}\u{2}",
                    '\u{1}' => "\u{1}\u{3}",
                    _ => "",
                };
                let len = if escaped.is_empty() { c.len_utf8() } else { 2 };
                if out.len() - start + len > MAX_INDEXED_TEXT {
                    break;
                }
                if escaped.is_empty() {
                    out.push(c);
                } else {
                    out.push_str(escaped);
                }
            }
            out.push_str("\u{1}\u{1}");
        }
        SortValue::Time(t) => {
            let _ = write!(out, "1{}", t.format("%Y%m%dT%H%M%S%.9f"));
        }
    }
    out.push_str(position.channel.as_str());
    out
}

/// Rounds of a batch read before unprocessed keys count as an outage.
const BATCH_GET_ROUNDS: u32 = 6;

/// Requests a commit sends at once at most: a drain of a whole park window stays within what a
/// connection pool and a slow endpoint take, with no round trip added to a batch of ten.
const CONCURRENT_WRITES: usize = 16;

/// Every future's output, in order, running at most [`CONCURRENT_WRITES`] at a time.
async fn bounded_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(futures)
        .buffered(CONCURRENT_WRITES)
        .collect()
        .await
}

/// Reads `keys` with `fetch`, which answers what it found and what it left unprocessed
/// (DynamoDB does when a partition is throttled), asking again for the rest after a jittered,
/// growing wait, as DynamoDB asks of BatchGetItem callers.
async fn fetch_all<K, I, F, Fut>(keys: Vec<K>, fetch: F) -> Result<Vec<I>, StoreError>
where
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<(Vec<I>, Vec<K>), StoreError>>,
{
    let mut found = Vec::with_capacity(keys.len());
    let mut pending = keys;
    for round in 1..=BATCH_GET_ROUNDS {
        let (items, unprocessed) = fetch(pending).await?;
        found.extend(items);
        pending = unprocessed;
        if pending.is_empty() {
            return Ok(found);
        }
        if round < BATCH_GET_ROUNDS {
            tokio::time::sleep(rockets::backoff::full_jitter(
                round,
                std::time::Duration::from_millis(25),
                std::time::Duration::from_millis(800),
            ))
            .await;
        }
    }
    Err(StoreError::Unavailable(format!(
        "batch get left {} keys unprocessed",
        pending.len()
    )))
}

/// A page from the index entries it was cut from and the rockets read after them.
///
/// A rocket may change between the two reads. The page shows it as read, and only if it still
/// has the status the query asked for; the next page starts after the last *entry*, where this
/// one was cut, so a walk meets every rocket once whatever changed meanwhile.
fn page_from_entries(
    query: &ListQuery,
    entries: &[(String, String)],
    more: bool,
    mut fetched: HashMap<String, Rocket>,
) -> Result<RocketPage, StoreError> {
    let rockets = entries
        .iter()
        .filter_map(|(_, channel)| fetched.remove(channel))
        .filter(|rocket| query.status.is_none_or(|status| rocket.status == status))
        .collect();
    let next = match entries.last() {
        Some((value, channel)) if more => Some(
            entry_position(query.sort_by, value, channel)
                .ok_or_else(|| StoreError::Failed(format!("unreadable index value {value:?}")))?,
        ),
        _ => None,
    };
    Ok(RocketPage { rockets, next })
}

/// The position an index value encodes, read back as [`index_value`] wrote it.
fn entry_position(key: SortKey, value: &str, channel: &str) -> Option<Position> {
    let channel = Channel::parse(channel).ok()?;
    let encoded = value.strip_suffix(channel.as_str())?;
    let value = match (key, encoded) {
        (_, "0") => SortValue::Null,
        (SortKey::Channel, _) => return None,
        (SortKey::Speed | SortKey::Status | SortKey::LastMessageNumber, encoded) => {
            let offset = u128::from_str_radix(encoded.strip_prefix('1')?, 16).ok()?;
            SortValue::Int((offset ^ (1u128 << 127)) as i128)
        }
        (SortKey::LaunchTime | SortKey::LastMessageTime, encoded) => {
            let time = chrono::NaiveDateTime::parse_from_str(
                encoded.strip_prefix('1')?,
                "%Y%m%dT%H%M%S%.9f",
            )
            .ok()?;
            SortValue::Time(time.and_utc())
        }
        (SortKey::Type | SortKey::Mission, encoded) => {
            let escaped = encoded.strip_prefix('1')?.strip_suffix("\u{1}\u{1}")?;
            let mut text = String::with_capacity(escaped.len());
            let mut chars = escaped.chars();
            while let Some(c) = chars.next() {
                text.push(match (c, c == '\u{1}') {
                    (_, true) => match chars.next()? {
                        '\u{2}' => '\u{0}',
                        '\u{3}' => '\u{1}',
                        _ => return None,
                    },
                    (c, false) => c,
                });
            }
            SortValue::Text(text.into())
        }
    };
    Some(Position { value, channel })
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            capacity: Default::default(),
        }
    }

    /// The environment variable that names the table.
    pub const ENV: &'static str = "TABLE_NAME";

    /// The table named by `TABLE_NAME`.
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, rockets::config::ConfigError> {
        Ok(Self::new(
            Client::new(config),
            rockets::config::required(Self::ENV)?,
        ))
    }

    /// What this store's calls have consumed so far.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// Writes a message item unless another message is already stored there.
    async fn put_once(&self, written: Written, message: &Envelope) -> Result<PutOnce, StoreError> {
        let prefix = match written {
            Written::History => EVENT,
            Written::Parked => PARKED,
            Written::State => unreachable!("the state item is written by put_state"),
        };
        let mut item = key(&message.channel, sort_key(prefix, message.number));
        let body = message.to_json();
        item.insert("body".into(), s(body.clone()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR body = :body")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":body", s(body))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.capacity.add_write(output.consumed_capacity(), written);
                Ok(PutOnce::Written)
            }
            Err(error) => {
                let existing = error
                    .as_service_error()
                    .filter(|e| e.is_conditional_check_failed_exception())
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                            c.item().cloned()
                        }
                        _ => None,
                    });
                match existing {
                    Some(item) => {
                        let existing = envelope(&item)?;
                        // Same message, other spelling (e.g. the same instant in another offset).
                        if existing == *message {
                            Ok(PutOnce::Written)
                        } else {
                            Ok(PutOnce::Taken(existing))
                        }
                    }
                    None => Err(store_error("put message", error)),
                }
            }
        }
    }

    /// Replaces the state item if it is still at `expected_version`.
    async fn put_state(&self, expected_version: u64, rocket: &Rocket) -> Result<bool, StoreError> {
        let mut item = key(&rocket.channel, STATE);
        let json = serde_json::to_string(rocket).expect("rockets serialise");
        item.insert("rocket".into(), s(json));
        item.insert(
            "version".into(),
            AttributeValue::N((expected_version + 1).to_string()),
        );
        item.insert(STATUS.into(), s(rocket.status.as_str()));
        for sort_key in SortKey::ALL {
            let value = index_value(&sort_key.position(rocket));
            item.insert(index_attribute(sort_key), s(value));
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#pk", PK)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes);
        let request = if expected_version == 0 {
            request.condition_expression("attribute_not_exists(#pk)")
        } else {
            request
                .condition_expression("attribute_exists(#pk) AND version = :version")
                .expression_attribute_values(
                    ":version",
                    AttributeValue::N(expected_version.to_string()),
                )
        };
        match request.send().await {
            Ok(output) => {
                self.capacity
                    .add_write(output.consumed_capacity(), Written::State);
                Ok(true)
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(store_error("put state", error)),
        }
    }

    async fn get_state(
        &self,
        channel: &Channel,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(channel, STATE)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| store_error("get state", e))?;
        self.capacity.add_read(output.consumed_capacity(), false);
        Ok(output.item)
    }

    /// Fetches items by key, in as few BatchGetItem calls as DynamoDB allows.
    async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
        consistent: bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let chunks = keys.chunks(BATCH_GET_LIMIT).map(|chunk| {
            fetch_all(chunk.to_vec(), |pending| async move {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(consistent)
                    .build()
                    .map_err(|e| StoreError::Failed(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| store_error("batch get", e))?;
                for consumed in output.consumed_capacity() {
                    self.capacity.add_read(Some(consumed), consistent);
                }
                let found = output
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default();
                let unprocessed = output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|rest| rest.keys)
                    .unwrap_or_default();
                Ok((found, unprocessed))
            })
        });
        let mut items = Vec::with_capacity(keys.len());
        for chunk in join_all(chunks).await {
            items.extend(chunk?);
        }
        Ok(items)
    }

    /// Every item of a channel whose sort key lies from `from` to `to`, following DynamoDB's
    /// pages.
    async fn query_range(
        &self,
        channel: &Channel,
        from: &str,
        to: &str,
        consistent: bool,
        what: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(channel.as_str()))
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to))
                .consistent_read(consistent)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| store_error(what, e))?;
            self.capacity
                .add_read(output.consumed_capacity(), consistent);
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// A channel's state item and its first `parked` parked items, in key order, read strongly
    /// consistently in as few pages as DynamoDB allows.
    async fn channel_head(
        &self,
        channel: &Channel,
        parked: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let wanted = parked.saturating_add(1);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let limit = i32::try_from(wanted - items.len()).unwrap_or(i32::MAX);
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :state)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(channel.as_str()))
                .expression_attribute_values(":state", s(STATE))
                .consistent_read(true)
                .limit(limit)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| store_error("load channel", e))?;
            self.capacity.add_read(output.consumed_capacity(), true);
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() || items.len() >= wanted {
                return Ok(items);
            }
        }
    }

    /// Up to `limit + 1` (index value, channel) pairs of one status, after the cursor.
    async fn index_page(
        &self,
        query: &ListQuery,
        status: Status,
        after: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let attribute = index_attribute(query.sort_by);
        let (operator, forward) = match query.order {
            Order::Asc => (">", true),
            Order::Desc => ("<", false),
        };
        let mut condition = "#st = :st".to_string();
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index_name(query.sort_by))
            .expression_attribute_names("#st", STATUS)
            .expression_attribute_values(":st", s(status.as_str()))
            .scan_index_forward(forward)
            .limit(i32::try_from(query.limit + 1).unwrap_or(i32::MAX))
            .select(Select::AllProjectedAttributes)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Some(after) = after {
            condition.push_str(&format!(" AND #by {operator} :after"));
            request = request
                .expression_attribute_names("#by", &attribute)
                .expression_attribute_values(":after", s(after));
        }
        let output = request
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(|e| store_error("query index", e))?;
        self.capacity.add_read(output.consumed_capacity(), false);
        output
            .items()
            .iter()
            .map(|item| {
                Ok((
                    text(item, &attribute)?.to_string(),
                    text(item, PK)?.to_string(),
                ))
            })
            .collect()
    }
}

impl ChannelStore for DynamoStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        let mut state = None;
        let mut first = Vec::new();
        // One parked message past the window says the view is incomplete.
        for item in self.channel_head(channel, window.saturating_add(1)).await? {
            if text(&item, SK)? == STATE {
                state = Some((rocket(&item)?, version(&item)?));
            } else {
                first.push(envelope(&item)?);
            }
        }
        let complete = first.len() <= window;
        first.truncate(window);
        let mut probed = Vec::new();
        if !complete {
            let last = first.last().map(|m| m.number);
            let mut keys: Vec<_> = probe
                .iter()
                .filter(|n| last.is_none_or(|last| **n > last))
                .map(|n| sort_key(PARKED, *n))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let keys = keys.into_iter().map(|sk| key(channel, sk)).collect();
            for item in self.batch_get(keys, true).await? {
                probed.push(envelope(&item)?);
            }
        }
        let parked = ParkedView {
            first,
            complete,
            probed,
        };
        Ok(match state {
            Some((rocket, version)) => Some(ChannelSnapshot {
                rocket,
                parked,
                version,
            }),
            // Parked by a commit that never reached the state write: still worth keeping.
            None if parked != ParkedView::none() => Some(ChannelSnapshot {
                rocket: Rocket::new(channel.clone(), chrono::Utc::now()),
                parked,
                version: 0,
            }),
            None => None,
        })
    }

    async fn commit(
        &self,
        expected_version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        let history: Vec<_> = (change.applied.iter())
            .map(|m| self.put_once(Written::History, m))
            .collect();
        let parked: Vec<_> = (change.parked.iter())
            .map(|m| self.put_once(Written::Parked, m))
            .collect();
        let (history, parked) = futures_util::join!(bounded_all(history), bounded_all(parked));
        let mut superseded = Vec::new();
        for written in history {
            if let PutOnce::Taken(first) = written? {
                superseded.push(first);
            }
        }
        if !superseded.is_empty() {
            return Ok(CommitOutcome::Superseded(superseded));
        }
        let mut parked_conflict = false;
        for written in parked {
            parked_conflict |= matches!(written?, PutOnce::Taken(_));
        }
        if parked_conflict || !self.put_state(expected_version, &change.rocket).await? {
            return Ok(CommitOutcome::VersionMismatch);
        }
        let channel = &change.rocket.channel;
        let removals: Vec<_> = (change.unparked.iter())
            .map(|n| {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(channel, sort_key(PARKED, *n))))
                    .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
                    .send()
            })
            .collect();
        for removed in bounded_all(removals).await {
            match removed {
                Ok(output) => self
                    .capacity
                    .add_write(output.consumed_capacity(), Written::Parked),
                // The next commit of this channel removes it; until then loading skips it.
                Err(error) => {
                    tracing::warn!(%channel, error = %store_error("remove parked", error), "parked message left behind")
                }
            }
        }
        Ok(CommitOutcome::Committed)
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        let keys = numbers
            .iter()
            .map(|n| key(channel, sort_key(EVENT, *n)))
            .collect();
        self.batch_get(keys, true)
            .await?
            .iter()
            .map(envelope)
            .collect()
    }
}

impl RocketReader for DynamoStore {
    async fn rocket(&self, channel: &Channel) -> Result<Option<Rocket>, StoreError> {
        self.get_state(channel)
            .await?
            .as_ref()
            .map(rocket)
            .transpose()
    }

    async fn rockets(&self, query: &ListQuery) -> Result<RocketPage, StoreError> {
        let after = query.after.as_ref().map(index_value);
        let statuses: Vec<Status> = match query.status {
            Some(status) => vec![status],
            None => Status::ALL.to_vec(),
        };
        let pages = join_all(
            statuses
                .iter()
                .map(|status| self.index_page(query, *status, after.as_deref())),
        )
        .await;
        let mut entries = Vec::new();
        for page in pages {
            entries.extend(page?);
        }
        entries.sort_unstable();
        if query.order == Order::Desc {
            entries.reverse();
        }
        let more = entries.len() > query.limit;
        entries.truncate(query.limit);
        let keys = entries
            .iter()
            .map(|(_, channel)| {
                let channel = Channel::parse(channel).map_err(StoreError::Failed)?;
                Ok(key(&channel, STATE))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut fetched: HashMap<String, Rocket> = HashMap::with_capacity(keys.len());
        for item in self.batch_get(keys, false).await? {
            let rocket = rocket(&item)?;
            fetched.insert(rocket.channel.as_str().to_owned(), rocket);
        }
        page_from_entries(query, &entries, more, fetched)
    }

    async fn history(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Envelope>>, StoreError> {
        let Some(state) = self.get_state(channel).await? else {
            return Ok(None);
        };
        let last = rocket(&state)?.last_message_number;
        let first = after.saturating_add(1);
        if first > last {
            return Ok(Some(Vec::new()));
        }
        let end = last.min(after.saturating_add(limit as u64));
        let (from, to) = match (MessageNumber::new(first), MessageNumber::new(end)) {
            (Some(from), Some(to)) => (sort_key(EVENT, from), sort_key(EVENT, to)),
            _ => return Ok(Some(Vec::new())),
        };
        let mut events = self
            .query_range(channel, &from, &to, false, "read history")
            .await?
            .iter()
            .map(envelope)
            .collect::<Result<Vec<_>, _>>()?;
        events.truncate(limit);
        Ok(Some(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rockets::listing::SortValue;

    #[test]
    fn write_units_are_split_between_the_item_and_the_indexes() {
        use aws_sdk_dynamodb::types::Capacity as Units;
        let capacity = Capacity::default();
        let state = ConsumedCapacity::builder()
            .capacity_units(5.0)
            .table(Units::builder().capacity_units(1.0).build())
            .build();
        capacity.add_write(Some(&state), Written::State);
        // Without a breakdown (an emulator that reports only the total), it is all the item's.
        let history = ConsumedCapacity::builder().capacity_units(1.0).build();
        capacity.add_write(Some(&history), Written::History);
        capacity.add_write(None, Written::Parked);
        assert_eq!(
            capacity.write_units(),
            WriteUnits {
                state: 1.0,
                history: 1.0,
                parked: 0.0,
                indexes: 4.0
            }
        );
        assert_eq!(capacity.write_units().total(), 6.0);
        let read = ConsumedCapacity::builder().capacity_units(0.5).build();
        capacity.add_read(Some(&read), true);
        capacity.add_read(Some(&read), false);
        assert_eq!(capacity.read_units(), 1.0);
        assert_eq!(capacity.consistent_reads(), 1);
    }

    fn position(value: SortValue, channel: &str) -> Position {
        Position {
            value,
            channel: Channel::parse(channel).unwrap(),
        }
    }

    fn assert_encoding_preserves_order(values: Vec<SortValue>) {
        let mut positions: Vec<Position> = ["a", "b", "zz"]
            .into_iter()
            .flat_map(|c| values.iter().map(move |v| position(v.clone(), c)))
            .chain(["a", "z"].map(|c| position(SortValue::Null, c)))
            .collect();
        positions.sort();
        let encoded: Vec<String> = positions.iter().map(index_value).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
    }

    #[test]
    fn index_values_sort_like_positions() {
        assert_encoding_preserves_order(
            [i128::from(i64::MIN), -5, 0, 3, i128::from(u64::MAX)]
                .map(SortValue::Int)
                .to_vec(),
        );
        assert_encoding_preserves_order(
            [
                "Apollo",
                "Apol",
                "Apol\u{1}x",
                "Apol\u{0}",
                "\u{0}",
                "Ärtemis",
                "apollo",
            ]
            .map(|t| SortValue::Text(t.into()))
            .to_vec(),
        );
        assert_encoding_preserves_order(
            [-86_400, 0, 1, 1_700_000_000]
                .map(|secs| SortValue::Time(Utc.timestamp_opt(secs, 0).unwrap()))
                .to_vec(),
        );
    }

    #[test]
    fn long_text_is_cut_to_fit_an_index_key_after_escaping() {
        for text in [
            "é".repeat(2_000),
            "\u{0}".repeat(2_000),
            "\u{1}a".repeat(1_000),
            "😀".repeat(600),
        ] {
            let long = position(SortValue::Text(text.into()), &"c".repeat(128));
            assert!(index_value(&long).len() <= 1 + MAX_INDEXED_TEXT + 2 + 128);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_keys_are_asked_for_again_after_a_growing_jittered_wait() {
        let asked = std::sync::Mutex::new(Vec::new());
        let started = tokio::time::Instant::now();
        let found = fetch_all((0..10).collect(), |pending: Vec<u32>| {
            asked
                .lock()
                .unwrap()
                .push((started.elapsed(), pending.len()));
            async move {
                // One key processed a round, the rest left for later.
                let (first, rest) = pending.split_at(1);
                Ok((first.to_vec(), rest.to_vec()))
            }
        })
        .await;
        let asked = asked.into_inner().unwrap();
        assert_eq!(asked.len(), BATCH_GET_ROUNDS as usize);
        assert!(matches!(found, Err(StoreError::Unavailable(_))));
        assert!(
            asked.windows(2).all(|w| w[1].0 >= w[0].0),
            "rounds in order: {asked:?}"
        );
        let waited = asked.last().unwrap().0;
        assert!(
            waited > std::time::Duration::ZERO,
            "the rounds were spaced: {asked:?}"
        );
        assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");

        let all = fetch_all((0..3).collect(), |pending: Vec<u32>| async move {
            Ok((pending, Vec::new()))
        })
        .await
        .unwrap();
        assert_eq!(all, [0, 1, 2]);
    }

    #[test]
    fn an_index_value_reads_back_as_its_position() {
        let channel = "c-1:x";
        let positions = [
            (SortKey::Channel, SortValue::Null),
            (SortKey::Speed, SortValue::Int(-42)),
            (SortKey::Speed, SortValue::Int(i128::from(i64::MAX))),
            (SortKey::Status, SortValue::Int(2)),
            (SortKey::LastMessageNumber, SortValue::Int(7)),
            (SortKey::Mission, SortValue::Null),
            (SortKey::Mission, SortValue::Text("a\u{0}b\u{1}c é".into())),
            (SortKey::Type, SortValue::Text("Falcon-9".into())),
            (
                SortKey::LaunchTime,
                SortValue::Time("2022-02-02T19:39:05.863370+01:00".parse().unwrap()),
            ),
        ];
        for (key, value) in positions {
            let position = position(value, channel);
            let encoded = index_value(&position);
            assert_eq!(
                entry_position(key, &encoded, channel),
                Some(position),
                "{key:?}"
            );
        }
        assert_eq!(entry_position(SortKey::Speed, "1zz", "c"), None);
    }

    #[test]
    fn the_next_page_starts_where_the_index_was_cut_whatever_changed_since() {
        let launched = |name: &str, speed: i64| Rocket {
            speed,
            status: Status::Launched,
            ..Rocket::new(Channel::parse(name).unwrap(), chrono::Utc::now())
        };
        let query = ListQuery {
            sort_by: SortKey::Speed,
            status: Some(Status::Launched),
            limit: 2,
            ..ListQuery::default()
        };
        let (a, b) = (launched("a", 10), launched("b", 20));
        let entries: Vec<(String, String)> = [&a, &b]
            .iter()
            .map(|r| {
                (
                    index_value(&SortKey::Speed.position(r)),
                    r.channel.to_string(),
                )
            })
            .collect();
        // Between the index read and the re-read, b sped up and a exploded.
        let mut faster = b.clone();
        faster.speed = 1_000;
        let mut exploded = a.clone();
        exploded.status = Status::Exploded;
        let fetched = HashMap::from([
            ("a".to_string(), exploded),
            ("b".to_string(), faster.clone()),
        ]);
        let page = page_from_entries(&query, &entries, true, fetched).unwrap();
        assert_eq!(
            page.rockets,
            [faster],
            "a no longer has the status asked for"
        );
        assert_eq!(
            page.next,
            Some(SortKey::Speed.position(&b)),
            "after the entry, not the re-read rocket"
        );
    }
}
