//! The message contract: wire JSON in, validated [`Envelope`] out, and back again.
//!
//! - [`ValidationError`] (`error.rs`): why a message was refused, naming the field.
//! - [`Channel`], [`MessageNumber`] (`ids.rs`): where a message belongs and its place.
//! - [`Event`], [`MessageType`], [`Envelope`] (here): what a message says, and the limits on
//!   new messages.
//! - `wire.rs`: the contract's fields on the wire, read and written through serde_json.
//!
//! Parsing walks the document field by field over borrowed raw JSON, so the first bad field is
//! named exactly and nothing is allocated for fields that are never read. The same parser reads
//! the canonical form that ingest puts on the queue, so there is one definition of a valid
//! message.

mod error;
mod ids;
mod wire;

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

pub use error::ValidationError;
pub use ids::{Channel, MessageNumber};
pub use wire::format_time;

/// Largest request body ingest accepts; anything larger is refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest channel name; it also keeps SQS group and deduplication ids within their limits.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest free text (`type`, `mission`, `newMission`, `reason`) a new message may carry, in
/// characters. It bounds what one message costs to store and to serve: a rocket's item, its
/// index keys and a page of rockets all grow with it.
pub const MAX_TEXT_CHARS: usize = 256;

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
        serde_json::to_string(self).expect("a message always serialises")
    }
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
        for whole in ["1.0", "1e0", "10E-1", "0.1e1", "1.000"] {
            let body = with(&at, json!(1))
                .to_string()
                .replace("\"messageNumber\":1", &format!("\"messageNumber\":{whole}"));
            let message = Envelope::parse(body.as_bytes()).expect(whole);
            assert_eq!(message.number, MessageNumber(1), "{whole}");
        }
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
