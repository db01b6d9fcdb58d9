//! In-process store: the same contract as the DynamoDB table, held in memory.
//!
//! Listing is a [`SortedIndex`].

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use rockets::listing::{ListQuery, RocketPage};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{ChannelChange, ParkedView};
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError};
use rockets::rocket::Rocket;

use crate::index::SortedIndex;

#[derive(Default)]
pub struct EmbeddedStore {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: HashMap<Channel, Stored>,
    index: SortedIndex,
}

struct Stored {
    rocket: Rocket,
    parked: BTreeMap<MessageNumber, Envelope>,
    /// When each parked message was parked.
    parked_at: HashMap<MessageNumber, DateTime<Utc>>,
    history: Vec<Envelope>,
    version: u64,
}

impl EmbeddedStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied commit (commit checks
        // first and then writes), so the data behind a poisoned lock is still consistent.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn commit_now(&self, expected_version: u64, change: &ChannelChange) -> CommitOutcome {
        let mut inner = self.write();
        let Inner { channels, index } = &mut *inner;
        let channel = &change.rocket.channel;
        let stored = match channels.entry(channel.clone()) {
            Entry::Occupied(stored) if stored.get().version == expected_version => {
                let stored = stored.into_mut();
                index.changed(channel, Some(&stored.rocket));
                stored
            }
            Entry::Vacant(new) if expected_version == 0 => {
                index.changed(channel, None);
                new.insert(Stored {
                    rocket: change.rocket.clone(),
                    parked: BTreeMap::new(),
                    parked_at: HashMap::new(),
                    history: Vec::new(),
                    version: 0,
                })
            }
            _ => return CommitOutcome::VersionMismatch,
        };
        for number in change.unparked.iter().chain(&change.expired) {
            stored.parked.remove(number);
            stored.parked_at.remove(number);
        }
        for message in &change.parked {
            stored.parked.insert(message.number, message.clone());
            stored
                .parked_at
                .insert(message.number, change.rocket.updated_at);
        }
        stored.history.extend(change.applied.iter().cloned());
        stored.rocket = change.rocket.clone();
        stored.version += 1;
        CommitOutcome::Committed
    }
}

impl ChannelStore for EmbeddedStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        Ok(self.read().channels.get(channel).map(|s| ChannelSnapshot {
            rocket: s.rocket.clone(),
            parked: ParkedView::leading(&s.parked, s.rocket.next_number(), window, probe)
                .parked_at(|n| s.parked_at.get(&n).copied()),
            version: s.version,
        }))
    }

    async fn commit(
        &self,
        expected_version: u64,
        change: &ChannelChange,
    ) -> Result<CommitOutcome, StoreError> {
        Ok(self.commit_now(expected_version, change))
    }

    async fn parked(&self, rocket: &Rocket) -> Result<ParkedView, StoreError> {
        Ok(self
            .read()
            .channels
            .get(&rocket.channel)
            .map_or_else(ParkedView::none, |s| {
                ParkedView::all(s.parked.values().cloned().collect())
                    .parked_at(|n| s.parked_at.get(&n).copied())
            }))
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, StoreError> {
        let inner = self.read();
        let Some(stored) = inner.channels.get(channel) else {
            return Ok(Vec::new());
        };
        Ok(numbers
            .iter()
            .filter_map(|n| stored.history.get(n.predecessor() as usize).cloned())
            .collect())
    }
}

impl RocketReader for EmbeddedStore {
    async fn rocket(&self, channel: &Channel) -> Result<Option<Rocket>, StoreError> {
        Ok(self.read().channels.get(channel).map(|s| s.rocket.clone()))
    }

    async fn rockets(&self, query: &ListQuery) -> Result<RocketPage, StoreError> {
        let mut inner = self.write();
        let Inner { channels, index } = &mut *inner;
        Ok(index.list(query, |channel| channels[channel].rocket.clone()))
    }

    async fn history(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Envelope>>, StoreError> {
        let inner = self.read();
        Ok(inner.channels.get(channel).map(|s| {
            let start = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(s.history.len());
            s.history[start..].iter().take(limit).cloned().collect()
        }))
    }
}
