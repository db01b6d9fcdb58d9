//! Realistic message streams, SQS records as Lambda delivers them, and a small seeded random
//! source so failures reproduce.

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Duration, FixedOffset};

use rockets::message::{Channel, Envelope, Event, MessageNumber};
use rockets::ports::QueuedMessage;

/// A seeded random source, so a failure reproduces from its seed.
#[derive(Clone, Debug)]
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(fastrand::Rng::with_seed(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        self.0.shuffle(items);
    }

    /// A channel named as the challenge's senders name them: a random UUID, 36 characters.
    pub fn uuid_channel(&mut self) -> Channel {
        let mut hex = |digits: usize| {
            (0..digits)
                .map(|_| char::from_digit(self.below(16) as u32, 16).expect("a hex digit"))
                .collect::<String>()
        };
        let name = [hex(8), hex(4), hex(4), hex(4), hex(12)].join("-");
        channel(&name)
    }
}

pub fn channel(name: &str) -> Channel {
    Channel::parse(name).expect("fixture channel names are valid")
}

/// Message `n` of `channel` saying `event`, sent `n` seconds after a fixed start.
pub fn message(channel: &Channel, n: u64, event: Event) -> Envelope {
    let start: DateTime<FixedOffset> =
        DateTime::parse_from_rfc3339("2022-02-02T19:39:05.86337+01:00").expect("valid");
    Envelope {
        channel: channel.clone(),
        number: MessageNumber::new(n).expect("n >= 1"),
        time: start + Duration::seconds(n as i64),
        event,
    }
}

/// A plausible flight of `len` messages: a launch, then speed and mission changes, perhaps an
/// explosion and, rarely, a second launch.
pub fn flight(channel: &Channel, len: u64, rng: &mut Rng) -> Vec<Envelope> {
    const MISSIONS: [&str; 4] = ["ARTEMIS", "APOLLO", "GEMINI", "SHUTTLE_MIR"];
    const TYPES: [&str; 3] = ["Falcon-9", "Saturn-V", "Falcon-Heavy"];
    (1..=len)
        .map(|n| {
            let event = match (n, rng.below(100)) {
                (1, _) | (_, 0) => Event::Launched {
                    rocket_type: TYPES[rng.below(3) as usize].into(),
                    launch_speed: rng.below(1_000) as i64,
                    mission: MISSIONS[rng.below(4) as usize].into(),
                },
                (_, 1..=40) => Event::SpeedIncreased {
                    by: rng.below(5_000) as i64,
                },
                (_, 41..=80) => Event::SpeedDecreased {
                    by: rng.below(5_000) as i64,
                },
                (_, 81..=96) => Event::MissionChanged {
                    new_mission: MISSIONS[rng.below(4) as usize].into(),
                },
                _ => Event::Exploded {
                    reason: "PRESSURE_VESSEL_FAILURE".into(),
                },
            };
            message(channel, n, event)
        })
        .collect()
}

/// The SQS record Lambda would deliver for `message`, with message id `id`.
pub fn sqs_record(id: &str, message: &Envelope) -> SqsMessage {
    let queued = QueuedMessage::of(message);
    let mut record = SqsMessage::default();
    record.message_id = Some(id.to_string());
    record.receipt_handle = Some(format!("receipt-{id}"));
    record.body = Some(queued.body);
    record.attributes = [
        ("MessageGroupId".to_string(), queued.group_id),
        (
            "MessageDeduplicationId".to_string(),
            queued.deduplication_id,
        ),
        ("ApproximateReceiveCount".to_string(), "1".to_string()),
    ]
    .into_iter()
    .collect();
    record.event_source = Some("aws:sqs".into());
    record
}
