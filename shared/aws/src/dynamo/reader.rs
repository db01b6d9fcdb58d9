//! The query side of the table: a rocket by its state item, pages from the listing indexes,
//! and the history.

use std::cmp::Reverse;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Select};

use super::index::{index_attribute, index_name, index_value, page_from_entries};
use super::{
    DynamoStore, EVENT, LISTING_READS, PK, SK, STATE, STATUS, bounded, envelope, key, rocket, s,
    sort_key, text,
};
use crate::store_error;
use rockets::listing::merge::{Merged, PartitionRead, first_read_limit, merge};
use rockets::listing::{ListQuery, Order, RocketPage};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ports::{RocketReader, StoreError};
use rockets::rocket::Rocket;

impl DynamoStore {
    async fn get_state(
        &self,
        channel: &Channel,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(channel, STATE)))
            .send()
            .await
            .map_err(|e| store_error("get state", e))?;
        Ok(output.item)
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
                .send()
                .await
                .map_err(|e| store_error(what, e))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Up to `limit` entries of one partition key of the query's index, in the query's order,
    /// after `after` (an index value): what [`merge`] takes.
    async fn read_partition(
        &self,
        query: &ListQuery,
        partition: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PartitionRead<Entry>, StoreError> {
        let attribute = index_attribute(query.sort_by);
        let (operator, forward) = match query.order {
            Order::Asc => (">", true),
            Order::Desc => ("<", false),
        };
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index_name(query.sort_by))
            .expression_attribute_names("#st", STATUS)
            .expression_attribute_values(":st", s(partition))
            .scan_index_forward(forward)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .select(Select::AllProjectedAttributes);
        // A key condition holds one range on the sort key: past the cursor, at or above the
        // query's floor, or between the two (BETWEEN includes the cursor, dropped below).
        let floor = query.floor().map(|floor| index_value(&floor));
        let range = match (floor, after, query.order) {
            (None, None, _) => None,
            (None, Some(after), _) => Some((format!("#by {operator} :after"), None, Some(after))),
            (Some(floor), None, _) => Some(("#by >= :floor".to_string(), Some(floor), None)),
            (Some(floor), Some(after), Order::Asc) if after < floor.as_str() => {
                Some(("#by >= :floor".to_string(), Some(floor), None))
            }
            (Some(_), Some(after), Order::Asc) => {
                Some(("#by > :after".to_string(), None, Some(after)))
            }
            (Some(floor), Some(after), Order::Desc) if after <= floor.as_str() => {
                return Ok(PartitionRead::default());
            }
            (Some(floor), Some(after), Order::Desc) => Some((
                "#by BETWEEN :floor AND :after".to_string(),
                Some(floor),
                Some(after),
            )),
        };
        let mut condition = "#st = :st".to_string();
        if let Some((range, floor, after)) = range {
            if floor.is_some() && after.is_some() {
                // The cursor's own entry comes back too: one more keeps the read whole.
                request = request.limit(i32::try_from(limit + 1).unwrap_or(i32::MAX));
            }
            condition.push_str(" AND ");
            condition.push_str(&range);
            request = request.expression_attribute_names("#by", &attribute);
            if let Some(floor) = floor {
                request = request.expression_attribute_values(":floor", s(&floor));
            }
            if let Some(after) = after {
                request = request.expression_attribute_values(":after", s(after));
            }
        }
        let output = request
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(|e| store_error("query index", e))?;
        let mut read = PartitionRead {
            more: output.last_evaluated_key.is_some(),
            ..PartitionRead::default()
        };
        for item in output.items() {
            let entry = Entry {
                value: text(item, &attribute)?.to_string(),
                channel: text(item, PK)?.to_string(),
            };
            if Some(entry.value.as_str()) != after {
                read.entries.push(entry.clone());
            }
            read.last = Some(entry);
        }
        Ok(read)
    }

    /// The first `want` entries of the query's page in order, merged from every partition key
    /// the query covers (each shard of each status asked for): one round of reads, or two.
    async fn merged_entries<K: Ord + Clone>(
        &self,
        query: &ListQuery,
        want: usize,
        in_order: fn(Entry) -> K,
        entry: fn(K) -> Entry,
    ) -> Result<Vec<Entry>, StoreError> {
        let cursor = query.after.as_ref().map(index_value);
        let partitions = self.layout.shards.partitions(query.status);
        let first = first_read_limit(want, usize::from(self.layout.shards.count()));
        // Collected first: a stream that holds the closures would not be `Send`.
        let reads: Vec<_> = partitions
            .iter()
            .map(|p| self.read_partition(query, p, cursor.as_deref(), first))
            .collect();
        let reads = bounded(LISTING_READS, reads).await;
        let mut reads: Vec<PartitionRead<K>> = reads
            .into_iter()
            .map(|read| read.map(|r| r.map(in_order)))
            .collect::<Result<_, _>>()?;
        // Two rounds always suffice (see `merge`) unless DynamoDB cut a query short of its
        // limit, which its 1 MB page cap cannot do to a page's worth of index keys; a few more
        // are allowed rather than failing the page.
        for _round in 0..4 {
            let on = match merge(&reads, want) {
                Merged::Page(page) => return Ok(page.into_iter().map(entry).collect()),
                Merged::ReadOn(on) => on,
            };
            let further: Vec<_> = on
                .iter()
                .map(|&i| {
                    let from = reads[i].last.clone().map(entry).map(|e| e.value);
                    let (partition, cursor) = (&partitions[i], &cursor);
                    async move {
                        let after = from.as_deref().or(cursor.as_deref());
                        self.read_partition(query, partition, after, want).await
                    }
                })
                .collect();
            let further = bounded(LISTING_READS, further).await;
            for (i, read) in on.into_iter().zip(further) {
                let read = read?.map(in_order);
                let merged = &mut reads[i];
                merged.entries.extend(read.entries);
                merged.last = read.last.or(merged.last.take());
                merged.more = read.more;
            }
        }
        Err(StoreError::Failed(
            "listing shards did not merge in four rounds".into(),
        ))
    }
}

/// An index entry: its sort key (the index value) and the channel it lists.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Entry {
    value: String,
    channel: String,
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
        let want = query.limit + 1;
        let mut entries = match query.order {
            Order::Asc => self.merged_entries(query, want, |e| e, |e| e).await?,
            Order::Desc => {
                self.merged_entries(query, want, Reverse, |Reverse(e)| e)
                    .await?
            }
        };
        let more = entries.len() > query.limit;
        entries.truncate(query.limit);
        let keys = entries
            .iter()
            .map(|entry| {
                let channel =
                    Channel::parse(&entry.channel).map_err(|e| StoreError::Failed(e.into()))?;
                Ok(key(&channel, STATE))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut fetched: HashMap<String, Rocket> = HashMap::with_capacity(keys.len());
        for item in self.batch_get(keys, false).await? {
            let rocket = rocket(&item)?;
            fetched.insert(rocket.channel.as_str().to_owned(), rocket);
        }
        let entries: Vec<(String, String)> =
            entries.into_iter().map(|e| (e.value, e.channel)).collect();
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
