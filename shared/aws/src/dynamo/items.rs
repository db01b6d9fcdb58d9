//! The items the store writes, built in one place.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{EVENT, LISTED, STATE, s, sort_key};
use rockets::message::Envelope;
use rockets::rocket::Rocket;

pub type Item = HashMap<String, AttributeValue>;

/// How the store lays the rocket table out: how long history lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableLayout {
    /// How long message items live (DynamoDB TTL on `expiresAt`); `None` keeps them.
    pub history_retention: Option<std::time::Duration>,
}

/// What a message was when its item was written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MessageItem {
    /// Applied on arrival: history from the start.
    History,
    /// Ahead of a gap: parked until the rocket reaches it.
    Parked,
}

impl TableLayout {
    /// The `expiresAt` of a message item written at `now` (epoch seconds), if history expires.
    fn expiry(&self, now: i64) -> Option<i64> {
        self.history_retention
            .map(|keep| now + i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2))
    }

    /// A message's item, its JSON in `body`; a parked one says since when (epoch seconds).
    pub fn message_item(&self, kind: MessageItem, message: &Envelope, body: String) -> Item {
        let now = chrono::Utc::now().timestamp();
        let mut item = super::key(&message.channel, sort_key(EVENT, message.number));
        item.insert("body".into(), s(body));
        if kind == MessageItem::Parked {
            item.insert("parkedAt".into(), AttributeValue::N(now.to_string()));
        }
        if let Some(expiry) = self.expiry(now) {
            item.insert("expiresAt".into(), AttributeValue::N(expiry.to_string()));
        }
        item
    }

    /// A rocket's state item at `version`, listed under its channel.
    pub fn state_item(&self, version: u64, rocket: &Rocket) -> Item {
        let mut item = super::key(&rocket.channel, STATE);
        let json = serde_json::to_string(rocket).expect("rockets serialise");
        item.insert("rocket".into(), s(json));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        item.insert(LISTED.into(), s(rocket.channel.as_str()));
        item
    }
}
