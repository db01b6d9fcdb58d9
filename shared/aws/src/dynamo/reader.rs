//! The query side of the table: a rocket by its state item, pages from the listing indexes,
//! and the history.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use futures_util::future::join_all;

use super::index::{index_attribute, index_name, index_value, page_from_entries};
use super::{DynamoStore, EVENT, PK, SK, STATE, STATUS, envelope, key, rocket, s, sort_key, text};
use crate::store_error;
use rockets::listing::{ListQuery, Order, RocketPage};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ports::{RocketReader, StoreError};
use rockets::rocket::{Rocket, Status};

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
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index_name(query.sort_by))
            .expression_attribute_names("#st", STATUS)
            .expression_attribute_values(":st", s(status.as_str()))
            .scan_index_forward(forward)
            .limit(i32::try_from(query.limit + 1).unwrap_or(i32::MAX))
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
                return Ok(Vec::new());
            }
            (Some(floor), Some(after), Order::Desc) => Some((
                "#by BETWEEN :floor AND :after".to_string(),
                Some(floor),
                Some(after),
            )),
        };
        let mut condition = "#st = :st".to_string();
        if let Some((range, floor, after)) = range {
            let floor_and_after = floor.is_some() && after.is_some();
            condition.push_str(" AND ");
            condition.push_str(&range);
            request = request.expression_attribute_names("#by", &attribute);
            if let Some(floor) = floor {
                request = request.expression_attribute_values(":floor", s(&floor));
            }
            if let Some(after) = after {
                request = request.expression_attribute_values(":after", s(after));
            }
            if floor_and_after {
                // The cursor's own entry comes back too: one more keeps the page full.
                request = request.limit(i32::try_from(query.limit + 2).unwrap_or(i32::MAX));
            }
        }
        let output = request
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(|e| store_error("query index", e))?;
        output
            .items()
            .iter()
            .map(|item| {
                Ok((
                    text(item, &attribute)?.to_string(),
                    text(item, PK)?.to_string(),
                ))
            })
            .filter(
                |entry| !matches!((entry, after), (Ok((value, _)), Some(after)) if value == after),
            )
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
                let channel = Channel::parse(channel).map_err(|e| StoreError::Failed(e.into()))?;
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
