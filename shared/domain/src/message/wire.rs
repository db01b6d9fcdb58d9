//! The wire form of a message: the JSON reader that validates field by field, and the
//! canonical writer.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Channel, Envelope, Event, MessageNumber, MessageType, ValidationError, scan};

impl Envelope {
    /// Parses and validates a wire message, failing on the first bad field.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        let malformed = |detail: String| ValidationError::Malformed {
            field: "body",
            detail,
        };
        // Derived structs would also accept an array; the contract wants an object.
        if !body.trim_ascii_start().starts_with(b"{") {
            return Err(malformed("body must be a JSON object".into()));
        }
        // One UTF-8 check of the whole body up front; parsing from `&str` then skips a check
        // per string.
        let body = std::str::from_utf8(body)
            .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
        // The usual shape is read by hand; anything else, and every malformed body, by
        // serde_json, which also says what is wrong.
        let root = match scan::fields(body) {
            Some(root) => root,
            None => serde_json::from_str(body)
                .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?,
        };
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

/// The canonical JSON of a message, byte for byte what its [`Serialize`] implementation gives
/// through serde_json (stored copies are compared as text), written straight into one string:
/// every message is written once on its way in, and again into the history.
pub(crate) fn canonical(envelope: &Envelope) -> String {
    let texts: usize = envelope.event.texts().iter().map(|(_, t)| t.len()).sum();
    // The names, punctuation, number, time and type come to under 240 bytes.
    let mut out = String::with_capacity(240 + envelope.channel.as_str().len() + texts);
    out.push_str(r#"{"metadata":{"channel":"#);
    push_str(&mut out, envelope.channel.as_str());
    out.push_str(r#","messageNumber":"#);
    push_integer(&mut out, i128::from(envelope.number.get()));
    out.push_str(r#","messageTime":"#);
    push_str(&mut out, &format_time(&envelope.time));
    out.push_str(r#","messageType":""#);
    out.push_str(envelope.event.message_type().as_str());
    out.push_str(r#""},"message":{"#);
    match &envelope.event {
        Event::Launched {
            rocket_type,
            launch_speed,
            mission,
        } => {
            out.push_str(r#""type":"#);
            push_str(&mut out, rocket_type);
            out.push_str(r#","launchSpeed":"#);
            push_integer(&mut out, i128::from(*launch_speed));
            out.push_str(r#","mission":"#);
            push_str(&mut out, mission);
        }
        Event::SpeedIncreased { by } | Event::SpeedDecreased { by } => {
            out.push_str(r#""by":"#);
            push_integer(&mut out, i128::from(*by));
        }
        Event::MissionChanged { new_mission } => {
            out.push_str(r#""newMission":"#);
            push_str(&mut out, new_mission);
        }
        Event::Exploded { reason } => {
            out.push_str(r#""reason":"#);
            push_str(&mut out, reason);
        }
    }
    out.push_str("}}");
    out
}

/// A JSON string as serde_json writes it: text with nothing to escape (the usual case) as it
/// is, anything else through serde_json itself.
fn push_str(out: &mut String, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(text).expect("a string always serialises"));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

fn push_integer(out: &mut String, value: i128) {
    if value < 0 {
        out.push('-');
    }
    push_decimal(out, value.unsigned_abs(), 1);
}

/// `n` in decimal, zero-padded to at least `width` digits: what `format!("{n:0width$}")`
/// writes, without the formatting machinery, which costs more than the rest of building a
/// message's ids on its way through.
pub fn push_decimal(out: &mut String, n: u128, width: usize) {
    let mut digits = [b'0'; 40];
    let mut at = digits.len();
    match u64::try_from(n) {
        // Arithmetic on u128 goes through library calls; nearly every number fits a u64.
        Ok(mut n) => {
            while n > 0 {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        Err(_) => {
            let mut n = n;
            while n > 0 {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
    }
    let start = at.min(digits.len() - width.clamp(1, digits.len()));
    out.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

/// RFC 3339 with the sender's own offset and only as many fraction digits as it needs.
pub fn format_time(time: &DateTime<FixedOffset>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A field's value as the JSON text it was sent as (without surrounding whitespace), `None`
/// when the field is absent or `null`.
pub(super) type Raw<'a> = Option<&'a str>;

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(PartialEq, Debug))]
pub(super) struct WireRoot<'a> {
    #[serde(borrow, default)]
    pub(super) metadata: Nested<WireMetadata<'a>>,
    #[serde(borrow, default)]
    pub(super) message: Nested<WireBody<'a>>,
}

/// A field that should hold an object, read in the same pass as its parent: absent (or
/// null), the object, or something else.
#[derive(Default)]
#[cfg_attr(test, derive(PartialEq, Debug))]
pub(super) enum Nested<T> {
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
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Nested<U> {
        match self {
            Nested::Absent => Nested::Absent,
            Nested::Object(value) => Nested::Object(f(value)),
            Nested::NotAnObject => Nested::NotAnObject,
        }
    }

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

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(PartialEq, Debug))]
#[serde(rename_all = "camelCase")]
pub(super) struct WireMetadata<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) channel: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) message_number: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) message_time: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) message_type: Raw<'a>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(PartialEq, Debug))]
#[serde(rename_all = "camelCase")]
pub(super) struct WireBody<'a> {
    #[serde(borrow, default, rename = "type", deserialize_with = "raw")]
    pub(super) rocket_type: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) launch_speed: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) mission: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) by: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) new_mission: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub(super) reason: Raw<'a>,
}

/// Keeps a field as borrowed raw JSON, treating an explicit `null` like an absent field.
fn raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Raw<'de>, D::Error> {
    let value = <&'de RawValue>::deserialize(deserializer)?.get();
    Ok((value != "null").then_some(value))
}

fn present<'a>(raw: Raw<'a>, field: &'static str) -> Result<&'a str, ValidationError> {
    raw.ok_or(ValidationError::Missing { field })
}

fn string<'a>(raw: Raw<'a>, field: &'static str) -> Result<Cow<'a, str>, ValidationError> {
    let raw = present(raw, field)?;
    // A raw value is valid JSON, so a quoted one without escapes is its own content.
    if let Some(inner) = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Cow<'a, str>>(raw).map_err(|_| ValidationError::WrongType {
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

/// A JSON integer no smaller than `min` and no larger than `i64::MAX`. As in JSON Schema, a
/// number is an integer when its value is whole, however it is written (`500`, `500.0`, `5e2`).
fn integer(raw: Raw<'_>, field: &'static str, min: u64) -> Result<u64, ValidationError> {
    let raw = present(raw, field)?;
    let expected = if min == 0 {
        "a non-negative integer"
    } else {
        "an integer of at least 1"
    };
    match whole_number(raw) {
        None => Err(ValidationError::WrongType { field, expected }),
        Some(Some(n)) if n < i128::from(min) => Err(ValidationError::invalid(
            field,
            format!("must be at least {min}"),
        )),
        Some(Some(n)) if n <= i128::from(i64::MAX) => Ok(n as u64),
        Some(_) => Err(ValidationError::invalid(
            field,
            format!("must be at most {}", i64::MAX),
        )),
    }
}

/// The value of a JSON value that is a whole number: `None` for anything else (another type,
/// or a fraction), `Some(None)` for a whole number too large for `i128` (either sign).
/// Works on the digits, so that no value is rounded on its way through a float.
fn whole_number(text: &str) -> Option<Option<i128>> {
    // The usual spelling, plain digits that fit, needs none of the work below.
    if (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(text.parse::<i128>().ok());
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !unsigned.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(Some(0));
    }
    // Where the decimal point falls among the significant digits. An exponent too large to
    // read is far beyond any limit either way.
    let exponent = match exponent.map(str::parse::<i64>) {
        None => 0,
        Some(Ok(exponent)) => exponent,
        Some(Err(_)) if exponent.is_some_and(|e| e.starts_with('-')) => return None,
        Some(Err(_)) => return Some(None),
    };
    let point = (significant.len() as i64 - fraction.len() as i64).saturating_add(exponent);
    if point < significant.len() as i64 {
        let cut = point.max(0) as usize;
        if !significant[cut..].bytes().all(|b| b == b'0') {
            return None;
        }
    }
    if point > 39 {
        return Some(None);
    }
    let point = point as usize;
    let mut value = significant[..point.min(significant.len())].to_string();
    value.extend(std::iter::repeat_n(
        '0',
        point.saturating_sub(significant.len()),
    ));
    let magnitude = value.parse::<i128>().ok();
    Some(magnitude.map(|m| if negative { -m } else { m }))
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
    use proptest::prelude::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0u128, 7, 42, 99_999, u64::MAX as u128, u128::MAX] {
            for width in [0, 1, 5, 20] {
                let mut out = String::new();
                push_decimal(&mut out, n, width);
                assert_eq!(out, format!("{n:0width$}"));
            }
        }
    }

    proptest! {
        /// The canonical writer and serde_json agree byte for byte, whatever the text holds.
        #[test]
        fn the_canonical_json_is_serde_jsons(
            channel in "[A-Za-z0-9][A-Za-z0-9._:-]{0,39}",
            number in 1u64..=i64::MAX as u64,
            seconds in 0i64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            offset in -86_399i32..86_400,
            kind in 0u8..5,
            amount in any::<i64>(),
            first in any::<String>(),
            second in "[\\x00-\\x7f\"\\\\/\u{80}-\u{10ffff}]{0,20}",
        ) {
            let time = DateTime::from_timestamp(seconds, nanos)
                .unwrap()
                .with_timezone(&FixedOffset::east_opt(offset).unwrap());
            let event = match kind {
                0 => Event::Launched {
                    rocket_type: first.as_str().into(),
                    launch_speed: amount,
                    mission: second.as_str().into(),
                },
                1 => Event::SpeedIncreased { by: amount },
                2 => Event::SpeedDecreased { by: amount },
                3 => Event::MissionChanged { new_mission: first.as_str().into() },
                _ => Event::Exploded { reason: second.as_str().into() },
            };
            let envelope = Envelope {
                channel: Channel::parse(&channel).unwrap(),
                number: MessageNumber::new(number).unwrap(),
                time,
                event,
            };
            let json = canonical(&envelope);
            prop_assert_eq!(&json, &serde_json::to_string(&envelope).unwrap());
            // Every canonical body without an escape takes the fast path.
            prop_assert_eq!(super::scan::fields(&json).is_some(), !json.contains('\\'));
        }
    }

    #[test]
    fn whole_numbers_are_read_from_their_digits_in_any_notation() {
        for (text, value) in [
            ("0", Some(Some(0))),
            ("-0.0e5", Some(Some(0))),
            ("500", Some(Some(500))),
            ("500.000", Some(Some(500))),
            ("5e2", Some(Some(500))),
            ("5E+2", Some(Some(500))),
            ("50000e-2", Some(Some(500))),
            ("0.5e3", Some(Some(500))),
            ("-12", Some(Some(-12))),
            ("9223372036854775807", Some(Some(i128::from(i64::MAX)))),
            (
                "9223372036854775808.0",
                Some(Some(i128::from(i64::MAX) + 1)),
            ),
            ("1e38", Some(Some(10i128.pow(38)))),
            ("1e39", Some(None)),
            ("1e999999999999999999999", Some(None)),
            ("-1e400", Some(None)),
            ("1.5", None),
            ("5e-1", None),
            ("1e-999999999999999999999", None),
            ("\"1\"", None),
            ("true", None),
            ("[1]", None),
        ] {
            assert_eq!(whole_number(text), value, "{text}");
        }
    }
}
