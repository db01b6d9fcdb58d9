//! A load generator that behaves the way the challenge's test program, `rockets launch URL`, is
//! documented to behave, so the server is tested against its real client and not only ours:
//!
//! - a new TCP connection for every message, never closed by the client (it lets go of one only
//!   when the server closes it, as Go's HTTP client does with a connection it cannot reuse);
//! - a resend 500 ms after any non-2xx answer, refused connection or broken exchange;
//! - a request given up after 10 s and sent again;
//! - it stops by itself once its last new message has been answered, dropping any resend still
//!   waiting.
//!
//! The messages are seeded: the same flags give the same channels and messages, so the expected
//! state of every rocket can be computed again by whoever checks the run.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rockets::message::Envelope;
use rockets::rocket::Rocket;
use rockets_testkit::{Rng, channel, flight};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to send, and how.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    pub url: Target,
    pub concurrency: usize,
    /// Requests to send, resends of the same message (duplicates) included, retries not.
    pub max_messages: usize,
    /// Pause after each message, per sender.
    pub message_delay: Duration,
    pub seed: u64,
    pub rockets: usize,
    /// Percentage of messages sent twice.
    pub duplicate_percent: u64,
    pub retry_after: Duration,
    pub request_timeout: Duration,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            url: Target::parse("http://localhost:8088/messages").expect("valid"),
            concurrency: 3,
            max_messages: 100_000,
            message_delay: Duration::ZERO,
            seed: 444,
            rockets: 20,
            duplicate_percent: 10,
            retry_after: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// An `http://host:port/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => (
                host,
                port.parse()
                    .map_err(|e| format!("{url}: port {port:?}: {e}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: if path.is_empty() { "/" } else { path }.to_string(),
        })
    }

    /// The addresses the host resolves to, in the resolver's order.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok(tokio::net::lookup_host((host, self.port)).await?.collect())
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Parses a duration as Go's `time.ParseDuration` writes the common ones: `0`, `500ms`,
/// `1.5s`, `2m`, `100us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text}: missing unit (ns, us, ms, s, m, h)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|e| format!("{text}: {e}"))?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text}: unknown unit {unit:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text}: {e}"))
}

/// The messages of one run and the order they are sent in.
pub struct Plan {
    pub flights: Vec<Vec<Envelope>>,
    /// `(flight, message)` indices, in sending order; a duplicate appears twice.
    pub sends: Vec<(usize, usize)>,
}

/// How far a message may be sent from its place in its channel's order.
const DISORDER: u64 = 64;

impl Plan {
    /// `max_messages` sends over `rockets` channels, out of order within a window of
    /// [`DISORDER`] sends, about `duplicate_percent`% of them resends.
    pub fn generate(
        seed: u64,
        max_messages: usize,
        rockets: usize,
        duplicate_percent: u64,
    ) -> Plan {
        let mut rng = Rng::new(seed);
        let rockets = rockets.clamp(1, max_messages.max(1));
        let unique = (max_messages as u64 * 100)
            .div_ceil(100 + duplicate_percent)
            .max(rockets as u64) as usize;
        let flights: Vec<Vec<Envelope>> = (0..rockets)
            .map(|i| {
                let len = unique / rockets + usize::from(i < unique % rockets);
                let name = uuid_like(&mut rng);
                flight(&channel(&name), len as u64, &mut rng)
            })
            .collect();
        // Interleave the channels, each in its own order, then send every message a little
        // early or late; resends go out a while after the original.
        let mut remaining: Vec<(usize, usize)> = flights
            .iter()
            .enumerate()
            .map(|(f, messages)| (f, messages.len()))
            .collect();
        let mut next = vec![0usize; flights.len()];
        let mut keyed: Vec<(u64, (usize, usize))> = Vec::with_capacity(max_messages);
        let mut position = 0u64;
        while !remaining.is_empty() {
            let pick = rng.below(remaining.len() as u64) as usize;
            let f = remaining[pick].0;
            keyed.push((
                position * DISORDER + rng.below(DISORDER * DISORDER),
                (f, next[f]),
            ));
            next[f] += 1;
            position += 1;
            remaining[pick].1 -= 1;
            if remaining[pick].1 == 0 {
                remaining.swap_remove(pick);
            }
        }
        let originals = keyed.len();
        while keyed.len() < max_messages {
            let (key, send) = keyed[rng.below(originals as u64) as usize];
            keyed.push((key + rng.below(DISORDER * DISORDER * 4), send));
        }
        keyed.sort_by_key(|(key, _)| *key);
        Plan {
            flights,
            sends: keyed.into_iter().map(|(_, send)| send).collect(),
        }
    }

    fn message(&self, send: usize) -> &Envelope {
        let (f, m) = self.sends[send];
        &self.flights[f][m]
    }

    /// Every rocket as the in-order fold of its accepted messages: applied up to the first
    /// message never accepted, the accepted ones after it parked.
    pub fn expected(&self, accepted: &[bool]) -> Vec<Rocket> {
        let mut got: Vec<Vec<bool>> = self.flights.iter().map(|f| vec![false; f.len()]).collect();
        for (send, &(f, m)) in self.sends.iter().enumerate() {
            got[f][m] |= accepted[send];
        }
        self.flights
            .iter()
            .zip(got)
            .map(|(flight, got)| {
                let prefix = got.iter().take_while(|g| **g).count();
                let mut rocket =
                    Rocket::fold(flight[0].channel.clone(), &flight[..prefix], Utc::now());
                rocket.pending_messages = got[prefix..].iter().filter(|g| **g).count() as u64;
                rocket
            })
            .collect()
    }
}

fn uuid_like(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sends: usize,
    /// Per send: answered 2xx at some attempt.
    pub accepted: Vec<bool>,
    pub attempts: u64,
    pub non_2xx: u64,
    pub connect_errors: u64,
    pub broken_exchanges: u64,
    pub timeouts: u64,
    /// Resends still waiting when the last new message was answered, dropped.
    pub dropped: usize,
    pub wall: Duration,
    pub latencies_us: Vec<u64>,
    /// The most connections this client held open at once.
    pub peak_held: usize,
}

impl Report {
    pub fn accepted_count(&self) -> usize {
        self.accepted.iter().filter(|a| **a).count()
    }

    pub fn accepted_per_second(&self) -> f64 {
        self.accepted_count() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Attempts beyond the first of each send.
    pub fn retries(&self) -> u64 {
        self.attempts.saturating_sub(self.sends as u64)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut latencies = self.latencies_us.clone();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        serde_json::json!({
            "sends": self.sends,
            "accepted": self.accepted_count(),
            "attempts": self.attempts,
            "retries": self.retries(),
            "non2xx": self.non_2xx,
            "connectErrors": self.connect_errors,
            "brokenExchanges": self.broken_exchanges,
            "timeouts": self.timeouts,
            "dropped": self.dropped,
            "wallMs": self.wall.as_millis() as u64,
            "acceptedPerSecond": self.accepted_per_second().round(),
            "latencyP50Us": pct(0.50),
            "latencyP99Us": pct(0.99),
            "peakHeldConnections": self.peak_held,
        })
    }
}

struct Shared {
    options: LaunchOptions,
    addrs: Vec<SocketAddr>,
    bodies: Vec<String>,
    next: AtomicUsize,
    accepted: Vec<std::sync::atomic::AtomicBool>,
    retries: Mutex<VecDeque<(Instant, usize)>>,
    attempts: AtomicU64,
    non_2xx: AtomicU64,
    connect_errors: AtomicU64,
    broken: AtomicU64,
    timeouts: AtomicU64,
    held: AtomicUsize,
    peak_held: AtomicUsize,
    latencies: Mutex<Vec<u64>>,
}

/// Sends `plan` as the challenge's program would; returns when the last new message has been
/// answered.
pub async fn launch(options: LaunchOptions, plan: &Plan) -> std::io::Result<Report> {
    let addrs = options.url.resolve().await?;
    if addrs.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} resolves to no address",
            options.url.host
        )));
    }
    let bodies = (0..plan.sends.len())
        .map(|send| plan.message(send).to_json())
        .collect();
    let shared = Arc::new(Shared {
        addrs,
        bodies,
        next: AtomicUsize::new(0),
        accepted: (0..plan.sends.len()).map(|_| Default::default()).collect(),
        retries: Mutex::new(VecDeque::new()),
        attempts: AtomicU64::new(0),
        non_2xx: AtomicU64::new(0),
        connect_errors: AtomicU64::new(0),
        broken: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
        held: AtomicUsize::new(0),
        peak_held: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::with_capacity(plan.sends.len())),
        options,
    });
    let started = Instant::now();
    let senders: Vec<_> = (0..shared.options.concurrency.max(1))
        .map(|_| tokio::spawn(sender(shared.clone())))
        .collect();
    for sender in senders {
        sender.await.map_err(std::io::Error::other)?;
    }
    let wall = started.elapsed();
    let dropped = shared.retries.lock().expect("retries").len();
    Ok(Report {
        sends: plan.sends.len(),
        accepted: shared
            .accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
        attempts: shared.attempts.load(Ordering::Relaxed),
        non_2xx: shared.non_2xx.load(Ordering::Relaxed),
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        broken_exchanges: shared.broken.load(Ordering::Relaxed),
        timeouts: shared.timeouts.load(Ordering::Relaxed),
        dropped,
        wall,
        latencies_us: std::mem::take(&mut *shared.latencies.lock().expect("latencies")),
        peak_held: shared.peak_held.load(Ordering::Relaxed),
    })
}

async fn sender(shared: Arc<Shared>) {
    loop {
        let ready = {
            let mut retries = shared.retries.lock().expect("retries");
            match retries.front() {
                Some((at, _)) if *at <= Instant::now() => retries.pop_front().map(|(_, s)| s),
                _ => None,
            }
        };
        let send = match ready {
            Some(send) => send,
            None => {
                let send = shared.next.fetch_add(1, Ordering::Relaxed);
                if send >= shared.bodies.len() {
                    return;
                }
                send
            }
        };
        if !attempt(&shared, send).await {
            let at = Instant::now() + shared.options.retry_after;
            shared
                .retries
                .lock()
                .expect("retries")
                .push_back((at, send));
        }
        if !shared.options.message_delay.is_zero() {
            tokio::time::sleep(shared.options.message_delay).await;
        }
    }
}

/// One POST on a new connection; true if it was answered 2xx.
async fn attempt(shared: &Arc<Shared>, send: usize) -> bool {
    shared.attempts.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let exchange = post(shared, &shared.bodies[send]);
    match tokio::time::timeout(shared.options.request_timeout, exchange).await {
        Ok(Ok((status, stream))) => {
            hold(shared.clone(), stream);
            if (200..300).contains(&status) {
                shared.accepted[send].store(true, Ordering::Relaxed);
                shared
                    .latencies
                    .lock()
                    .expect("latencies")
                    .push(started.elapsed().as_micros() as u64);
                true
            } else {
                shared.non_2xx.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
        Ok(Err(Failure::Connect)) => {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            false
        }
        Ok(Err(Failure::Exchange)) => {
            shared.broken.fetch_add(1, Ordering::Relaxed);
            false
        }
        Err(_) => {
            shared.timeouts.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

enum Failure {
    Connect,
    Exchange,
}

async fn post(shared: &Shared, body: &str) -> Result<(u16, TcpStream), Failure> {
    let mut stream = connect(&shared.addrs).await.ok_or(Failure::Connect)?;
    let target = &shared.options.url;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rockets-launch\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        target.path,
        target.authority(),
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|_| Failure::Exchange)?;
    let (status, _) = read_response(&mut stream)
        .await
        .map_err(|_| Failure::Exchange)?;
    Ok((status, stream))
}

/// Connects to the first address that takes the connection, in the resolver's order.
async fn connect(addrs: &[SocketAddr]) -> Option<TcpStream> {
    for addr in addrs {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}

/// Keeps a used connection open until the server closes it.
fn hold(shared: Arc<Shared>, mut stream: TcpStream) {
    let held = shared.held.fetch_add(1, Ordering::Relaxed) + 1;
    shared.peak_held.fetch_max(held, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut sink = [0u8; 512];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        shared.held.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Reads one response with a `Content-Length` body; returns its status and body.
pub async fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(std::io::Error::other)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buffer[head_end..head_end + length].to_vec()))
}

/// Waits until every rocket the server shows equals `expected`; returns how long that took,
/// or the first rocket still different at `deadline`.
pub async fn verify(
    target: &Target,
    expected: &[Rocket],
    deadline: Duration,
) -> Result<Duration, String> {
    let addrs = target.resolve().await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    for rocket in expected {
        let path = format!("/rockets/{}", rocket.channel);
        loop {
            let got = get(&addrs, target, &path).await;
            let matches = match &got {
                Ok((200, body)) => {
                    serde_json::from_slice::<Rocket>(body).is_ok_and(|got| got.same_state(rocket))
                }
                Ok((404, _)) => rocket.last_message_number == 0 && rocket.pending_messages == 0,
                _ => false,
            };
            if matches {
                break;
            }
            if started.elapsed() > deadline {
                let shown = got
                    .map(|(status, body)| format!("{status} {}", String::from_utf8_lossy(&body)));
                return Err(format!(
                    "rocket {} is {shown:?}, expected {rocket:?}",
                    rocket.channel
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(started.elapsed())
}

async fn get(addrs: &[SocketAddr], target: &Target, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = connect(addrs)
        .await
        .ok_or_else(|| std::io::Error::other("connection refused"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.authority()
    );
    stream.write_all(request.as_bytes()).await?;
    read_response(&mut stream).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_durations_parse_as_the_challenge_writes_them() {
        let t = Target::parse("http://localhost:8088/messages").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 8088, "/messages")
        );
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("[::1]", 9000, "/")
        );
        assert!(Target::parse("https://x/").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn a_plan_sends_every_message_in_a_disorderly_but_bounded_way() {
        let plan = Plan::generate(444, 5_000, 20, 10);
        assert_eq!(plan.sends.len(), 5_000);
        assert_eq!(plan.flights.len(), 20);
        let unique: usize = plan.flights.iter().map(Vec::len).sum();
        assert!((4_500..=4_550).contains(&unique), "{unique}");
        let mut seen: Vec<Vec<bool>> = plan.flights.iter().map(|f| vec![false; f.len()]).collect();
        let mut out_of_order = 0;
        let mut last = vec![0usize; plan.flights.len()];
        for &(f, m) in &plan.sends {
            seen[f][m] = true;
            out_of_order += usize::from(m < last[f]);
            last[f] = last[f].max(m);
        }
        assert!(seen.iter().flatten().all(|s| *s), "every message is sent");
        assert!(
            out_of_order > 500,
            "messages arrive out of order: {out_of_order}"
        );
        let again = Plan::generate(444, 5_000, 20, 10);
        assert_eq!(again.sends, plan.sends, "seeded");
    }

    #[test]
    fn the_expected_state_stops_at_the_first_message_never_accepted() {
        let plan = Plan::generate(1, 40, 1, 0);
        let mut accepted = vec![true; plan.sends.len()];
        let gap = plan.sends.iter().position(|&(_, m)| m == 9).unwrap();
        accepted[gap] = false;
        let rocket = &plan.expected(&accepted)[0];
        assert_eq!(rocket.last_message_number, 9);
        assert_eq!(rocket.pending_messages, 30);
    }
}
