//! In-process store: the same contract as the DynamoDB table, held in memory.
//!
//! Listing keeps one ordered set per (sort key, status), the shape a table's sorted indexes
//! take: a filtered page reads one set from the cursor on, an unfiltered page merges the
//! heads of the three status sets, so a page costs O(limit · log n) however many rockets
//! there are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::RwLock;

use rockets::listing::{ListQuery, Order, Position, RocketPage, SortKey};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{ChannelChange, ParkedView};
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, RocketReader, StoreError};
use rockets::rocket::{Rocket, Status};

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
    history: Vec<Envelope>,
    version: u64,
}

/// `sets[key][status]`: the positions of the rockets with that status, in that key's order.
#[derive(Default)]
struct SortedIndex {
    sets: [[BTreeSet<Position>; 3]; SortKey::ALL.len()],
}

impl SortedIndex {
    fn replace(&mut self, old: Option<&Rocket>, new: &Rocket) {
        for key in SortKey::ALL {
            if let Some(old) = old {
                if old.status == new.status && key.same_value(old, new) {
                    continue;
                }
                self.sets[key.index()][old.status.index()].remove(&key.position(old));
            }
            self.sets[key.index()][new.status.index()].insert(key.position(new));
        }
    }

    /// Up to `limit + 1` positions after the query's cursor, in the query's order.
    fn page(&self, query: &ListQuery) -> Vec<Position> {
        let want = query.limit + 1;
        let statuses: &[Status] = match &query.status {
            Some(status) => std::slice::from_ref(status),
            None => &Status::ALL,
        };
        let mut found = Vec::with_capacity(want * statuses.len());
        for status in statuses {
            let set = &self.sets[query.sort_by.index()][status.index()];
            match (query.order, &query.after) {
                (Order::Asc, None) => found.extend(set.iter().take(want).cloned()),
                (Order::Asc, Some(after)) => found.extend(
                    set.range((Bound::Excluded(after), Bound::Unbounded))
                        .take(want)
                        .cloned(),
                ),
                (Order::Desc, None) => found.extend(set.iter().rev().take(want).cloned()),
                (Order::Desc, Some(after)) => found.extend(
                    set.range((Bound::Unbounded, Bound::Excluded(after)))
                        .rev()
                        .take(want)
                        .cloned(),
                ),
            }
        }
        if statuses.len() > 1 {
            found.sort_unstable();
            if query.order == Order::Desc {
                found.reverse();
            }
            found.truncate(want);
        }
        found
    }
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
        let current = channels.get(channel).map_or(0, |s| s.version);
        if current != expected_version {
            return CommitOutcome::VersionMismatch;
        }
        let stored = channels.entry(channel.clone()).or_insert_with(|| Stored {
            rocket: change.rocket.clone(),
            parked: BTreeMap::new(),
            history: Vec::new(),
            version: 0,
        });
        let old = (stored.version > 0).then_some(&stored.rocket);
        index.replace(old, &change.rocket);
        for number in &change.unparked {
            stored.parked.remove(number);
        }
        for message in &change.parked {
            stored.parked.insert(message.number, message.clone());
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
            parked: ParkedView::cut(&s.parked, window, probe),
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
        let inner = self.read();
        let mut positions = inner.index.page(query);
        let next = (positions.len() > query.limit).then(|| {
            positions.truncate(query.limit);
            positions.last().cloned().expect("limit is at least 1")
        });
        let rockets = positions
            .iter()
            .map(|p| inner.channels[&p.channel].rocket.clone())
            .collect();
        Ok(RocketPage { rockets, next })
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
