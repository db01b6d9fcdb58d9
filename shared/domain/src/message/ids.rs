//! The identifiers a message carries: its channel and its number.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MAX_CHANNEL_LEN;

/// A radio channel: one rocket. 1–128 characters of `A-Z a-z 0-9 - _ . :`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(Arc<str>);

impl Channel {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > MAX_CHANNEL_LEN {
            return Err(format!("must be at most {MAX_CHANNEL_LEN} characters"));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        {
            return Err(format!(
                "contains {bad:?}; only A-Z a-z 0-9 - _ . : are allowed"
            ));
        }
        // `/rockets/.` and `/rockets/..` are path segments every client normalises away, so
        // a channel so named could never be read back.
        if raw.bytes().all(|b| b == b'.') {
            return Err("must not be made only of dots".into());
        }
        Ok(Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(deserializer)?;
        Channel::parse(&raw).map_err(|reason| D::Error::custom(format!("channel {reason}")))
    }
}

/// Position of a message in its channel's sequence; the first message is 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MessageNumber(pub(super) u64);

impl MessageNumber {
    pub fn new(n: u64) -> Option<Self> {
        (n >= 1).then_some(Self(n))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The number that must be applied before this one, if any.
    pub fn predecessor(self) -> u64 {
        self.0 - 1
    }
}

impl TryFrom<u64> for MessageNumber {
    type Error = &'static str;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        Self::new(n).ok_or("messageNumber must be at least 1")
    }
}

impl From<MessageNumber> for u64 {
    fn from(n: MessageNumber) -> u64 {
        n.0
    }
}

impl fmt::Display for MessageNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
