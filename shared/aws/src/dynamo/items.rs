//! The items the store writes, built in one place.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::index::{index_attribute, index_value};
use super::shards::ListingShards;
use super::{EVENT, PARKED, STATE, STATUS, s, sort_key};
use rockets::listing::SortKey;
use rockets::message::Envelope;
use rockets::rocket::Rocket;

pub type Item = HashMap<String, AttributeValue>;

/// How the store lays the rocket table out: the listing shards and how long history lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableLayout {
    pub shards: ListingShards,
    /// How long history items live (DynamoDB TTL on `expiresAt`); `None` keeps them.
    pub history_retention: Option<std::time::Duration>,
}

/// Where a message's item goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MessageItem {
    /// The channel's history: an applied message.
    History,
    /// The channel's parked set: a message waiting for a gap to fill.
    Parked,
}

impl MessageItem {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            MessageItem::History => EVENT,
            MessageItem::Parked => PARKED,
        }
    }
}

impl TableLayout {
    /// The `expiresAt` of a history item written now, in epoch seconds, if history expires.
    fn history_expiry(&self) -> Option<i64> {
        self.history_retention.map(|keep| {
            chrono::Utc::now().timestamp() + i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2)
        })
    }

    /// A message's item in the history or the parked set, its JSON in `body`.
    pub fn message_item(&self, kind: MessageItem, message: &Envelope, body: String) -> Item {
        let mut item = super::key(&message.channel, sort_key(kind.prefix(), message.number));
        item.insert("body".into(), s(body));
        if kind == MessageItem::History
            && let Some(expiry) = self.history_expiry()
        {
            item.insert("expiresAt".into(), AttributeValue::N(expiry.to_string()));
        }
        item
    }

    /// A rocket's state item at `version`: the rocket, and its key in every listing index.
    pub fn state_item(&self, version: u64, rocket: &Rocket) -> Item {
        let mut item = super::key(&rocket.channel, STATE);
        let json = serde_json::to_string(rocket).expect("rockets serialise");
        item.insert("rocket".into(), s(json));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        item.insert(
            STATUS.into(),
            s(self.shards.partition_of(rocket.status, &rocket.channel)),
        );
        for sort_key in SortKey::ALL {
            let value = index_value(&sort_key.position(rocket));
            item.insert(index_attribute(sort_key), s(value));
        }
        item
    }
}
