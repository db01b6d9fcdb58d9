//! The apply side of the table: a channel's state and first parked items in one Query, and a
//! commit that writes history and parked items first and the state item last, conditionally.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::items::MessageItem;
use super::{
    DynamoStore, EVENT, PARKED, PK, SK, STATE, bounded_all, envelope, key, rocket, s, sort_key,
    text, version,
};
use crate::store_error;
use rockets::message::{Channel, Envelope, MessageNumber};
use rockets::ordering::{ChannelChange, ParkedView};
use rockets::ports::{ChannelSnapshot, ChannelStore, CommitOutcome, StoreError};
use rockets::rocket::Rocket;

enum PutOnce {
    Written,
    /// Another message is already stored under this key; it wins.
    Taken(Envelope),
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
                            Ok(PutOnce::Taken(existing))
                        }
                    }
                    None => Err(store_error("put message", error)),
                }
            }
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

    /// A channel's state item and its first `parked` parked items, in key order, read strongly
    /// consistently in as few pages as DynamoDB allows.
    async fn channel_head(
        &self,
        channel: &Channel,
        parked: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let wanted = parked.saturating_add(1);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let limit = i32::try_from(wanted - items.len()).unwrap_or(i32::MAX);
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :state)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(channel.as_str()))
                .expression_attribute_values(":state", s(STATE))
                .consistent_read(true)
                .limit(limit)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error("load channel", e))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() || items.len() >= wanted {
                return Ok(items);
            }
        }
    }
}

impl ChannelStore for DynamoStore {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<ChannelSnapshot>, StoreError> {
        let mut state = None;
        let mut first = Vec::new();
        // One parked message past the window says the view is incomplete.
        for item in self.channel_head(channel, window.saturating_add(1)).await? {
            if text(&item, SK)? == STATE {
                state = Some((rocket(&item)?, version(&item)?));
            } else {
                first.push(envelope(&item)?);
            }
        }
        let complete = first.len() <= window;
        first.truncate(window);
        let mut probed = Vec::new();
        if !complete {
            let last = first.last().map(|m| m.number);
            let mut keys: Vec<_> = probe
                .iter()
                .filter(|n| last.is_none_or(|last| **n > last))
                .map(|n| sort_key(PARKED, *n))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let keys = keys.into_iter().map(|sk| key(channel, sk)).collect();
            for item in self.batch_get(keys, true).await? {
                probed.push(envelope(&item)?);
            }
        }
        let parked = ParkedView {
            first,
            complete,
            probed,
        };
        Ok(match state {
            Some((rocket, version)) => Some(ChannelSnapshot {
                rocket,
                parked,
                version,
            }),
            // Parked by a commit that never reached the state write: still worth keeping.
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
        let history: Vec<_> = (change.applied.iter())
            .map(|m| self.put_once(MessageItem::History, m))
            .collect();
        let parked: Vec<_> = (change.parked.iter())
            .map(|m| self.put_once(MessageItem::Parked, m))
            .collect();
        let (history, parked) = futures_util::join!(bounded_all(history), bounded_all(parked));
        let mut superseded = Vec::new();
        for written in history {
            if let PutOnce::Taken(first) = written? {
                superseded.push(first);
            }
        }
        if !superseded.is_empty() {
            return Ok(CommitOutcome::Superseded(superseded));
        }
        let mut parked_conflict = false;
        for written in parked {
            parked_conflict |= matches!(written?, PutOnce::Taken(_));
        }
        if parked_conflict || !self.put_state(expected_version, &change.rocket).await? {
            return Ok(CommitOutcome::VersionMismatch);
        }
        let channel = &change.rocket.channel;
        let removals: Vec<_> = (change.unparked.iter())
            .map(|n| {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(channel, sort_key(PARKED, *n))))
                    .send()
            })
            .collect();
        for removed in bounded_all(removals).await {
            // The next commit of this channel removes it; until then loading skips it.
            if let Err(error) = removed {
                tracing::warn!(%channel, error = %store_error("remove parked", error), "parked message left behind");
            }
        }
        Ok(CommitOutcome::Committed)
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
