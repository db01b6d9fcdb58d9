//! The query side of the table: a rocket by its state item, pages from the listing index, and
//! the history.
//!
//! A page reads the whole listing: every rocket's entry, in [`LISTING_SEGMENTS`] parallel
//! scans, keeping only the best `limit + 1` of each, and sorts in memory. What that costs
//! grows with the number of rockets, not with the traffic: half a read unit per 4 KB of
//! entries (about eight rockets), where an index sorted by each key would be written with
//! every message (docs/design.md weighs the two).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::join_all;

use super::{DynamoStore, EVENT, LISTING, PK, SK, STATE, envelope, key, rocket, s, sort_key};
use crate::store_error;
use rockets::listing::{ListQuery, RocketPage, Totals};
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ports::{RocketReader, StoreError};
use rockets::rocket::Rocket;

/// Parallel scans of the listing index a page takes: DynamoDB returns at most 1 MB a call, so
/// 32 read a listing of up to 32 MB (some 60,000 rockets) in one round of calls, and of
/// twice that in two.
const LISTING_SEGMENTS: i32 = 32;

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
    pub(super) async fn query_range(
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

    /// The first `limit + 1` rockets `query` lists from one segment of the listing index, and
    /// the segment's totals.
    async fn best_of_segment(
        &self,
        query: &ListQuery,
        segment: i32,
    ) -> Result<(Vec<Rocket>, Totals), StoreError> {
        let mut best = Vec::new();
        let mut totals = Totals::default();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .index_name(LISTING)
                .projection_expression("rocket")
                .segment(segment)
                .total_segments(LISTING_SEGMENTS)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error("scan the listing", e))?;
            let read = (output.items().iter().map(rocket)).collect::<Result<Vec<_>, _>>()?;
            read.iter().for_each(|rocket| totals.count(rocket));
            best = query.best(best.into_iter().chain(read));
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok((best, totals));
            }
        }
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
        let segments = (0..LISTING_SEGMENTS).map(|segment| self.best_of_segment(query, segment));
        let (mut best, mut totals) = (Vec::new(), Totals::default());
        for segment in join_all(segments).await {
            let (rockets, counted) = segment?;
            best.extend(rockets);
            totals += counted;
        }
        Ok(RocketPage {
            totals: Some(totals),
            ..query.page_of(best)
        })
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
