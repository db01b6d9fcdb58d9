//! Fixtures for tests and benchmarks: realistic message streams, SQS records as Lambda
//! delivers them, and a small seeded random source so failures reproduce.

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Duration, FixedOffset};

use crate::message::{Channel, Envelope, Event, MessageNumber};
use crate::ports::QueuedMessage;

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

/// The endpoint of an emulator the test command started, read from `var`.
///
/// Under `CI=true` a missing emulator fails the test; elsewhere the test is skipped with a
/// note, so `cargo test` alone still runs everything that needs no emulator.
pub fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{var} is not set, and under CI=true this test must run: start it through scripts/test"
            )
        }
        _ => {
            eprintln!("skipped: {var} is not set (scripts/test starts the emulators)");
            None
        }
    }
}

/// Shows the logs of what a test runs when `TEST_LOG` is set (at `RUST_LOG`'s level, `info`
/// by default); tests are quiet otherwise.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_some() {
        ONCE.call_once(crate::telemetry::init);
    }
}

/// A name no other test run uses, for tables, queues and channels.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{:x}-{}-{}",
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store that counts the parked messages its loads hand back.
pub struct CountingStore<S> {
    pub inner: S,
    most_parked_read: std::sync::atomic::AtomicUsize,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            most_parked_read: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The most parked messages one load returned since the last call.
    pub fn take_most_parked_read(&self) -> usize {
        self.most_parked_read
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

impl<S: crate::ports::ChannelStore> crate::ports::ChannelStore for CountingStore<S> {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<crate::ports::ChannelSnapshot>, crate::ports::StoreError> {
        let snapshot = self.inner.load(channel, window, probe).await?;
        if let Some(s) = &snapshot {
            let read = s.parked.first.len() + s.parked.probed.len();
            self.most_parked_read
                .fetch_max(read, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(snapshot)
    }

    async fn commit(
        &self,
        expected_version: u64,
        change: &crate::ordering::ChannelChange,
    ) -> Result<crate::ports::CommitOutcome, crate::ports::StoreError> {
        self.inner.commit(expected_version, change).await
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, crate::ports::StoreError> {
        self.inner.applied(channel, numbers).await
    }
}

/// One contract for every backend, so the embedded ones and the AWS ones cannot drift.
pub mod contract {
    use std::time::Duration;

    use chrono::Utc;

    use super::{Rng, channel, flight, unique_name};
    use crate::listing::{ListQuery, Order, SortKey};
    use crate::message::{Envelope, Event, MessageNumber};
    use crate::ordering::{ChannelChange, ParkedView, Timeline};
    use crate::ports::{
        ChannelStore, CommitOutcome, MessageQueue, QueueConsumer, QueueRecord, QueuedMessage,
        RocketReader,
    };
    use crate::rocket::Status;

    async fn open<S: ChannelStore>(
        store: &S,
        channel: &crate::message::Channel,
    ) -> (Timeline, u64) {
        match store.load(channel, usize::MAX, &[]).await.unwrap() {
            Some(s) => (Timeline::load(s.rocket, s.parked, Utc::now()), s.version),
            None => (Timeline::empty(channel.clone(), Utc::now()), 0),
        }
    }

    fn change(mut timeline: Timeline, messages: &[&Envelope]) -> ChannelChange {
        for m in messages {
            timeline.receive((*m).clone());
        }
        timeline.into_change().expect("something changed")
    }

    /// Loading, conditional commits, parking and draining, history, and listing.
    pub async fn store<S: ChannelStore + RocketReader>(store: &S) {
        let c = channel(&unique_name("contract"));
        let m = flight(&c, 5, &mut Rng::new(7));
        assert!(store.load(&c, usize::MAX, &[]).await.unwrap().is_none());
        assert!(store.rocket(&c).await.unwrap().is_none());
        assert!(store.history(&c, 0, 10).await.unwrap().is_none());

        // Messages ahead of a gap are parked, and the rocket exists, pending.
        let (t, version) = open(store, &c).await;
        let parked = change(t, &[&m[2], &m[1]]);
        assert_eq!(
            store.commit(version, &parked).await.unwrap(),
            CommitOutcome::Committed
        );
        let snapshot = store
            .load(&c, usize::MAX, &[])
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(snapshot.version, 1);
        let numbers: Vec<u64> = snapshot
            .parked
            .first
            .iter()
            .map(|p| p.number.get())
            .collect();
        assert_eq!(numbers, [2, 3]);
        assert!(snapshot.parked.complete);
        assert_eq!(snapshot.rocket.pending_messages, 2);
        assert_eq!(
            store.rocket(&c).await.unwrap().unwrap().status,
            Status::Pending
        );

        // A commit from a stale version changes nothing.
        let stale = change(Timeline::empty(c.clone(), Utc::now()), &[&m[0]]);
        assert_eq!(
            store.commit(0, &stale).await.unwrap(),
            CommitOutcome::VersionMismatch
        );
        assert_eq!(
            store
                .load(&c, usize::MAX, &[])
                .await
                .unwrap()
                .unwrap()
                .version,
            1
        );
        assert_eq!(store.history(&c, 0, 10).await.unwrap().unwrap(), []);

        // Filling the gap applies the parked messages and removes exactly them.
        let (t, version) = open(store, &c).await;
        let filled = change(t, &[&m[0]]);
        assert_eq!(filled.unparked.len(), 2);
        assert_eq!(
            store.commit(version, &filled).await.unwrap(),
            CommitOutcome::Committed
        );
        let snapshot = store.load(&c, usize::MAX, &[]).await.unwrap().unwrap();
        assert_eq!(snapshot.parked, ParkedView::none());
        assert_eq!(
            (snapshot.rocket.last_message_number, snapshot.version),
            (3, 2)
        );
        assert!(
            store
                .rocket(&c)
                .await
                .unwrap()
                .unwrap()
                .same_state(&snapshot.rocket)
        );

        // History, in pages, and lookups by number.
        assert_eq!(store.history(&c, 0, 2).await.unwrap().unwrap(), m[..2]);
        assert_eq!(store.history(&c, 2, 10).await.unwrap().unwrap(), m[2..3]);
        assert_eq!(store.history(&c, 3, 10).await.unwrap().unwrap(), []);
        let numbers = [1, 3].map(|n| MessageNumber::new(n).unwrap());
        let mut looked_up = store.applied(&c, &numbers).await.unwrap();
        looked_up.sort_by_key(|m| m.number);
        assert_eq!(looked_up, [m[0].clone(), m[2].clone()]);

        // Two appliers park different messages under one number: the first commit wins.
        let (first, version) = open(store, &c).await;
        let (second, _) = open(store, &c).await;
        let mut other = m[4].clone();
        other.event = Event::Exploded {
            reason: "a different message".into(),
        };
        let winner = change(first, &[&m[4]]);
        let loser = change(second, &[&other]);
        assert_eq!(
            store.commit(version, &winner).await.unwrap(),
            CommitOutcome::Committed
        );
        assert_ne!(
            store.commit(version, &loser).await.unwrap(),
            CommitOutcome::Committed
        );
        let snapshot = store.load(&c, usize::MAX, &[]).await.unwrap().unwrap();
        assert_eq!(snapshot.parked, ParkedView::all(vec![m[4].clone()]));
        assert_eq!(snapshot.rocket.pending_messages, 1);

        parked_view(store).await;
        long_escaped_text(store).await;
        listing(store).await;
    }

    /// Loading reads a bounded view of a channel's parked messages: the first few in order, and
    /// those beyond them with the numbers asked about. A batch without the channel's next
    /// number cannot start a drain, so for it a store may read only the numbers asked about.
    async fn parked_view<S: ChannelStore>(store: &S) {
        let c = channel(&unique_name("view"));
        let m = flight(&c, 12, &mut Rng::new(11));
        let (t, version) = open(store, &c).await;
        let parked: Vec<&Envelope> = m[2..].iter().collect();
        store.commit(version, &change(t, &parked)).await.unwrap();
        let n = |n: u64| MessageNumber::new(n).unwrap();
        let snapshot = store
            .load(&c, 3, &[n(1), n(2), n(4), n(9), n(12), n(40)])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snapshot.rocket.pending_messages, 10);
        assert_eq!(snapshot.parked.first, m[2..5]);
        assert!(!snapshot.parked.complete);
        let mut probed = snapshot.parked.probed;
        probed.sort_by_key(|m| m.number);
        assert_eq!(probed, [m[8].clone(), m[11].clone()]);
        let asked = store.load(&c, 3, &[n(4), n(9)]).await.unwrap().unwrap();
        assert!(m[2..5].starts_with(&asked.parked.first));
        assert!(!asked.parked.complete);
        for wanted in [&m[3], &m[8]] {
            let found = asked.parked.first.iter().chain(&asked.parked.probed);
            assert_eq!(found.filter(|p| *p == wanted).count(), 1, "{wanted:?}");
        }
        let whole = store.load(&c, 10, &[n(1), n(12)]).await.unwrap().unwrap();
        assert_eq!(whole.parked, ParkedView::all(m[2..].to_vec()));
    }

    /// Text stored before any length limit, and text that escaping doubles in an index key,
    /// still commits and lists: a state write that cannot succeed would block its channel.
    async fn long_escaped_text<S: ChannelStore + RocketReader>(store: &S) {
        let c = channel(&unique_name(&"t".repeat(80)));
        let launched = super::message(
            &c,
            1,
            Event::Launched {
                rocket_type: "\u{0}".repeat(600).into(),
                launch_speed: 1,
                mission: "\u{1}".repeat(1_000).into(),
            },
        );
        let (t, version) = open(store, &c).await;
        assert_eq!(
            store
                .commit(version, &change(t, &[&launched]))
                .await
                .unwrap(),
            CommitOutcome::Committed
        );
        let stored = store.rocket(&c).await.unwrap().expect("stored");
        assert_eq!(stored.mission.as_deref().map(str::len), Some(1_000));
        let other = channel(&unique_name("plain"));
        let (t, version) = open(store, &other).await;
        let plain = super::message(
            &other,
            1,
            Event::Launched {
                rocket_type: "Saturn-V".into(),
                launch_speed: 1,
                mission: "APOLLO".into(),
            },
        );
        store.commit(version, &change(t, &[&plain])).await.unwrap();
        for sort_by in [SortKey::Type, SortKey::Mission] {
            let query = ListQuery {
                sort_by,
                order: Order::Asc,
                status: Some(Status::Launched),
                stalled: false,
                limit: 1000,
                after: None,
            };
            let page = store.rockets(&query).await.unwrap();
            assert!(page.rockets.iter().any(|r| r.channel == c), "{sort_by:?}");
            // Text of NULs sorts first; a page may end, and the next start, right there.
            let first = store
                .rockets(&ListQuery {
                    limit: 1,
                    ..query.clone()
                })
                .await
                .unwrap();
            assert_eq!(first.rockets[0].channel, c, "{sort_by:?}");
            let next = ListQuery {
                limit: 1000,
                after: first.next,
                ..query
            };
            let rest = store.rockets(&next).await.unwrap();
            assert!(rest.rockets.iter().all(|r| r.channel != c), "{sort_by:?}");
            assert!(
                rest.rockets.iter().any(|r| r.channel == other),
                "{sort_by:?}"
            );
        }
    }

    /// Sorted, filtered, paginated listing over rockets in every status.
    async fn listing<S: ChannelStore + RocketReader>(store: &S) {
        let mut expected = Vec::new();
        for (i, speed) in [500, -20, 500, 7, 1_000, 0].into_iter().enumerate() {
            let c = channel(&unique_name(&format!("list{i}")));
            let mut messages = vec![super::message(
                &c,
                1,
                Event::Launched {
                    rocket_type: "Falcon-9".into(),
                    launch_speed: speed,
                    mission: "ARTEMIS".into(),
                },
            )];
            if i % 3 == 1 {
                messages.push(super::message(
                    &c,
                    2,
                    Event::Exploded {
                        reason: "boom".into(),
                    },
                ));
            } else {
                // Stalled behind message 2, with 0, 1 or 2 messages waiting.
                for number in 3..3 + i as u64 / 2 {
                    messages.push(super::message(&c, number, Event::SpeedIncreased { by: 1 }));
                }
            }
            let refs: Vec<&Envelope> = messages.iter().collect();
            let (t, version) = open(store, &c).await;
            store.commit(version, &change(t, &refs)).await.unwrap();
            expected.push(store.rocket(&c).await.unwrap().unwrap());
        }
        // Everything else in the store is from the checks above; list only these.
        let ours = |rockets: Vec<crate::rocket::Rocket>| {
            rockets
                .into_iter()
                .filter(|r| expected.iter().any(|e| e.channel == r.channel))
                .map(|r| r.channel)
                .collect::<Vec<_>>()
        };
        assert!(expected.iter().filter(|r| r.pending_messages > 0).count() >= 2);
        for (sort_by, order, status, stalled) in [
            (SortKey::Speed, Order::Desc, None, false),
            (SortKey::Speed, Order::Asc, Some(Status::Launched), false),
            (SortKey::Channel, Order::Asc, None, false),
            (SortKey::Status, Order::Desc, None, false),
            (SortKey::PendingMessages, Order::Desc, None, false),
            (SortKey::PendingMessages, Order::Asc, None, true),
            (SortKey::PendingMessages, Order::Desc, None, true),
            (
                SortKey::PendingMessages,
                Order::Asc,
                Some(Status::Launched),
                true,
            ),
        ] {
            let mut query = ListQuery {
                sort_by,
                order,
                status,
                stalled,
                limit: 2,
                after: None,
            };
            let mut walked = Vec::new();
            for _ in 0..20 {
                let page = store.rockets(&query).await.unwrap();
                assert!(page.rockets.len() <= 2);
                walked.extend(page.rockets);
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            let mut wanted: Vec<_> = expected
                .iter()
                .filter(|r| status.is_none_or(|s| r.status == s))
                .filter(|r| !stalled || r.pending_messages > 0)
                .cloned()
                .collect();
            wanted.sort_by_key(|r| sort_by.position(r));
            if order == Order::Desc {
                wanted.reverse();
            }
            assert_eq!(
                ours(walked),
                ours(wanted),
                "{sort_by:?} {order:?} {status:?} stalled {stalled}"
            );
        }
    }

    /// FIFO order per group, deduplication, and deletion.
    pub async fn queue<Q: MessageQueue + QueueConsumer>(queue: &Q) {
        let (a, b) = (channel(&unique_name("qa")), channel(&unique_name("qb")));
        let ma = flight(&a, 3, &mut Rng::new(1));
        let mb = flight(&b, 1, &mut Rng::new(2));
        for m in [&ma[0], &ma[1], &mb[0], &ma[1], &ma[2]] {
            queue.send(m).await.unwrap();
        }
        let mut received: Vec<Envelope> = Vec::new();
        for _ in 0..20 {
            let batch = queue.receive(10, Duration::from_secs(1)).await.unwrap();
            for record in &batch {
                let group = record.group_id().expect("group attribute");
                let message = Envelope::parse(record.body().unwrap().as_bytes()).unwrap();
                assert_eq!(*record.message().unwrap(), message);
                assert_eq!(group, message.channel.as_str());
                assert_eq!(
                    record.deduplication_id(),
                    Some(QueuedMessage::of(&message).deduplication_id.as_str())
                );
                received.push(message);
            }
            let handles: Vec<&str> = batch.iter().filter_map(|r| r.receipt_handle()).collect();
            queue.delete(&handles).await.unwrap();
            if received.len() >= 4 {
                break;
            }
        }
        let of = |c: &crate::message::Channel| {
            received
                .iter()
                .filter(|m| m.channel == *c)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&a), ma, "in order, and the resend dropped");
        assert_eq!(of(&b), mb);
        assert!(
            queue
                .receive(10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// API Gateway events for `method path` whose headers, query or body lambda_http's conversion
/// cannot turn into a request, each with the field the 400 must name.
pub fn unconvertible_gateway_events(
    method: &str,
    path: &str,
    body: &str,
) -> Vec<(
    aws_lambda_events::apigw::ApiGatewayV2httpRequest,
    &'static str,
)> {
    use lambda_http::http::{HeaderMap, HeaderValue, Method};
    let method: Method = method.parse().expect("a method");
    let event = |headers: &[(&'static str, &'static [u8])], query: &str| {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                *name,
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        crate::http::api_gateway_event(
            method.clone(),
            path,
            Some(query),
            map,
            body.as_bytes().to_vec(),
        )
    };
    let mut events = vec![
        (event(&[("host", b"a b")], ""), "headers.host"),
        (event(&[("host", b"[rockets]")], ""), "headers.host"),
        (event(&[("host", b"x/messages?")], ""), "headers.host"),
        (
            event(&[("host", b"x"), ("x-forwarded-proto", b"ht tp")], ""),
            "headers.x-forwarded-proto",
        ),
        (
            event(&[("host", b"x"), ("x-forwarded-proto", b"javascript")], ""),
            "headers.x-forwarded-proto",
        ),
        (event(&[], "q=\"x\""), "query"),
    ];
    let mut not_base64 = event(&[], "");
    not_base64.body = Some("%%%".into());
    not_base64.is_base64_encoded = true;
    events.push((not_base64, "body"));
    events
}
