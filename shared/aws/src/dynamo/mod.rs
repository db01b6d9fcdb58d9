//! The rocket table in DynamoDB.
//!
//! One table, partition key `pk` (the channel) and sort key `sk`:
//!
//! | `sk` | item | attributes |
//! |---|---|---|
//! | `event#<n:020>` | message *n*: applied (the history) or parked (ahead of a gap) | `body`, `parkedAt` if parked on arrival, `expiresAt` (TTL, if set) |
//! | `state` | the rocket | `rocket`, `version`, `by_channel` |
//! | `~owner` | with auth on, the sender the channel belongs to | `owner` |
//!
//! A message number has one item whatever becomes of it: written when the message is first
//! accepted, conditional on being absent or identical (the first message under a number wins),
//! it is parked while its number is above the rocket's `lastMessageNumber` and history once the
//! rocket has passed it, so applying a parked message writes nothing for it. A commit writes the
//! items of the messages it accepts first, then replaces the state item conditional on
//! `version`: the state write is the commit point.
//!
//! Loading a channel is one strongly consistent Query down from `state`: the rocket, then its
//! highest-numbered messages, the parked ones first, until one it has applied shows that all
//! parked ones were read. A channel parking more than that is read on from its next number.
//!
//! The listing is one sparse global secondary index, `listing`, keyed by `by_channel` (on state
//! items only; the previous layout's items carry it too) and projecting `rocket`: a state write
//! updates its entry in place, one write unit, and never moves it. A page scans the index in
//! parallel segments and sorts in memory (`reader.rs`).
//!
//! - `channel.rs`: the apply side ([`ChannelStore`]): loading a channel, committing a change.
//! - `reader.rs`: the query side ([`RocketReader`]): a rocket, a page of rockets, a history.
//! - `items.rs`: the items the store writes.
//! - `owners.rs`: who owns each channel, for ingest when auth is on.
//!
//! [`ChannelStore`]: rockets::ports::ChannelStore
//! [`RocketReader`]: rockets::ports::RocketReader

mod channel;
mod items;
mod owners;
mod reader;

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures_util::future::join_all;

use super::store_error;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ports::StoreError;
use rockets::rocket::Rocket;

pub use items::{Item, MessageItem, TableLayout};
pub use owners::DynamoOwners;

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
pub(crate) const STATE: &str = "state";
/// The listing index's key, on state items only.
pub const LISTED: &str = "by_channel";
/// The listing index.
pub const LISTING: &str = "listing";
const EVENT: &str = "event#";
/// Keys per BatchGetItem call, DynamoDB's limit.
const BATCH_GET_LIMIT: usize = 100;

/// The rocket table, implementing both store ports.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    layout: TableLayout,
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
        .ok_or_else(|| StoreError::Failed(format!("item without string attribute {name}").into()))
}

fn envelope(item: &HashMap<String, AttributeValue>) -> Result<Envelope, StoreError> {
    Envelope::parse(text(item, "body")?.as_bytes())
        .map_err(|e| StoreError::Failed(format!("stored message unreadable: {e}").into()))
}

fn rocket(item: &HashMap<String, AttributeValue>) -> Result<Rocket, StoreError> {
    serde_json::from_str(text(item, "rocket")?)
        .map_err(|e| StoreError::Failed(format!("stored rocket unreadable: {e}").into()))
}

fn version(item: &HashMap<String, AttributeValue>) -> Result<u64, StoreError> {
    item.get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Failed("state item without a version".into()))
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
    Err(StoreError::Unavailable(
        format!("batch get left {} keys unprocessed", pending.len()).into(),
    ))
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            layout: TableLayout::default(),
        }
    }

    /// How the store lays the table out.
    pub fn layout(&self) -> TableLayout {
        self.layout
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The environment variable that sets how many days history items live (0: for ever).
    pub const HISTORY_RETENTION_ENV: &'static str = "HISTORY_RETENTION_DAYS";

    /// This store, writing history items that expire after `days` (0: never).
    pub fn with_history_retention(mut self, days: u64) -> Self {
        self.layout.history_retention =
            (days > 0).then(|| std::time::Duration::from_secs(days.saturating_mul(86_400)));
        self
    }

    /// [`DynamoStore::with_history_retention`] as `HISTORY_RETENTION_DAYS` says.
    pub fn with_history_retention_from_env(self) -> Result<Self, rockets::config::ConfigError> {
        let days = rockets::config::parsed(Self::HISTORY_RETENTION_ENV, 0u64)?;
        Ok(self.with_history_retention(days))
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
                    .map_err(|e| StoreError::Failed(e.to_string().into()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| store_error("batch get", e))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
