//! The listing's sorted sets, kept beside the rockets by both embedded stores.
//!
//! One ordered set per (sort key, status), the shape a table's sorted indexes take: a filtered
//! page reads one set from the cursor on, an unfiltered page merges the heads of the three
//! status sets, so a page costs O(limit · log n) however many rockets there are. A query that
//! lists only part of its order (`stalled`) starts its range at the query's floor.
//!
//! A rocket changes with nearly every message and is listed far less often, so a commit only
//! notes which rocket changed (and how it was listed before); the sets catch up when a page is
//! next read, once per rocket however many messages it took meanwhile. A page always sees
//! every commit made before it.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::ops::Bound;

use rockets::listing::{ListQuery, Order, Position, RocketPage, SortKey, Totals};
use rockets::message::Channel;
use rockets::rocket::{Rocket, Status};

/// `sets[key][status]`: the positions of the rockets with that status, in that key's order.
#[derive(Default)]
pub(crate) struct SortedIndex {
    sets: [[BTreeSet<Position>; 3]; SortKey::ALL.len()],
    /// Rockets changed since the sets were last brought up to date, each as the sets list it
    /// (`None`: not listed yet).
    stale: HashMap<Channel, Option<Rocket>>,
}

impl SortedIndex {
    /// Notes that a rocket listed as `old` (`None`: not yet) has changed; the sets follow when a
    /// page is next read.
    pub(crate) fn changed(&mut self, channel: &Channel, old: Option<&Rocket>) {
        if !self.stale.contains_key(channel) {
            self.stale.insert(channel.clone(), old.cloned());
        }
    }

    /// Brings the sets up to date with every changed rocket, as `rocket` now has it.
    fn catch_up(&mut self, rocket: &impl Fn(&Channel) -> Rocket) {
        let stale = std::mem::take(&mut self.stale);
        for (channel, old) in stale {
            self.replace(old.as_ref(), &rocket(&channel));
        }
    }

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

    /// Up to `limit + 1` positions of channels starting with `prefix`, after the query's
    /// cursor, in channel order: a range of the channel sets.
    fn prefixed(&self, query: &ListQuery, prefix: &str) -> Vec<Position> {
        let statuses: &[Status] = match &query.status {
            Some(status) => std::slice::from_ref(status),
            None => &Status::ALL,
        };
        let mut found: Vec<Position> = Vec::new();
        for status in statuses {
            let set = &self.sets[SortKey::Channel.index()][status.index()];
            let start = (query.after.as_ref())
                .filter(|_| query.order == Order::Asc)
                .map_or(Bound::Unbounded, Bound::Excluded);
            let matching = set
                .range((start, Bound::Unbounded))
                .skip_while(|p| p.channel.as_str() < prefix)
                .take_while(|p| p.channel.as_str().starts_with(prefix))
                .filter(|p| {
                    query.order == Order::Asc || query.after.as_ref().is_none_or(|a| *p < a)
                });
            match query.order {
                Order::Asc => found.extend(matching.take(query.limit + 1).cloned()),
                Order::Desc => found.extend(matching.cloned()),
            }
        }
        found.sort_unstable();
        if query.order == Order::Desc {
            found.reverse();
        }
        found.truncate(query.limit + 1);
        found
    }

    /// How many rockets the sets hold, by status, and how many are stalled.
    fn totals(&self) -> Totals {
        let count =
            |key: SortKey, status: Status| self.sets[key.index()][status.index()].len() as u64;
        let floor = ListQuery {
            stalled: true,
            ..ListQuery::default()
        }
        .floor()
        .expect("stalled has a floor");
        let stalled: usize = (Status::ALL.iter())
            .map(|s| {
                self.sets[SortKey::PendingMessages.index()][s.index()]
                    .range(&floor..)
                    .count()
            })
            .sum();
        let [pending, launched, exploded] = Status::ALL.map(|s| count(SortKey::Channel, s));
        Totals {
            rockets: pending + launched + exploded,
            pending,
            launched,
            exploded,
            stalled: stalled as u64,
        }
    }

    /// Up to `limit + 1` positions after the query's cursor, in the query's order.
    fn page(&self, query: &ListQuery) -> Vec<Position> {
        if let Some(prefix) = &query.prefix {
            return self.prefixed(query, prefix);
        }
        let want = query.limit + 1;
        let statuses: &[Status] = match &query.status {
            Some(status) => std::slice::from_ref(status),
            None => &Status::ALL,
        };
        let floor = query.floor();
        let low = match &floor {
            Some(floor) => Bound::Included(floor),
            None => Bound::Unbounded,
        };
        let mut found = Vec::with_capacity(want * statuses.len());
        for status in statuses {
            let set = &self.sets[query.sort_by.index()][status.index()];
            match (query.order, &query.after) {
                (Order::Asc, None) => {
                    found.extend(set.range((low, Bound::Unbounded)).take(want).cloned())
                }
                (Order::Asc, Some(after)) => {
                    let start = match &floor {
                        Some(floor) if after < floor => Bound::Included(floor),
                        _ => Bound::Excluded(after),
                    };
                    found.extend(set.range((start, Bound::Unbounded)).take(want).cloned())
                }
                (Order::Desc, None) => {
                    found.extend(set.range((low, Bound::Unbounded)).rev().take(want).cloned())
                }
                (Order::Desc, Some(after)) => {
                    if floor.as_ref().is_some_and(|floor| after <= floor) {
                        continue;
                    }
                    found.extend(
                        set.range((low, Bound::Excluded(after)))
                            .rev()
                            .take(want)
                            .cloned(),
                    )
                }
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

    /// The page `query` asks for, each rocket looked up by its channel.
    pub(crate) fn list(
        &mut self,
        query: &ListQuery,
        rocket: impl Fn(&Channel) -> Rocket,
    ) -> RocketPage {
        self.catch_up(&rocket);
        let mut positions = self.page(query);
        let next = (positions.len() > query.limit).then(|| {
            positions.truncate(query.limit);
            positions.last().cloned().expect("limit is at least 1")
        });
        let rockets = positions.iter().map(|p| rocket(&p.channel)).collect();
        RocketPage {
            rockets,
            next,
            totals: Some(self.totals()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rockets_testkit::{Rng, channel, flight};

    /// Every rocket's page walk, sorted from scratch.
    fn sorted(rockets: &HashMap<Channel, Rocket>, key: SortKey, order: Order) -> Vec<Channel> {
        let mut all: Vec<&Rocket> = rockets.values().collect();
        all.sort_by_key(|r| key.position(r));
        if order == Order::Desc {
            all.reverse();
        }
        all.into_iter().map(|r| r.channel.clone()).collect()
    }

    fn walk(
        index: &mut SortedIndex,
        rockets: &HashMap<Channel, Rocket>,
        key: SortKey,
        order: Order,
    ) -> Vec<Channel> {
        let mut query = ListQuery {
            sort_by: key,
            order,
            limit: 3,
            ..ListQuery::default()
        };
        let mut walked = Vec::new();
        loop {
            let page = index.list(&query, |c| rockets[c].clone());
            walked.extend(page.rockets.into_iter().map(|r| r.channel));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return walked,
            }
        }
    }

    #[test]
    fn pages_read_between_changes_see_every_change_before_them() {
        let mut rng = Rng::new(9);
        let flights: Vec<Vec<rockets::message::Envelope>> = (0..12)
            .map(|i| flight(&channel(&format!("r{i}")), 30, &mut rng))
            .collect();
        let mut applied = vec![0usize; flights.len()];
        let mut rockets: HashMap<Channel, Rocket> = HashMap::default();
        let mut index = SortedIndex::default();
        for step in 0..400 {
            let i = rng.below(flights.len() as u64) as usize;
            let Some(message) = flights[i].get(applied[i]) else {
                continue;
            };
            applied[i] += 1;
            let channel = message.channel.clone();
            let old = rockets.get(&channel).cloned();
            let mut new = old
                .clone()
                .unwrap_or_else(|| Rocket::new(channel.clone(), chrono::Utc::now()));
            new.apply(message);
            index.changed(&channel, old.as_ref());
            rockets.insert(channel, new);
            if step % 37 == 0 {
                for key in SortKey::ALL {
                    for order in [Order::Asc, Order::Desc] {
                        assert_eq!(
                            walk(&mut index, &rockets, key, order),
                            sorted(&rockets, key, order),
                            "{key:?} {order:?} at step {step}"
                        );
                    }
                }
            }
        }
    }
}
