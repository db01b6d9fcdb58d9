//! Fixtures for tests and benchmarks: realistic message streams, SQS records as Lambda
//! delivers them, and a small seeded random source so failures reproduce.

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Duration, FixedOffset};

use crate::message::{Channel, Envelope, Event, MessageNumber};
use crate::ports::QueuedMessage;

/// A seeded SplitMix64 generator: deterministic, dependency-free, good enough for shuffles.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
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

/// A minimal blocking HTTP/1.1 client over one keep-alive connection, enough to drive the API
/// from plain threads the way the challenge's load generator does.
pub struct HttpClient {
    addr: std::net::SocketAddr,
    stream: Option<std::io::BufReader<std::net::TcpStream>>,
}

impl HttpClient {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        HttpClient { addr, stream: None }
    }

    /// Sends one request; returns the status and body. Reconnects once if the kept-alive
    /// connection was closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        match self.try_request(method, path, body) {
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.stream = None;
                self.try_request(method, path, body)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use std::io::{BufRead, Read, Write};
        if self.stream.is_none() {
            let stream = std::net::TcpStream::connect(self.addr)?;
            stream.set_nodelay(true)?;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
