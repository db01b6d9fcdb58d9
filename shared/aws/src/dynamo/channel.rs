//! The apply side of the table: a channel's state and parked messages, mostly in one Query,
//! and a commit that writes the messages it accepts first and the state item last,
//! conditionally.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::items::{Item, MessageItem};
use super::{
    DynamoStore, EVENT, PK, SK, STATE, bounded_all, envelope, key, rocket, s, sort_key, text,
    version,
};
use crate::store_error;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{ChannelChange, ParkedView};

/// Items the first read of a load takes: the state item and the channel's highest-numbered
/// messages, so that a channel with a few parked messages (or none) loads in one read of at
/// most one read unit.
const LOAD_HEAD: usize = 11;
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, StoreError};
use rockets::rocket::Rocket;

enum PutOnce {
    Written,
    /// Another message is already stored under this number; it wins.
    Taken,
}

impl DynamoStore {
    /// Writes a message item unless another message is already stored there.
    async fn put_once(&self, kind: MessageItem, message: &Envelope) -> Result<PutOnce, StoreError> {
        let body = message.to_json();
        let item = self.layout.message_item(kind, message, body.clone());
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR body = :body")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":body", s(body))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOnce::Written),
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
                            Ok(PutOnce::Taken)
                        }
                    }
                    None => Err(store_error("put message", error)),
                }
            }
        }
    }

    /// Deletes message `number`'s item if it is one that parked on arrival.
    async fn delete_parked(
        &self,
        channel: &Channel,
        number: MessageNumber,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(channel, sort_key(EVENT, number))))
            .condition_expression("attribute_exists(parkedAt)")
            .send()
            .await;
        match result {
            Err(error)
                if !error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(store_error("delete expired", error))
            }
            _ => Ok(()),
        }
    }

    /// Replaces the state item if it is still at `expected_version`.
    async fn put_state(&self, expected_version: u64, rocket: &Rocket) -> Result<bool, StoreError> {
        let item = self.layout.state_item(expected_version + 1, rocket);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#pk", PK);
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
            Ok(_) => Ok(true),
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

    /// Up to `limit` of a channel's items whose sort keys meet `condition` (on `#sk`, with
    /// `:a` and `:b` as given), highest first unless `forward`, read strongly consistently; and
    /// whether there are more.
    async fn channel_items(
        &self,
        channel: &Channel,
        condition: &str,
        bounds: &[(&str, String)],
        forward: bool,
        limit: usize,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(format!("#pk = :pk AND {condition}"))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(channel.as_str()))
            .scan_index_forward(forward)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        for (name, value) in bounds {
            request = request.expression_attribute_values(*name, s(value));
        }
        let output = request
            .send()
            .await
            .map_err(|e| store_error("load channel", e))?;
        let more = output.last_evaluated_key.is_some();
        Ok((output.items.unwrap_or_default(), more))
    }

    /// The parked messages of a channel that parks more than the first read of a load takes:
    /// the first `window` from number `next` on, and those beyond them with the `probe` numbers.
    async fn parked_from(
        &self,
        channel: &Channel,
        next: MessageNumber,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<ParkedView, StoreError> {
        let bounds = [(":a", sort_key(EVENT, next)), (":b", format!("{EVENT}~"))];
        let (items, more) = self
            .channel_items(
                channel,
                "#sk BETWEEN :a AND :b",
                &bounds,
                true,
                window.saturating_add(1),
            )
            .await?;
        let mut times = HashMap::new();
        let mut first = Vec::with_capacity(items.len());
        for item in &items {
            first.push(parked_message(item, &mut times)?);
        }
        let complete = !more && first.len() <= window;
        first.truncate(window);
        let mut probed = Vec::new();
        if !complete {
            let beyond = first.last().map_or(next, |m| m.number);
            let mut numbers: Vec<_> = probe.iter().filter(|n| **n > beyond).collect();
            numbers.sort_unstable();
            numbers.dedup();
            let keys = numbers
                .into_iter()
                .map(|n| key(channel, sort_key(EVENT, *n)))
                .collect();
            for item in self.batch_get(keys, true).await? {
                probed.push(parked_message(&item, &mut times)?);
            }
        }
        let view = ParkedView {
            first,
            complete,
            probed,
            since: Default::default(),
        };
        Ok(view.parked_at(|n| times.get(&n).copied()))
    }
}

/// A message item's message, noting in `times` when it parked, if it did.
fn parked_message(
    item: &Item,
    times: &mut HashMap<MessageNumber, DateTime<Utc>>,
) -> Result<Envelope, StoreError> {
    let message = envelope(item)?;
    let parked_at = (item.get("parkedAt"))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0));
    if let Some(at) = parked_at {
        times.insert(message.number, at);
    }
    Ok(message)
}

impl ChannelStore for DynamoStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        let bounds = [(":a", STATE.to_owned())];
        let (head, more) = self
            .channel_items(channel, "#sk <= :a", &bounds, false, LOAD_HEAD)
            .await?;
        let mut state = None;
        let mut messages = Vec::with_capacity(head.len());
        let mut times = HashMap::new();
        for item in &head {
            if text(item, SK)? == STATE {
                state = Some((rocket(item)?, version(item)?));
            } else {
                messages.push(parked_message(item, &mut times)?);
            }
        }
        let last = state
            .as_ref()
            .map_or(0, |(rocket, _)| rocket.last_message_number);
        // Highest first: once one the rocket has applied comes, every parked one came before.
        let read_all = !more || messages.iter().any(|m| m.number.get() <= last);
        let parked = if read_all {
            let above: BTreeMap<_, _> = messages
                .into_iter()
                .filter(|m| m.number.get() > last)
                .map(|m| (m.number, m))
                .collect();
            ParkedView::cut(&above, window, probe).parked_at(|n| times.get(&n).copied())
        } else {
            let next = MessageNumber::new(last + 1).expect("at least 1");
            self.parked_from(channel, next, window, probe).await?
        };
        Ok(match state {
            Some((rocket, version)) => Some(ChannelSnapshot {
                rocket,
                parked,
                version,
            }),
            // Accepted by a commit that never reached the state write: parked until applied.
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
        // Expired parked messages go first: a message of the batch may take the number back.
        let channel = &change.rocket.channel;
        let expired: Vec<_> = (change.expired.iter())
            .map(|n| self.delete_parked(channel, *n))
            .collect();
        for deleted in bounded_all(expired).await {
            deleted?;
        }
        // A parked message applied now was written when it parked.
        let arrived = change
            .applied
            .iter()
            .filter(|m| !change.unparked.contains(&m.number))
            .map(|m| self.put_once(MessageItem::History, m));
        let parked = change
            .parked
            .iter()
            .map(|m| self.put_once(MessageItem::Parked, m));
        let written = bounded_all(arrived.chain(parked).collect::<Vec<_>>()).await;
        let mut taken = false;
        for put in written {
            taken |= matches!(put?, PutOnce::Taken);
        }
        // Another message was accepted first under one of these numbers: a fresh load holds
        // it, and the batch's own is then received as a conflict.
        if taken || !self.put_state(expected_version, &change.rocket).await? {
            return Ok(CommitOutcome::VersionMismatch);
        }
        Ok(CommitOutcome::Committed)
    }

    async fn parked(&self, rocket: &Rocket) -> Result<ParkedView, StoreError> {
        let next = MessageNumber::new(rocket.next_number()).expect("at least 1");
        let (from, to) = (sort_key(EVENT, next), format!("{EVENT}~"));
        let items = (self.query_range(&rocket.channel, &from, &to, true, "list parked")).await?;
        let mut times = HashMap::new();
        let all = (items.iter())
            .map(|item| parked_message(item, &mut times))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ParkedView::all(all).parked_at(|n| times.get(&n).copied()))
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
