//! The state of one rocket and the fold that builds it from its messages in order.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::message::{Channel, Envelope, Event, MessageNumber};

/// Where a rocket is in its life. The declaration order is the sort order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Messages have arrived but `RocketLaunched` has not been applied yet.
    Pending,
    Launched,
    Exploded,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pending, Status::Launched, Status::Exploded];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Launched => "launched",
            Status::Exploded => "exploded",
        }
    }

    pub fn parse(raw: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Dense index, for per-status tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The state of one rocket, as served by the query API.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rocket {
    pub channel: Channel,
    #[serde(rename = "type")]
    pub rocket_type: Option<Arc<str>>,
    pub mission: Option<Arc<str>>,
    pub speed: i64,
    pub status: Status,
    pub explosion_reason: Option<Arc<str>>,
    pub launch_time: Option<DateTime<FixedOffset>>,
    /// The highest message number applied; 0 before the first.
    pub last_message_number: u64,
    pub last_message_time: Option<DateTime<FixedOffset>>,
    /// Messages received ahead of a gap and waiting for it to fill.
    pub pending_messages: u64,
    /// While messages wait: the number the rocket waits for, the next after the last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<u64>,
    /// While messages wait: since when, as first written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<DateTime<Utc>>,
    /// When this state was last written: bookkeeping, not part of the fold.
    pub updated_at: DateTime<Utc>,
}

impl Rocket {
    /// A rocket nothing has been applied to yet.
    pub fn new(channel: Channel, now: DateTime<Utc>) -> Self {
        Rocket {
            channel,
            rocket_type: None,
            mission: None,
            speed: 0,
            status: Status::Pending,
            explosion_reason: None,
            launch_time: None,
            last_message_number: 0,
            last_message_time: None,
            pending_messages: 0,
            waiting_for: None,
            stalled_since: None,
            updated_at: now,
        }
    }

    /// Keeps the stall in step with the parked count: a rocket with messages waiting behind a
    /// gap waits for the number after its last, since the first moment it did.
    pub fn note_stall(&mut self, now: DateTime<Utc>) {
        if self.pending_messages > 0 {
            self.waiting_for = Some(self.next_number());
            self.stalled_since.get_or_insert(now);
        } else {
            self.waiting_for = None;
            self.stalled_since = None;
        }
    }

    /// The message number this rocket can apply next.
    pub fn next_number(&self) -> u64 {
        self.last_message_number + 1
    }

    pub fn has_applied(&self, number: MessageNumber) -> bool {
        number.get() <= self.last_message_number
    }

    /// Applies the message that directly follows the last one applied.
    ///
    /// Speeds are exact (they may go negative) and saturate only at the limits of `i64`.
    pub fn apply(&mut self, message: &Envelope) {
        debug_assert_eq!(message.number.get(), self.next_number());
        debug_assert_eq!(message.channel, self.channel);
        match &message.event {
            Event::Launched {
                rocket_type,
                launch_speed,
                mission,
            } => {
                // Only the first launch counts; a later one stays in the history alone.
                if self.launch_time.is_none() {
                    self.rocket_type = Some(rocket_type.clone());
                    self.mission = Some(mission.clone());
                    self.speed = *launch_speed;
                    self.launch_time = Some(message.time);
                    if self.status == Status::Pending {
                        self.status = Status::Launched;
                    }
                }
            }
            Event::SpeedIncreased { by } => self.speed = self.speed.saturating_add(*by),
            Event::SpeedDecreased { by } => self.speed = self.speed.saturating_sub(*by),
            Event::MissionChanged { new_mission } => self.mission = Some(new_mission.clone()),
            Event::Exploded { reason } => {
                self.status = Status::Exploded;
                self.explosion_reason = Some(reason.clone());
            }
        }
        self.last_message_number = message.number.get();
        self.last_message_time = Some(message.time);
    }

    /// The in-order fold of a complete sequence starting at message 1.
    pub fn fold<'a>(
        channel: Channel,
        messages: impl IntoIterator<Item = &'a Envelope>,
        now: DateTime<Utc>,
    ) -> Rocket {
        let mut rocket = Rocket::new(channel, now);
        for message in messages {
            rocket.apply(message);
        }
        rocket
    }

    /// Equality of everything the fold decides, ignoring when it was written and since when
    /// it waits.
    pub fn same_state(&self, other: &Rocket) -> bool {
        Rocket {
            updated_at: other.updated_at,
            stalled_since: other.stalled_since,
            ..self.clone()
        } == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Channel {
        Channel::parse("rocket-1").unwrap()
    }

    fn at(n: u64, event: Event) -> Envelope {
        Envelope {
            channel: channel(),
            number: MessageNumber::new(n).unwrap(),
            time: DateTime::parse_from_rfc3339(&format!("2022-02-02T19:39:{:02}+01:00", n % 60))
                .unwrap(),
            event,
        }
    }

    fn launch(n: u64, speed: i64) -> Envelope {
        at(
            n,
            Event::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: speed,
                mission: "ARTEMIS".into(),
            },
        )
    }

    fn fold(messages: &[Envelope]) -> Rocket {
        Rocket::fold(channel(), messages, Utc::now())
    }

    #[test]
    fn empty_rocket_is_pending_with_nulls() {
        let rocket = fold(&[]);
        assert_eq!(rocket.status, Status::Pending);
        assert_eq!(rocket.speed, 0);
        assert!(rocket.rocket_type.is_none() && rocket.mission.is_none());
        assert!(rocket.launch_time.is_none() && rocket.last_message_time.is_none());
        assert_eq!(rocket.last_message_number, 0);
    }

    #[test]
    fn launch_sets_type_mission_speed_and_time() {
        let rocket = fold(&[launch(1, 500)]);
        assert_eq!(rocket.status, Status::Launched);
        assert_eq!(rocket.rocket_type.as_deref(), Some("Falcon-9"));
        assert_eq!(rocket.mission.as_deref(), Some("ARTEMIS"));
        assert_eq!(rocket.speed, 500);
        assert_eq!(rocket.launch_time, Some(launch(1, 500).time));
        assert_eq!(rocket.last_message_number, 1);
        assert_eq!(rocket.last_message_time, Some(launch(1, 500).time));
    }

    #[test]
    fn speed_changes_are_exact_and_may_go_negative() {
        let rocket = fold(&[
            launch(1, 500),
            at(2, Event::SpeedIncreased { by: 3000 }),
            at(3, Event::SpeedDecreased { by: 4000 }),
        ]);
        assert_eq!(rocket.speed, -500);
    }

    #[test]
    fn speed_saturates_at_the_limits() {
        let rocket = fold(&[
            launch(1, i64::MAX),
            at(2, Event::SpeedIncreased { by: i64::MAX }),
        ]);
        assert_eq!(rocket.speed, i64::MAX);
        let rocket = fold(&[
            launch(1, 0),
            at(2, Event::SpeedDecreased { by: i64::MAX }),
            at(3, Event::SpeedDecreased { by: i64::MAX }),
            at(4, Event::SpeedIncreased { by: 5 }),
        ]);
        assert_eq!(rocket.speed, i64::MIN + 5);
    }

    #[test]
    fn speed_changes_before_launch_apply_to_zero_and_launch_resets() {
        let before = fold(&[at(1, Event::SpeedIncreased { by: 7 })]);
        assert_eq!((before.speed, before.status), (7, Status::Pending));
        let after = fold(&[at(1, Event::SpeedIncreased { by: 7 }), launch(2, 100)]);
        assert_eq!((after.speed, after.status), (100, Status::Launched));
    }

    #[test]
    fn mission_changes() {
        let rocket = fold(&[
            launch(1, 1),
            at(
                2,
                Event::MissionChanged {
                    new_mission: "SHUTTLE_MIR".into(),
                },
            ),
        ]);
        assert_eq!(rocket.mission.as_deref(), Some("SHUTTLE_MIR"));
    }

    #[test]
    fn explosion_sets_status_and_reason_and_later_messages_still_apply() {
        let rocket = fold(&[
            launch(1, 100),
            at(
                2,
                Event::Exploded {
                    reason: "PRESSURE_VESSEL_FAILURE".into(),
                },
            ),
            at(3, Event::SpeedDecreased { by: 100 }),
            at(
                4,
                Event::MissionChanged {
                    new_mission: "NONE".into(),
                },
            ),
        ]);
        assert_eq!(rocket.status, Status::Exploded);
        assert_eq!(
            rocket.explosion_reason.as_deref(),
            Some("PRESSURE_VESSEL_FAILURE")
        );
        assert_eq!(rocket.speed, 0);
        assert_eq!(rocket.mission.as_deref(), Some("NONE"));
        assert_eq!(rocket.last_message_number, 4);
    }

    #[test]
    fn launch_after_explosion_keeps_status_exploded() {
        let rocket = fold(&[
            at(
                1,
                Event::Exploded {
                    reason: "EARLY".into(),
                },
            ),
            launch(2, 9),
        ]);
        assert_eq!(rocket.status, Status::Exploded);
        assert_eq!(rocket.speed, 9);
        assert_eq!(rocket.rocket_type.as_deref(), Some("Falcon-9"));
    }

    #[test]
    fn a_second_launch_is_recorded_and_otherwise_ignored() {
        let mut second = launch(3, 99_999);
        if let Event::Launched { rocket_type, .. } = &mut second.event {
            *rocket_type = "Saturn-V".into();
        }
        let rocket = fold(&[
            launch(1, 500),
            at(2, Event::SpeedIncreased { by: 1 }),
            second,
        ]);
        assert_eq!(rocket.speed, 501);
        assert_eq!(rocket.rocket_type.as_deref(), Some("Falcon-9"));
        assert_eq!(rocket.launch_time, Some(launch(1, 0).time));
        assert_eq!(rocket.last_message_number, 3);
        assert_eq!(rocket.last_message_time, Some(launch(3, 0).time));
    }

    #[test]
    fn serialises_with_the_contract_field_names() {
        let value = serde_json::to_value(fold(&[launch(1, 500)])).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "channel",
                "explosionReason",
                "lastMessageNumber",
                "lastMessageTime",
                "launchTime",
                "mission",
                "pendingMessages",
                "speed",
                "status",
                "type",
                "updatedAt"
            ]
        );
        assert_eq!(value["status"], "launched");
        assert_eq!(value["launchTime"], "2022-02-02T19:39:01+01:00");
    }
}
