//! The message contract: wire JSON in, validated [`Envelope`] out, and back again.
//!
//! Parsing walks the document field by field over borrowed raw JSON, so the first bad field is
//! named exactly and nothing is allocated for fields that are never read. The same parser reads
//! the canonical form that ingest puts on the queue, so there is one definition of a valid
//! message.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Largest request body ingest accepts; anything larger is refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest channel name; it also keeps SQS group and deduplication ids within their limits.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest free text (`type`, `mission`, `newMission`, `reason`) a new message may carry, in
/// characters. It bounds what one message costs to store and to serve: a rocket's item, its
/// index keys and a page of rockets all grow with it.
pub const MAX_TEXT_CHARS: usize = 256;

/// Why a message (or a query parameter) was refused. Every variant maps to HTTP 400 and names
/// the first field at fault, as a dotted path such as `metadata.messageNumber`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is not a JSON document, or not an object.
    #[error("{detail}")]
    Malformed { field: &'static str, detail: String },
    /// A required field is absent or null.
    #[error("{field} is required")]
    Missing { field: &'static str },
    /// A field holds the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// A field has the right type but a value outside its domain.
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ValidationError {
    /// Stable machine-readable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed_body",
            Self::Missing { .. } => "missing_field",
            Self::WrongType { .. } => "invalid_type",
            Self::Invalid { .. } => "invalid_value",
        }
    }

    /// The dotted path of the offending field (empty for the body itself).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Malformed { field, .. }
            | Self::Missing { field }
            | Self::WrongType { field, .. }
            | Self::Invalid { field, .. } => field,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

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
pub struct MessageNumber(u64);

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

/// What a message says happened to the rocket.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    Launched {
        rocket_type: Arc<str>,
        launch_speed: i64,
        mission: Arc<str>,
    },
    SpeedIncreased {
        by: i64,
    },
    SpeedDecreased {
        by: i64,
    },
    MissionChanged {
        new_mission: Arc<str>,
    },
    Exploded {
        reason: Arc<str>,
    },
}

impl Event {
    /// The free-text fields, by their wire path.
    pub fn texts(&self) -> Vec<(&'static str, &str)> {
        match self {
            Event::Launched {
                rocket_type,
                mission,
                ..
            } => vec![("message.type", rocket_type), ("message.mission", mission)],
            Event::SpeedIncreased { .. } | Event::SpeedDecreased { .. } => Vec::new(),
            Event::MissionChanged { new_mission } => vec![("message.newMission", new_mission)],
            Event::Exploded { reason } => vec![("message.reason", reason)],
        }
    }
}

fn check_new_text(field: &'static str, text: &str) -> Result<(), ValidationError> {
    if text.chars().nth(MAX_TEXT_CHARS).is_some() {
        return Err(ValidationError::invalid(
            field,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control() || is_noncharacter(*c)) {
        return Err(ValidationError::invalid(
            field,
            format!(
                "must not contain control characters or noncharacters (found U+{:04X})",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

/// U+FDD0–U+FDEF and the last two code points of every plane, which Unicode reserves and SQS
/// refuses.
fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// The five message types. Parsing matches on this enum, so a sixth type cannot be added
/// without the compiler asking for its body's rules.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MessageType {
    Launched,
    SpeedIncreased,
    SpeedDecreased,
    MissionChanged,
    Exploded,
}

impl MessageType {
    /// In the order the contract lists them.
    pub const ALL: [MessageType; 5] = [
        MessageType::Launched,
        MessageType::SpeedIncreased,
        MessageType::SpeedDecreased,
        MessageType::MissionChanged,
        MessageType::Exploded,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Launched => "RocketLaunched",
            MessageType::SpeedIncreased => "RocketSpeedIncreased",
            MessageType::SpeedDecreased => "RocketSpeedDecreased",
            MessageType::MissionChanged => "RocketMissionChanged",
            MessageType::Exploded => "RocketExploded",
        }
    }

    pub fn parse(name: &str) -> Option<MessageType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl Event {
    pub fn message_type(&self) -> MessageType {
        match self {
            Event::Launched { .. } => MessageType::Launched,
            Event::SpeedIncreased { .. } => MessageType::SpeedIncreased,
            Event::SpeedDecreased { .. } => MessageType::SpeedDecreased,
            Event::MissionChanged { .. } => MessageType::MissionChanged,
            Event::Exploded { .. } => MessageType::Exploded,
        }
    }
}

/// One validated message: where it belongs, its place in the sequence, and what it says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    pub channel: Channel,
    pub number: MessageNumber,
    pub time: DateTime<FixedOffset>,
    pub event: Event,
}

impl Envelope {
    /// Parses and validates a wire message, failing on the first bad field.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        let malformed = |detail: String| ValidationError::Malformed { field: "", detail };
        // Derived structs would also accept an array; the contract wants an object.
        if !body.trim_ascii_start().starts_with(b"{") {
            return Err(malformed("body must be a JSON object".into()));
        }
        // One UTF-8 check of the whole body up front; parsing from `&str` then skips a check
        // per string.
        let body = std::str::from_utf8(body)
            .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
        let root: WireRoot = serde_json::from_str(body)
            .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
        let metadata = root.metadata.object("metadata")?;
        let channel = Channel::parse(&string(metadata.channel, "metadata.channel")?)
            .map_err(|reason| ValidationError::invalid("metadata.channel", reason))?;
        let number = integer(metadata.message_number, "metadata.messageNumber", 1)?;
        let number = MessageNumber(number);
        let time = timestamp(metadata.message_time, "metadata.messageTime")?;
        let message_type = string(metadata.message_type, "metadata.messageType")?;
        let message_type = MessageType::parse(&message_type).ok_or_else(|| {
            let names: Vec<_> = MessageType::ALL.iter().map(|t| t.as_str()).collect();
            ValidationError::invalid(
                "metadata.messageType",
                format!("must be one of {}", names.join(", ")),
            )
        })?;
        let body = root.message.object("message")?;
        let event = match message_type {
            MessageType::Launched => Event::Launched {
                rocket_type: text(body.rocket_type, "message.type")?,
                launch_speed: amount(body.launch_speed, "message.launchSpeed")?,
                mission: text(body.mission, "message.mission")?,
            },
            MessageType::SpeedIncreased => Event::SpeedIncreased {
                by: amount(body.by, "message.by")?,
            },
            MessageType::SpeedDecreased => Event::SpeedDecreased {
                by: amount(body.by, "message.by")?,
            },
            MessageType::MissionChanged => Event::MissionChanged {
                new_mission: text(body.new_mission, "message.newMission")?,
            },
            MessageType::Exploded => Event::Exploded {
                reason: text(body.reason, "message.reason")?,
            },
        };
        Ok(Envelope {
            channel,
            number,
            time,
            event,
        })
    }

    /// [`Envelope::parse`] for a message offered to the API, whose free text must also be at
    /// most [`MAX_TEXT_CHARS`] characters with no control characters or Unicode
    /// noncharacters. Messages already accepted are parsed without these limits, so a limit
    /// can change without stranding what is queued or stored.
    pub fn parse_new(body: &[u8]) -> Result<Self, ValidationError> {
        let message = Self::parse(body)?;
        for (field, text) in message.event.texts() {
            check_new_text(field, text)?;
        }
        Ok(message)
    }

    /// The canonical wire form: only the contract's fields, in a fixed order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serialises")
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Metadata<'a> {
            channel: &'a str,
            message_number: u64,
            message_time: String,
            message_type: &'static str,
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Body<'a> {
            Launched {
                #[serde(rename = "type")]
                rocket_type: &'a str,
                #[serde(rename = "launchSpeed")]
                launch_speed: i64,
                mission: &'a str,
            },
            Speed {
                by: i64,
            },
            Mission {
                #[serde(rename = "newMission")]
                new_mission: &'a str,
            },
            Exploded {
                reason: &'a str,
            },
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            metadata: Metadata<'a>,
            message: Body<'a>,
        }
        let message = match &self.event {
            Event::Launched {
                rocket_type,
                launch_speed,
                mission,
            } => Body::Launched {
                rocket_type,
                launch_speed: *launch_speed,
                mission,
            },
            Event::SpeedIncreased { by } | Event::SpeedDecreased { by } => Body::Speed { by: *by },
            Event::MissionChanged { new_mission } => Body::Mission { new_mission },
            Event::Exploded { reason } => Body::Exploded { reason },
        };
        Wire {
            metadata: Metadata {
                channel: self.channel.as_str(),
                message_number: self.number.get(),
                message_time: format_time(&self.time),
                message_type: self.event.message_type().as_str(),
            },
            message,
        }
        .serialize(serializer)
    }
}

/// RFC 3339 with the sender's own offset and only as many fraction digits as it needs.
pub fn format_time(time: &DateTime<FixedOffset>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

type Raw<'a> = Option<&'a RawValue>;

#[derive(Deserialize)]
struct WireRoot<'a> {
    #[serde(borrow, default)]
    metadata: Nested<WireMetadata<'a>>,
    #[serde(borrow, default)]
    message: Nested<WireBody<'a>>,
}

/// A field that should hold an object, read in the same pass as its parent: absent (or
/// null), the object, or something else.
#[derive(Default)]
enum Nested<T> {
    #[default]
    Absent,
    Object(T),
    NotAnObject,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Nested<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Nested::Object)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Nested::NotAnObject)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Nested::Absent)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Nested::Absent)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Nested::NotAnObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Nested::NotAnObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Nested::NotAnObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Nested::NotAnObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Nested::NotAnObject)
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<T> Nested<T> {
    fn object(self, field: &'static str) -> Result<T, ValidationError> {
        match self {
            Nested::Object(value) => Ok(value),
            Nested::Absent => Err(ValidationError::Missing { field }),
            Nested::NotAnObject => Err(ValidationError::WrongType {
                field,
                expected: "an object",
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMetadata<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    channel: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    message_number: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    message_time: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    message_type: Raw<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBody<'a> {
    #[serde(borrow, default, rename = "type", deserialize_with = "raw")]
    rocket_type: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    launch_speed: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    mission: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    by: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    new_mission: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    reason: Raw<'a>,
}

/// Keeps a field as borrowed raw JSON, treating an explicit `null` like an absent field.
fn raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Raw<'de>, D::Error> {
    let value = <&'de RawValue>::deserialize(deserializer)?;
    Ok((value.get() != "null").then_some(value))
}

fn present<'a>(raw: Raw<'a>, field: &'static str) -> Result<&'a RawValue, ValidationError> {
    raw.ok_or(ValidationError::Missing { field })
}

fn string<'a>(raw: Raw<'a>, field: &'static str) -> Result<Cow<'a, str>, ValidationError> {
    let raw = present(raw, field)?;
    // A raw value is valid JSON, so a quoted one without escapes is its own content.
    if let Some(inner) = raw
        .get()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Cow<'a, str>>(raw.get()).map_err(|_| ValidationError::WrongType {
        field,
        expected: "a string",
    })
}

/// A free-text field of a message body: a string with at least one visible character.
fn text(raw: Raw<'_>, field: &'static str) -> Result<Arc<str>, ValidationError> {
    let value = string(raw, field)?;
    if value.trim().is_empty() {
        return Err(ValidationError::invalid(field, "must not be empty"));
    }
    Ok(Arc::from(value.as_ref()))
}

/// A JSON integer no smaller than `min` and no larger than `i64::MAX`.
fn integer(raw: Raw<'_>, field: &'static str, min: u64) -> Result<u64, ValidationError> {
    let raw = present(raw, field)?;
    let text = raw.get();
    let expected = if min == 0 {
        "a non-negative integer"
    } else {
        "an integer of at least 1"
    };
    let is_integer_literal = text
        .strip_prefix('-')
        .unwrap_or(text)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if !is_integer_literal {
        return Err(ValidationError::WrongType { field, expected });
    }
    match text.parse::<i128>() {
        Ok(n) if n < i128::from(min) => Err(ValidationError::invalid(
            field,
            format!("must be at least {min}"),
        )),
        Ok(n) if n <= i128::from(i64::MAX) => Ok(n as u64),
        _ => Err(ValidationError::invalid(
            field,
            format!("must be at most {}", i64::MAX),
        )),
    }
}

fn amount(raw: Raw<'_>, field: &'static str) -> Result<i64, ValidationError> {
    integer(raw, field, 0).map(|n| n as i64)
}

fn timestamp(raw: Raw<'_>, field: &'static str) -> Result<DateTime<FixedOffset>, ValidationError> {
    let value = string(raw, field)?;
    DateTime::parse_from_rfc3339(&value).map_err(|_| {
        ValidationError::invalid(
            field,
            "must be an RFC 3339 timestamp with an offset, e.g. 2022-02-02T19:39:05.86337+01:00",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn launched() -> Value {
        json!({
            "metadata": {
                "channel": "193270a9-c9cf-404a-8f83-838e71d9ae67",
                "messageNumber": 1,
                "messageTime": "2022-02-02T19:39:05.86337+01:00",
                "messageType": "RocketLaunched"
            },
            "message": {"type": "Falcon-9", "launchSpeed": 500, "mission": "ARTEMIS"}
        })
    }

    fn parse(value: &Value) -> Result<Envelope, ValidationError> {
        Envelope::parse(value.to_string().as_bytes())
    }

    fn field_error(value: &Value) -> (&'static str, &'static str) {
        let err = parse(value).expect_err("must be refused");
        (err.field(), err.code())
    }

    fn with(path: &[&str], new: Value) -> Value {
        let mut doc = launched();
        let mut target = &mut doc;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        target[path[path.len() - 1]] = new;
        doc
    }

    fn without(path: &[&str]) -> Value {
        let mut doc = launched();
        let mut target = &mut doc;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        target.as_object_mut().unwrap().remove(path[path.len() - 1]);
        doc
    }

    #[test]
    fn parses_the_challenge_payload() {
        let env = parse(&launched()).unwrap();
        assert_eq!(env.channel.as_str(), "193270a9-c9cf-404a-8f83-838e71d9ae67");
        assert_eq!(env.number.get(), 1);
        assert_eq!(
            env.event,
            Event::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: 500,
                mission: "ARTEMIS".into()
            }
        );
        assert_eq!(format_time(&env.time), "2022-02-02T19:39:05.863370+01:00");
    }

    #[test]
    fn canonical_form_round_trips_and_drops_unknown_fields() {
        let mut doc = launched();
        doc["extra"] = json!(true);
        doc["message"]["colour"] = json!("white");
        let env = parse(&doc).unwrap();
        let again = Envelope::parse(env.to_json().as_bytes()).unwrap();
        assert_eq!(env, again);
        assert!(!env.to_json().contains("colour"));
    }

    #[test]
    fn every_message_type_round_trips() {
        let bodies = [
            ("RocketSpeedIncreased", json!({"by": 3000})),
            ("RocketSpeedDecreased", json!({"by": 2500})),
            ("RocketMissionChanged", json!({"newMission": "SHUTTLE_MIR"})),
            (
                "RocketExploded",
                json!({"reason": "PRESSURE_VESSEL_FAILURE"}),
            ),
        ];
        for (message_type, body) in bodies {
            let mut doc = with(&["metadata", "messageType"], json!(message_type));
            doc["message"] = body;
            let env = parse(&doc).unwrap();
            assert_eq!(env.event.message_type().as_str(), message_type);
            assert_eq!(Envelope::parse(env.to_json().as_bytes()).unwrap(), env);
        }
    }

    #[test]
    fn body_must_be_a_json_object() {
        for body in ["", "not json", "[1,2]", "42", "\"text\"", "{\"metadata\":"] {
            let err = Envelope::parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "malformed_body", "{body}");
        }
    }

    #[test]
    fn metadata_and_message_must_be_objects() {
        assert_eq!(
            field_error(&without(&["metadata"])),
            ("metadata", "missing_field")
        );
        assert_eq!(
            field_error(&with(&["metadata"], json!(null))),
            ("metadata", "missing_field")
        );
        assert_eq!(
            field_error(&with(&["metadata"], json!([]))),
            ("metadata", "invalid_type")
        );
        assert_eq!(
            field_error(&without(&["message"])),
            ("message", "missing_field")
        );
        assert_eq!(
            field_error(&with(&["message"], json!("x"))),
            ("message", "invalid_type")
        );
    }

    #[test]
    fn channel_rules() {
        let f = "metadata.channel";
        assert_eq!(
            field_error(&without(&["metadata", "channel"])),
            (f, "missing_field")
        );
        assert_eq!(
            field_error(&with(&["metadata", "channel"], json!(7))),
            (f, "invalid_type")
        );
        assert_eq!(
            field_error(&with(&["metadata", "channel"], json!(""))),
            (f, "invalid_value")
        );
        assert_eq!(
            field_error(&with(&["metadata", "channel"], json!("a b"))),
            (f, "invalid_value")
        );
        assert_eq!(
            field_error(&with(&["metadata", "channel"], json!("x".repeat(129)))),
            (f, "invalid_value")
        );
        let longest = with(&["metadata", "channel"], json!("x".repeat(128)));
        assert!(parse(&longest).is_ok());
        let punctuated = with(&["metadata", "channel"], json!("A-z_0.9:x"));
        assert!(parse(&punctuated).is_ok());
        let unicode = with(&["metadata", "channel"], json!("fusée"));
        assert_eq!(field_error(&unicode), (f, "invalid_value"));
    }

    #[test]
    fn message_number_rules() {
        let f = "metadata.messageNumber";
        let at = ["metadata", "messageNumber"];
        assert_eq!(field_error(&without(&at)), (f, "missing_field"));
        assert_eq!(field_error(&with(&at, json!("1"))), (f, "invalid_type"));
        assert_eq!(field_error(&with(&at, json!(1.5))), (f, "invalid_type"));
        assert_eq!(field_error(&with(&at, json!(1.0))), (f, "invalid_type"));
        assert_eq!(field_error(&with(&at, json!(0))), (f, "invalid_value"));
        assert_eq!(field_error(&with(&at, json!(-3))), (f, "invalid_value"));
        assert_eq!(
            field_error(&with(&at, json!(u64::MAX))),
            (f, "invalid_value")
        );
        assert_eq!(
            parse(&with(&at, json!(i64::MAX))).unwrap().number.get(),
            i64::MAX as u64
        );
    }

    #[test]
    fn message_time_rules() {
        let f = "metadata.messageTime";
        let at = ["metadata", "messageTime"];
        assert_eq!(field_error(&without(&at)), (f, "missing_field"));
        assert_eq!(
            field_error(&with(&at, json!(1643830745))),
            (f, "invalid_type")
        );
        assert_eq!(
            field_error(&with(&at, json!("2022-02-02T19:39:05"))),
            (f, "invalid_value")
        );
        assert_eq!(
            field_error(&with(&at, json!("yesterday"))),
            (f, "invalid_value")
        );
        assert!(parse(&with(&at, json!("2022-02-02T19:39:05Z"))).is_ok());
        assert!(parse(&with(&at, json!("2025-09-22T06:22:14.660427Z"))).is_ok());
    }

    #[test]
    fn message_type_rules() {
        let f = "metadata.messageType";
        let at = ["metadata", "messageType"];
        assert_eq!(field_error(&without(&at)), (f, "missing_field"));
        assert_eq!(field_error(&with(&at, json!(3))), (f, "invalid_type"));
        let err = parse(&with(&at, json!("RocketLanded"))).unwrap_err();
        assert_eq!((err.field(), err.code()), (f, "invalid_value"));
        for message_type in MessageType::ALL {
            assert!(err.to_string().contains(message_type.as_str()), "{err}");
            assert_eq!(
                MessageType::parse(message_type.as_str()),
                Some(message_type)
            );
        }
    }

    #[test]
    fn launched_body_rules() {
        assert_eq!(
            field_error(&without(&["message", "type"])),
            ("message.type", "missing_field")
        );
        assert_eq!(
            field_error(&with(&["message", "type"], json!(" "))),
            ("message.type", "invalid_value")
        );
        assert_eq!(
            field_error(&with(&["message", "launchSpeed"], json!("500"))),
            ("message.launchSpeed", "invalid_type")
        );
        assert_eq!(
            field_error(&with(&["message", "launchSpeed"], json!(-1))),
            ("message.launchSpeed", "invalid_value")
        );
        assert_eq!(
            field_error(&with(&["message", "mission"], json!(["x"]))),
            ("message.mission", "invalid_type")
        );
        assert!(parse(&with(&["message", "launchSpeed"], json!(0))).is_ok());
    }

    #[test]
    fn other_body_rules() {
        let cases = [
            (
                "RocketSpeedIncreased",
                json!({}),
                "message.by",
                "missing_field",
            ),
            (
                "RocketSpeedIncreased",
                json!({"by": -5}),
                "message.by",
                "invalid_value",
            ),
            (
                "RocketSpeedDecreased",
                json!({"by": true}),
                "message.by",
                "invalid_type",
            ),
            (
                "RocketMissionChanged",
                json!({"newMission": ""}),
                "message.newMission",
                "invalid_value",
            ),
            (
                "RocketMissionChanged",
                json!({"mission": "X"}),
                "message.newMission",
                "missing_field",
            ),
            (
                "RocketExploded",
                json!({"reason": 12}),
                "message.reason",
                "invalid_type",
            ),
        ];
        for (message_type, body, field, code) in cases {
            let mut doc = with(&["metadata", "messageType"], json!(message_type));
            doc["message"] = body;
            assert_eq!(field_error(&doc), (field, code), "{message_type}");
        }
    }

    #[test]
    fn the_first_bad_field_is_named() {
        let mut doc = with(&["metadata", "messageNumber"], json!(0));
        doc["metadata"]["messageTime"] = json!("never");
        doc["message"]["launchSpeed"] = json!(-1);
        assert_eq!(field_error(&doc).0, "metadata.messageNumber");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let doc = with(&["message", "mission"], json!("Mars \"Direct\" \u{1F680}"));
        match parse(&doc).unwrap().event {
            Event::Launched { mission, .. } => assert_eq!(&*mission, "Mars \"Direct\" \u{1F680}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_messages_bound_their_text_and_refuse_control_characters_and_noncharacters() {
        let new = |value: &Value| Envelope::parse_new(value.to_string().as_bytes());
        assert!(new(&launched()).is_ok());
        let at_limit = "é".repeat(MAX_TEXT_CHARS);
        assert!(new(&with(&["message", "mission"], json!(at_limit))).is_ok());
        for (path, value) in [
            (
                ["message", "mission"],
                json!("x".repeat(MAX_TEXT_CHARS + 1)),
            ),
            (["message", "type"], json!("a\u{0}b")),
            (["message", "type"], json!("tab\there")),
            (["message", "mission"], json!("\u{FFFE}")),
            (["message", "mission"], json!("x\u{FDD0}")),
            (["message", "mission"], json!("\u{10FFFF}")),
            (["message", "mission"], json!("x\u{85}")),
        ] {
            let err = new(&with(&path, value.clone())).expect_err("refused");
            assert_eq!(err.field(), format!("{}.{}", path[0], path[1]), "{value}");
            assert_eq!(err.code(), "invalid_value");
            assert!(
                parse(&with(&path, value)).is_ok(),
                "accepted messages still parse"
            );
        }
        let mut changed = launched();
        changed["metadata"]["messageType"] = json!("RocketMissionChanged");
        changed["message"] = json!({"newMission": "\u{7}"});
        assert_eq!(new(&changed).unwrap_err().field(), "message.newMission");
        let mut exploded = launched();
        exploded["metadata"]["messageType"] = json!("RocketExploded");
        exploded["message"] = json!({"reason": "r".repeat(MAX_TEXT_CHARS + 1)});
        assert_eq!(new(&exploded).unwrap_err().field(), "message.reason");
    }

    #[test]
    fn a_channel_made_only_of_dots_is_refused() {
        for name in [".", "..", "..."] {
            assert!(Channel::parse(name).is_err(), "{name}");
        }
        assert!(Channel::parse(".a.").is_ok());
    }
}
