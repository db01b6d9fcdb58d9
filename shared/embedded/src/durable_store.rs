//! The store on a data directory: the same contract as the in-memory store and the DynamoDB
//! table, with parked messages and history on disk.
//!
//! Each rocket's state and version are cached in memory beside the listing's [`SortedIndex`]
//! (the cache is read from the directory at open, in time proportional to the rockets, not the
//! history; the index fills from it when a page is first read); parked messages and history are
//! read from disk, so memory does not grow with them.
//! A commit is written before the cache shows it, and while it is being written every other
//! commit to that channel is refused as a version mismatch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use rockets::listing::{ListQuery, RocketPage};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{ChannelChange, Leading, ParkedView, drains};
use rockets::ports::{
    Cause, ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError,
};
use rockets::rocket::Rocket;

use crate::disk::{
    DataDir, DataDirError, DiskError, Op, Space, Wait, channel_prefix, numbered_key,
};
use crate::index::SortedIndex;

pub struct DurableStore {
    dir: DataDir,
    cache: RwLock<Cache>,
}

#[derive(Default)]
struct Cache {
    rockets: HashMap<Channel, Cached>,
    index: SortedIndex,
    /// Channels with a commit being written.
    committing: HashSet<Channel>,
}

struct Cached {
    rocket: Rocket,
    version: u64,
}

/// A stored rocket: its version (8 bytes, big-endian), then its JSON.
fn encode(version: u64, rocket: &Rocket) -> Vec<u8> {
    let mut value = version.to_be_bytes().to_vec();
    serde_json::to_writer(&mut value, rocket).expect("a rocket always serialises");
    value
}

fn decode(value: &[u8]) -> Result<Cached, String> {
    let (version, json) = value
        .split_first_chunk::<8>()
        .ok_or("a rocket record is too short")?;
    let rocket = serde_json::from_slice(json).map_err(|e| format!("a rocket record: {e}"))?;
    Ok(Cached {
        rocket,
        version: u64::from_be_bytes(*version),
    })
}

/// A parked message's value: when it was parked (milliseconds since the epoch, 8 bytes,
/// big-endian), then its JSON.
fn encode_parked(message: &Envelope, at: DateTime<Utc>) -> Vec<u8> {
    let mut value = at.timestamp_millis().to_be_bytes().to_vec();
    value.extend_from_slice(message.to_json().as_bytes());
    value
}

/// A parked message and when it was parked, if its record says.
type Parked = (Envelope, Option<DateTime<Utc>>);

/// A parked message's value read back; one that is JSON alone, as data directories written
/// before parked messages expired hold, says no time.
fn decode_parked(value: &[u8]) -> Result<Parked, StoreError> {
    match value.split_first_chunk::<8>() {
        Some((millis, json)) if value.first() != Some(&b'{') => Ok((
            message(json)?,
            DateTime::from_timestamp_millis(i64::from_be_bytes(*millis)),
        )),
        _ => Ok((message(value)?, None)),
    }
}

fn message(value: &[u8]) -> Result<Envelope, StoreError> {
    Envelope::parse(value).map_err(|e| {
        StoreError::Failed(Cause::from(format!("a stored message does not parse: {e}")))
    })
}

/// The message number at the end of a [`numbered_key`].
fn number_of(key: &[u8]) -> Option<MessageNumber> {
    let (_, number) = key.split_last_chunk::<8>()?;
    MessageNumber::new(u64::from_be_bytes(*number))
}

fn failed(error: DiskError) -> StoreError {
    StoreError::Unavailable(Cause::new("data directory", error))
}

impl DurableStore {
    /// The store in `dir`, its rockets read into memory.
    pub fn open(dir: &DataDir) -> Result<Self, DataDirError> {
        let damaged = |detail: String| DataDirError::Damaged {
            path: dir.path().to_path_buf(),
            detail,
        };
        let mut cache = Cache::default();
        for (key, value) in dir
            .all(Space::Rockets)
            .map_err(|e| damaged(e.to_string()))?
        {
            let cached = decode(&value).map_err(&damaged)?;
            if cached.rocket.channel.as_str().as_bytes() != key.as_slice() {
                return Err(damaged("a rocket is stored under another channel".into()));
            }
            cache.index.changed(&cached.rocket.channel, None);
            cache.rockets.insert(cached.rocket.channel.clone(), cached);
        }
        Ok(DurableStore {
            dir: dir.clone(),
            cache: RwLock::new(cache),
        })
    }

    /// How many rockets it holds.
    pub fn len(&self) -> usize {
        self.read().rockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The parked messages of `channel` a load needs, for a rocket whose next number is `next`: its
/// leading run of at most `window` (when a drain can start), and those numbered in `probe`.
fn parked_view(
    dir: &DataDir,
    channel: &str,
    next: u64,
    window: usize,
    probe: &[MessageNumber],
) -> Result<ParkedView, StoreError> {
    let parked = |number: u64| -> Result<Option<Parked>, StoreError> {
        dir.get(Space::Parked, &numbered_key(channel, number))
            .map_err(failed)?
            .map(|value| decode_parked(&value))
            .transpose()
    };
    // From the first number not applied: every parked message below it was applied and
    // deleted (commits here are atomic, so none is left behind), and starting past them
    // skips their deletion markers, which would otherwise make each load walk the channel's
    // whole history until compaction drops them.
    let prefix = channel_prefix(channel);
    let from = numbered_key(channel, next);
    // A batch that cannot start a drain needs only its own numbers looked up.
    let next_parked = || Ok(parked(next)?.is_some());
    let (items, complete) = if drains(next, probe, next_parked)? {
        let mut leading = Leading::new(window);
        dir.scan_while(Space::Parked, &prefix, &from, |key| {
            number_of(key).is_some_and(|number| leading.take(number))
        })
        .map_err(failed)?
    } else {
        (Vec::new(), false)
    };
    let mut since = BTreeMap::new();
    let mut keep = |(message, at): Parked| {
        since.extend(at.map(|at| (message.number, at)));
        message
    };
    let mut first = Vec::with_capacity(items.len());
    for (_, value) in &items {
        first.push(keep(decode_parked(value)?));
    }
    let last = first.last().map(|m| m.number);
    let mut probed = Vec::new();
    for number in probe {
        if last.is_none_or(|last| *number > last)
            && let Some(found) = parked(number.get())?
        {
            probed.push(keep(found));
        }
    }
    Ok(ParkedView {
        first,
        complete,
        probed,
        since,
    })
}

impl ChannelStore for DurableStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        // The cache first: a commit is on disk before the cache shows it, so parked messages
        // read after it are at least as new as this version, and a commit against a version
        // older than the disk's is refused.
        let Some((rocket, version)) = self
            .read()
            .rockets
            .get(channel)
            .map(|c| (c.rocket.clone(), c.version))
        else {
            return Ok(None);
        };
        // Commits here are atomic, so the rocket's count of parked messages is exact: with none,
        // there is nothing to read.
        if rocket.pending_messages == 0 {
            return Ok(Some(ChannelSnapshot {
                rocket,
                parked: ParkedView::none(),
                version,
            }));
        }
        // Read on the calling worker: these reads come from memory or the page cache in
        // microseconds, and handing them to a blocking thread cost more than they take
        // (docs/design.md, "The local server's data directory").
        let next = rocket.next_number();
        let parked = parked_view(&self.dir, channel.as_str(), next, window, probe)?;
        Ok(Some(ChannelSnapshot {
            rocket,
            parked,
            version,
        }))
    }

    async fn commit(
        &self,
        expected_version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        let channel = &change.rocket.channel;
        let written = {
            let mut cache = self.write();
            let current = cache.rockets.get(channel).map_or(0, |c| c.version);
            if current != expected_version || cache.committing.contains(channel) {
                return Ok(CommitOutcome::VersionMismatch);
            }
            cache.committing.insert(channel.clone());
            let name = channel.as_str();
            let mut ops = Vec::with_capacity(
                1 + change.unparked.len()
                    + change.expired.len()
                    + change.parked.len()
                    + change.applied.len(),
            );
            ops.push(Op::Put(
                Space::Rockets,
                name.as_bytes().to_vec(),
                encode(current + 1, &change.rocket),
            ));
            for number in change.unparked.iter().chain(&change.expired) {
                ops.push(Op::Delete(Space::Parked, numbered_key(name, number.get())));
            }
            for parked in &change.parked {
                ops.push(Op::Put(
                    Space::Parked,
                    numbered_key(name, parked.number.get()),
                    encode_parked(parked, change.rocket.updated_at),
                ));
            }
            for applied in &change.applied {
                ops.push(Op::Put(
                    Space::History,
                    numbered_key(name, applied.number.get()),
                    applied.to_json().into_bytes(),
                ));
            }
            // Submitted under the lock, so one channel's commits reach the disk in order. Written,
            // not synced: what acknowledges the records (their delete) is submitted after this
            // returns, so it cannot reach the disk without it.
            self.dir.submit(ops, Wait::Written)
        };
        let written = written.done().await;
        let mut cache = self.write();
        let cache = &mut *cache;
        cache.committing.remove(channel);
        written.map_err(failed)?;
        let old = cache.rockets.insert(
            channel.clone(),
            Cached {
                rocket: change.rocket.clone(),
                version: expected_version + 1,
            },
        );
        cache
            .index
            .changed(channel, old.as_ref().map(|c| &c.rocket));
        Ok(CommitOutcome::Committed)
    }

    async fn parked(&self, rocket: &Rocket) -> Result<ParkedView, StoreError> {
        let (name, next) = (rocket.channel.as_str(), rocket.next_number());
        let (items, _) = self
            .dir
            .scan_while(
                Space::Parked,
                &channel_prefix(name),
                &numbered_key(name, next),
                |_| true,
            )
            .map_err(failed)?;
        let mut since = BTreeMap::new();
        let mut all = Vec::with_capacity(items.len());
        for (_, value) in &items {
            let (message, at) = decode_parked(value)?;
            since.extend(at.map(|at| (message.number, at)));
            all.push(message);
        }
        Ok(ParkedView::all(all).parked_at(|n| since.get(&n).copied()))
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        let keys: Vec<Vec<u8>> = numbers
            .iter()
            .map(|number| numbered_key(channel.as_str(), number.get()))
            .collect();
        let mut found = Vec::new();
        for key in keys {
            if let Some(value) = self.dir.get(Space::History, &key).map_err(failed)? {
                found.push(message(&value)?);
            }
        }
        Ok(found)
    }
}

impl RocketReader for DurableStore {
    fn refusing_writes(&self) -> Option<String> {
        self.dir.refusing()
    }

    async fn rocket(&self, channel: &Channel) -> Result<Option<Rocket>, StoreError> {
        Ok(self.read().rockets.get(channel).map(|c| c.rocket.clone()))
    }

    async fn rockets(&self, query: &ListQuery) -> Result<RocketPage, StoreError> {
        let mut cache = self.write();
        let Cache { rockets, index, .. } = &mut *cache;
        Ok(index.list(query, |channel| rockets[channel].rocket.clone()))
    }

    async fn history(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Envelope>>, StoreError> {
        if !self.read().rockets.contains_key(channel) {
            return Ok(None);
        }
        let Some(from) = after.checked_add(1) else {
            return Ok(Some(Vec::new()));
        };
        let prefix = channel_prefix(channel.as_str());
        let from = numbered_key(channel.as_str(), from);
        let items = self
            .dir
            .scan(Space::History, &prefix, &from, limit)
            .map_err(failed)?;
        items
            .iter()
            .map(|(_, value)| message(value))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
