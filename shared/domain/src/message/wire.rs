//! The message contract on the wire, encoded once: [`Wire`], [`Metadata`] and [`Body`] name
//! every field and where it sits. A message is read with each field kept as its raw JSON, so
//! that the first bad field is named exactly, and written with its typed values; both go
//! through serde_json.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Channel, Envelope, Event, MessageNumber, MessageType, ValidationError};

/// A message: its metadata and its body.
#[derive(Serialize, Deserialize)]
struct Wire<M, B> {
    metadata: M,
    message: B,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<F> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_number: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_time: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_type: Option<F>,
}

/// Every field any message type's body has; each type uses some of them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body<F> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    rocket_type: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    launch_speed: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mission: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_mission: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<F>,
}

/// A field as it is written: text or a whole number.
#[derive(Serialize)]
#[serde(untagged)]
enum Value<'a> {
    Text(Cow<'a, str>),
    Integer(i64),
}

/// A field as it was sent: its raw JSON; `null` reads as absent.
type Raw<'a> = Option<&'a RawValue>;

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
        let body = std::str::from_utf8(body)
            .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
        let (metadata, message) = fields(body)?;
        let metadata = metadata?;
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
        let body = message?;
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

/// The canonical wire form: only the contract's fields, in a fixed order. Stored copies are
/// compared as text, so these bytes must not change.
/// A text field, as written.
fn text_value(text: &str) -> Option<Value<'_>> {
    Some(Value::Text(Cow::Borrowed(text)))
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut message = Body {
            rocket_type: None,
            launch_speed: None,
            mission: None,
            by: None,
            new_mission: None,
            reason: None,
        };
        match &self.event {
            Event::Launched {
                rocket_type,
                launch_speed,
                mission,
            } => {
                message.rocket_type = text_value(rocket_type);
                message.launch_speed = Some(Value::Integer(*launch_speed));
                message.mission = text_value(mission);
            }
            Event::SpeedIncreased { by } | Event::SpeedDecreased { by } => {
                message.by = Some(Value::Integer(*by));
            }
            Event::MissionChanged { new_mission } => message.new_mission = text_value(new_mission),
            Event::Exploded { reason } => message.reason = text_value(reason),
        }
        let number = i64::try_from(self.number.get()).expect("numbers are at most i64::MAX");
        Wire {
            metadata: Metadata {
                channel: text_value(self.channel.as_str()),
                message_number: Some(Value::Integer(number)),
                message_time: Some(Value::Text(Cow::Owned(format_time(&self.time)))),
                message_type: text_value(self.event.message_type().as_str()),
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

/// The body's metadata and message, each with its fields raw, or why it is not there. One pass
/// reads a well-formed body; one it cannot read is read again a level at a time, which tells a
/// `metadata` or `message` that is not an object from a body that is not JSON.
#[allow(clippy::type_complexity)]
fn fields(
    body: &str,
) -> Result<
    (
        Result<Metadata<&RawValue>, ValidationError>,
        Result<Body<&RawValue>, ValidationError>,
    ),
    ValidationError,
> {
    let missing = |field| ValidationError::Missing { field };
    if let Ok(root) = serde_json::from_str::<Wire<Option<_>, Option<_>>>(body) {
        return Ok((
            root.metadata.ok_or(missing("metadata")),
            root.message.ok_or(missing("message")),
        ));
    }
    let root: Wire<Raw, Raw> =
        serde_json::from_str(body).map_err(|e| ValidationError::Malformed {
            field: "body",
            detail: format!("body is not valid JSON: {e}"),
        })?;
    Ok((
        object(root.metadata, "metadata"),
        object(root.message, "message"),
    ))
}

/// A field that should hold an object, read as `T` with its own fields raw.
fn object<'a, T: Deserialize<'a>>(raw: Raw<'a>, field: &'static str) -> Result<T, ValidationError> {
    let raw = raw.ok_or(ValidationError::Missing { field })?;
    if !raw.get().starts_with('{') {
        return Err(ValidationError::WrongType {
            field,
            expected: "an object",
        });
    }
    serde_json::from_str(raw.get()).map_err(|e| ValidationError::Malformed {
        field: "body",
        detail: format!("body is not valid JSON: {e}"),
    })
}

fn present<'a>(raw: Raw<'a>, field: &'static str) -> Result<&'a str, ValidationError> {
    raw.map(RawValue::get)
        .ok_or(ValidationError::Missing { field })
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

    fn envelope(event: Event) -> Envelope {
        Envelope {
            channel: Channel::parse("a-Z_0.9:x").unwrap(),
            number: MessageNumber::new(9_223_372_036_854_775_807).unwrap(),
            time: DateTime::parse_from_rfc3339("2022-02-02T19:39:05.86337+01:00").unwrap(),
            event,
        }
    }

    /// Stored copies are compared as text: these bytes must never change.
    #[test]
    fn the_canonical_form_is_fixed_byte_for_byte() {
        let cases = [
            (
                Event::Launched {
                    rocket_type: "Falcon \"9\"\n\té/".into(),
                    launch_speed: -5,
                    mission: "ARTEMIS".into(),
                },
                "RocketLaunched",
                r#"{"type":"Falcon \"9\"\n\té/","launchSpeed":-5,"mission":"ARTEMIS"}"#,
            ),
            (
                Event::SpeedIncreased { by: 3000 },
                "RocketSpeedIncreased",
                r#"{"by":3000}"#,
            ),
            (
                Event::SpeedDecreased { by: i64::MIN },
                "RocketSpeedDecreased",
                r#"{"by":-9223372036854775808}"#,
            ),
            (
                Event::MissionChanged {
                    new_mission: "SHUTTLE_MIR".into(),
                },
                "RocketMissionChanged",
                r#"{"newMission":"SHUTTLE_MIR"}"#,
            ),
            (
                Event::Exploded {
                    reason: "PRESSURE_VESSEL_FAILURE".into(),
                },
                "RocketExploded",
                r#"{"reason":"PRESSURE_VESSEL_FAILURE"}"#,
            ),
        ];
        for (event, kind, message) in cases {
            let expected = format!(
                r#"{{"metadata":{{"channel":"a-Z_0.9:x","messageNumber":9223372036854775807,"messageTime":"2022-02-02T19:39:05.863370+01:00","messageType":"{kind}"}},"message":{message}}}"#
            );
            assert_eq!(envelope(event).to_json(), expected);
        }
    }

    proptest! {
        /// Whatever the text holds, the canonical form reads back as the same message.
        #[test]
        fn the_canonical_form_reads_back_as_the_same_message(
            channel in "[A-Za-z0-9][A-Za-z0-9._:-]{0,39}",
            number in 1u64..=i64::MAX as u64,
            seconds in 0i64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -1_439i32..1_440,
            kind in 0u8..5,
            amount in 0i64..=i64::MAX,
            first in "\\PC{0,20}[a-z]",
            second in "[\\x00-\\x7f\"\\\\/\u{80}-\u{fdcf}]{0,20}[a-z]",
        ) {
            let time = DateTime::from_timestamp(seconds, nanos)
                .unwrap()
                .with_timezone(&FixedOffset::east_opt(offset_minutes * 60).unwrap());
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
            let json = envelope.to_json();
            prop_assert_eq!(Envelope::parse(json.as_bytes()).unwrap(), envelope);
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
