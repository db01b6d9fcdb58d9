//! The listing's sorted sets, kept beside the rockets by both embedded stores.
//!
//! One ordered set per (sort key, status), the shape a table's sorted indexes take: a filtered
//! page reads one set from the cursor on, an unfiltered page merges the heads of the three
//! status sets, so a page costs O(limit · log n) however many rockets there are. A query that
//! lists only part of its order (`stalled`) starts its range at the query's floor.

use std::collections::BTreeSet;
use std::ops::Bound;

use rockets::listing::{ListQuery, Order, Position, RocketPage, SortKey};
use rockets::message::Channel;
use rockets::rocket::{Rocket, Status};

/// `sets[key][status]`: the positions of the rockets with that status, in that key's order.
#[derive(Default)]
pub(crate) struct SortedIndex {
    sets: [[BTreeSet<Position>; 3]; SortKey::ALL.len()],
}

impl SortedIndex {
    pub(crate) fn replace(&mut self, old: Option<&Rocket>, new: &Rocket) {
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
        &self,
        query: &ListQuery,
        rocket: impl Fn(&Channel) -> Rocket,
    ) -> RocketPage {
        let mut positions = self.page(query);
        let next = (positions.len() > query.limit).then(|| {
            positions.truncate(query.limit);
            positions.last().cloned().expect("limit is at least 1")
        });
        let rockets = positions.iter().map(|p| rocket(&p.channel)).collect();
        RocketPage { rockets, next }
    }
}
